package elfpatch

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

func diffBuilds(t *testing.T, old, new string) *Report {
	t.Helper()
	ob, err := Open(testutil.Build(t, old))
	require.NoError(t, err)
	nb, err := Open(testutil.Build(t, new))
	require.NoError(t, err)
	r, err := Diff(ob, nb)
	require.NoError(t, err)
	return r
}

func findTransfer(r *Report, name string) *Transfer {
	for i := range r.Transfers {
		if r.Transfers[i].Name == name {
			return &r.Transfers[i]
		}
	}
	return nil
}

func opAt(ops []XferOp, path string) *XferOp {
	for i := range ops {
		if ops[i].Path == path {
			return &ops[i]
		}
	}
	return nil
}

// statd v1 -> v2 (testprocs/statd/VERSIONS.md): every generated kind of
// conversion, checked on the operations and by running them on bytes laid
// out as v1's struct.
func TestTransferStatdGenerated(t *testing.T) {
	r := diffBuilds(t, "statd-v1", "statd-v2")
	x := findTransfer(r, "stats")
	require.NotNil(t, x, "%+v", r.Reasons)
	assert.Empty(t, x.Todo)
	assert.False(t, x.InPlace, "136 bytes do not fit the 88-byte slot before last_counter")
	assert.Equal(t, []string{"cmd_add", "cmd_err", "cmd_mode", "cmd_req", "cmd_stats", "stats_init"}, x.Users)
	assert.Empty(t, x.Irreversible)

	// v1: requests@0 errors@8 delta@16(int32) mode@20 hist@24[4] io@56{in,out} started@72 last@80
	// v2: errors@0 requests@8 delta@16(int64) mode@24 hist@32[8] io@96{in,out,dropped} started@120 last@128
	req := opAt(x.Ops, "requests")
	require.NotNil(t, req)
	assert.Equal(t, [2]uint64{0, 8}, [2]uint64{req.Src, req.Dst}, "reordered by name")
	d := opAt(x.Ops, "delta")
	require.NotNil(t, d)
	assert.Equal(t, OpInt, d.Op)
	assert.True(t, d.Signed)
	assert.Equal(t, [2]uint64{4, 8}, [2]uint64{d.SrcSize, d.DstSize})
	m := opAt(x.Ops, "mode")
	require.NotNil(t, m)
	assert.Equal(t, OpEnum, m.Op)
	assert.Contains(t, m.Enum, [2]int64{1, 2}, "MODE_BUSY 1 -> 2 by name")
	assert.Contains(t, m.Enum, [2]int64{2, 3}, "MODE_DRAIN 2 -> 3 by name")
	h := opAt(x.Ops, "hist")
	require.NotNil(t, h)
	assert.Equal(t, uint64(32), h.SrcSize, "the 4 old elements")
	assert.Equal(t, OpPtr, opAt(x.Ops, "last").Op, "function pointer carried")

	le := binary.LittleEndian
	old := make([]byte, x.OldSize)
	le.PutUint64(old[0:], 7)                   // requests
	le.PutUint64(old[8:], 3)                   // errors
	le.PutUint32(old[16:], uint32(0xfffffffb)) // delta -5
	le.PutUint32(old[20:], 1)                  // MODE_BUSY
	for i := range 4 {
		le.PutUint64(old[24+8*i:], uint64(10+i))
	}
	le.PutUint64(old[56:], 100) // io.in
	le.PutUint64(old[64:], 200) // io.out
	le.PutUint64(old[72:], 1234)
	le.PutUint64(old[80:], 0x5555_0000_1000) // a handler in OLD's text
	out, err := RunOps(x.Ops, x.Name, old, x.Init, x.NewSize, nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), le.Uint64(out[0:]))
	assert.Equal(t, uint64(7), le.Uint64(out[8:]))
	assert.Equal(t, int64(-5), int64(le.Uint64(out[16:])), "sign-extended")
	assert.Equal(t, uint32(2), le.Uint32(out[24:]), "MODE_BUSY is 2 in v2")
	for i := range 8 {
		want := uint64(0)
		if i < 4 {
			want = uint64(10 + i)
		}
		assert.Equal(t, want, le.Uint64(out[32+8*i:]), "hist[%d]", i)
	}
	assert.Equal(t, []uint64{100, 200, 0}, []uint64{le.Uint64(out[96:]), le.Uint64(out[104:]), le.Uint64(out[112:])})
	assert.Equal(t, uint64(1234), le.Uint64(out[120:]))
	assert.Equal(t, uint64(0x5555_0000_1000), le.Uint64(out[128:]))

	// A pointer to errors (v1 offset 8) lands on v2's errors (offset 0).
	off, ok := OffsetMap(x.Ops, x.OldSize, x.NewSize, 8, 8)
	assert.True(t, ok)
	assert.Equal(t, uint64(0), off)
	// At offset 0: a long * to requests follows the member (v2 offset
	// 8); a pointer to the whole struct (or void *) stays at the start.
	off, ok = OffsetMap(x.Ops, x.OldSize, x.NewSize, 0, 8)
	assert.True(t, ok)
	assert.Equal(t, uint64(8), off)
	off, ok = OffsetMap(x.Ops, x.OldSize, x.NewSize, 0, x.OldSize)
	assert.True(t, ok)
	assert.Equal(t, uint64(0), off)
	off, ok = OffsetMap(x.Ops, x.OldSize, x.NewSize, 24+8*3, 8)
	assert.True(t, ok)
	assert.Equal(t, uint64(32+8*3), off, "hist[3]")

	// Back: delta narrows to int32 and must fit; MODE_PAUSED has no v1
	// counterpart and stops the revert only if it is the live value.
	back, err := RunOps(x.Reverse, x.Name, out, old, x.OldSize, nil)
	require.NoError(t, err)
	assert.Equal(t, old, back, "round trip")
	le.PutUint64(out[16:], uint64(1)<<40)
	_, err = RunOps(x.Reverse, x.Name, out, old, x.OldSize, nil)
	require.ErrorContains(t, err, "stats.delta holds 1099511627776, which does not fit its new 4-byte signed type")
	le.PutUint64(out[16:], 0)
	le.PutUint32(out[24:], 1) // MODE_PAUSED
	_, err = RunOps(x.Reverse, x.Name, out, old, x.OldSize, nil)
	require.ErrorContains(t, err, "stats.mode holds enumerator value 1, which the other build's enum lacks")
}

