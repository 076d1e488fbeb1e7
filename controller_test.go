package graft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"graft/internal/record"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
)

// Logic of apply/status/revert against the fake process: what is written
// where, in one pause, and that every failure leaves the target as before.

func jmpTarget(t *testing.T, e *fakeEnv, addr uint64) uint64 {
	t.Helper()
	b := make([]byte, 5)
	_, err := e.fp.ReadAt(b, int64(addr))
	require.NoError(t, err)
	require.Equal(t, byte(0xe9), b[0], "no jmp at %#x: % x", addr, b)
	return uint64(int64(addr+5) + int64(int32(binary.LittleEndian.Uint32(b[1:]))))
}

func TestApplyWritesJumpsAndRecord(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	pt := fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000, "g": 0x1200})
	res, err := e.sys.apply(context.Background(), 1, pt, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"f", "g"}, res.Functions)
	require.Equal(t, 1, e.attached)
	require.Equal(t, 1, e.fp.closed, "detached")
	require.False(t, e.fp.stopped, "resumed")

	img := e.loaded[0]
	require.Equal(t, img.base+0x1000, jmpTarget(t, e, e.exeBase+0x1000))
	require.Equal(t, img.base+0x1100, jmpTarget(t, e, e.exeBase+0x1200))
	// Both jumps and the record went in during one stop: the pause.
	pause := -1
	for _, w := range e.fp.writes {
		if w.addr >= e.exeBase && w.addr < e.exeBase+uint64(len(before)) {
			require.True(t, w.stopped, "text write at %#x while running", w.addr)
			if pause < 0 {
				pause = w.stop
			}
			require.Equal(t, pause, w.stop, "text writes in more than one pause")
		}
	}
	require.Equal(t, pause, e.fp.writes[len(e.fp.writes)-1].stop, "record written in the same pause")
	// Only the two jumps changed the text.
	after := e.text()
	diff := 0
	for i := range before {
		if before[i] != after[i] {
			diff++
		}
	}
	require.LessOrEqual(t, diff, 10)

	// The check covered both functions and both jump sites.
	require.Len(t, e.ck.specs, 1)
	require.True(t, e.ck.stopped[0], "waitSafe ran with the target stopped")
	spec := e.ck.specs[0]
	require.Len(t, spec.Functions, 2)
	require.Equal(t, Range{e.exeBase + 0x1000, e.exeBase + 0x1100}, spec.Functions[0].Range)
	require.Equal(t, Range{e.exeBase + 0x1000, e.exeBase + 0x1005}, spec.Entries[0].Range)

	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	p := st.Patches[0]
	require.Equal(t, "p1", p.ID)
	require.Equal(t, []string{"f", "g"}, p.Functions)
	require.Equal(t, "b1", p.OldBuildID)
	require.Equal(t, "b2", p.NewBuildID)
	require.True(t, p.Intact)
	require.Equal(t, before[0x1000:0x1005], []byte(p.Sites[0].Orig))

	// A second apply of the same patch is refused, and says why.
	nwrites := len(e.fp.writes)
	_, err = e.sys.apply(context.Background(), 1, pt, ApplyOptions{})
	require.ErrorIs(t, err, ErrAlreadyApplied)
	require.Len(t, e.fp.writes, nwrites, "nothing written by the refused apply")
}

func TestApplyRefusesOtherBuild(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "other", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.ErrorIs(t, err, ErrBuildIDMismatch)
	require.Contains(t, err.Error(), "b1")
	require.Equal(t, 0, e.attached, "refused before attaching")
	require.Equal(t, before, e.text())
	require.Len(t, e.fp.regions, nregions)
}

func TestApplyRefusedByDiff(t *testing.T) {
	e := newFakeEnv()
	pt := fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000})
	pt.Refused = []string{"global counter: type layout changed (struct stats grew from 16 to 24 bytes)"}
	_, err := e.sys.apply(context.Background(), 1, pt, ApplyOptions{})
	require.ErrorIs(t, err, ErrRefused)
	require.Contains(t, err.Error(), "layout changed")
	require.Equal(t, 0, e.attached)
}

func TestApplyNotSafeLeavesTargetAsBefore(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	e.ck.waitErr = errors.New("thread 12 is in f")
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.ErrorContains(t, err, "thread 12 is in f")
	require.Equal(t, before, e.text())
	require.Len(t, e.fp.regions, nregions, "image and record unmapped again")
	require.False(t, e.fp.stopped)
	require.Equal(t, 1, e.fp.closed)
}

