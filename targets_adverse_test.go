package graft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/safepoint"
	"graft/tracer"
)

// QA: an operator's mistakes and a hostile production environment, on real
// processes. Whatever goes wrong, the target is never left stopped, traced
// or half patched, and the error says what is wrong.

// writePatchFile writes the patch from build oldTarget to newTarget into
// dir and returns its path (what `graft diff -o` writes).
func writePatchFile(t *testing.T, dir, oldTarget, newTarget string) string {
	t.Helper()
	old, err := elfpatch.Open(testutil.Build(t, oldTarget))
	require.NoError(t, err)
	nb, err := elfpatch.Open(testutil.Build(t, newTarget))
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb)
	require.NoError(t, err)
	file := filepath.Join(dir, oldTarget+"-"+newTarget+".graft")
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return file
}

// untouched asserts the target runs its original text with nothing of
// graft mapped, and is released.
func untouched(t *testing.T, pid int, text []byte) {
	t.Helper()
	require.Equal(t, text, exeText(t, pid), "text of pid %d changed", pid)
	require.Empty(t, graftMappings(t, pid), "graft left something mapped in pid %d", pid)
	testutil.RequireReleased(t, pid)
}

// Bad patch files and patches for another program are refused before
// anything is touched; the same patch twice says it is already in effect.
func TestQABadPatchInput(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	good := writePatchFile(t, dir, "sshd-v2", "sshd-v3")
	ftpPatch := writePatchFile(t, dir, "ftpd-v1", "ftpd-v2")
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	damaged := map[string][]byte{
		"truncated":    data[:len(data)/2],
		"header only":  data[:16],
		"empty":        {},
		"flipped body": func() []byte { b := append([]byte(nil), data...); b[len(b)*2/3] ^= 0x40; return b }(),
		"flipped head": func() []byte { b := append([]byte(nil), data...); b[9] ^= 0xff; return b }(),
		"last byte":    func() []byte { b := append([]byte(nil), data...); b[len(b)-1] ^= 1; return b }(),
	}

	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	c := sshDial(t, port)
	require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))

	for name, b := range damaged {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		require.NoError(t, os.WriteFile(f, b, 0o644))
		_, err := Apply(context.Background(), target.Pid, Source{File: f}, ApplyOptions{})
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "patch file", "%s: %v", name, err)
		t.Logf("%s: %v", name, err)
		untouched(t, target.Pid, text)
	}
	_, err = Apply(context.Background(), target.Pid, Source{File: dir}, ApplyOptions{})
	require.Error(t, err, "a directory")
	untouched(t, target.Pid, text)

	// ftpd's patch on sshd.
	_, err = Apply(context.Background(), target.Pid, Source{File: ftpPatch}, ApplyOptions{})
	require.ErrorIs(t, err, ErrBuildIDMismatch)
	require.Contains(t, err.Error(), strconv.Itoa(target.Pid))
	untouched(t, target.Pid, text)
	require.Equal(t, "OK a", c.cmd("ECHO a b c"))

	// The same patch twice: the second is refused as already in effect,
	// the first stays, recorded once.
	res, err := Apply(context.Background(), target.Pid, Source{File: good}, ApplyOptions{})
	require.NoError(t, err)
	patched := exeText(t, target.Pid)
	maps := graftMappings(t, target.Pid)
	_, err = Apply(context.Background(), target.Pid, Source{File: good}, ApplyOptions{})
	require.ErrorIs(t, err, ErrAlreadyApplied)
	require.Contains(t, err.Error(), res.PatchID)
	require.Equal(t, patched, exeText(t, target.Pid))
	require.Equal(t, maps, graftMappings(t, target.Pid))
	testutil.RequireReleased(t, target.Pid)
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.True(t, st.Patches[0].Intact)
	require.Equal(t, "OK a b c", c.cmd("ECHO a b c"))
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	untouched(t, target.Pid, text)
}

