package elfpatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func testImage() *Image {
	return &Image{
		Segments: []Segment{
			{Vaddr: 0x1000, Memsz: 0x20, Prot: 5, Data: make([]byte, 0x20)},
			// A data segment with a .bss tail: 0x10 file bytes, 0x40 in memory.
			{Vaddr: 0x3ff0, Memsz: 0x40, Prot: 3, Data: []byte("0123456789abcdef")},
		},
		Size: 0x5000,
		Fixups: []Fixup{
			{Off: 0x1002, Kind: FixupPC32, PCNext: 0x1006, Target: 0x4040, Symbol: "counter"},
			{Off: 0x3ff8, Kind: FixupAbs64, Target: 0x1230, Symbol: "kind"},
		},
		Imports: []Import{
			{Off: 0x4000, Symbol: "strlen"},
			{Off: 0x4008, Symbol: "__gmon_start__", Weak: true, Addend: 8},
			{Off: 0x4010, Symbol: "tbl", Addend: 16},
		},
		Relatives: []Relative{{Off: 0x4018, Addend: 0x1010}},
	}
}

func TestLink(t *testing.T) {
	im := testImage()
	const newBase, oldBias = 0x7f0000000000, 0x7f0040000000
	resolve := func(imp Import) (uint64, error) {
		switch imp.Symbol {
		case "strlen":
			return 0x7fff00001000, nil
		case "tbl":
			return 0x7fff00002000, nil
		case "__gmon_start__":
			return 0, nil
		}
		return 0, fmt.Errorf("unknown %s", imp.Symbol)
	}
	segs, err := im.Link(newBase, oldBias, resolve)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 2 || len(segs[0]) != 0x20 || len(segs[1]) != 0x40 {
		t.Fatalf("segment sizes: %d segments", len(segs))
	}
	pc32 := int32(binary.LittleEndian.Uint32(segs[0][2:]))
	if want := int64(oldBias+0x4040) - int64(newBase+0x1006); int64(pc32) != want {
		t.Errorf("pc32 = %#x, want %#x", pc32, want)
	}
	u64 := func(off uint64) uint64 { return binary.LittleEndian.Uint64(segs[1][off-0x3ff0:]) }
	if got := u64(0x3ff8); got != oldBias+0x1230 {
		t.Errorf("abs64 = %#x", got)
	}
	if got := u64(0x4000); got != 0x7fff00001000 {
		t.Errorf("strlen slot = %#x", got)
	}
	if got := u64(0x4008); got != 0 {
		t.Errorf("absent weak import = %#x, want 0 (no addend on a null symbol)", got)
	}
	if got := u64(0x4010); got != 0x7fff00002000+16 {
		t.Errorf("import with addend = %#x", got)
	}
	if got := u64(0x4018); got != newBase+0x1010 {
		t.Errorf("relative = %#x", got)
	}
	// File bytes survive where nothing was relocated; the .bss tail
	// past the relocated slots is zero.
	if string(segs[1][:8]) != "01234567" {
		t.Errorf("file bytes lost: %q", segs[1][:8])
	}
	for i, b := range segs[1][0x40-8:] {
		if b != 0 {
			t.Fatalf(".bss byte %d = %#x", i, b)
		}
	}
	// Link must not write into the Image it was given.
	if im.Segments[1].Data[8] != '8' {
		t.Errorf("Link modified the image's data")
	}
}

