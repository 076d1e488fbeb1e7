package tracer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// TestThreadChurn attaches, stops, resumes and detaches in a loop while
// the target creates and joins threads as fast as it can. While stopped,
// the held threads must be exactly /proc/PID/task, all in a ptrace-stop;
// after each detach nothing may stay traced or stopped.
func TestThreadChurn(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "churn"), "2", "4")
	target.WaitLine(t, "ready", 10*time.Second)
	for round := 0; round < 30; round++ {
		p, err := Attach(target.Pid)
		if err != nil {
			t.Fatalf("round %d: attach: %v", round, err)
		}
		for i := 0; i < 3; i++ {
			if err := p.Stop(); err != nil {
				p.Close()
				t.Fatalf("round %d: stop: %v", round, err)
			}
			held := p.Threads()
			listed, err := tasks(target.Pid)
			if err != nil {
				t.Fatal(err)
			}
			if !equalInts(held, listed) {
				t.Errorf("round %d: held %v, /proc lists %v", round, held, listed)
			}
			for _, tid := range listed {
				if s := ThreadState(target.Pid, tid); s != "t" {
					t.Errorf("round %d: tid %d in state %q while stopped", round, tid, s)
				}
			}
			if len(held) < 3 {
				t.Errorf("round %d: only %d threads", round, len(held))
			}
			if err := p.Resume(); err != nil {
				t.Fatalf("round %d: resume: %v", round, err)
			}
			time.Sleep(time.Millisecond)
		}
		if round%2 == 0 {
			// Detach from a stopped process too.
			if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		testutil.RequireReleased(t, target.Pid)
		if t.Failed() {
			return
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAttachErrors(t *testing.T) {
	testutil.RequirePtrace(t)
	t.Run("missing", func(t *testing.T) {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		_, err := Attach(cmd.Process.Pid)
		if !errors.Is(err, ErrNoSuchProcess) || !strings.Contains(err.Error(), "no such process") {
			t.Fatalf("attach to exited pid: %v", err)
		}
		if _, err := Attach(-1); !errors.Is(err, ErrNoSuchProcess) {
			t.Fatalf("attach -1: %v", err)
		}
	})
	t.Run("self", func(t *testing.T) {
		if _, err := Attach(os.Getpid()); !errors.Is(err, ErrSelf) {
			t.Fatalf("attach self: %v", err)
		}
		// One of our own threads, named by its TID.
		tids, _ := tasks(os.Getpid())
		if _, err := Attach(tids[len(tids)-1]); !errors.Is(err, ErrSelf) {
			t.Fatalf("attach own thread %d: %v", tids[len(tids)-1], err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		target := startSpin(t, "1")
		p := attach(t, target.Pid)
		_, err := Attach(target.Pid)
		if !errors.Is(err, ErrAlreadyTraced) {
			t.Fatalf("second attach: %v", err)
		}
		p.Close()
		testutil.RequireReleased(t, target.Pid)
	})
	t.Run("other-tracer", func(t *testing.T) {
		// Another process (this test binary, re-executed) seizes the
		// target, the way a debugger or strace would hold it.
		target := startSpin(t, "1")
		helper := startHelper(t, "seize", target.Pid)
		_, err := Attach(target.Pid)
		if !errors.Is(err, ErrAlreadyTraced) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", helper)) {
			t.Fatalf("attach to a process held by pid %d: %v", helper, err)
		}
	})
	t.Run("permission", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the helper as another user")
		}
		target := startSpin(t, "1")
		out := runHelperAsNobody(t, "attach", target.Pid)
		t.Logf("as nobody: %s", out)
		if !strings.Contains(out, "permission denied") || !strings.Contains(out, "CAP_SYS_PTRACE") ||
			!strings.Contains(out, "uid 65534") {
			t.Fatalf("attach as nobody to a root process: %q", out)
		}
		testutil.RequireReleased(t, target.Pid)
	})
	t.Run("zombie", func(t *testing.T) {
		cmd := exec.Command("true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		deadline := time.Now().Add(5 * time.Second)
		for ThreadState(cmd.Process.Pid, cmd.Process.Pid) != "Z" {
			if time.Now().After(deadline) {
				t.Fatal("child never became a zombie")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := Attach(cmd.Process.Pid); !errors.Is(err, ErrZombie) {
			t.Fatalf("attach zombie: %v", err)
		}
	})
}

// TestProcessExits: a target that dies while held yields
// ProcessExitedError from every later operation, and Close still succeeds.
func TestProcessExits(t *testing.T) {
	testutil.RequirePtrace(t)
	for _, stopped := range []bool{false, true} {
		target := startSpin(t, "2")
		p := attach(t, target.Pid)
		if stopped {
			if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
		}
		unix.Kill(target.Pid, unix.SIGKILL)
		deadline := time.Now().Add(5 * time.Second)
		var err error
		for {
			if err = p.Stop(); err != nil || time.Now().After(deadline) {
				break
			}
			// Still stopped from before: ask for something that needs the
			// threads alive.
			if _, err = p.Regs(target.Pid); err != nil {
				break
			}
			p.Resume()
			time.Sleep(10 * time.Millisecond)
		}
		var pe *ProcessExitedError
		if !errors.As(err, &pe) || pe.Pid != target.Pid || !errors.Is(err, ErrProcessExited) {
			t.Fatalf("stopped=%v: after SIGKILL: %v", stopped, err)
		}
		if _, err := p.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrProcessExited) {
			t.Fatalf("syscall after exit: %v", err)
		}
		if _, err := p.WriteAt([]byte{0x90}, 0x400000); !errors.Is(err, ErrProcessExited) {
			t.Fatalf("write after exit: %v", err)
		}
		if _, err := p.ReadAt(make([]byte, 8), 0x400000); !errors.Is(err, ErrProcessExited) {
			t.Fatalf("read after exit: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("close after exit: %v", err)
		}
	}
}

// TestJobControlStop: a process stopped with SIGSTOP stays stopped through
// attach, Stop/Resume and detach (PTRACE_LISTEN, never a resume), and
// carries on at SIGCONT.
func TestJobControlStop(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	unix.Kill(b.Pid, unix.SIGSTOP)
	waitAllState(t, b.Pid, "T")
	p := attach(t, b.Pid)
	for i := 0; i < 3; i++ {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
			t.Fatal(err)
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	// Held but job-control stopped: nothing runs.
	time.Sleep(50 * time.Millisecond)
	unix.Kill(b.Pid, unix.SIGUSR1)
	time.Sleep(50 * time.Millisecond)
	if n := b.out.count("usr1"); n != 0 {
		t.Fatalf("handler ran while job-control stopped")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitAllState(t, b.Pid, "T")
	if tp := tracerOf(b.Pid, b.Pid); tp != 0 {
		t.Fatalf("still traced by %d", tp)
	}
	unix.Kill(b.Pid, unix.SIGCONT)
	b.out.wait(t, "usr1 1", 5*time.Second)
	testutil.RequireReleased(t, b.Pid)

	// SIGSTOP and SIGCONT while attached and running.
	p = attach(t, b.Pid)
	unix.Kill(b.Pid, unix.SIGSTOP)
	waitAllState(t, b.Pid, "t") // listening: traced stop
	unix.Kill(b.Pid, unix.SIGCONT)
	unix.Kill(b.Pid, unix.SIGUSR1)
	b.out.wait(t, "usr1 2", 5*time.Second)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)

	// SIGCONT while held: the job-control stop ends, Resume must then
	// let the process run (not PTRACE_LISTEN it forever).
	unix.Kill(b.Pid, unix.SIGSTOP)
	waitAllState(t, b.Pid, "T")
	p = attach(t, b.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	unix.Kill(b.Pid, unix.SIGCONT)
	unix.Kill(b.Pid, unix.SIGUSR1)
	time.Sleep(20 * time.Millisecond)
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	b.out.wait(t, "usr1 3", 5*time.Second)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	b.requireNoEINTR(t)
}

func waitAllState(t *testing.T, pid int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		states, err := testutil.ThreadStates(pid)
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, s := range states {
			if s != want {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads of %d: %v, want all %s", pid, states, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runHelper is the second process some tests need: TestMain calls it when
// GRAFT_TRACER_HELPER=mode:pid is set, and it either traces the target
// (mode seize, until killed) or tries to attach to it and prints the result
// (mode attach).
func runHelper(spec string) {
	mode, pidStr, _ := strings.Cut(spec, ":")
	pid, _ := strconv.Atoi(pidStr)
	switch mode {
	case "seize":
		runtime.LockOSThread()
		if err := ptraceSeize(pid); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("seized")
		select {} // hold it until killed; the kernel then detaches
	case "attach":
		p, err := Attach(pid)
		if err == nil {
			p.Close()
			fmt.Println("attached")
		} else {
			fmt.Println(err)
		}
		os.Exit(0)
	}
	fmt.Println("unknown helper mode", mode)
	os.Exit(2)
}

// startHelper runs the helper in the given mode against pid, waits until
// it has done its job (seize: holds the target) and returns its PID; it is
// killed at cleanup.
func startHelper(t *testing.T, mode string, pid int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("GRAFT_TRACER_HELPER=%s:%d", mode, pid))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		testutil.RequireReleased(t, pid)
	})
	line := make([]byte, 64)
	n, _ := io.ReadAtLeast(out, line, 1)
	if !strings.HasPrefix(string(line[:n]), "seized") {
		t.Fatalf("helper: %q", line[:n])
	}
	return cmd.Process.Pid
}

// runHelperAsNobody runs the helper as uid/gid 65534 from a copy of this
// binary that user can execute, and returns what it printed.
func runHelperAsNobody(t *testing.T, mode string, pid int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "graft-tracer-helper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("GRAFT_TRACER_HELPER=%s:%d", mode, pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v: %s", err, out)
	}
	return string(out)
}

// TestStopTimeout: a thread in uninterruptible sleep (here: waiting for a
// vfork child) cannot be stopped. Stop gives up at its timeout, names the
// thread and leaves the process running, and works again once the thread
// wakes.
func TestStopTimeout(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "vforker"), "2000")
	out := collect(target)
	out.wait(t, "ready", 10*time.Second)
	var tid int
	fmt.Sscanf(out.wait(t, "vfork ", 5*time.Second), "vfork %d", &tid)
	deadline := time.Now().Add(5 * time.Second)
	for ThreadState(target.Pid, tid) != "D" {
		if time.Now().After(deadline) {
			t.Fatalf("thread %d never blocked in vfork (state %q)", tid, ThreadState(target.Pid, tid))
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := attach(t, target.Pid)
	p.SetStopTimeout(300 * time.Millisecond)
	err := p.Stop()
	if !errors.Is(err, ErrStopTimeout) || !strings.Contains(err.Error(), fmt.Sprintf("tid %d (state D", tid)) {
		t.Fatalf("stop with a thread in D state: %v", err)
	}
	if p.Stopped() {
		t.Fatal("Stopped() after a failed Stop")
	}
	if s := ThreadState(target.Pid, target.Pid); s == "t" {
		t.Fatalf("main thread left in a ptrace-stop after the failed Stop")
	}
	out.wait(t, "vforked", 10*time.Second)
	p.SetStopTimeout(DefaultStopTimeout)
	if err := p.Stop(); err != nil {
		t.Fatalf("stop after the thread woke: %v", err)
	}
	if got := len(p.Threads()); got != 2 {
		t.Errorf("%d threads held, want 2", got)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, target.Pid)
}

// TestStolenStopReport: the target is a child of this process and another
// goroutine waits for it (exec.Cmd.Wait). The kernel hands that wait the
// ptrace-stops of the target's main thread; Stop must still complete.
func TestStolenStopReport(t *testing.T) {
	testutil.RequirePtrace(t)
	cmd := exec.Command(testutil.Build(t, "sleepers"), "1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil) // reap, whatever Wait saw
	}()
	line := make([]byte, 16)
	if n, _ := io.ReadAtLeast(stdout, line, 6); !strings.HasPrefix(string(line[:n]), "ready") {
		t.Fatalf("sleepers: %q", line[:n])
	}
	go cmd.Wait() // the thief
	time.Sleep(20 * time.Millisecond)
	p := attach(t, pid)
	for i := 0; i < 3; i++ {
		if err := p.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if _, err := p.Regs(pid); err != nil {
			t.Fatalf("regs of the main thread: %v", err)
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, pid)
}

// TestCloseWithUnstoppableThread: Close while a thread sleeps
// uninterruptibly detaches what it can, says what it could not, and the
// kernel releases the rest when the tracer thread ends: nothing stays
// traced.
func TestCloseWithUnstoppableThread(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "vforker"), "1500")
	out := collect(target)
	out.wait(t, "ready", 10*time.Second)
	var tid int
	fmt.Sscanf(out.wait(t, "vfork ", 5*time.Second), "vfork %d", &tid)
	deadline := time.Now().Add(5 * time.Second)
	for ThreadState(target.Pid, tid) != "D" {
		if time.Now().After(deadline) {
			t.Fatalf("thread %d never blocked in vfork", tid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p, err := Attach(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p.SetStopTimeout(200 * time.Millisecond)
	if err := p.Close(); !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("close: %v", err)
	}
	testutil.RequireReleased(t, target.Pid)
	out.wait(t, "vforked", 10*time.Second)
}
