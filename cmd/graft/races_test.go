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

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"graft/internal/testutil"
	"graft/tracer"
)

// QA of the graft binary as an operator runs it: two at once, killed or
// interrupted at random points. The target is never left stopped, traced
// or half patched.

// graftBinary builds cmd/graft into a temporary directory.
func graftBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "graft")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// textOf returns the bytes of pid's executable mapping of its program.
func textOf(t *testing.T, pid int) []byte {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	require.NoError(t, err)
	maps, err := tracer.ReadMaps(pid)
	require.NoError(t, err)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	require.NoError(t, err)
	defer mem.Close()
	var out []byte
	for _, m := range maps {
		if m.Path == exe && strings.Contains(m.Perms, "x") {
			b := make([]byte, m.End-m.Start)
			_, err := mem.ReadAt(b, int64(m.Start))
			require.NoError(t, err)
			out = append(out, b...)
		}
	}
	require.NotEmpty(t, out)
	return out
}

func graftMaps(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "/memfd:graft") {
			out = append(out, l)
		}
	}
	return out
}

type qaStatus struct {
	Patches []struct {
		ID     string `json:"patch_id"`
		Intact bool   `json:"intact"`
	} `json:"patches"`
	Orphans  []json.RawMessage `json:"orphans"`
	TracedBy int               `json:"traced_by"`
	Tracer   string            `json:"tracer"`
}

func statusJSON(t *testing.T, pid int) qaStatus {
	t.Helper()
	out, errOut, code := runGraft("status", "-p", strconv.Itoa(pid), "--json")
	require.Equal(t, 0, code, errOut)
	var st qaStatus
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	return st
}

// echo logs in to sshd on a new connection and returns ECHO a b c's reply.
func echo(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	_, err = r.ReadString('\n')
	require.NoError(t, err)
	fmt.Fprintf(c, "LOGIN alice wonderland\nECHO a b c\n")
	l, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "OK welcome alice\n", l)
	l, err = r.ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(l)
}

func sshdTarget(t *testing.T) (*testutil.Proc, int) {
	t.Helper()
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	return testutil.StartServer(t, "sshd-v2", "-u", users)
}

// One graft holds the process (waiting for a busy accept loop); a second
// apply is refused naming the first, and status, which does not attach,
// answers and says the process is traced (so the image being applied is
// not called a killed graft's orphan).
func TestQACLISecondApplyWhileHeld(t *testing.T) {
	requireRoot(t)
	bin := graftBinary(t)
	target, _ := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	defer testutil.RequireReleased(t, target.Pid)
	text := textOf(t, target.Pid)
	pid := strconv.Itoa(target.Pid)
	v8 := testutil.Build(t, "ftpd-v8")

	first := exec.Command(bin, "apply", "-p", pid, "--new", v8, "--timeout", "3s")
	var firstErr bytes.Buffer
	first.Stderr = &firstErr
	require.NoError(t, first.Start())
	deadline := time.Now().Add(10 * time.Second)
	for {
		tp, _ := testutil.TracerPid(target.Pid)
		if tp != 0 && len(graftMaps(t, target.Pid)) > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the first apply never attached")
		time.Sleep(2 * time.Millisecond)
	}

	_, errOut, code := runGraft("apply", "-p", pid, "--new", v8, "--timeout", "1s")
	require.NotEqual(t, 0, code)
	require.Contains(t, errOut, "already traced by pid")
	require.Contains(t, errOut, "(graft)")
	_, errOut, code = runGraft("revert", "-p", pid, "--all")
	require.NotEqual(t, 0, code, "revert --all must not take the image of an apply in progress")

	st := statusJSON(t, target.Pid)
	require.NotZero(t, st.TracedBy, "status names the tracer")
	require.Equal(t, "graft", st.Tracer)
	out, _, code := runGraft("status", "-p", pid)
	require.Equal(t, 0, code)
	require.Contains(t, out, "traced by pid")
	require.NotContains(t, out, "killed before its pause")

	require.Error(t, first.Wait(), "accept_loop is always busy")
	require.Contains(t, firstErr.String(), "accept_loop")
	testutil.RequireReleased(t, target.Pid)
	require.Equal(t, text, textOf(t, target.Pid))
	require.Empty(t, graftMaps(t, target.Pid))
	require.Zero(t, statusJSON(t, target.Pid).TracedBy)
}