func TestApplyWriteFailureRestores(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	e.fp.failAt[e.exeBase+0x1200] = errors.New("EIO")
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000, "g": 0x1200}), ApplyOptions{})
	require.ErrorContains(t, err, "EIO")
	require.Equal(t, before, e.text(), "the jump already written was taken out")
	require.Len(t, e.fp.regions, nregions)
	require.False(t, e.fp.stopped)
}

func TestApplyCancelledBeforePause(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, before, e.text())
	require.Len(t, e.fp.regions, nregions)
	require.Equal(t, 0, e.fp.stops)
}

func TestDryRunWritesNothing(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	res, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{DryRun: true})
	require.NoError(t, err)
	require.True(t, res.DryRun)
	require.Len(t, res.Sites, 1)
	require.Empty(t, e.fp.writes)
	require.Equal(t, before, e.text())
	require.Len(t, e.fp.regions, nregions)
	require.Equal(t, 1, e.fp.stops, "the safe-point check still ran")
}

func TestRevertRestoresOriginal(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000, "g": 0x1200}), ApplyOptions{})
	require.NoError(t, err)
	require.NotEqual(t, before, e.text())

	_, err = e.sys.revert(context.Background(), 1, RevertOptions{ID: "nope"})
	require.ErrorContains(t, err, "not applied")

	res, err := e.sys.revert(context.Background(), 1, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"p1"}, res.Reverted)
	require.Equal(t, before, e.text())
	require.Len(t, e.fp.regions, nregions, "image and record gone")
	spec := e.ck.specs[len(e.ck.specs)-1]
	require.Len(t, spec.Functions, 1, "the image's code")
	require.Len(t, spec.Entries, 2, "the jump sites")

	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.Empty(t, st.Patches)
	_, err = e.sys.revert(context.Background(), 1, RevertOptions{})
	require.ErrorIs(t, err, ErrNothingApplied)
}

func TestRevertNotSafeKeepsPatch(t *testing.T) {
	e := newFakeEnv()
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	patched := e.text()
	e.ck.waitErr = errors.New("thread 7 in new code")
	_, err = e.sys.revert(context.Background(), 1, RevertOptions{})
	require.ErrorContains(t, err, "thread 7")
	require.Equal(t, patched, e.text())
	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.True(t, st.Patches[0].Intact)
}

func TestStatusNotIntact(t *testing.T) {
	e := newFakeEnv()
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	_, err = e.fp.WriteAt([]byte{0xcc}, int64(e.exeBase+0x1000))
	require.NoError(t, err)
	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.False(t, st.Patches[0].Intact)
	// Revert refuses to restore over code it did not write.
	_, err = e.sys.revert(context.Background(), 1, RevertOptions{})
	require.ErrorContains(t, err, "not the jump graft wrote")
}

// stackEnv has v1 (the executable), and symbol tables for v1 and v2.
func stackEnv() *fakeEnv {
	e := newFakeEnv()
	e.syms["/proc/1/exe"] = symtabOf(
		symbol{Name: "f", Addr: 0x1000, Size: 0x100, Func: true},
		symbol{Name: "g", Addr: 0x1200, Size: 0x100, Func: true},
		symbol{Name: "counter", Addr: 0x3000, Size: 8})
	e.syms["/bin/b2"] = symtabOf(
		symbol{Name: "f", Addr: 0x2000, Size: 0x100, Func: true},
		symbol{Name: "g", Addr: 0x2200, Size: 0x100, Func: true},
		symbol{Name: "counter", Addr: 0x3800, Size: 8},
		symbol{Name: "added", Addr: 0x3900, Size: 16})
	e.syms["/bin/b3"] = e.syms["/bin/b2"]
	return e
}

func symtabOf(ss ...symbol) *symbols {
	s := &symbols{byName: map[string][]symbol{}}
	for _, x := range ss {
		s.byAddr = append(s.byAddr, x)
		s.byName[x.Name] = append(s.byName[x.Name], x)
	}
	return s
}