// PIDs that are not a patchable process get an error naming why, and
// nothing reads past the check.
func TestQAWrongPIDs(t *testing.T) {
	requirePtrace(t)
	file := writePatchFile(t, t.TempDir(), "sshd-v2", "sshd-v3")
	src := Source{File: file}
	each := func(t *testing.T, pid int, want error, text string) {
		t.Helper()
		_, err := Apply(context.Background(), pid, src, ApplyOptions{})
		require.ErrorIs(t, err, want, "apply")
		require.Contains(t, err.Error(), text)
		_, err = Status(pid)
		require.ErrorIs(t, err, want, "status")
		_, err = Revert(context.Background(), pid, RevertOptions{All: true})
		require.ErrorIs(t, err, want, "revert")
		_, err = Apply(context.Background(), pid, Source{NewBinary: testutil.Build(t, "sshd-v3")}, ApplyOptions{})
		require.ErrorIs(t, err, want, "apply --new")
	}

	t.Run("kernel thread", func(t *testing.T) {
		b, err := os.ReadFile("/proc/2/stat")
		if err != nil || !strings.Contains(string(b), "(kthreadd)") {
			t.Skip("pid 2 is not kthreadd in this PID namespace")
		}
		each(t, 2, tracer.ErrKernelThread, "kernel thread")
	})
	t.Run("no such process", func(t *testing.T) {
		cmd := exec.Command("true")
		require.NoError(t, cmd.Run())
		each(t, cmd.Process.Pid, tracer.ErrNoSuchProcess, "no such process")
	})
	t.Run("zombie", func(t *testing.T) {
		cmd := exec.Command("true")
		require.NoError(t, cmd.Start())
		defer cmd.Wait()
		deadline := time.Now().Add(5 * time.Second)
		for tracer.ThreadState(cmd.Process.Pid, cmd.Process.Pid) != "Z" {
			require.True(t, time.Now().Before(deadline), "child never became a zombie")
			time.Sleep(5 * time.Millisecond)
		}
		each(t, cmd.Process.Pid, tracer.ErrZombie, "reap")
	})
	t.Run("pid 1", func(t *testing.T) {
		// Never patched: the patch is for sshd, so an init that could be
		// traced is refused by build-id before any attach.
		_, err := Apply(context.Background(), 1, src, ApplyOptions{})
		require.Error(t, err)
		t.Log(err)
		require.True(t, errors.Is(err, tracer.ErrPermission) || errors.Is(err, ErrBuildIDMismatch), "%v", err)
		if tp, err := testutil.TracerPid(1); err == nil {
			require.Zero(t, tp, "pid 1 left traced")
		}
	})
}

// The target exits after the patch was worked out and before the attach.
func TestQATargetExitsBeforeAttach(t *testing.T) {
	requirePtrace(t)
	target, _ := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	sys, err := defaultSystem()
	require.NoError(t, err)
	pt, err := sys.resolve(target.Pid, newBin(t, "sshd-v3"))
	require.NoError(t, err)
	require.NoError(t, target.Cmd.Process.Kill())
	for !target.Exited() {
		time.Sleep(5 * time.Millisecond)
	}
	_, err = sys.apply(context.Background(), target.Pid, pt, ApplyOptions{})
	require.Error(t, err)
	require.True(t, errors.Is(err, tracer.ErrNoSuchProcess) || errors.Is(err, tracer.ErrProcessExited), "%v", err)
}

// A program built without PIE (gcc -no-pie) is refused on either side:
// as NEW by the diff, as the running OLD before anything is mapped.
func TestQANonPIE(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	nopie := func(v int) string {
		out := filepath.Join(dir, fmt.Sprintf("sshd-v%d-nopie", v))
		srcs, err := filepath.Glob(filepath.Join(testutil.TestprocsDir(), "sshd", fmt.Sprintf("v%d", v), "*.c"))
		require.NoError(t, err)
		require.NotEmpty(t, srcs)
		args := append([]string{"-g", "-O2", "-no-pie", "-o", out}, srcs...)
		b, err := exec.Command("gcc", append(args, "-lpthread")...).CombinedOutput()
		require.NoError(t, err, "gcc: %s", b)
		return out
	}
	v2, v3 := nopie(2), nopie(3)

	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	text := exeText(t, target.Pid)
	_, err := Apply(context.Background(), target.Pid, Source{NewBinary: v3}, ApplyOptions{})
	require.ErrorIs(t, err, elfpatch.ErrNotPIE)
	untouched(t, target.Pid, text)
	require.Equal(t, "OK a", loggedIn(t, port).cmd("ECHO a b c"))

	np := testutil.Start(t, v2, strconv.Itoa(testutil.FreePort(t)), "-u", sshUsers(t))
	time.Sleep(100 * time.Millisecond)
	require.False(t, np.Exited(), np.Stderr())
	nptext := exeText(t, np.Pid)
	_, err = Apply(context.Background(), np.Pid, newBin(t, "sshd-v3"), ApplyOptions{Timeout: time.Second})
	require.ErrorIs(t, err, elfpatch.ErrOldNotPIE)
	untouched(t, np.Pid, nptext)
}

