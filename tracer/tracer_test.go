package tracer

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/symtab"
	"graft/internal/testutil"
)

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
	testutil.RequirePtrace(t)
	target := startSpin(t, "4")
	p := attach(t, target.Pid)
	if _, err := p.Regs(target.Pid); !errors.Is(err, ErrNotStopped) {
		t.Fatalf("regs while running: %v", err)
	}
	if p.Stopped() {
		t.Fatal("Stopped() true before Stop")
	}
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

func TestModulesAndBias(t *testing.T) {
	testutil.RequirePtrace(t)
	path := testutil.Build(t, "spin")
	target := startSpin(t, "2")
	mods, err := Modules(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var main, libc, vdso *Module
	for i := range mods {
		m := &mods[i]
		switch {
		case m.Main:
			main = m
		case strings.Contains(filepath.Base(m.Path), "libc.so") || strings.Contains(filepath.Base(m.Path), "libc-"):
			libc = m
		case m.Path == "[vdso]":
			vdso = m
		}
	}
	if main == nil || libc == nil || vdso == nil {
		t.Fatalf("want main, libc and vdso modules, got %+v", mods)
	}
	if main.Path != path {
		t.Errorf("main module %q, want %q", main.Path, path)
	}
	if len(main.BuildID) < 16 || len(libc.BuildID) < 16 {
		t.Errorf("build IDs: main %q libc %q", main.BuildID, libc.BuildID)
	}
	if want := fileBuildID(t, path); main.BuildID != want {
		t.Errorf("main build ID %q, file says %q", main.BuildID, want)
	}
	if vdso.Bias == 0 || vdso.BuildID == "" {
		t.Errorf("vdso bias %#x build ID %q", vdso.Bias, vdso.BuildID)
	}

	// The bias must map link-time addresses to the running code: every
	// busy thread's PC lies inside busy() at its symbol address + bias.
	tab, err := symtab.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	busy := tab.Find("busy")
	if len(busy) != 1 {
		t.Fatalf("busy symbol: %+v", busy)
	}
	p := attach(t, target.Pid)
	// A thread just created may still be in libc's start-up code: look
	// again a few times until both are in their loop.
	inBusy := 0
	for try := 0; try < 50 && inBusy != 2; try++ {
		if try > 0 {
			p.Resume()
			time.Sleep(10 * time.Millisecond)
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		inBusy = 0
		for _, tid := range p.Threads() {
			r, err := p.Regs(tid)
			if err != nil {
				t.Fatal(err)
			}
			if !main.Contains(r.Rip) {
				continue
			}
			if f, ok := tab.Lookup(r.Rip - main.Bias); ok && f.Name == "busy" {
				inBusy++
			}
		}
	}
	if inBusy != 2 {
		t.Errorf("%d threads found in busy() through the bias %#x, want 2", inBusy, main.Bias)
	}
	// Reading the code at busy's runtime address gives the file's bytes.
	want := fileBytesAt(t, path, busy[0].Addr, 16)
	got := make([]byte, 16)
	if _, err := p.ReadAt(got, int64(busy[0].Addr+main.Bias)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("code at busy: % x, file has % x", got, want)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, target.Pid)
}

func fileBuildID(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return buildIDOf(f)
}

// fileBytesAt reads n bytes of the ELF file at link-time address addr.
func fileBytesAt(t *testing.T, path string, addr uint64, n int) []byte {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && addr >= s.Addr && addr+uint64(n) <= s.Addr+s.Size {
			b := make([]byte, n)
			if _, err := s.ReadAt(b, int64(addr-s.Addr)); err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no section holds %#x", addr)
	return nil
}

func TestWriteReadOnlyText(t *testing.T) {
	testutil.RequirePtrace(t)
	path := testutil.Build(t, "spin")
	target := startSpin(t, "1")
	mods, err := Modules(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var main *Module
	for i := range mods {
		if mods[i].Main {
			main = &mods[i]
		}
	}
	tab, err := symtab.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// _fini runs only at a normal exit, which spin never reaches.
	fini := tab.Find("_fini")
	if len(fini) != 1 {
		t.Fatalf("_fini: %+v", fini)
	}
	addr := int64(fini[0].Addr + main.Bias)
	p := attach(t, target.Pid)
	orig := make([]byte, 4)
	if _, err := p.ReadAt(orig, addr); err != nil {
		t.Fatal(err)
	}
	patch := []byte{0xcc, 0xcc, 0x90, 0x90}
	if n, err := p.WriteAt(patch, addr); err != nil || n != 4 {
		t.Fatalf("write text: n=%d err=%v", n, err)
	}
	got := make([]byte, 4)
	if _, err := p.ReadAt(got, addr); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, patch) {
		t.Fatalf("read back % x, wrote % x", got, patch)
	}
	maps, err := ReadMaps(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if uint64(addr) >= m.Start && uint64(addr) < m.End && m.Writable() {
			t.Errorf("text mapping became writable: %+v", m)
		}
	}
	if _, err := p.WriteAt(orig, addr); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadAt(got, addr); err != nil || !bytes.Equal(got, orig) {
		t.Fatalf("restore: % x, %v", got, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, target.Pid)
	if target.Exited() {
		t.Fatal("target died")
	}
}

// TestRemoteSyscallsOnBlockedThreads borrows each thread blocked in a
// system call for remote syscalls (mmap/munmap on the reader), and checks
// that the program never notices: no EINTR, and the blocked calls still
// complete normally afterwards.
func TestRemoteSyscallsOnBlockedThreads(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"read", "accept", "sleep", "futex", "cond", "main"} {
		tid := b.tid[role]
		before, err := p.Regs(tid)
		if err != nil {
			t.Fatal(err)
		}
		if int64(before.OrigRax) < 0 {
			t.Errorf("%s thread %d not stopped inside a syscall (orig_rax %d)", role, tid, int64(before.OrigRax))
		}
		got, err := p.SyscallOn(tid, unix.SYS_GETTID)
		if err != nil {
			t.Fatalf("%s: remote gettid: %v", role, err)
		}
		if int(got) != tid {
			t.Errorf("%s: remote gettid = %d, want %d", role, got, tid)
		}
		after, err := p.Regs(tid)
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("%s: registers not restored:\nbefore %+v\nafter  %+v", role, before, after)
		}
	}

	// mmap and munmap on the thread blocked in read().
	rd := b.tid["read"]
	addr, err := p.SyscallOn(rd, unix.SYS_MMAP, 0, 8192, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		t.Fatalf("remote mmap: %v", err)
	}
	if !mapped(t, b.Pid, addr) {
		t.Fatalf("mmap returned %#x, not in /proc/%d/maps", addr, b.Pid)
	}
	if _, err := p.WriteAt([]byte("graft"), int64(addr)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := p.ReadAt(buf, int64(addr)); err != nil || string(buf) != "graft" {
		t.Fatalf("new mapping reads %q, %v", buf, err)
	}
	if _, err := p.SyscallOn(rd, unix.SYS_MUNMAP, addr, 8192); err != nil {
		t.Fatalf("remote munmap: %v", err)
	}
	if mapped(t, b.Pid, addr) {
		t.Fatalf("%#x still mapped after munmap", addr)
	}
	// And through the convenience API on a thread tracer picks.
	addr, err = p.Mmap(0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Mprotect(addr, 4096, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		t.Fatal(err)
	}
	if err := p.Munmap(addr, 4096); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)

	// The blocked calls carry on as if nothing happened.
	w, err := os.OpenFile(b.fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("written later\n"))
	w.Close()
	if l := b.out.wait(t, "read: ", 5*time.Second); l != "read: written later" {
		t.Errorf("reader got %q", l)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	b.out.wait(t, "accepted", 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	for role, tid := range b.tid {
		if s := ThreadState(b.Pid, tid); s != "S" {
			t.Errorf("%s thread %d in state %q after detach, want S (blocked again)", role, tid, s)
		}
	}
	b.requireNoEINTR(t)
}

func mapped(t *testing.T, pid int, addr uint64) bool {
	t.Helper()
	maps, err := ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if addr >= m.Start && addr < m.End {
			return true
		}
	}
	return false
}

// TestStopResumeBlockedNoEINTR: plain stop/resume cycles on threads in
// blocking calls must not surface EINTR either.
func TestStopResumeBlockedNoEINTR(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	for i := 0; i < 20; i++ {
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
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	time.Sleep(100 * time.Millisecond)
	b.requireNoEINTR(t)
}

// TestSignalsWhileStopped: a signal sent while the process is held is
// delivered after Resume (and after Close), never swallowed, also when a
// remote syscall ran on the thread that takes it.
func TestSignalsWhileStopped(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(b.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := p.SyscallOn(b.tid["main"], unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if n := b.out.count("usr1"); n != 0 {
		t.Fatalf("signal handled while stopped (%d lines)", n)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	b.out.wait(t, "usr1 1", 5*time.Second)

	// Again, but detach while the signal is pending.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	unix.Kill(b.Pid, unix.SIGUSR1)
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	b.out.wait(t, "usr1 2", 5*time.Second)
	testutil.RequireReleased(t, b.Pid)
	b.requireNoEINTR(t)
}

// TestCloseAfterPanic: a deferred Close in a panicking function still
// detaches a stopped process.
func TestCloseAfterPanic(t *testing.T) {
	testutil.RequirePtrace(t)
	target := startSpin(t, "2")
	p, err := Attach(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		defer p.Close()
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		panic("caller bug while the target is stopped")
	}()
	testutil.RequireReleased(t, target.Pid)
	if err := p.Stop(); !errors.Is(err, ErrClosed) {
		t.Fatalf("stop after close: %v", err)
	}
}

// TestRemoteErrnoAndProtNone: a failing remote syscall returns the kernel's
// errno; memory that process_vm_readv cannot read (PROT_NONE) is still
// read and written through /proc/PID/mem.
func TestRemoteErrnoAndProtNone(t *testing.T) {
	testutil.RequirePtrace(t)
	target := startSpin(t, "1")
	p := attach(t, target.Pid)
	if _, err := p.Mmap(0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0); !errors.Is(err, ErrNotStopped) {
		t.Fatalf("mmap while running: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	err := p.Munmap(0x1001, 4096) // not page aligned
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("munmap of an unaligned address: %v, want EINVAL", err)
	}
	addr, err := p.Mmap(0, 4096, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := vmRead(target.Pid, buf, int64(addr)); err == nil && n == len(buf) {
		t.Fatalf("process_vm_readv read PROT_NONE memory; the fallback is untested")
	}
	if _, err := p.WriteAt([]byte("tracer!!"), int64(addr)); err != nil {
		t.Fatalf("write PROT_NONE page: %v", err)
	}
	if _, err := p.ReadAt(buf, int64(addr)); err != nil || string(buf) != "tracer!!" {
		t.Fatalf("read PROT_NONE page: %q, %v", buf, err)
	}
	if err := p.Munmap(addr, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadAt(buf, int64(addr)); err == nil {
		t.Fatal("read of unmapped memory succeeded")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, target.Pid)
}

// TestSignalRaces: signals sent just before a Stop land in every possible
// state (queued, in a signal-delivery-stop seen by Stop, seen by the
// running loop); each one must be handled exactly once, also when a remote
// syscall runs on the thread meanwhile.
func TestSignalRaces(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	for i := 1; i <= 30; i++ {
		// From another process, so the handler's si_pid tells whether
		// the siginfo survived (a re-injected signal without it would
		// name graft's tracer thread).
		kill := exec.Command("kill", "-USR1", strconv.Itoa(b.Pid))
		if err := kill.Run(); err != nil {
			t.Fatal(err)
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.SyscallOn(b.tid["main"], unix.SYS_GETPID); err != nil {
			t.Fatal(err)
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		line := b.out.wait(t, fmt.Sprintf("usr1 %d from", i), 5*time.Second)
		if want := fmt.Sprintf("usr1 %d from %d", i, kill.Process.Pid); line != want {
			t.Errorf("handler saw %q, want %q", line, want)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	time.Sleep(100 * time.Millisecond)
	// Exactly once each: no signal lost, none delivered twice.
	if n := b.out.count("usr1 "); n != 30 || b.out.count("usr1 31") != 0 {
		t.Errorf("%d usr1 lines for 30 signals: %q", n, b.out.all())
	}
	b.requireNoEINTR(t)
}

// TestRemoteSyscallBlocks: a remote syscall that blocks (pause) is
// interrupted at the stop timeout; the borrowed thread gets its registers
// back and its own blocked read carries on.
func TestRemoteSyscallBlocks(t *testing.T) {
	testutil.RequirePtrace(t)
	b := startBlockers(t)
	p := attach(t, b.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	rd := b.tid["read"]
	before, err := p.Regs(rd)
	if err != nil {
		t.Fatal(err)
	}
	p.SetStopTimeout(200 * time.Millisecond)
	if _, err := p.SyscallOn(rd, unix.SYS_PAUSE); !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("remote pause: %v", err)
	}
	after, err := p.Regs(rd)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("registers not restored:\nbefore %+v\nafter  %+v", before, after)
	}
	if got, err := p.SyscallOn(rd, unix.SYS_GETTID); err != nil || int(got) != rd {
		t.Fatalf("remote gettid after the interrupted call: %d, %v", got, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.RequireReleased(t, b.Pid)
	w, err := os.OpenFile(b.fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("still reading\n"))
	w.Close()
	if l := b.out.wait(t, "read: ", 5*time.Second); l != "read: still reading" {
		t.Errorf("reader got %q", l)
	}
	b.requireNoEINTR(t)
}

// TestModulesDeletedExecutable: a running binary deleted (or replaced by
// an upgrade) on disk is read through /proc/PID/map_files.
func TestModulesDeletedExecutable(t *testing.T) {
	testutil.RequirePtrace(t)
	src := testutil.Build(t, "spin")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "spin-copy")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	target := testutil.Start(t, bin, "1")
	target.WaitLine(t, "ready", 10*time.Second)
	want := fileBuildID(t, bin)
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	mods, err := Modules(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if m.Main {
			if m.Path != bin+" (deleted)" || m.BuildID != want || m.Bias == 0 {
				t.Errorf("main module %q build ID %q bias %#x, want %q", m.Path, m.BuildID, m.Bias, want)
			}
			return
		}
	}
	t.Fatalf("no main module in %+v", mods)
}
