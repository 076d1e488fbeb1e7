package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
)

// sshd v5 -> v6 through the commands: diff -o refuses (struct session is
// reached through pointers) but writes the state description, whose TODO
// on sessions names the rule; with the rule filled in, diff --state writes
// the patch, the rule kept in the new description and the pointer users in
// the patch.
func TestSoleHomeCommands(t *testing.T) {
	old, new := testutil.Build(t, "sshd-v5"), testutil.Build(t, "sshd-v6")
	dir := t.TempDir()
	patch := filepath.Join(dir, "v5-v6.patch")
	desc := patch + ".state.yaml"

	out, errOut, code := runGraft("diff", "-o", patch, old, new)
	require.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "no patch written")
	assert.Contains(t, errOut, `sole_home_of: ["struct session"]`)
	assert.Contains(t, out, "state description written to "+desc+": 1 TODO(s)")
	_, err := os.Stat(patch)
	require.True(t, os.IsNotExist(err), "no patch file: %v", err)
	text, err := os.ReadFile(desc)
	require.NoError(t, err)
	require.True(t, strings.Contains(string(text), "declare it under rules: `sole_home_of: [\"struct session\"]`"), "the TODO")

	filled := strings.Replace(string(text), "    rules: {}\n", "    rules:\n      sole_home_of: [\"struct session\"]\n", 1)
	require.NotEqual(t, string(text), filled)
	require.NoError(t, os.WriteFile(desc, []byte(filled), 0o644))
	out, errOut, code = runGraft("diff", "-o", patch, "--state", desc, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "(nothing to resolve)")
	assert.Contains(t, out, "the operator declared that every struct session lives in sessions")
	assert.Contains(t, out, "reached through pointers by (they count in apply's safety check): cmd_echo, cmd_login")
	text, err = os.ReadFile(desc)
	require.NoError(t, err)
	assert.True(t, strings.Contains(string(text), "sole_home_of:\n        - struct session"), "the rule is kept")

	f, err := os.Open(patch)
	require.NoError(t, err)
	defer f.Close()
	p, err := elfpatch.ReadPatch(f)
	require.NoError(t, err)
	require.Len(t, p.Report.Transfers, 1)
	assert.Contains(t, p.Report.Transfers[0].PointerUsers, "cmd_login")
	assert.Empty(t, p.Report.Transfers[0].Todo)
}
