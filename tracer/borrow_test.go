package tracer

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// Each blocked thread of blockers borrowed alone in turn while the others
// run: remote calls work on it, only it is in a ptrace stop meanwhile, the
// others serve (the reader answers a line written during the borrow), its
// own blocking call carries on without EINTR once it is returned, and the
// held-time book shows one stop per borrow, for system calls, and nothing
// for the threads never borrowed.
func TestBorrowOneThreadOthersRun(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	roles := []string{"accept", "sleep", "futex", "cond", "main", "read"}
	for _, role := range roles {
		tid := b.tid[role]
		got, err := p.Borrow(tid)
		if err != nil {
			t.Fatalf("borrow %s: %v", role, err)
		}
		if got != tid || p.Lent() != tid || p.Stopped() {
			t.Fatalf("borrow %s: got %d, Lent %d, Stopped %v", role, got, p.Lent(), p.Stopped())
		}
		for r, other := range b.tid {
			st := ThreadState(b.Pid, other)
			if other == tid && st != "t" {
				t.Errorf("borrowed %s thread in state %q, want t", role, st)
			}
			if other != tid && st == "t" {
				t.Errorf("%s thread stopped while %s was borrowed", r, role)
			}
		}
		if g, err := p.Syscall(unix.SYS_GETTID); err != nil || int(g) != tid {
			t.Fatalf("%s: remote gettid = %d, %v", role, g, err)
		}
		addr, err := p.Mmap(0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
		if err != nil {
			t.Fatalf("%s: remote mmap: %v", role, err)
		}
		if role == "accept" {
			// The reader runs while the acceptor is held.
			w, err := os.OpenFile(b.fifo, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("during borrow\n"))
			w.Close()
			if l := b.out.wait(t, "read: ", 5*time.Second); l != "read: during borrow" {
				t.Errorf("reader got %q", l)
			}
		}
		if err := p.Munmap(addr, 4096); err != nil {
			t.Fatalf("%s: remote munmap: %v", role, err)
		}
		if err := p.Return(); err != nil {
			t.Fatalf("return %s: %v", role, err)
		}
		if p.Lent() != 0 {
			t.Fatalf("after Return, Lent %d", p.Lent())
		}
	}
	holds := map[int]Hold{}
	for _, h := range p.Holds() {
		holds[h.Tid] = h
	}
	for _, role := range roles {
		h := holds[b.tid[role]]
		if h.Stops != 1 || h.Syscalls <= 0 || h.Pause != 0 {
			t.Errorf("%s: held %+v, want one stop for system calls", role, h)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	b.out.wait(t, "accepted", 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	b.requireNoEINTR(t)
}

// Borrow with no thread named picks one asleep in a call that waits for
// work (read, accept, pause...), not the timed sleeper or a futex waiter.
// A Stop takes the borrowed thread in without letting it run (one stop),
// and EndPause detaches the others and keeps one for system calls; Close
// then lets it go without stopping anything again.
func TestBorrowIntoPauseAndEndPause(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	tid, err := p.Borrow(0)
	if err != nil {
		t.Fatal(err)
	}
	switch tid {
	case b.tid["read"], b.tid["accept"], b.tid["main"]:
	default:
		t.Errorf("Borrow(0) picked tid %d, not a thread waiting for work (%v)", tid, b.tid)
	}
	if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Lent() != 0 {
		t.Errorf("Lent %d after Stop took the thread in", p.Lent())
	}
	kept, err := p.EndPause(true)
	if err != nil {
		t.Fatal(err)
	}
	if kept != tid {
		t.Errorf("EndPause kept %d, want the borrowed %d", kept, tid)
	}
	for r, other := range b.tid {
		if tp, _ := testutil.TracerPid(other); (tp != 0) != (other == kept) {
			t.Errorf("%s thread traced by %d after EndPause (kept %d)", r, tp, kept)
		}
	}
	if g, err := p.Syscall(unix.SYS_GETTID); err != nil || int(g) != kept {
		t.Fatalf("remote gettid on the kept thread = %d, %v", g, err)
	}
	if err := p.Stop(); err == nil {
		t.Error("Stop after EndPause succeeded")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, h := range p.Holds() {
		if h.Stops != 1 {
			t.Errorf("tid %d stopped %d times, want 1 (%+v)", h.Tid, h.Stops, h)
		}
		if (h.Syscalls > 0) != (h.Tid == tid) {
			t.Errorf("tid %d: %+v (borrowed %d)", h.Tid, h, tid)
		}
	}
	if n := len(p.Holds()); n != len(b.tid) {
		t.Errorf("%d threads in the held book, want %d", n, len(b.tid))
	}
	testutil.RequireReleased(t, b.Pid)
	time.Sleep(50 * time.Millisecond)
	b.requireNoEINTR(t)
}

// Signals keep arriving at a borrowed thread during its remote calls (an
// ftpd's SIGCHLDs while its children exit): each call still completes,
// the signals are delivered once it is returned, and no call gives up
// stopping for the same signal queued again and again.
func TestBorrowedThreadSignalStorm(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	main := b.tid["main"]
	if _, err := p.Borrow(main); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 40 {
			unix.Kill(b.Pid, unix.SIGUSR1)
			time.Sleep(500 * time.Microsecond)
		}
	}()
	for i := range 12 {
		// poll(NULL, 0, 2): 2 ms inside the call, signals arrive.
		if _, err := p.Syscall(unix.SYS_POLL, 0, 0, 2); err != nil {
			t.Fatalf("remote call %d during the signals: %v", i, err)
		}
	}
	<-done
	if err := p.Return(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	b.out.wait(t, "usr1 ", 5*time.Second)
	b.requireNoEINTR(t)
}
