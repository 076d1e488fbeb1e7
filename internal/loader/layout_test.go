package loader

import (
	"reflect"
	"testing"

	"graft/elfpatch"
)

func TestLayout(t *testing.T) {
	// The shape of a gcc -O2 PIE: R, R+X, R, then RW starting mid-page
	// with RELRO up to a page boundary, a gap page between text and
	// rodata left out of every segment.
	im := &elfpatch.Image{
		Segments: []elfpatch.Segment{
			{Vaddr: 0, Memsz: 0x7d8, Prot: 1},
			{Vaddr: 0x1000, Memsz: 0x365, Prot: 5},
			{Vaddr: 0x3000, Memsz: 0x25c, Prot: 1},
			{Vaddr: 0x4dc0, Memsz: 0x320, Prot: 3},
		},
		Size:       0x6000,
		RelroStart: 0x4dc0,
		RelroEnd:   0x5000,
	}
	const base = 0x7f0000000000
	got, err := layout(im, base)
	if err != nil {
		t.Fatal(err)
	}
	want := []Region{
		{base, 0x1000, 1},
		{base + 0x1000, 0x1000, 5},
		{base + 0x2000, 0x1000, 0}, // between segments: PROT_NONE
		{base + 0x3000, 0x2000, 1}, // rodata and the RELRO page
		{base + 0x5000, 0x1000, 3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("layout:\n got %+v\nwant %+v", got, want)
	}
	// Two segments sharing a page get the union of their protections.
	im.Segments[2].Vaddr, im.Segments[2].Memsz = 0x1800, 0x100
	got, _ = layout(im, base)
	if got[1] != (Region{base + 0x1000, 0x1000, 5}) {
		t.Fatalf("shared page: %+v", got)
	}
	im.Segments = append(im.Segments, elfpatch.Segment{Vaddr: 0x6000, Memsz: 1, Prot: 1})
	if _, err := layout(im, base); err == nil {
		t.Fatal("segment past Size accepted")
	}
}
