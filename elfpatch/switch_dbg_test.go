package elfpatch

import (
	"os"
	"testing"
)

func TestSwitchDebug(t *testing.T) {
	o, n := os.Getenv("SW_OLD"), os.Getenv("SW_NEW")
	if o == "" {
		t.Skip("debug")
	}
	ob, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := Open(n)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Diff(ob, nb)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Changed {
		if f.Resume == nil {
			continue
		}
		for _, p := range f.Resume.Switch {
			t.Logf("%s %#x: %s", f.Name, p.From, describeSwitch(&p))
		}
	}
}

func TestSwitchDebugMoves(t *testing.T) {
	o, n := os.Getenv("SW_OLD"), os.Getenv("SW_NEW")
	if o == "" {
		t.Skip("debug")
	}
	ob, _ := Open(o)
	nb, _ := Open(n)
	r, err := Diff(ob, nb)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Changed {
		if f.Resume == nil {
			continue
		}
		for _, p := range f.Resume.Switch {
			if p.Why == "" && (p.From == 0x25c5 || p.From == 0x317f || p.From == 0x305f) {
				t.Logf("%s %#x -> %#x", f.Name, p.From, p.To)
				for _, m := range p.Moves {
					t.Logf("   %+v <- %+v (%d) %s", m.Dst, m.Src, m.Size, m.What)
				}
				t.Logf("   objs %+v", p.Objs)
			}
		}
	}
	vs, _ := nb.FrameVarsAt(0x2280, 0x25ad)
	for _, v := range vs {
		t.Logf("new var %s", v)
	}
}
