package goruntime

import (
	"debug/elf"
	"testing"

	"graft/internal/testutil"
)

// TestReadLayoutTwoReleases reads the runtime layouts of goserver built by
// Go 1.26 and by Go 1.25 from their own DWARF: every member graft uses is
// found, the offsets are plausible, and where the two runtimes differ is
// logged (it is why nothing is hard-coded).
func TestReadLayoutTwoReleases(t *testing.T) {
	var ls []*Layout
	for _, target := range []string{"goserver-v2", "goserver-v2-go125"} {
		f, err := elf.Open(testutil.Build(t, target))
		if err != nil {
			t.Fatal(err)
		}
		l, err := ReadLayout(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		g := l.G
		if g.StackHi != g.StackLo+8 || g.SchedPC != g.SchedSP+8 || g.Size < g.Goid || l.ModuleSize < l.Module["next"]+8 {
			t.Errorf("%s: implausible layout %+v", target, l.G)
		}
		if l.Status["running"] != 2 || l.Status["scan"] != 0x1000 {
			t.Errorf("%s: status constants %v", target, l.Status)
		}
		ls = append(ls, l)
	}
	a, b := ls[0], ls[1]
	if a.G != b.G {
		t.Logf("runtime.g differs: 1.26 %+v, 1.25 %+v", a.G, b.G)
	}
	if a.ModuleSize != b.ModuleSize {
		t.Logf("runtime.moduledata: %d bytes in 1.26, %d in 1.25", a.ModuleSize, b.ModuleSize)
	}
	for n, off := range a.Module {
		if o2, ok := b.Module[n]; !ok || o2 != off {
			t.Logf("moduledata.%s: %#x in 1.26, %#x (present %v) in 1.25", n, off, o2, ok)
		}
	}
	if _, ok := a.Status["deadextra"]; ok {
		if _, ok := b.Status["deadextra"]; !ok {
			t.Logf("_Gdeadextra: new in 1.26")
		}
	}
}