// statd v2 -> v3 cannot be generated: a member whose meaning changed
// (started, seconds -> started_ms, milliseconds) and a renamed
// enumerator. The operator's rules resolve it; a scale has no inverse.
func TestTransferStatdNeedsOperator(t *testing.T) {
	r := diffBuilds(t, "statd-v2", "statd-v3")
	x := findTransfer(r, "stats")
	require.NotNil(t, x)
	require.Len(t, x.Todo, 3, "%q", x.Todo)
	assert.Contains(t, x.Todo[0], "MODE_DRAIN")
	assert.Contains(t, x.Todo[1], "started_ms: new member")
	assert.Equal(t, VerdictTransformer, r.Verdict)

	ob, err := Open(testutil.Build(t, "statd-v2"))
	require.NoError(t, err)
	nb, err := Open(testutil.Build(t, "statd-v3"))
	require.NoError(t, err)
	r, err = DiffRules(ob, nb, map[string]*Rules{"stats": {
		From:  map[string]string{"started_ms": "started"},
		Scale: map[string]int64{"started_ms": 1000},
		Enum:  map[string]map[string]string{"mode": {"MODE_DRAIN": "MODE_CLOSING"}},
	}})
	require.NoError(t, err)
	x = findTransfer(r, "stats")
	require.NotNil(t, x)
	assert.Empty(t, x.Todo)
	assert.Contains(t, x.Irreversible, "no generated inverse")
	s := opAt(x.Ops, "started_ms")
	require.NotNil(t, s)
	assert.Equal(t, int64(1000), s.Scale)
	assert.Contains(t, opAt(x.Ops, "mode").Enum, [2]int64{3, 3})
}

// A changed type reached through a pointer from a global (statd v3 -> v4:
// struct client, allocated per connection) is refused, named.
func TestTransferHeapTypeRefused(t *testing.T) {
	r := diffBuilds(t, "statd-v3", "statd-v4")
	assert.Equal(t, VerdictRefused, r.Verdict)
	assert.Empty(t, r.Transfers)
	found := false
	for _, rs := range r.Reasons {
		if rs.Verdict == VerdictRefused && rs.Symbol == "struct client" {
			found = true
			assert.Contains(t, rs.Message, "heap objects")
		}
	}
	assert.True(t, found, "%+v", r.Reasons)
}

// ftpd v6 -> v7 fits in place; sshd v5 -> v6 moves sessions but
// struct session is reached through pointers too: refused.
func TestTransferTestprocsPairs(t *testing.T) {
	r := diffBuilds(t, "ftpd-v6", "ftpd-v7")
	x := findTransfer(r, "ftpd_stats")
	require.NotNil(t, x)
	assert.True(t, x.InPlace)
	assert.True(t, x.Complete())
	assert.Len(t, x.Reverse, 2)

	r = diffBuilds(t, "sshd-v5", "sshd-v6")
	x = findTransfer(r, "sessions")
	require.NotNil(t, x)
	assert.False(t, x.InPlace)
	assert.Equal(t, VerdictRefused, r.Verdict)
}

func TestRunOpsIntegers(t *testing.T) {
	cases := []struct {
		src       []byte
		signed    bool
		dstSize   uint64
		dstSigned bool
		want      []byte
		err       string
	}{
		{[]byte{0xff}, true, 4, true, []byte{0xff, 0xff, 0xff, 0xff}, ""},
		{[]byte{0xff}, false, 4, false, []byte{0xff, 0, 0, 0}, ""},
		{[]byte{0x00, 0x01}, false, 1, false, nil, "holds 256"},
		{[]byte{0x7f, 0x00}, true, 1, true, []byte{0x7f}, ""},
		{[]byte{0xfe, 0xff}, true, 1, false, nil, "holds -2"},
		{[]byte{0x80, 0, 0, 0}, false, 1, true, nil, "holds 128"},
	}
	for _, c := range cases {
		ops := []XferOp{{Op: OpInt, Path: "v", SrcSize: uint64(len(c.src)), DstSize: c.dstSize, Signed: c.signed, DstSigned: c.dstSigned}}
		out, err := RunOps(ops, "g", c.src, nil, c.dstSize, nil)
		if c.err != "" {
			require.ErrorContains(t, err, c.err, "%x", c.src)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, c.want, out, "%x", c.src)
	}
}