func TestStackedPatchBindsToTopAndJumpsToNewest(t *testing.T) {
	e := stackEnv()
	before := e.text()
	ctx := context.Background()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000, "g": 0x1200}), ApplyOptions{})
	require.NoError(t, err)
	img1 := e.loaded[0]
	afterP1 := e.text()

	// Built against v1 again: refused, it must bind to b2 now.
	_, err = e.sys.apply(ctx, 1, fakePatch("p2", "b1", "b3", map[string]uint64{"f": 0x2000}), ApplyOptions{})
	var bm *BuildIDMismatchError
	require.ErrorAs(t, err, &bm)
	require.Equal(t, "p1", bm.OnTopOf)

	// v2 -> v3 of f, whose code uses counter (in v1) and added (new in v2).
	p2 := fakePatch("p2", "b2", "b3", map[string]uint64{"f": 0x2000})
	p2.Image.Fixups = []elfpatch.Fixup{
		{Off: 0x2000, Kind: elfpatch.FixupAbs64, Target: 0x3800 + 4, Symbol: "counter"},
		{Off: 0x2008, Kind: elfpatch.FixupAbs64, Target: 0x3900, Symbol: "added"},
	}
	res, err := e.sys.apply(ctx, 1, p2, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, "p1", res.OnTopOf)
	require.Empty(t, res.Unloaded, "p1 still runs g and holds added")
	img2 := e.loaded[1]

	// v1's f and v2's copy of f both go straight to v3's f.
	require.Equal(t, img2.base+0x1000, jmpTarget(t, e, e.exeBase+0x1000))
	require.Equal(t, img2.base+0x1000, jmpTarget(t, e, img1.base+0x1000))
	// g still goes to v2.
	require.Equal(t, img1.base+0x1100, jmpTarget(t, e, e.exeBase+0x1200))
	// OLD(v2) symbols mapped to their live copies.
	b := make([]byte, 16)
	_, err = e.fp.ReadAt(b, int64(img2.base+0x2000))
	require.NoError(t, err)
	require.Equal(t, e.exeBase+0x3004, binary.LittleEndian.Uint64(b[0:]), "counter lives in v1")
	require.Equal(t, img1.base+0x3900, binary.LittleEndian.Uint64(b[8:]), "added lives in v2's image")
	// The check covered every live copy of f.
	spec := e.ck.specs[len(e.ck.specs)-1]
	require.Len(t, spec.Functions, 2)

	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.Len(t, st.Patches, 2)
	require.Equal(t, []string{"p1"}, []string(e.mustState(t).Patches[1].Refs))

	// Revert takes the top off: f back to v2, then everything back.
	_, err = e.sys.revert(ctx, 1, RevertOptions{ID: "p1"})
	require.ErrorContains(t, err, "applied on top of it")
	_, err = e.sys.revert(ctx, 1, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, afterP1, e.text())
	_, err = e.sys.revert(ctx, 1, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, before, e.text())
}

func (e *fakeEnv) mustState(t *testing.T) *State {
	t.Helper()
	st, err := readState(e.fp, 1, e.fp.maps())
	require.NoError(t, err)
	return st
}

func TestSupersededPatchIsUnloaded(t *testing.T) {
	e := stackEnv()
	before := e.text()
	ctx := context.Background()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	img1 := e.loaded[0]
	res, err := e.sys.apply(ctx, 1, fakePatch("p2", "b2", "b3", map[string]uint64{"f": 0x2000}), ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"p1"}, res.Unloaded)
	require.False(t, e.fp.mapped(img1.base), "v2's code unmapped")
	require.Len(t, res.Sites, 1, "no jump written into code about to go")
	require.Equal(t, e.loaded[1].base+0x1000, jmpTarget(t, e, e.exeBase+0x1000))

	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.True(t, st.Patches[0].Unloaded)
	require.Equal(t, "p2", st.Patches[0].SupersededBy)
	require.True(t, st.Patches[1].Intact)

	// Reverting p2 takes p1 with it: its code is gone.
	rr, err := e.sys.revert(ctx, 1, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"p2", "p1"}, rr.Reverted)
	require.Equal(t, before, e.text())
}

func TestSupersededPatchWithFrameStays(t *testing.T) {
	e := stackEnv()
	ctx := context.Background()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	img1 := e.loaded[0]
	e.ck.framesIn = func(rs []Range) []bool { return []bool{true} }
	res, err := e.sys.apply(ctx, 1, fakePatch("p2", "b2", "b3", map[string]uint64{"f": 0x2000}), ApplyOptions{AllowActive: []string{"f"}})
	require.NoError(t, err)
	require.Empty(t, res.Unloaded)
	require.True(t, e.fp.mapped(img1.base))
	require.Equal(t, []string{"f"}, e.ck.specs[len(e.ck.specs)-1].AllowActive)
}

