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
			t.Logf("%s: %s", f.Name, describeSwitch(&p))
		}
	}
}
