package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

	target, _, say := sshdV5LoggedIn(t, dir)
	defer testutil.RequireReleased(t, target.Pid)
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

// graft apply of sshd v5 -> v6 (a moved table, frames switched) killed at
// random points, SIGKILL included: the target lives on, is never left
// traced, every round ends either patched or untouched or with work that
// status shows and revert --all takes out; the open session keeps its
// slot and user throughout, and the server answers as v5 afterwards.
func TestSwitchedApplyKilledAtRandomPoints(t *testing.T) {
	requireRoot(t)
	bin := graftBinary(t)
	old, new := testutil.Build(t, "sshd-v5"), testutil.Build(t, "sshd-v6")
	dir := t.TempDir()
	patch := filepath.Join(dir, "v5-v6.patch")
	desc := filepath.Join(dir, "rules.state.yaml")
	require.NoError(t, os.WriteFile(desc, []byte("globals:\n  - name: sessions\n    rules:\n      sole_home_of: [\"struct session\"]\n"), 0o644))
	_, errOut, code := runGraft("diff", "-o", patch, "--state", desc, old, new)
	require.Equal(t, 0, code, errOut)

	target, port, say := sshdV5LoggedIn(t, dir)
	defer testutil.RequireReleased(t, target.Pid)
	text := textOf(t, target.Pid)
	pid := strconv.Itoa(target.Pid)

	outcomes := map[string]int{}
	for i := range 24 {
		sig := []syscall.Signal{syscall.SIGKILL, syscall.SIGINT, syscall.SIGTERM}[i%3]
		g := exec.Command(bin, "apply", "-p", pid, patch)
		var gErr bytes.Buffer
		g.Stderr = &gErr
		require.NoError(t, g.Start())
		exited := make(chan error, 1)
		go func() { exited <- g.Wait() }()
		var werr error
		done := false
		if sig == syscall.SIGKILL {
			// Into the pause: once the image and the record are mapped,
			// a little later.
		poll:
			for !loadedBoth(t, target.Pid) {
				select {
				case werr = <-exited:
					done = true
					break poll
				default:
					time.Sleep(50 * time.Microsecond)
				}
			}
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		} else {
			time.Sleep(time.Duration(rand.IntN(60_000)) * time.Microsecond)
		}
		if !done {
			select {
			case werr = <-exited:
			default:
				g.Process.Signal(sig)
				werr = <-exited
			}
		}
		require.False(t, target.Exited(), "round %d (%v): the target died", i, sig)
		testutil.RequireReleased(t, target.Pid)
		out, errOut, code := runGraft("status", "-p", pid, "--json")
		require.Equal(t, 0, code, "round %d (%v): status: %s %s", i, sig, out, errOut)
		st := statusJSON(t, target.Pid)
		require.Zero(t, st.TracedBy)
		who := say("WHOAMI")
		var outcome string
		switch {
		case len(st.Patches) == 1 && st.Patches[0].Intact:
			outcome = "patched"
			require.Equal(t, "OK alice commands=1", who, "round %d: the open session goes on in the new code", i)
		case len(st.Patches) == 0 && len(st.Orphans) == 0 && bytes.Equal(text, textOf(t, target.Pid)):
			outcome = "untouched"
			require.Equal(t, "OK alice", who, "round %d", i)
		default:
			require.Equal(t, syscall.SIGKILL, sig, "round %d: %v left work behind: %+v (graft: %v, %s)", i, sig, st, werr, gErr.String())
			outcome = "left for revert --all"
		}
		outcomes[sig.String()+": "+outcome]++
		if len(st.Patches) > 0 || len(st.Orphans) > 0 {
			_, errOut, code := runGraft("revert", "-p", pid, "--all")
			require.Equal(t, 0, code, "round %d: %s", i, errOut)
		}
		require.Equal(t, text, textOf(t, target.Pid), "round %d: original text back", i)
		require.Equal(t, "OK alice", say("WHOAMI"), "round %d", i)
		require.Equal(t, "OK 1 1:alice", say("SESSIONS"), "round %d: the session kept its slot", i)
		require.Equal(t, "OK a b c", echo(t, port), "round %d: new connections served", i)
		// The switched-back frames pass, and the pending image goes.
		for try := 0; len(graftMaps(t, target.Pid)) > 0 && try < 20; try++ {
			time.Sleep(100 * time.Millisecond)
			runGraft("revert", "-p", pid, "--all")
		}
		require.Empty(t, graftMaps(t, target.Pid), "round %d", i)
	}
	t.Logf("outcomes: %v", outcomes)
}

// loadedBoth: the apply in flight has mapped its image and the record.
func loadedBoth(t *testing.T, pid int) bool {
	image, record := false, false
	for _, l := range graftMaps(t, pid) {
		if strings.Contains(l, "graft-state") {
			record = true
		} else {
			image = true
		}
	}
	return image && record
}

// sshdV5LoggedIn starts sshd v5 and opens a session logged in as alice;
// say sends a line on it ("" sends nothing) and returns the reply.
func sshdV5LoggedIn(t *testing.T, dir string) (*testutil.Proc, int, func(string) string) {
	t.Helper()
	users := filepath.Join(dir, "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	target, port := testutil.StartServer(t, "sshd-v5", "-u", users)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
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
	return target, port, say
}
