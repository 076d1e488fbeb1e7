package tracer

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// Consecutive remote calls on one thread keep it held at a
// syscall-exit-stop with its frame in place (settle). Meanwhile ReadAt
// shows the stack as it was, a WriteAt into the frame's bytes lands once
// the frame is retired, and the first other request (here SetRegs with
// the registers the thread had) puts everything back: its registers, and
// its stack bytes with the write applied.
func TestHeldFrameSettles(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sleepers"), "1")
	target.WaitLine(t, "ready", 10*time.Second)
	p, err := Attach(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		testutil.RequireReleased(t, target.Pid)
	}()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	tid := p.Threads()[1]
	before, err := p.Regs(tid)
	if err != nil {
		t.Fatal(err)
	}
	// The frame lies below the red zone, within 64 KB of rsp.
	lo := int64(before.Rsp-128) - 64<<10
	stack := make([]byte, 64<<10)
	if _, err := p.ReadAt(stack, lo); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		got, err := p.SyscallOn(tid, unix.SYS_GETTID)
		if err != nil {
			t.Fatal(err)
		}
		if int(got) != tid {
			t.Fatalf("remote gettid on %d: %d", tid, got)
		}
	}
	var held bool
	var live *sigframe
	p.doReq(func() error {
		held, live = p.held != nil && p.held.tid == tid, p.live
		return nil
	}, false)
	if !held || live == nil {
		t.Fatalf("after 3 calls: held %v, live frame %v; want the thread held (frame calls %d)", held, live != nil, p.frameCalls)
	}
	if p.frameCalls != 3 {
		t.Fatalf("%d calls on the frame path, want 3", p.frameCalls)
	}
	seen := make([]byte, len(stack))
	if _, err := p.ReadAt(seen, lo); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(seen, stack) {
		t.Fatal("ReadAt during a held call shows the frame, not the stack as it was")
	}
	raw := make([]byte, len(live.data))
	vmRead(p.pid, raw, int64(live.addr))
	if !bytes.Equal(raw, live.data) {
		t.Fatal("the held thread's frame is not in target memory")
	}
	// A write across the frame's lowest bytes.
	pat := bytes.Repeat([]byte{0xa5}, 64)
	at := int64(live.addr) - 32
	if _, err := p.WriteAt(pat, at); err != nil {
		t.Fatal(err)
	}
	vmRead(p.pid, raw, int64(live.addr))
	if !bytes.Equal(raw, live.data) {
		t.Fatal("WriteAt overwrote the live frame")
	}
	copy(stack[at-lo:], pat)

	if err := p.SetRegs(tid, before); err != nil {
		t.Fatal(err)
	}
	p.doReq(func() error { held, live = p.held != nil, p.live; return nil }, false)
	if held || live != nil {
		t.Fatal("SetRegs left the thread held")
	}
	after, err := ptraceRegsOn(p, tid)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("registers after settle:\n%+v\nwant\n%+v", after, before)
	}
	if n, _ := vmRead(p.pid, seen, lo); n != len(seen) || !bytes.Equal(seen, stack) {
		t.Fatal("stack bytes not put back (with the write) after settle")
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
}

// ptraceRegsOn reads tid's registers from the kernel, not the cache.
func ptraceRegsOn(p *Process, tid int) (Regs, error) {
	var r Regs
	err := p.doReq(func() error {
		var err error
		r, err = ptraceGetRegs(tid)
		return err
	}, false)
	return r, err
}
