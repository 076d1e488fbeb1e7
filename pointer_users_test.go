package graft

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
)

// soleHomePatch redirects f and converts an 8-byte global in place whose
// type f and g reach through pointers (elfpatch/solehome.go).
func soleHomePatch() *Patch {
	pt := fakePatch("p1", "b1", "b2", map[string]uint64{"f": 0x1000})
	pt.Transfers = []elfpatch.Transfer{{
		Name: "tbl", Type: "struct t", OldAddr: 0x3000, OldSize: 8, NewAddr: 0x3000, NewSize: 8, InPlace: true,
		Ops:          []elfpatch.XferOp{{Op: elfpatch.OpCopy, Path: "the object", SrcSize: 8, DstSize: 8}},
		PointerUsers: []string{"f", "g"},
	}}
	return pt
}

// A pointer user the patch does not replace (g) counts for the safety
// check like the replaced f: a thread in it may hold a pointer into the
// old object. f is checked once, as the function the patch redirects.
func TestPointerUsersJoinSafetyCheck(t *testing.T) {
	e := stackEnv()
	_, err := e.sys.apply(context.Background(), 1, soleHomePatch(), ApplyOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, e.ck.specs)
	spec := e.ck.specs[0]
	require.Contains(t, spec.Functions, namedRange{"g", Range{e.exeBase + 0x1200, e.exeBase + 0x1300}})
	n := 0
	for _, r := range spec.Functions {
		if r.Name == "f" {
			n++
		}
	}
	require.Equal(t, 1, n, "f is in the check once: %+v", spec.Functions)
}

// --allow-active for a pointer user is refused before anything is done.
func TestPointerUserAllowActiveRefused(t *testing.T) {
	e := stackEnv()
	before := e.text()
	_, err := e.sys.apply(context.Background(), 1, soleHomePatch(), ApplyOptions{AllowActive: []string{"f"}})
	require.ErrorContains(t, err, "--allow-active f: it reaches tbl's objects through pointers")
	require.Equal(t, before, e.text())
	require.Empty(t, e.ck.specs)
}
