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

// A pointer in data holding exactly the end of a transferred object, where
// OLD's next object starts, may mean either: the apply stops instead of
// guessing. Without a next object there, it is the end pointer.
func TestEndCheckedRefusesAmbiguousEnd(t *testing.T) {
	tr := &elfpatch.Transfer{Name: "sessions", OldSize: 0x100, NewSize: 0x200, NextAtEnd: "nusers",
		Ops: []elfpatch.XferOp{{Op: elfpatch.OpCopy, Path: "the object", SrcSize: 0x100, DstSize: 0x100}}}
	spans := []xferSpan{{t: tr, old: 0x1000, new: 0x9000}}
	r := endChecked(spans, spans[0].relocate)
	nv, ok, err := r(0x1010, 0)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint64(0x9010), nv)
	_, _, err = r(0x1100, 4)
	require.ErrorContains(t, err, "both the end of sessions and the start of nusers")
	nv, ok, err = r(0x2000, 4)
	require.NoError(t, err)
	require.False(t, ok, "outside: left alone")
	require.Equal(t, uint64(0), nv)
	tr.NextAtEnd = ""
	nv, ok, err = r(0x1100, 4)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint64(0x9200), nv, "the end of the new object")
}