// Two graft processes apply the same patch at the same moment: one wins,
// the other fails with a reason; nothing is half done.
func TestQACLIRacingApplies(t *testing.T) {
	requireRoot(t)
	bin := graftBinary(t)
	target, port := sshdTarget(t)
	defer testutil.RequireReleased(t, target.Pid)
	text := textOf(t, target.Pid)
	pid := strconv.Itoa(target.Pid)
	file := filepath.Join(t.TempDir(), "v2-v3.graft")
	_, errOut, code := runGraft("diff", testutil.Build(t, "sshd-v2"), testutil.Build(t, "sshd-v3"), "-o", file)
	require.Equal(t, 0, code, errOut)

	for round := range 4 {
		cmds := make([]*exec.Cmd, 2)
		errs := make([]*bytes.Buffer, 2)
		for i := range cmds {
			cmds[i] = exec.Command(bin, "apply", "-p", pid, file)
			errs[i] = &bytes.Buffer{}
			cmds[i].Stderr = errs[i]
		}
		for _, c := range cmds {
			require.NoError(t, c.Start())
		}
		won := 0
		for i, c := range cmds {
			if c.Wait() == nil {
				won++
				continue
			}
			msg := errs[i].String()
			t.Logf("round %d: loser: %s", round, strings.TrimSpace(msg))
			require.True(t, strings.Contains(msg, "already traced by pid") || strings.Contains(msg, "already in effect") ||
				strings.Contains(msg, "record changed meanwhile"), "unclear error: %s", msg)
		}
		require.Equal(t, 1, won)
		testutil.RequireReleased(t, target.Pid)
		st := statusJSON(t, target.Pid)
		require.Len(t, st.Patches, 1)
		require.True(t, st.Patches[0].Intact)
		require.Empty(t, st.Orphans)
		require.Equal(t, "OK a b c", echo(t, port))
		_, errOut, code = runGraft("revert", "-p", pid)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, text, textOf(t, target.Pid))
	}
}