func loggedIn(t *testing.T, port int) *sshClient {
	t.Helper()
	c := sshDial(t, port)
	require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))
	return c
}

// requireRunning fails if any thread of pid is in a ptrace or job-control
// stop or traced, right now (no waiting: sampled between cycles).
func requireRunning(t *testing.T, pid int, when string) {
	t.Helper()
	states, err := testutil.ThreadStates(pid)
	require.NoError(t, err)
	for tid, s := range states {
		require.NotContains(t, []string{"t", "T"}, s, "%s: tid %d in state %s", when, tid, s)
	}
	tp, err := testutil.TracerPid(pid)
	require.NoError(t, err)
	require.Zero(t, tp, "%s: traced by %d", when, tp)
}

// 32 clients call the patched function in a loop while apply and revert
// cycle: every reply is one version's, no connection breaks, the process
// is never left stopped, and status lists exactly what is applied.
func TestQAApplyRevertUnder32Clients(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	done := hammer(t, port, 32)
	const cycles = 8
	for i := range cycles {
		res, err := Apply(context.Background(), target.Pid, newBin(t, "sshd-v3"), ApplyOptions{Timeout: 20 * time.Second})
		require.NoError(t, err, "cycle %d", i)
		requireRunning(t, target.Pid, fmt.Sprintf("after apply %d", i))
		st, err := Status(target.Pid)
		require.NoError(t, err)
		require.Len(t, st.Patches, 1)
		require.Equal(t, res.PatchID, st.Patches[0].ID)
		require.True(t, st.Patches[0].Intact)
		require.Empty(t, st.Orphans)
		require.Zero(t, st.TracedBy)

		_, err = Revert(context.Background(), target.Pid, RevertOptions{Timeout: 20 * time.Second})
		require.NoError(t, err, "cycle %d", i)
		requireRunning(t, target.Pid, fmt.Sprintf("after revert %d", i))
		st, err = Status(target.Pid)
		require.NoError(t, err)
		require.Empty(t, st.Patches)
		require.Empty(t, st.Orphans)
		require.Equal(t, text, exeText(t, target.Pid))
	}
	total := done()
	t.Logf("%d cycles: replies %d from v2, %d from v3", cycles, total[0], total[1])
	require.Positive(t, total[0])
	require.Positive(t, total[1])
	untouched(t, target.Pid, text)
}

