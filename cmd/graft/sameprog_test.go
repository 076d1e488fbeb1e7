package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// graft diff with another program as NEW says refused, with the figures,
// and writes no patch.
func TestDiffAnotherProgramRefused(t *testing.T) {
	patch := filepath.Join(t.TempDir(), "p")
	out, errOut, code := runGraft("diff", testutil.Build(t, "sshd-v1"), testutil.Build(t, "ftpd-v2"), "-o", patch)
	require.NotEqual(t, 0, code)
	require.Contains(t, out, "verdict: refused")
	require.Contains(t, out, "NEW is not a build of OLD's program: 11 of OLD's 14 functions are not in NEW (78%)")
	require.Contains(t, errOut, "no patch written")
	require.NoFileExists(t, patch)
}