// graft apply killed with SIGKILL, or sent SIGINT/SIGTERM, at a random
// moment. Afterwards the target is never stopped or traced and keeps
// serving; SIGKILL may leave an orphaned image or a recorded patch, which
// status shows and revert --all takes out, back to the original text byte
// for byte; SIGINT/SIGTERM leave it fully patched or untouched.
//
// SIGINT, SIGTERM and half of the SIGKILLs come at any moment, injected
// system calls of the loader included (the tracer makes those survive its
// own death: tracer/doc.go). The other SIGKILLs are aimed at a random
// moment once the image and the record are mapped: inside the pause or
// around it.
func TestQACLIKilledAtRandomPoints(t *testing.T) {
	requireRoot(t)
	bin := graftBinary(t)
	target, port := sshdTarget(t)
	defer testutil.RequireReleased(t, target.Pid)
	text := textOf(t, target.Pid)
	pid := strconv.Itoa(target.Pid)
	file := filepath.Join(t.TempDir(), "v2-v3.graft")
	_, errOut, code := runGraft("diff", testutil.Build(t, "sshd-v2"), testutil.Build(t, "sshd-v3"), "-o", file)
	require.Equal(t, 0, code, errOut)
	// loaded reports whether the apply in flight has mapped both its
	// image and the record, or is gone.
	loaded := func() bool {
		image, record := false, false
		for _, l := range graftMaps(t, target.Pid) {
			if strings.Contains(l, "graft-state") {
				record = true
			} else {
				image = true
			}
		}
		return image && record
	}

	outcomes := map[string]int{}
	for i := range 24 {
		kind := []struct {
			sig     syscall.Signal
			anytime bool
		}{{syscall.SIGKILL, false}, {syscall.SIGINT, true}, {syscall.SIGTERM, true}, {syscall.SIGKILL, true}}[i%4]
		sig := kind.sig
		g := exec.Command(bin, "apply", "-p", pid, file)
		var gErr bytes.Buffer
		g.Stderr = &gErr
		require.NoError(t, g.Start())
		exited := make(chan error, 1)
		go func() { exited <- g.Wait() }()
		var werr error
		done := false
		if !kind.anytime {
		poll:
			for !loaded() {
				select {
				case werr = <-exited:
					done = true
					break poll
				default:
					time.Sleep(50 * time.Microsecond)
				}
			}
			// The record's creation ends with close(fd), injected too:
			// wait until that stop is over (every thread running again;
			// the next stop is the pause, which injects nothing).
			for !done && !allRunning(target.Pid) {
				select {
				case werr = <-exited:
					done = true
				default:
					time.Sleep(20 * time.Microsecond)
				}
			}
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		} else {
			time.Sleep(time.Duration(rand.IntN(50_000)) * time.Microsecond)
		}
		if !done {
			g.Process.Signal(sig)
			werr = <-exited
		}
		require.False(t, target.Exited(), "round %d (%v): the target died", i, sig)
		testutil.RequireReleased(t, target.Pid)
		reply := echo(t, port)
		require.Contains(t, []string{"OK a", "OK a b c"}, reply, "round %d (%v)", i, sig)

		st := statusJSON(t, target.Pid)
		require.Zero(t, st.TracedBy)
		patched := len(st.Patches) == 1 && st.Patches[0].Intact
		clean := len(st.Patches) == 0 && len(st.Orphans) == 0 && bytes.Equal(text, textOf(t, target.Pid))
		var outcome string
		switch {
		case patched && werr == nil:
			outcome = "finished"
			require.Equal(t, "OK a b c", reply)
		case patched:
			outcome = "patched, then " + sig.String()
		case clean && len(graftMaps(t, target.Pid)) == 0:
			outcome = "untouched"
			require.Equal(t, "OK a", reply)
		default:
			// Only SIGKILL may leave work behind (an unrecorded image,
			// a record without every jump): status shows it.
			require.Equal(t, syscall.SIGKILL, sig, "round %d: %v left the target half patched: %+v (graft: %v, %s)", i, sig, st, werr, gErr.String())
			outcome = "left for revert --all"
		}
		if sig != syscall.SIGKILL && outcome == "untouched" {
			// -1: the signal came before graft handled signals (at its
			// start, nothing touched yet) and killed it; the shell says
			// 128+N for that too.
			if ee, ok := werr.(*exec.ExitError); ok && ee.ExitCode() != 0 && ee.ExitCode() != -1 {
				require.Equal(t, 128+int(sig), ee.ExitCode(), "round %d: %s", i, gErr.String())
				require.Contains(t, gErr.String(), "interrupted by "+unix.SignalName(sig), "an interrupted apply says so")
			}
		}
		outcomes[sig.String()+": "+outcome]++
		if len(st.Patches) > 0 || len(st.Orphans) > 0 {
			_, errOut, code := runGraft("revert", "-p", pid, "--all")
			require.Equal(t, 0, code, "round %d: %s", i, errOut)
		}
		require.Equal(t, text, textOf(t, target.Pid), "round %d: original text back", i)
		require.Empty(t, graftMaps(t, target.Pid), "round %d", i)
		require.Equal(t, "OK a", echo(t, port))
	}
	t.Logf("outcomes: %v", outcomes)
}

// allRunning reports whether no thread of pid is in a ptrace-stop.
func allRunning(pid int) bool {
	states, err := testutil.ThreadStates(pid)
	if err != nil {
		return true
	}
	for _, s := range states {
		if s == "t" {
			return false
		}
	}
	return true
}

// A thread in uninterruptible sleep (a vfork parent waiting for its child)
// cannot be stopped until the child is gone: graft stacks waits for it
// (bounded) and releases the process either way.
func TestQACLIStacksWithVforkPending(t *testing.T) {
	requireRoot(t)
	target := testutil.Start(t, testutil.Build(t, "vforker"), "700")
	tid := 0
	for tid == 0 {
		l := target.WaitLine(t, "vfork ", 10*time.Second)
		fmt.Sscanf(l, "vfork %d", &tid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tracer.ThreadState(target.Pid, tid) != "D" {
		require.True(t, time.Now().Before(deadline), "thread %d never blocked in vfork", tid)
		time.Sleep(2 * time.Millisecond)
	}
	out, errOut, code := runGraft("stacks", "-p", strconv.Itoa(target.Pid))
	t.Logf("code %d\n%s%s", code, out, errOut)
	if code != 0 {
		require.Contains(t, errOut, "did not stop")
	} else {
		// The vfork thread, stopped as vfork returns (its return address
		// in rdi, nothing on the stack), unwinds to its thread start.
		require.Contains(t, out, "__libc_vfork")
		require.NotContains(t, out, "stack incomplete")
		require.Contains(t, out, "vforker (vforker)")
	}
	testutil.RequireReleased(t, target.Pid)
	target.WaitLine(t, "vforked", 10*time.Second)
}