// ftpd: the listener is patched while forked sessions live. Old sessions
// keep the old code; sessions forked after the patch inherit the patched
// text and a copy of the record, so status on such a child lists the patch
// (true for it), and revert on the child takes it out of that child alone.
func TestQAFTPDSessionForkedAfterPatch(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v2", "-d", ftpTree(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	old := ftpLogin(t, port)
	require.True(t, strings.HasPrefix(old.cmd("SIZE sub"), "213 "))

	res, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v3"), ApplyOptions{})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(old.cmd("SIZE sub"), "213 "), "a session forked before keeps the old code")

	before := children(t, target.Pid)
	fresh := ftpLogin(t, port)
	require.Equal(t, "550 Could not get file size.", fresh.cmd("SIZE sub"))
	var child int
	for c := range children(t, target.Pid) {
		if !before[c] {
			child = c
		}
	}
	require.NotZero(t, child, "no new session process")
	childText := exeText(t, child)

	st, err := Status(child)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1, "the child inherited the patch")
	require.Equal(t, res.PatchID, st.Patches[0].ID)
	require.True(t, st.Patches[0].Intact)

	rr, err := Revert(context.Background(), child, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{res.PatchID}, rr.Reverted)
	testutil.RequireReleased(t, child)
	require.Equal(t, text, exeText(t, child), "the child runs the original text again")
	require.Empty(t, graftMappings(t, child))
	require.Equal(t, "213 4096", fresh.cmd("SIZE sub"), "the child serves on, with the old code")
	require.NotEqual(t, childText, exeText(t, child))

	// The listener is still patched and its record intact.
	st, err = Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.True(t, st.Patches[0].Intact)
	require.Equal(t, "550 Could not get file size.", ftpLogin(t, port).cmd("SIZE sub"))
	require.Equal(t, "221 Goodbye.", old.cmd("QUIT"))
	require.Equal(t, "221 Goodbye.", fresh.cmd("QUIT"))
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	untouched(t, target.Pid, text)
}

// children lists the child processes of pid.
func children(t *testing.T, pid int) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out[n] = true
		}
	}
	return out
}

// A process stopped by job control (SIGSTOP, Ctrl-Z) before graft comes:
// it is patched and stays stopped; graft never resumes it behind the
// operator's back. SIGCONT lets it go on, in the new code.
func TestQAJobControlStoppedTarget(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	c := loggedIn(t, port)
	require.NoError(t, syscall.Kill(target.Pid, syscall.SIGSTOP))
	waitAllStates(t, target.Pid, "T")

	_, err := Apply(context.Background(), target.Pid, newBin(t, "sshd-v3"), ApplyOptions{})
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	states, err := testutil.ThreadStates(target.Pid)
	require.NoError(t, err)
	for tid, s := range states {
		require.Equal(t, "T", s, "tid %d: still job-control stopped", tid)
	}
	tp, err := testutil.TracerPid(target.Pid)
	require.NoError(t, err)
	require.Zero(t, tp)
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)

	require.NoError(t, syscall.Kill(target.Pid, syscall.SIGCONT))
	testutil.RequireReleased(t, target.Pid)
	require.Equal(t, "OK a b c", c.cmd("ECHO a b c"))
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, "OK a", c.cmd("ECHO a b c"))
	testutil.RequireReleased(t, target.Pid)
}

func waitAllStates(t *testing.T, pid int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		states, err := testutil.ThreadStates(pid)
		require.NoError(t, err)
		all := len(states) > 0
		for _, s := range states {
			all = all && s == want
		}
		if all {
			return
		}
		require.True(t, time.Now().Before(deadline), "threads of %d not all %s: %v", pid, want, states)
		time.Sleep(5 * time.Millisecond)
	}
}

// A target that blocks every signal it can and ignores the rest (the mask
// and the ignored set survive exec): graft's stops and remote syscalls do
// not depend on the target's signal handling.
func TestQASignalsBlockedAndIgnored(t *testing.T) {
	requirePtrace(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is needed (the launcher that masks signals)")
	}
	bin := testutil.Build(t, "sshd-v2")
	port := testutil.FreePort(t)
	launcher := `import os, signal, sys
sigs = set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}
signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
for s in sigs:
    try:
        signal.signal(s, signal.SIG_IGN)
    except (OSError, ValueError):
        pass
os.execv(sys.argv[1], sys.argv[1:])
`
	target := testutil.Start(t, "python3", "-c", launcher, bin, strconv.Itoa(port), "-u", sshUsers(t))
	deadline := time.Now().Add(10 * time.Second)
	for !testutil.ListensOn(target.Pid, port) {
		require.False(t, target.Exited(), target.Stderr())
		require.True(t, time.Now().Before(deadline), "sshd under the launcher does not listen")
		time.Sleep(10 * time.Millisecond)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", target.Pid))
	require.NoError(t, err)
	var blk uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigBlk:"); ok {
			blk, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			require.NoError(t, err)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD, syscall.SIGUSR1, syscall.SIGCONT, syscall.SIGTRAP} {
		require.NotZero(t, blk&(1<<(sig-1)), "%v blocked in the target (the mask survives exec)", sig)
	}

	text := exeText(t, target.Pid)
	c := loggedIn(t, port)
	_, err = Apply(context.Background(), target.Pid, newBin(t, "sshd-v3"), ApplyOptions{})
	require.NoError(t, err)
	testutil.RequireReleased(t, target.Pid)
	require.Equal(t, "OK a b c", c.cmd("ECHO a b c"))
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, "OK a", c.cmd("ECHO a b c"))
	untouched(t, target.Pid, text)
}

