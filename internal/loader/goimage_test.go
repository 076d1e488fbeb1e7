package loader

import (
	"debug/elf"
	"encoding/binary"
	"strings"
	"testing"

	"graft/internal/goruntime"
	"graft/internal/testutil"
)

func goImageInputs(t *testing.T) (*elf.File, *goruntime.Layout, map[string]elf.Symbol) {
	t.Helper()
	f, err := elf.Open(testutil.Build(t, "goserver-v3-pie"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	l, err := goruntime.ReadLayout(f)
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]elf.Symbol{}
	for _, s := range syms {
		by[s.Name] = s
	}
	return f, l, by
}

// TestBuildGoImage: NEW's writable data segment is left out (reserved),
// the moduledata page is NEW's firstmoduledata with bad set, next,
// inittasks, typemap and textsectmap cleared, and its pointers relocated
// with the image (relative relocations moved onto the page).
func TestBuildGoImage(t *testing.T) {
	f, l, by := goImageInputs(t)
	hc := by["main.handleCount"]
	gi, err := BuildGoImage(f, l, []GoFunc{{Name: "main.handleCount", Old: 0x401000, OldSize: 0x100, New: hc.Value, NewSize: hc.Size}})
	if err != nil {
		t.Fatal(err)
	}
	im := gi.Image
	var md []byte
	for _, s := range im.Segments {
		if s.Prot&2 != 0 && s.Vaddr != gi.Module && (s.Vaddr < im.RelroStart || s.Vaddr >= im.RelroEnd) {
			t.Errorf("writable segment at %#x mapped", s.Vaddr)
		}
		if s.Vaddr == gi.Module {
			md = s.Data
		}
	}
	if md == nil {
		t.Fatal("no moduledata segment")
	}
	o := l.Module
	if md[o["bad"]] != 1 {
		t.Error("bad not set")
	}
	for _, n := range []string{"next", "inittasks", "typemap", "textsectmap"} {
		if binary.LittleEndian.Uint64(md[o[n]:]) != 0 {
			t.Errorf("%s not cleared", n)
		}
	}
	rel := map[uint64]uint64{}
	for _, r := range im.Relatives {
		rel[r.Off] = r.Addend
	}
	if a, ok := rel[gi.Module+uint64(o["text"])]; !ok || a != by["runtime.text"].Value-gi.Low {
		t.Errorf("moduledata.text relocation: %#x %v, want %#x", a, ok, by["runtime.text"].Value-gi.Low)
	}
	for _, n := range []string{"inittasks", "textsectmap", "next"} {
		if _, ok := rel[gi.Module+uint64(o[n])]; ok {
			t.Errorf("cleared %s still relocated", n)
		}
	}
	if len(im.Redirects) != 1 || im.Redirects[0].New != hc.Value-gi.Low {
		t.Errorf("redirects %+v", im.Redirects)
	}
}

// TestBuildGoImageKeptIntoData: a plan that keeps a reference into NEW's
// writable data (never mapped) is refused.
func TestBuildGoImageKeptIntoData(t *testing.T) {
	f, l, by := goImageInputs(t)
	hc, ctr := by["main.handleCount"], by["main.counter"]
	_, err := BuildGoImage(f, l, []GoFunc{{Name: "main.handleCount", Old: 0x401000, OldSize: 0x100, New: hc.Value, NewSize: hc.Size,
		Refs: []GoRef{{Off: hc.Value + 0x10, PCNext: hc.Value + 0x14, Keep: true, Symbol: "main.counter", New: ctr.Value}}}})
	if err == nil || !strings.Contains(err.Error(), "writable data") {
		t.Fatalf("got %v, want a refusal naming NEW's writable data", err)
	}
}