func TestLinkErrors(t *testing.T) {
	ok := func(Import) (uint64, error) { return 0x7fff00001000, nil }
	cases := []struct {
		name   string
		mod    func(*Image)
		base   uint64
		bias   uint64
		want   string
		symbol string
	}{
		{"pc32 overflow", nil, 0x7f0000000000, 0x550000000000, "2 GiB", "counter"},
		{"unaligned base", nil, 0x7f0000000010, 0x7f0040000000, "page-aligned", ""},
		{"outside segments", func(im *Image) { im.Relatives = append(im.Relatives, Relative{Off: 0x9000}) }, 0x7f0000000000, 0x7f0040000000, "outside every segment", ""},
		{"unresolved import", func(im *Image) { im.Imports = append(im.Imports, Import{Off: 0x4028, Symbol: "nope"}) }, 0x7f0000000000, 0x7f0040000000, "not found", "nope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := testImage()
			if c.mod != nil {
				c.mod(im)
			}
			_, err := im.Link(c.base, c.bias, func(imp Import) (uint64, error) {
				if imp.Symbol == "nope" {
					return 0, errors.New("not found")
				}
				return ok(imp)
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
			var le *LinkError
			if c.symbol != "" && (!errors.As(err, &le) || le.Symbol != c.symbol) {
				t.Errorf("error does not name %s: %v", c.symbol, err)
			}
		})
	}
}

// Link the real v1->v2 plan and check, by decoding NEW's relinked code,
// that every fixed field reaches OLD's symbol at the chosen addresses.
func TestLinkTick(t *testing.T) {
	p := planTick(t)
	const newBase, oldBias = 0x7f1200000000, 0x7f1240000000
	segs, err := p.im.Link(newBase, oldBias, func(imp Import) (uint64, error) { return 0x7fff12340000, nil })
	if err != nil {
		t.Fatal(err)
	}
	read := func(off, n uint64) []byte {
		for i, s := range p.im.Segments {
			if off >= s.Vaddr && off+n <= s.Vaddr+s.Memsz {
				return segs[i][off-s.Vaddr : off-s.Vaddr+n]
			}
		}
		t.Fatalf("no segment holds %#x", off)
		return nil
	}
	for _, f := range p.im.Fixups {
		var got uint64
		if f.Kind == FixupPC32 {
			got = newBase + f.PCNext + uint64(int64(int32(binary.LittleEndian.Uint32(read(f.Off, 4)))))
		} else {
			got = binary.LittleEndian.Uint64(read(f.Off, 8))
		}
		if got != oldBias+f.Target {
			t.Errorf("fixup %+v reaches %#x, want %#x", f, got, oldBias+f.Target)
		}
	}
	for _, imp := range p.im.Imports {
		if got := binary.LittleEndian.Uint64(read(imp.Off, 8)); got != 0x7fff12340000+uint64(imp.Addend) {
			t.Errorf("import %s = %#x", imp.Symbol, got)
		}
	}
	// A PC-relative field that stays in NEW (the call to the new helper)
	// is untouched and so still reaches NEW's helper at the new base.
	work := symAt(t, p.new, "", "work")
	helper := symAt(t, p.new, "main.c", "helper")
	found := false
	for field, target := range refsFrom(t, p.new, work) {
		if target == helper.Value {
			found = true
			rel := int64(int32(binary.LittleEndian.Uint32(read(field, 4))))
			if newBase+field+4+uint64(rel) != newBase+helper.Value {
				t.Errorf("call to helper at %#x no longer reaches NEW's helper", field)
			}
		}
	}
	if !found {
		t.Fatal("work does not call helper")
	}
}

// FuzzLink: whatever image a damaged patch file describes, Link returns
// bytes or an error; it never panics or allocates without bound.
func FuzzLink(f *testing.F) {
	f.Add(uint64(0x1000), uint64(0x20), uint64(0x3ff0), uint64(0x40), uint64(0x5000), uint64(0x1002), uint64(0x4000), int64(8))
	f.Add(uint64(0), uint64(1<<62), uint64(0), uint64(0), uint64(1<<40), uint64(0), uint64(0), int64(-1))
	f.Fuzz(func(t *testing.T, v1, m1, v2, m2, size, fixOff, impOff uint64, addend int64) {
		im := &Image{
			Segments: []Segment{{Vaddr: v1, Memsz: m1, Prot: 5, Data: make([]byte, min(m1, 64))},
				{Vaddr: v2, Memsz: m2, Prot: 3}},
			Size:      size,
			Fixups:    []Fixup{{Off: fixOff, Kind: FixupPC32, PCNext: fixOff + 4, Target: v2}, {Off: fixOff ^ 8, Kind: FixupAbs64, Target: v1}},
			Imports:   []Import{{Off: impOff, Symbol: "x", Addend: addend}},
			Relatives: []Relative{{Off: impOff + 8, Addend: v1}},
		}
		segs, err := im.Link(0x7f0000000000, 0x7f0010000000, func(Import) (uint64, error) { return 0x7fff00000000, nil })
		if err == nil {
			for i, s := range im.Segments {
				if uint64(len(segs[i])) != s.Memsz {
					t.Fatalf("segment %d: %d bytes, memsz %d", i, len(segs[i]), s.Memsz)
				}
			}
		}
	})
}
