package tracer

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// TestSignalKeptThroughInterruptedRemoteSyscall: a signal that arrives
// while a remote syscall blocks on the borrowed thread is suppressed and
// kept, the syscall is interrupted at the stop timeout, the thread gets
// its registers back, and Resume delivers the kept signal: the handler
// runs, exactly once, and no blocked call sees EINTR. (Whether the
// signal rides on PTRACE_CONT or is queued again with tgkill depends on
// the stop the thread is left in; this test pins the outcome, not the
// path.)
func TestSignalKeptThroughInterruptedRemoteSyscall(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	main := b.tid["main"]
	if main == 0 {
		t.Fatalf("blockers did not report its main thread: %v", b.tid)
	}
	p.SetStopTimeout(400 * time.Millisecond)
	sent := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		// Main sits in sigsuspend, so SIGUSR1 is unblocked while the
		// remote pause runs on it: the signal interrupts the pause.
		sent <- unix.Tgkill(b.Pid, main, unix.SIGUSR1)
	}()
	if _, err := p.SyscallOn(main, unix.SYS_PAUSE); !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("remote pause with a signal arriving: %v, want ErrStopTimeout (the path under test)", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("tgkill SIGUSR1: %v", err)
	}
	if n := b.out.count("usr1"); n != 0 {
		t.Fatalf("signal handled while stopped (%d lines)", n)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	b.out.wait(t, "usr1 1", 5*time.Second)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	time.Sleep(100 * time.Millisecond)
	if n := b.out.count("usr1 "); n != 1 {
		t.Errorf("%d usr1 lines for one signal: %q", n, b.out.all())
	}
	b.requireNoEINTR(t)
}

// TestSignalKeptThroughGroupStopRemoteSyscall: the process is job-control
// stopped when graft holds it; a signal arrives, and a remote syscall
// runs on the thread that takes it. The thread is put back into its
// group-stop afterwards, an event stop from which the signal cannot ride
// on PTRACE_LISTEN: Resume must queue it again (tgkill), so the handler
// runs once the process is continued.
func TestSignalKeptThroughGroupStopRemoteSyscall(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	main := b.tid["main"]
	if main == 0 {
		t.Fatalf("blockers did not report its main thread: %v", b.tid)
	}
	if err := unix.Kill(b.Pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitAllState(t, b.Pid, "T")
	p := attach(t, b.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Tgkill(b.Pid, main, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := p.SyscallOn(main, unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := b.out.count("usr1"); n != 0 {
		t.Fatalf("handler ran while job-control stopped (%d lines)", n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(b.Pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	b.out.wait(t, "usr1 1", 5*time.Second)
	testutil.RequireReleased(t, b.Pid)
	time.Sleep(100 * time.Millisecond)
	if n := b.out.count("usr1 "); n != 1 {
		t.Errorf("%d usr1 lines for one signal: %q", n, b.out.all())
	}
	b.requireNoEINTR(t)
}
