package elfpatch

import (
	"encoding/json"
	"testing"

	"graft/internal/testutil"
)

func diffBuilds(t *testing.T, old, new string) *Report {
	t.Helper()
	ob, err := Open(testutil.Build(t, old))
	if err != nil {
		t.Fatal(err)
	}
	nb, err := Open(testutil.Build(t, new))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Diff(ob, nb)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTransferDump(t *testing.T) {
	r := diffBuilds(t, "ftpd-v6", "ftpd-v7")
	b, _ := json.MarshalIndent(r.Transfers, "", " ")
	t.Logf("%s", b)
	b, _ = json.MarshalIndent(r.Reasons, "", " ")
	t.Logf("%s", b)
	t.Logf("%v", r.PtrSites)
}
