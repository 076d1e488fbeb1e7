package graft

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
)

// --allow-active takes what the diff prints: a clone's base name
// ("main_noinetd" for main_noinetd.constprop.0, shown as "clone of
// main_noinetd"), the clone's own name, or the name without its number;
// a name matching no function of the patch is refused, listing the names
// it has.
func TestResolveAllow(t *testing.T) {
	pt := &Patch{
		ID: "p1",
		Image: &elfpatch.Image{Redirects: []elfpatch.Redirect{
			{Name: "main_noinetd.constprop.0"}, {Name: "accept_conn"}, {Name: "main"}, {Name: "f2"},
		}},
		Origins: map[string]string{"main_noinetd.constprop.0": "main_noinetd"},
	}
	for _, n := range []string{"main_noinetd", "main_noinetd.constprop.0", "main_noinetd.constprop"} {
		got, err := resolveAllow(pt, []string{n})
		require.NoError(t, err, n)
		require.Equal(t, []string{"main_noinetd.constprop.0"}, got, n)
	}
	got, err := resolveAllow(pt, []string{"main", "accept_conn", "main"})
	require.NoError(t, err)
	require.Equal(t, []string{"main", "accept_conn"}, got, "main matches main only, once")
	_, err = resolveAllow(pt, []string{"accept_conn", "handle"})
	require.True(t, errors.Is(err, ErrUnknownAllow), "%v", err)
	require.Contains(t, err.Error(), `"handle"`)
	require.Contains(t, err.Error(), "accept_conn, f2, main, main_noinetd")
	_, err = resolveAllow(pt, []string{"f"})
	require.ErrorIs(t, err, ErrUnknownAllow, "f does not name f2")
	require.Equal(t, "main_noinetd", operatorName(pt, "main_noinetd.constprop.0"))
	require.Equal(t, "main", operatorName(pt, "main"))
}
