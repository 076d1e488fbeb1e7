package graft

import (
	"encoding/binary"
	"errors"
	"testing"
)

// TestLinkGoModule: linking appends the module after the chain's true end
// with two stores (the last module's next, then lastmoduledatap), walks
// past a module a killed graft linked without updating lastmoduledatap,
// and unlinking puts both back; a failing second store leaves the chain
// as it was.
func TestLinkGoModule(t *testing.T) {
	const (
		lmp     = 0x1000 // runtime.lastmoduledatap
		first   = 0x2000 // runtime.firstmoduledata
		stray   = 0x3000 // a module linked by a graft killed between its stores
		md      = 0x4000 // the module to link
		nextOff = 0x248
	)
	word := func(f *fakeProc, a uint64) uint64 {
		var b [8]byte
		if _, err := f.ReadAt(b[:], int64(a)); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b[:])
	}
	put := func(f *fakeProc, a, v uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		if _, err := f.WriteAt(b[:], int64(a)); err != nil {
			t.Fatal(err)
		}
	}
	setup := func(withStray bool) *fakeProc {
		f := newFakeProc()
		f.regions = append(f.regions, &region{start: 0x1000, data: make([]byte, 0x4000)})
		put(f, lmp, first)
		if withStray {
			put(f, first+nextOff, stray)
		}
		f.writes = nil
		return f
	}
	g := &goInfo{LastModuledatap: lmp, NextOff: nextOff}

	f := setup(false)
	unlink, err := linkGoModule(f, g, 0, md)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.writes) != 2 || f.writes[0].addr != first+nextOff || f.writes[1].addr != lmp {
		t.Fatalf("writes %+v: want next of the last module, then lastmoduledatap", f.writes)
	}
	if word(f, first+nextOff) != md || word(f, lmp) != md {
		t.Fatal("module not linked")
	}
	if err := unlink(); err != nil {
		t.Fatal(err)
	}
	if word(f, first+nextOff) != 0 || word(f, lmp) != first {
		t.Fatal("unlink did not restore the chain")
	}

	f = setup(true)
	if _, err := linkGoModule(f, g, 0, md); err != nil {
		t.Fatal(err)
	}
	if word(f, stray+nextOff) != md || word(f, first+nextOff) != stray || word(f, lmp) != md {
		t.Fatal("not appended after the chain's true end")
	}

	f = setup(false)
	f.failAt[lmp] = errors.New("injected")
	if _, err := linkGoModule(f, g, 0, md); err == nil {
		t.Fatal("a failing store was not reported")
	}
	if word(f, first+nextOff) != 0 || word(f, lmp) != first {
		t.Fatal("a failed link left the chain changed")
	}
}

// TestGoPatchFits: a patch file (no Go module record) is refused for a Go
// program, and a Go patch for anything else.
func TestGoPatchFits(t *testing.T) {
	if err := goPatchFits(true, &Patch{}); !errors.Is(err, ErrGoNeedsNew) {
		t.Errorf("patch file for a Go program: %v", err)
	}
	if err := goPatchFits(false, &Patch{Go: &goInfo{}}); err == nil {
		t.Error("Go patch for a C program accepted")
	}
	if goPatchFits(true, &Patch{Go: &goInfo{}}) != nil || goPatchFits(false, &Patch{}) != nil {
		t.Error("a fitting patch refused")
	}
}
