package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// The same patch applied and reverted through the commands on a running
// sshd v5 with a session open: apply's text names the frames switched to
// the new code, --json lists them; revert says which went back.
func TestSwitchedFramesCommands(t *testing.T) {
	requireRoot(t)
	old, new := testutil.Build(t, "sshd-v5"), testutil.Build(t, "sshd-v6")
	dir := t.TempDir()
	patch := filepath.Join(dir, "v5-v6.patch")
	desc := filepath.Join(dir, "rules.state.yaml")
	require.NoError(t, os.WriteFile(desc, []byte("globals:\n  - name: sessions\n    rules:\n      sole_home_of: [\"struct session\"]\n"), 0o644))
	out, errOut, code := runGraft("diff", "-o", patch, "--state", desc, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "frame switches:")
	assert.Regexp(t, `session_thread +\d+ of \d+ return addresses`, out)

	users := filepath.Join(dir, "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	target, port := testutil.StartServer(t, "sshd-v5", "-u", users)
	defer testutil.RequireReleased(t, target.Pid)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(s string) string {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if s != "" {
			fmt.Fprintf(c, "%s\n", s)
		}
		l, err := r.ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSpace(l)
	}
	say("") // banner
	require.Equal(t, "OK welcome alice", say("LOGIN alice wonderland"))
	pid := strconv.Itoa(target.Pid)

	// A dry run straight from NEW with the same state description.
	out, errOut, code = runGraft("apply", "-p", pid, "--dry-run", "--new", new, "--state", desc)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "frames that would be switched to the new code")
	_, errOut, code = runGraft("apply", "-p", pid, "--dry-run", "--new", new)
	require.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "sole_home_of", "without the state description the diff refuses, naming the rule")
	_, errOut, code = runGraft("apply", "-p", pid, "--state", desc, patch)
	require.Equal(t, 2, code)
	assert.Contains(t, errOut, "--state goes with --new")
	out, errOut, code = runGraft("apply", "-p", pid, "--json", patch)
	require.Equal(t, 0, code, errOut)
	var res struct {
		Switched []struct {
			Tid      int    `json:"tid"`
			Function string `json:"function"`
			From     string `json:"from"`
			To       string `json:"to"`
		} `json:"switched"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	fns := map[string]int{}
	for _, s := range res.Switched {
		fns[s.Function]++
		assert.True(t, strings.HasPrefix(s.From, "0x") && strings.HasPrefix(s.To, "0x"), "%+v", s)
	}
	assert.Equal(t, 1, fns["main"])
	assert.Equal(t, 1, fns["session_thread"])
	require.Equal(t, "OK alice commands=1", say("WHOAMI"))

	out, errOut, code = runGraft("revert", "-p", pid)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "frames switched to the old code")
	require.Equal(t, "OK alice", say("WHOAMI"))
}