// A busy function and a short timeout: a clean error naming the thread,
// the function and its stack, and the target's mappings exactly as before.
func TestQATimeoutLeavesMapsAsBefore(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	text := exeText(t, target.Pid)
	maps := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", target.Pid))
		require.NoError(t, err)
		return string(b)
	}
	before := maps()
	_, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v8"), ApplyOptions{Timeout: 100 * time.Millisecond})
	require.ErrorIs(t, err, safepoint.ErrActive)
	for _, want := range []string{"thread " + strconv.Itoa(target.Pid), "accept_loop", "stack:", "main"} {
		require.Contains(t, err.Error(), want)
	}
	require.Equal(t, before, maps())
	untouched(t, target.Pid, text)
	ftpLogin(t, port)
}

// Two applies race for one process (in one graft process here; the CLI
// test races two graft processes): exactly one wins, the other fails
// with a reason and changes nothing; the record lists one patch.
func TestQAConcurrentApplies(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = Apply(context.Background(), target.Pid, newBin(t, "sshd-v3"), ApplyOptions{})
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
				continue
			}
			t.Logf("round %d: loser: %v", round, err)
			require.True(t, errors.Is(err, tracer.ErrAlreadyTraced) || errors.Is(err, ErrRecordChanged) ||
				errors.Is(err, ErrAlreadyApplied), "unexpected: %v", err)
		}
		require.Equal(t, 1, won, "exactly one apply wins: %v", errs)
		testutil.RequireReleased(t, target.Pid)
		st, err := Status(target.Pid)
		require.NoError(t, err)
		require.Len(t, st.Patches, 1)
		require.True(t, st.Patches[0].Intact)
		require.Empty(t, st.Orphans, "the loser left no image")
		require.Equal(t, "OK a b c", loggedIn(t, port).cmd("ECHO a b c"))
		_, err = Revert(context.Background(), target.Pid, RevertOptions{})
		require.NoError(t, err)
		untouched(t, target.Pid, text)
	}
}

// vforkerPair builds testprocs' vforker and a NEW of it whose vforker()
// prints another line (made from the same source in a temporary directory).
func vforkerPair(t *testing.T) (oldBin, newBin string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testutil.TestprocsDir(), "tracee", "vforker.c"))
	require.NoError(t, err)
	s := string(src)
	require.Contains(t, s, `printf("vforked\n");`)
	s = strings.Replace(s, `printf("vforked\n");`, `printf("vforked, v2\n");`, 1)
	dir := t.TempDir()
	c := filepath.Join(dir, "vforker.c")
	require.NoError(t, os.WriteFile(c, []byte(s), 0o644))
	newBin = filepath.Join(dir, "vforker-v2")
	b, err := exec.Command("gcc", "-g", "-O2", "-o", newBin, c, "-lpthread").CombinedOutput()
	require.NoError(t, err, "gcc: %s", b)
	return testutil.Build(t, "vforker"), newBin
}

