package symtab

import (
	"debug/elf"
	"testing"

	"graft/internal/testutil"
)

// TestLookupAgainstELF checks Open, Lookup and Find on a real build
// against debug/elf's own reading of the same symbol table.
func TestLookupAgainstELF(t *testing.T) {
	path := testutil.Build(t, "spin")
	tab, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var busy, main elf.Symbol
	for _, s := range syms {
		switch s.Name {
		case "busy":
			busy = s
		case "main":
			main = s
		}
	}
	if busy.Size == 0 || main.Size == 0 {
		t.Fatalf("spin lacks sized busy/main symbols: %+v %+v", busy, main)
	}

	fs := tab.Find("busy")
	if len(fs) != 1 || fs[0].Addr != busy.Value || fs[0].Size != busy.Size || !fs[0].Local {
		t.Fatalf("Find(busy) = %+v, want one static function at %#x+%d", fs, busy.Value, busy.Size)
	}
	if fs := tab.Find("main"); len(fs) != 1 || fs[0].Local {
		t.Fatalf("Find(main) = %+v, want one global function", fs)
	}
	for _, c := range []struct {
		addr uint64
		want string
	}{
		{busy.Value, "busy"},
		{busy.Value + busy.Size/2, "busy"},
		{busy.Value + busy.Size - 1, "busy"},
		{main.Value, "main"},
		{main.Value + main.Size - 1, "main"},
	} {
		got, ok := tab.Lookup(c.addr)
		if !ok || got.Name != c.want {
			t.Errorf("Lookup(%#x) = %+v, %v; want %s", c.addr, got, ok, c.want)
		}
	}
	// Past the end of every function: nothing, not the last one.
	var end uint64
	for _, fn := range tab.Funcs() {
		end = max(end, fn.Addr+fn.Size)
	}
	if got, ok := tab.Lookup(end + 0x100000); ok {
		t.Errorf("Lookup far past the last function = %+v", got)
	}
	if got, ok := tab.Lookup(0); ok {
		t.Errorf("Lookup(0) = %+v", got)
	}
	// Sorted by address, which Lookup's search relies on.
	fns := tab.Funcs()
	if len(fns) < 3 {
		t.Fatalf("only %d functions read", len(fns))
	}
	for i := 1; i < len(fns); i++ {
		if fns[i].Addr < fns[i-1].Addr {
			t.Fatalf("Funcs not sorted at %d: %#x after %#x", i, fns[i].Addr, fns[i-1].Addr)
		}
	}
}

// TestOpenNotELF: a file that is not ELF is an error, not a panic.
func TestOpenNotELF(t *testing.T) {
	if _, err := Open("symtab.go"); err == nil {
		t.Fatal("Open of a Go source file succeeded")
	}
}
