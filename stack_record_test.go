package graft

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
)

// A patch stacks on one applied from a file without NEW: the earlier
// image's symbols come from the record (its functions and the objects only
// it has), the new patch's references from the names its fixups carry, and
// statics are told apart by compile unit. No NEW binary exists here: the
// fake system knows only the executable's symbols.
func TestStackedFromRecordWithoutNew(t *testing.T) {
	e := stackEnv()
	delete(e.syms, "/bin/b2")
	delete(e.syms, "/bin/b3")
	e.syms["/proc/1/exe"] = symtabOf(
		symbol{Name: "f", Addr: 0x1000, Size: 0x100, Func: true},
		symbol{Name: "g", Addr: 0x1200, Size: 0x100, Func: true},
		symbol{Name: "counter", Addr: 0x3000, Size: 8},
		symbol{Name: "seen", Addr: 0x3100, Size: 8, File: "a.c"},
		symbol{Name: "seen", Addr: 0x3200, Size: 8, File: "b.c"})
	ctx := context.Background()

	p1 := fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000, "g": 0x1200})
	p1.NewPath = ""
	p1.Image.Size = 0x4000
	p1.Image.Runs = []elfpatch.RunFunc{{Name: "f", New: 0x1000, Size: 0x80}, {Name: "g", New: 0x1100, Size: 0x80}}
	p1.Image.Objects = []elfpatch.Object{{Name: "added", New: 0x3900, Size: 16}}
	p1.Image.EhFrame, p1.Image.EhFrameSize = 0x800, 0x100
	_, err := e.sys.apply(ctx, 1, p1, ApplyOptions{})
	require.NoError(t, err)
	img1 := e.loaded[0]
	rec := e.mustState(t).Patches[0]
	require.Equal(t, uint64(0x800), rec.EhFrame)
	require.Contains(t, rec.Symbols, SymRecord{Name: "added", Addr: img1.base + 0x3900, Size: 16, Data: true})
	require.Contains(t, rec.Symbols, SymRecord{Name: "g", Addr: img1.base + 0x1100, Size: 0x80})

	// v2 -> v3 of f: counter is v1's, added v2's, seen is b.c's static.
	p2 := fakePatch("p2", "b2", "b3", map[string]uint64{"f": 0x2000})
	p2.NewPath = ""
	p2.Image.Runs = []elfpatch.RunFunc{{Name: "f", New: 0x1000, Size: 0x80}}
	p2.Image.Fixups = []elfpatch.Fixup{
		{Off: 0x2000, Kind: elfpatch.FixupAbs64, Target: 0x3804, Symbol: "counter", Name: "counter", SymAddr: 0x3800},
		{Off: 0x2008, Kind: elfpatch.FixupAbs64, Target: 0x3908, Symbol: "added", Name: "added", SymAddr: 0x3900},
		{Off: 0x2010, Kind: elfpatch.FixupAbs64, Target: 0x3a04, Symbol: "b.c:seen", Name: "seen", File: "b.c", SymAddr: 0x3a00},
	}
	res, err := e.sys.apply(ctx, 1, p2, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, "p1", res.OnTopOf)
	img2 := e.loaded[1]
	b := make([]byte, 24)
	_, err = e.fp.ReadAt(b, int64(img2.base+0x2000))
	require.NoError(t, err)
	require.Equal(t, e.exeBase+0x3004, binary.LittleEndian.Uint64(b[0:]), "counter lives in v1")
	require.Equal(t, img1.base+0x3908, binary.LittleEndian.Uint64(b[8:]), "added lives in v2's image")
	require.Equal(t, e.exeBase+0x3204, binary.LittleEndian.Uint64(b[16:]), "b.c's seen, not a.c's")
	require.Equal(t, img2.base+0x1000, jmpTarget(t, e, e.exeBase+0x1000))
	require.Equal(t, img2.base+0x1000, jmpTarget(t, e, img1.base+0x1000), "v2's copy of f, found in the record")
	require.Equal(t, []string{"p1"}, e.mustState(t).Patches[1].Refs)

	// A name the running program does not have is refused, nothing done.
	p3 := fakePatch("p3", "b3", "b4", map[string]uint64{"f": 0x2000})
	p3.Image.Fixups = []elfpatch.Fixup{{Off: 0x2000, Kind: elfpatch.FixupAbs64, Target: 0x3c00, Symbol: "ghost", Name: "ghost", SymAddr: 0x3c00}}
	_, err = e.sys.apply(ctx, 1, p3, ApplyOptions{})
	require.ErrorContains(t, err, "symbol ghost is ambiguous or missing")
	require.Len(t, e.mustState(t).Patches, 2)
}