func TestStateRoundTripAndTornRead(t *testing.T) {
	s := &State{Patches: []PatchRecord{{ID: "x", Sites: []SiteRecord{{Func: "f", Addr: 0x10, Orig: []byte{1, 2}, New: []byte{0xe9, 0, 0, 0, 0}}}}}}
	buf, err := encodeState(s, 7)
	require.NoError(t, err)
	fp := newFakeProc()
	fp.stopped = true
	addr, err := fp.Mmap(0, stateCapacity, 1, 2, -1, 0)
	require.NoError(t, err)
	require.NoError(t, record.Write(fp, addr, buf))
	got, err := decodeState(fp, 1, addr)
	require.NoError(t, err)
	require.Equal(t, uint64(7), got.Generation)
	require.Equal(t, s.Patches[0].Sites, got.Patches[0].Sites)

	// A body that does not match its checksum is a torn read.
	_, err = fp.WriteAt([]byte("{"), int64(addr+record.BodyOffset(7)+3))
	require.NoError(t, err)
	_, err = decodeState(fp, 1, addr)
	require.ErrorIs(t, err, errTorn)

	// Foreign bytes are a format error, not a panic.
	_, err = fp.WriteAt([]byte("NOTGRAFT"), int64(addr))
	require.NoError(t, err)
	_, err = decodeState(fp, 1, addr)
	var fe *StateFormatError
	require.ErrorAs(t, err, &fe)
	require.True(t, strings.Contains(err.Error(), "magic"))
	require.False(t, bytes.Equal(buf[:8], []byte("NOTGRAFT")))
}

func FuzzDecodeState(f *testing.F) {
	buf, _ := encodeState(&State{Patches: []PatchRecord{{ID: "x"}}}, 1)
	f.Add(buf)
	f.Fuzz(func(t *testing.T, b []byte) {
		fp := newFakeProc()
		fp.stopped = true
		addr, _ := fp.Mmap(0, stateCapacity, 1, 2, -1, 0)
		if len(b) > stateCapacity {
			b = b[:stateCapacity]
		}
		fp.WriteAt(b, int64(addr))
		decodeState(fp, 1, addr) // must not panic
	})
}

// Only the patch directly below can be unloaded: reverting the one that
// superseded it takes it along, which must not skip patches in between.
func TestOnlyPatchBelowIsUnloaded(t *testing.T) {
	e := stackEnv()
	e.syms["/bin/b4"] = e.syms["/bin/b2"]
	ctx := context.Background()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	img1 := e.loaded[0]
	afterP1 := e.text()
	_, err = e.sys.apply(ctx, 1, fakePatch("p2", "b2", "b3", map[string]uint64{"g": 0x2200}), ApplyOptions{})
	require.NoError(t, err)
	img2 := e.loaded[1]
	res, err := e.sys.apply(ctx, 1, fakePatch("p3", "b3", "b4", map[string]uint64{"f": 0x2000, "g": 0x2200}), ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"p2"}, res.Unloaded)
	require.True(t, e.fp.mapped(img1.base), "p1 is not directly below p3")
	require.False(t, e.fp.mapped(img2.base))

	rr, err := e.sys.revert(ctx, 1, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"p3", "p2"}, rr.Reverted)
	require.Equal(t, afterP1, e.text(), "f back to p1's version, g to the original")
	require.Equal(t, img1.base+0x1000, jmpTarget(t, e, e.exeBase+0x1000))
}

// Another graft changing the record between this one's first read and its
// attach makes apply stop before touching anything.
func TestApplyRecordChangedMeanwhile(t *testing.T) {
	e := stackEnv()
	ctx := context.Background()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	text := e.text()
	attach := e.sys.attach
	e.sys.attach = func(pid int) (proc, error) {
		st := e.mustState(t)
		buf, err := encodeState(st, st.Generation+1)
		require.NoError(t, err)
		require.NoError(t, record.Write(e.fp, st.Addr, buf))
		return attach(pid)
	}
	nregions := len(e.fp.regions)
	_, err = e.sys.apply(ctx, 1, fakePatch("p2", "b2", "b3", map[string]uint64{"g": 0x2200}), ApplyOptions{})
	require.ErrorIs(t, err, ErrRecordChanged)
	require.Equal(t, text, e.text())
	require.Len(t, e.fp.regions, nregions)
	require.False(t, e.fp.stopped)
}

