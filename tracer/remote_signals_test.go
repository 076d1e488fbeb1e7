package tracer

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// Two queued real-time signals wait for the thread a remote call is about
// to borrow. With its signals blocked for the call (the default), the call
// runs at once and both signals are delivered after Resume, once each,
// with their values. Without (the fallback where PTRACE_SETSIGMASK is
// missing), the thread stops for them again and again: the call fails and
// says it was signals.
func TestRemoteSyscallWithSignalsQueued(t *testing.T) {
	testutil.RequirePtrace(t)
	for _, fallback := range []bool{false, true} {
		target := testutil.Start(t, testutil.Build(t, "sigload-v1"))
		target.WaitLine(t, "ready", 10*time.Second)
		p := attach(t, target.Pid)
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		p.noSigmask = fallback
		for _, v := range []int32{5, 7} {
			if err := sigqueue(target.Pid, 35, v); err != nil { // SIGRTMIN+1
				t.Fatal(err)
			}
		}
		got, err := p.SyscallOn(target.Pid, unix.SYS_GETPID)
		if fallback {
			if !errors.Is(err, ErrSignalStorm) || !strings.Contains(err.Error(), "SIGRTMIN+1") {
				t.Errorf("fallback: remote getpid with signals queued: %v, want ErrSignalStorm naming SIGRTMIN+1", err)
			}
			if testing.Verbose() {
				t.Logf("fallback: %v", err)
			}
		} else if err != nil || int(got) != target.Pid {
			t.Fatalf("remote getpid with signals queued: %d, %v", got, err)
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		testutil.RequireReleased(t, target.Pid)
		time.Sleep(50 * time.Millisecond)
		if err := syscall.Kill(target.Pid, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		l := target.WaitLine(t, "count ", 5*time.Second)
		want := "count 2 sum 12 "
		if fallback {
			want = "count 2 " // the signal queued again with tgkill lost its value
		}
		if !strings.HasPrefix(l, want) {
			t.Errorf("fallback %v: target counted %q, want %q...", fallback, l, want)
		}
	}
}
