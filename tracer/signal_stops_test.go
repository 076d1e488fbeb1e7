package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// The kernel drops the signal of a signal-delivery-stop when the tracer
// dies. A tracer that stops the process while a caught signal is being
// delivered, and then dies without resuming it (SIGKILL, here a plain
// exit), must not lose that signal: Stop delivers it at once.

func init() {
	spec := os.Getenv("GRAFT_TRACER_SIGSTOP_HELPER")
	if spec == "" {
		return
	}
	pid, _ := strconv.Atoi(spec)
	p, err := Attach(pid)
	if err == nil {
		err = p.Stop()
	}
	if err == nil {
		// Queued while every thread is stopped: the first thread to
		// run dequeues it and stops for it, as Stop interrupts them.
		err = sigqueue(pid, 34, 42) // glibc's SIGRTMIN
	}
	if err == nil {
		err = p.Resume()
	}
	if err == nil {
		err = p.Stop()
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("stopped")
	os.Exit(0) // the kernel detaches every thread as it is
}

func sigqueue(pid, sig int, val int32) error {
	var info [128]byte
	le := func(off int, v uint32) {
		info[off], info[off+1], info[off+2], info[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	le(0, uint32(sig))
	le(8, uint32(0xffffffff)) // SI_QUEUE (-1)
	le(16, uint32(os.Getpid()))
	le(20, uint32(os.Getuid()))
	le(24, uint32(val))
	_, _, errno := unix.RawSyscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(pid), uintptr(sig), uintptr(unsafePointer(&info)))
	if errno != 0 {
		return errno
	}
	return nil
}

func TestSignalSurvivesTracerDeathDuringStop(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sigload-v1"))
	target.WaitLine(t, "ready", 10*time.Second)
	const rounds = 20
	for i := 0; i < rounds; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GRAFT_TRACER_SIGSTOP_HELPER="+strconv.Itoa(target.Pid))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "stopped") {
			t.Fatalf("helper: %v: %s", err, out)
		}
		testutil.RequireReleased(t, target.Pid)
	}
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(target.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	l := target.WaitLine(t, "count ", 5*time.Second)
	want := fmt.Sprintf("count %d sum %d ", rounds, 42*rounds)
	if !strings.HasPrefix(l, want) {
		t.Fatalf("after %d tracers died holding the process: %q, want %q...", rounds, l, want)
	}
}
