package graft

import (
	"debug/elf"
	"testing"

	"graft/internal/testutil"
)

func TestPlanGoRefsHandleCount(t *testing.T) {
	oldf, err := elf.Open(testutil.Build(t, "goserver-v2"))
	if err != nil {
		t.Fatal(err)
	}
	defer oldf.Close()
	newf, err := elf.Open(testutil.Build(t, "goserver-v3-pie"))
	if err != nil {
		t.Fatal(err)
	}
	defer newf.Close()
	fns, err := planGoRefs(oldf, newf, []string{"main.handleCount"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range fns[0].Refs {
		t.Logf("%#x keep=%v old=%#x %s", r.Off, r.Keep, r.Old, r.Symbol)
	}
}
