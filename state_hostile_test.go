package graft

import (
	"encoding/binary"
	"graft/internal/record"
	"testing"

	"github.com/stretchr/testify/require"
)

// A record header the target scribbled on (or forged) claims a capacity
// and a body far beyond the 1 MiB mapping: decodeState must refuse it as
// malformed instead of allocating what it claims (found by
// FuzzDecodeState: ~50 TB, out of memory).
func TestDecodeStateHostileCapacity(t *testing.T) {
	for _, c := range []struct {
		name          string
		capacity, len uint64
	}{
		{"huge capacity and body", 0x3030303030303030, 0x303030303075},
		{"capacity one byte over", stateCapacity + 1, 16},
		{"capacity below the header", stateHeaderSize - 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf, err := encodeState(&State{Patches: []PatchRecord{{ID: "x"}}}, 1)
			require.NoError(t, err)
			binary.LittleEndian.PutUint64(buf[24:], c.len)
			binary.LittleEndian.PutUint64(buf[40:], c.capacity)
			fp := newFakeProc()
			fp.stopped = true
			addr, err := fp.Mmap(0, stateCapacity, 1, 2, -1, 0)
			require.NoError(t, err)
			require.NoError(t, record.Write(fp, addr, buf))
			_, err = decodeState(fp, 1, addr)
			var fe *StateFormatError
			require.ErrorAs(t, err, &fe)
			require.Contains(t, err.Error(), "capacity")
		})
	}
	// The capacity graft writes still reads.
	buf, err := encodeState(&State{Patches: []PatchRecord{{ID: "x"}}}, 1)
	require.NoError(t, err)
	fp := newFakeProc()
	fp.stopped = true
	addr, err := fp.Mmap(0, stateCapacity, 1, 2, -1, 0)
	require.NoError(t, err)
	require.NoError(t, record.Write(fp, addr, buf))
	st, err := decodeState(fp, 1, addr)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.Equal(t, "x", st.Patches[0].ID)
}
