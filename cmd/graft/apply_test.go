package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// requireRoot is in stacks_test.go.

// sshdLogin opens a connection to sshd and returns the reply to LOGIN.
func sshdLogin(t *testing.T, port int, user, pass string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	_, err = r.ReadString('\n')
	require.NoError(t, err)
	fmt.Fprintf(c, "LOGIN %s %s\n", user, pass)
	l, err := r.ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(l)
}

// The commands end to end: diff -o, apply FILE --json, status (text and
// JSON), revert --json, on a live sshd.
func TestApplyStatusRevertCommands(t *testing.T) {
	requireRoot(t)
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	target, port := testutil.StartServer(t, "sshd-v1", "-u", users)
	defer testutil.RequireReleased(t, target.Pid)
	pid := strconv.Itoa(target.Pid)
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"))

	patch := filepath.Join(t.TempDir(), "v1-v2.graft")
	_, errOut, code := runGraft("diff", testutil.Build(t, "sshd-v1"), testutil.Build(t, "sshd-v2"), "-o", patch)
	require.Equal(t, 0, code, errOut)

	// Dry run: checks, writes nothing.
	out, errOut, code := runGraft("apply", "-p", pid, "--dry-run", patch)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "dry run")
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"))

	// FILE before the flags works too.
	out, errOut, code = runGraft("apply", patch, "-p", pid, "--json", "--timeout", "3s")
	require.Equal(t, 0, code, errOut)
	var ap struct {
		PatchID   string   `json:"patch_id"`
		Functions []string `json:"functions"`
		PauseUS   *int64   `json:"pause_us"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ap), out)
	require.NotEmpty(t, ap.PatchID)
	require.Equal(t, []string{"cmd_login"}, ap.Functions)
	require.NotNil(t, ap.PauseUS)
	require.Greater(t, *ap.PauseUS, int64(0))
	require.Equal(t, "FAIL login incorrect", sshdLogin(t, port, "alice", "wonder"))
	testutil.RequireReleased(t, target.Pid)

	out, errOut, code = runGraft("status", "-p", pid, "--json")
	require.Equal(t, 0, code, errOut)
	var st struct {
		Patches []struct {
			ID        string   `json:"patch_id"`
			Functions []string `json:"functions"`
			Intact    bool     `json:"intact"`
		} `json:"patches"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Len(t, st.Patches, 1)
	require.Equal(t, ap.PatchID, st.Patches[0].ID)
	require.Equal(t, []string{"cmd_login"}, st.Patches[0].Functions)
	require.True(t, st.Patches[0].Intact)
	out, _, code = runGraft("status", "-p", pid)
	require.Equal(t, 0, code)
	require.Contains(t, out, ap.PatchID)
	require.Contains(t, out, "cmd_login")

	// The same patch again is refused as already in effect (the process
	// runs v2's code now; the next patch must start from v2), and the
	// message says which patch brought that build in.
	_, errOut, code = runGraft("apply", "-p", pid, patch)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "patch already in effect")
	require.Contains(t, errOut, "from patch "+ap.PatchID)

	out, errOut, code = runGraft("revert", "-p", pid, "--id", ap.PatchID, "--json")
	require.Equal(t, 0, code, errOut)
	var rv struct {
		Reverted []string `json:"patch_ids"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rv), out)
	require.Equal(t, []string{ap.PatchID}, rv.Reverted)
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"))

	out, _, code = runGraft("status", "-p", pid)
	require.Equal(t, 0, code)
	require.Contains(t, out, "no patches")
}

func TestApplyUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"apply", "x.graft"},                          // no -p
		{"apply", "-p", "1"},                          // no patch
		{"apply", "-p", "1", "--new", "b", "x.graft"}, // both
		{"apply", "-p", "1", "a.graft", "b.graft"},    // two files
		{"status", "-p", "0"},                         // not a PID
		{"apply", "-p", "1", "--timeout", "5", "x"},   // no unit
		{"apply", "-p", "1", "--timeout", "0s", "x"},
		{"apply", "-p", "1", "--timeout", "-1s", "x"},
		{"revert", "-p", "1", "--timeout", "soon"},
		{"apply", "-p", "one", "x"},
		{"nosuchcommand"},
		{"apply", "-p", "1", "/proc/self/exe"},      // a program given as a patch
		{"revert", "-p", "1", "--id", "x", "--all"}, // exclusive
		{"revert", "-p", "1", "extra"},              // positional
	} {
		_, errOut, code := runGraft(args...)
		require.Equal(t, 2, code, "%v: %s", args, errOut)
	}
}

// SIGINT to graft while apply waits for a busy function (ftpd's accept loop
// never leaves its stack) ends the wait and leaves the target as it was.
func TestApplyInterruptedBySIGINT(t *testing.T) {
	requireRoot(t)
	target, port := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	defer testutil.RequireReleased(t, target.Pid)
	maps := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", target.Pid))
		require.NoError(t, err)
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			// graft's mappings are its memfds ("/memfd:graft-..."):
			// the bare word would match a checkout path holding it.
			if strings.Contains(l, "/memfd:graft") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	newBin := testutil.Build(t, "ftpd-v8")
	// Interrupt once the new code is mapped into the target (so there is
	// something to take out again), while graft waits for accept_loop.
	done := make(chan struct{})
	sent := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for maps() == "" && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		select {
		case <-done: // graft already returned: a SIGINT now would kill the test
			sent <- false
		case <-time.After(100 * time.Millisecond):
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			sent <- true
		}
	}()
	start := time.Now()
	_, errOut, code := runGraft("apply", "-p", strconv.Itoa(target.Pid), "--new", newBin, "--timeout", "60s")
	close(done)
	require.True(t, <-sent, "graft returned before it was interrupted: %s", errOut)
	require.Equal(t, 130, code, "exit status 128+SIGINT: %s", errOut)
	require.Contains(t, errOut, "interrupted by SIGINT", errOut)
	require.NotContains(t, errOut, "context canceled", errOut)
	require.Less(t, time.Since(start), 30*time.Second)
	require.Empty(t, maps(), "nothing of graft left in the target")
	testutil.RequireReleased(t, target.Pid)
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	c.Close()
}

// A graft killed with SIGKILL after mapping its new code but before its
// pause: the target runs on, untraced; status names the orphaned image and
// revert --all takes it out.
func TestKilledGraftLeavesOrphanThatRevertRemoves(t *testing.T) {
	requireRoot(t)
	bin := filepath.Join(t.TempDir(), "graft")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	target, port := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	defer testutil.RequireReleased(t, target.Pid)
	graftLines := func() []string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", target.Pid))
		require.NoError(t, err)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "/memfd:graft-") {
				out = append(out, l)
			}
		}
		return out
	}
	g := exec.Command(bin, "apply", "-p", strconv.Itoa(target.Pid), "--new", testutil.Build(t, "ftpd-v8"), "--timeout", "60s")
	require.NoError(t, g.Start())
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		image := false
		for _, l := range graftLines() {
			image = image || !strings.Contains(l, "graft-state")
		}
		if image {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // into the wait for accept_loop
	require.NoError(t, g.Process.Kill())
	g.Wait()
	testutil.RequireReleased(t, target.Pid)

	out, errOut, code := runGraft("status", "-p", strconv.Itoa(target.Pid), "--json")
	require.Equal(t, 0, code, errOut)
	var st struct {
		Patches []json.RawMessage `json:"patches"`
		Orphans []struct{ Start, End string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Empty(t, st.Patches)
	require.Len(t, st.Orphans, 1, out)

	_, errOut, code = runGraft("revert", "-p", strconv.Itoa(target.Pid), "--all")
	require.Equal(t, 0, code, errOut)
	require.Empty(t, graftLines())
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	c.Close()
}
