package tracer

import (
	"os"
	"testing"
	"time"

	"graft/internal/testutil"
)

// requirePtrace skips when ptrace is unusable here, except under CI, where
// it must work and the test fails instead.
func requirePtrace(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 || hasCapSysPtrace() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("ptrace needs root or CAP_SYS_PTRACE, and CI=true says it is available")
	}
	t.Skip("needs root or CAP_SYS_PTRACE")
}

func startSpin(t *testing.T, n string) *testutil.Proc {
	t.Helper()
	p := testutil.Start(t, testutil.Build(t, "spin"), n)
	p.WaitLine(t, "ready", 10*time.Second)
	return p
}

func attach(t *testing.T, pid int) *Process {
	t.Helper()
	p, err := Attach(pid)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestAttachStopResume(t *testing.T) {
	requirePtrace(t)
	target := startSpin(t, "4")
	p := attach(t, target.Pid)
	for i := 0; i < 5; i++ {
		if err := p.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if !p.Stopped() {
			t.Fatal("Stopped() false after Stop")
		}
		tids := p.Threads()
		if len(tids) != 5 {
			t.Fatalf("threads %v, want 5", tids)
		}
		states, _ := testutil.ThreadStates(target.Pid)
		for _, tid := range tids {
			if states[tid] != "t" {
				t.Errorf("tid %d state %q while stopped, want t", tid, states[tid])
			}
			r, err := p.Regs(tid)
			if err != nil {
				t.Fatalf("regs %d: %v", tid, err)
			}
			if r.Rip == 0 || r.Rsp == 0 {
				t.Errorf("tid %d: implausible regs rip=%#x rsp=%#x", tid, r.Rip, r.Rsp)
			}
		}
		if err := p.Resume(); err != nil {
			t.Fatalf("resume: %v", err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	testutil.RequireReleased(t, target.Pid)
}