// A thread in uninterruptible sleep (the parent of a vfork child that has
// not exited) cannot be stopped. Apply must not hold the other threads
// stopped longer than the operator's --timeout waiting for it: it fails
// naming the thread, resumes the process and changes nothing. Once the
// child is gone the same apply goes through.
func TestQAThreadInUninterruptibleSleep(t *testing.T) {
	requirePtrace(t)
	oldBin, newBin := vforkerPair(t)
	target := testutil.Start(t, oldBin, "3000")
	tid := 0
	for tid == 0 {
		fmt.Sscanf(target.WaitLine(t, "vfork ", 10*time.Second), "vfork %d", &tid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tracer.ThreadState(target.Pid, tid) != "D" {
		require.True(t, time.Now().Before(deadline), "thread %d never blocked in vfork", tid)
		time.Sleep(2 * time.Millisecond)
	}
	text := exeText(t, target.Pid)
	opts := ApplyOptions{Timeout: 200 * time.Millisecond, AllowActive: []string{"vforker"}}
	_, err := Apply(context.Background(), target.Pid, Source{NewBinary: newBin}, opts)
	require.ErrorIs(t, err, tracer.ErrStopTimeout)
	require.Contains(t, err.Error(), fmt.Sprintf("tid %d (state D", tid))
	require.Equal(t, "D", tracer.ThreadState(target.Pid, tid), "the child still holds the thread: the error came from the bound, not the wake-up")
	untouched(t, target.Pid, text)

	target.WaitLine(t, "vforked", 10*time.Second)
	_, err = Apply(context.Background(), target.Pid, Source{NewBinary: newBin}, opts)
	require.NoError(t, err)
	testutil.RequireReleased(t, target.Pid)
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	untouched(t, target.Pid, text)
}

// A deploy replaces the binary in place while the old process runs (its
// /proc/PID/exe then reads "(deleted)"). --new with the new file patches
// the running process; the next deploy replaces the file again, which was
// also the NEW recorded for the patch in effect: --new then says so
// instead of diffing from a build the process does not run.
func TestQADeployReplacesBinaryInPlace(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "sshd")
	deploy := func(target string) {
		t.Helper()
		b, err := os.ReadFile(testutil.Build(t, target))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(bin+".new", b, 0o755))
		require.NoError(t, os.Rename(bin+".new", bin))
	}
	deploy("sshd-v2")
	port := testutil.FreePort(t)
	target := testutil.Start(t, bin, strconv.Itoa(port), "-u", sshUsers(t))
	deadline := time.Now().Add(10 * time.Second)
	for !testutil.ListensOn(target.Pid, port) {
		require.False(t, target.Exited(), target.Stderr())
		require.True(t, time.Now().Before(deadline))
		time.Sleep(10 * time.Millisecond)
	}
	text := mappedText(t, target.Pid, bin)
	c := loggedIn(t, port)

	deploy("sshd-v3")
	_, err := Apply(context.Background(), target.Pid, Source{NewBinary: bin}, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, "OK a b c", c.cmd("ECHO a b c"))
	patched := mappedText(t, target.Pid, bin)

	deploy("sshd-v4")
	_, err = Apply(context.Background(), target.Pid, Source{NewBinary: bin}, ApplyOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "replaced on disk")
	require.Equal(t, patched, mappedText(t, target.Pid, bin))
	testutil.RequireReleased(t, target.Pid)

	// A patch file from v3 to v4 still stacks.
	file := writePatchFile(t, dir, "sshd-v3", "sshd-v4")
	_, err = Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, "OK SSH-2.0-graftssh_1.1", c.cmd("VERSION"))
	_, err = Revert(context.Background(), target.Pid, RevertOptions{All: true})
	require.NoError(t, err)
	require.Equal(t, "OK a", c.cmd("ECHO a b c"))
	require.Equal(t, text, mappedText(t, target.Pid, bin))
	require.Empty(t, graftMappings(t, target.Pid))
	testutil.RequireReleased(t, target.Pid)
}

// mappedText returns the bytes of pid's executable mappings of the file
// path, which may have been deleted or replaced since ("(deleted)").
func mappedText(t *testing.T, pid int, path string) []byte {
	t.Helper()
	maps, err := tracer.ReadMaps(pid)
	require.NoError(t, err)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	require.NoError(t, err)
	defer mem.Close()
	var out []byte
	for _, m := range maps {
		if strings.TrimSuffix(m.Path, " (deleted)") == path && strings.Contains(m.Perms, "x") {
			b := make([]byte, m.End-m.Start)
			_, err := mem.ReadAt(b, int64(m.Start))
			require.NoError(t, err)
			out = append(out, b...)
		}
	}
	require.NotEmpty(t, out, "no executable mapping of %s in pid %d", path, pid)
	return out
}
