package playbook

import (
	"encoding/hex"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
)

func elfpatchOpen(path string) (*elfpatch.Binary, error) { return elfpatch.Open(path) }

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

// writePatch writes the patch from old to new, as graft diff -o does.
func writePatch(t *testing.T, old, new, out string) {
	t.Helper()
	o, err := elfpatch.Open(old)
	require.NoError(t, err)
	n, err := elfpatch.Open(new)
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(o, n)
	require.NoError(t, err)
	f, err := os.Create(out)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}
