package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// A production NEW is the debug build run through `strip -g`. Applied with
// --new against a process running the debug OLD, the patch is the matched
// pair's (cmd_login only), and the diff's warning that types were not
// compared reaches the operator, in text and in JSON. Without
// --allow-unchecked-types it is refused, the process untouched: a changed
// struct layout would go unnoticed.
func TestApplyNewStrippedWarns(t *testing.T) {
	requireRoot(t)
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	target, port := testutil.StartServer(t, "sshd-v1", "-u", users)
	defer testutil.RequireReleased(t, target.Pid)
	pid := strconv.Itoa(target.Pid)

	newBin := filepath.Join(t.TempDir(), "sshd-v2-stripped")
	b, err := exec.Command("cp", testutil.Build(t, "sshd-v2"), newBin).CombinedOutput()
	require.NoError(t, err, "%s", b)
	b, err = exec.Command("strip", "-g", newBin).CombinedOutput()
	require.NoError(t, err, "%s", b)

	const warning = "no usable DWARF in one of the builds: types, signatures and globals' types were not compared, so a changed struct layout or signature goes unnoticed (the verdict cannot refuse for it); diff against the build with debug info to check them"
	_, errOut, code := runGraft("apply", "-p", pid, "--new", newBin)
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "could not compare type layouts")
	require.Contains(t, errOut, "--allow-unchecked-types")
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"), "refused: the process runs v1 still")

	out, errOut, code := runGraft("apply", "-p", pid, "--dry-run", "--allow-unchecked-types", "--new", newBin)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "1 function(s): cmd_login")
	require.Contains(t, out, "warning: "+warning)

	out, errOut, code = runGraft("apply", "-p", pid, "--json", "--allow-unchecked-types", "--new", newBin)
	require.Equal(t, 0, code, errOut)
	var res struct {
		Functions []string `json:"functions"`
		Warnings  []string `json:"warnings"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Equal(t, []string{"cmd_login"}, res.Functions)
	require.Equal(t, []string{warning}, res.Warnings)
	// The fix is live: a prefix of the password no longer logs in.
	require.Equal(t, "FAIL login incorrect", sshdLogin(t, port, "alice", "wonder"))
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonderland"))

	_, errOut, code = runGraft("revert", "-p", pid)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"))
}