// Two static functions of the same name in different files each get their
// own jump to their own new version; a function's .cold part counts as the
// function in the safety check.
func TestSameNamedStaticsAndColdParts(t *testing.T) {
	e := stackEnv()
	e.syms["/proc/1/exe"] = symtabOf(
		symbol{Name: "h", Addr: 0x1000, Size: 0x100, Func: true},
		symbol{Name: "h", Addr: 0x1200, Size: 0x100, Func: true},
		symbol{Name: "h.cold", Addr: 0x2000, Size: 0x40, Func: true})
	pt := fakePatch("p1", "b1", "b2", nil)
	pt.Image.Redirects = []elfpatch.Redirect{
		{Name: "h", Old: 0x1000, OldSize: 0x100, New: 0x1000, NewSize: 0x80},
		{Name: "h", Old: 0x1200, OldSize: 0x100, New: 0x1100, NewSize: 0x80},
	}
	pt.Parts = map[string][]string{"h": {"h.cold"}}
	_, err := e.sys.apply(context.Background(), 1, pt, ApplyOptions{})
	require.NoError(t, err)
	img := e.loaded[0]
	require.Equal(t, img.base+0x1000, jmpTarget(t, e, e.exeBase+0x1000))
	require.Equal(t, img.base+0x1100, jmpTarget(t, e, e.exeBase+0x1200))
	spec := e.ck.specs[0]
	require.Contains(t, spec.Functions, namedRange{"h", Range{e.exeBase + 0x2000, e.exeBase + 0x2040}})
}

// A jump that cannot be written on top of an earlier patch puts back the
// jumps written and the record as it was.
func TestStackedWriteFailureKeepsRecord(t *testing.T) {
	e := stackEnv()
	ctx := context.Background()
	_, err := e.sys.apply(ctx, 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	text := e.text()
	e.fp.failAt[e.exeBase+0x1200] = errors.New("EIO")
	_, err = e.sys.apply(ctx, 1, fakePatch("p2", "b2", "b3", map[string]uint64{"f": 0x2000, "g": 0x2200}), ApplyOptions{})
	require.ErrorContains(t, err, "EIO")
	require.Equal(t, text, e.text())
	st := e.mustState(t)
	require.Len(t, st.Patches, 1)
	require.Equal(t, "p1", st.Patches[0].ID)
	require.True(t, e.fp.mapped(e.loaded[0].base), "p1's code stays")
	require.False(t, e.fp.mapped(e.loaded[1].base), "p2's code is gone")
}

// A graft killed inside its pause after writing the record but before the
// jumps: status says the patch is not intact, revert cleans up.
func TestRevertAfterKilledMidPause(t *testing.T) {
	e := newFakeEnv()
	before := e.text()
	nregions := len(e.fp.regions)
	_, err := e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000, "g": 0x1200}), ApplyOptions{})
	require.NoError(t, err)
	// Undo the second jump by hand, as if graft died before writing it.
	st := e.mustState(t)
	s := st.Patches[0].Sites[1]
	_, err = e.fp.WriteAt(s.Orig, int64(s.Addr))
	require.NoError(t, err)
	ss, err := e.sys.status(1)
	require.NoError(t, err)
	require.False(t, ss.Patches[0].Intact)
	_, err = e.sys.revert(context.Background(), 1, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, before, e.text())
	require.Len(t, e.fp.regions, nregions)
}

// An image left by a graft killed before its pause (mapped, not recorded)
// shows in status and goes with revert --all, behind the safety check.
func TestOrphanedImage(t *testing.T) {
	e := newFakeEnv()
	nregions := len(e.fp.regions)
	e.fp.regions = append(e.fp.regions, &region{start: 0x555555700000, data: make([]byte, 0x2000), path: "/memfd:graft-dead (deleted)", perms: "r-xp"})
	st, err := e.sys.status(1)
	require.NoError(t, err)
	require.Empty(t, st.Patches)
	require.Equal(t, []Range{{0x555555700000, 0x555555702000}}, st.Orphans)

	_, err = e.sys.revert(context.Background(), 1, RevertOptions{})
	require.ErrorIs(t, err, ErrNothingApplied)
	res, err := e.sys.revert(context.Background(), 1, RevertOptions{All: true})
	require.NoError(t, err)
	require.Equal(t, st.Orphans, res.Orphans)
	require.Len(t, e.fp.regions, nregions)
	spec := e.ck.specs[len(e.ck.specs)-1]
	require.Equal(t, Range{0x555555700000, 0x555555702000}, spec.Functions[0].Range)

	// With a patch in effect too, --all takes both.
	_, err = e.sys.apply(context.Background(), 1, fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000}), ApplyOptions{})
	require.NoError(t, err)
	e.fp.regions = append(e.fp.regions, &region{start: 0x555555700000, data: make([]byte, 0x2000), path: "/memfd:graft-dead (deleted)", perms: "r-xp"})
	st, err = e.sys.status(1)
	require.NoError(t, err)
	require.Len(t, st.Orphans, 1, "the recorded image is no orphan")
	res, err = e.sys.revert(context.Background(), 1, RevertOptions{All: true})
	require.NoError(t, err)
	require.Equal(t, []string{"p1"}, res.Reverted)
	require.Len(t, e.fp.regions, nregions)
}
