package tracer

import (
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
// missing), the thread stops for them during the call; each is held back
// until the thread returns to its own code (not queued again at once,
// which made the thread stop for it at every step until the call gave
// up), so the call completes and each signal is delivered once, though
// one queued again with tgkill loses its value.
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
		if err != nil || int(got) != target.Pid {
			t.Fatalf("fallback %v: remote getpid with signals queued: %d, %v", fallback, got, err)
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
