package safepoint

import (
	"testing"

	"graft/internal/symtab"
	"graft/internal/testutil"
	"graft/tracer"
)

// TestUnwindPLT unwinds offline, on a fake stack, from PCs inside a PLT
// stub of a real gcc-built binary: before the stub's push the return
// address is at rsp, after it at rsp+8. The .eh_frame describes that with
// a CFA expression on rip.
func TestUnwindPLT(t *testing.T) {
	path := testutil.Build(t, "sp_stacks")
	const bias = 0x555555554000
	mods := []tracer.Module{{
		Path: path, Base: bias, Bias: bias, Main: true,
		Mappings: []tracer.Mapping{{Start: bias, End: bias + 0x6000, Perms: "r-xp", Path: path}},
	}}
	u, err := NewUnwinder(mods)
	if err != nil {
		t.Fatal(err)
	}
	if p := u.Problems(); len(p) > 0 {
		t.Fatal(p)
	}
	st, err := symtab.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mainFn := st.Find("main")
	if len(mainFn) != 1 {
		t.Fatal("no main")
	}
	ret := bias + mainFn[0].Addr + 9 // a return address inside main
	plt := findPLT(t, path)
	const rsp = 0x7ffd0000
	for _, c := range []struct {
		off     uint64 // from the stub's start
		cfa, ra uint64
	}{
		{0, rsp + 8, rsp},       // jmp *GOT: nothing pushed yet
		{6, rsp + 8, rsp},       // push $n is next
		{11, rsp + 16, rsp + 8}, // jmp to PLT0, index pushed
	} {
		mem := fakeMem{c.ra: ret}
		regs := tracer.Regs{Rip: bias + plt + c.off, Rsp: rsp}
		frames, _ := u.Unwind(regs, mem)
		if len(frames) < 2 {
			t.Fatalf("stub+%d: %s", c.off, FormatStack(frames))
		}
		if frames[0].CFA != c.cfa || frames[1].PC != ret || frames[1].Function != "main" {
			t.Errorf("stub+%d: cfa %#x (want %#x), caller %#x %s (want %#x main)",
				c.off, frames[0].CFA, c.cfa, frames[1].PC, frames[1].Function, ret)
		}
	}
}

// findPLT returns the link-time address of the second .plt entry (the
// first real stub).
func findPLT(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := openELF(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".plt")
	if s == nil || s.Size < 32 {
		t.Fatal("no .plt with a stub")
	}
	return s.Addr + 16
}
