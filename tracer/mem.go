package tracer

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func (p *Process) closeMem() {
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if p.mem != nil {
		p.mem.Close()
		p.mem = nil
	}
}

// ReadAt reads target memory at addr (io.ReaderAt). It works whether the
// process runs or is stopped, and from any goroutine: it uses
// process_vm_readv, which needs no ptrace stop, and falls back to
// /proc/PID/mem for what that cannot read.
func (p *Process) ReadAt(b []byte, addr int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, verr := vmRead(p.pid, b, addr)
	if n == len(b) {
		p.overlay(b, addr)
		return n, nil
	}
	if n < 0 {
		n = 0
	}
	p.memMu.RLock()
	defer p.memMu.RUnlock()
	if p.mem == nil {
		return n, fmt.Errorf("read memory of pid %d at %#x: %w", p.pid, addr, ErrClosed)
	}
	m, err := p.mem.ReadAt(b[n:], addr+int64(n))
	n += m
	p.overlay(b[:n], addr)
	if n == len(b) {
		return n, nil
	}
	if processGone(p.pid) {
		return n, &ProcessExitedError{Pid: p.pid}
	}
	if err == nil {
		err = verr
	}
	return n, fmt.Errorf("read memory of pid %d at %#x (%d bytes): %w", p.pid, addr+int64(n), len(b)-n, err)
}

func vmRead(pid int, b []byte, addr int64) (int, error) {
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	return unix.ProcessVMReadv(pid, local, remote, 0)
}

// WriteAt writes target memory at addr (io.WriterAt) through
// /proc/PID/mem, which, like ptrace's POKE, reaches read-only mappings
// such as program text (the kernel copies the page on write).
func (p *Process) WriteAt(b []byte, addr int64) (int, error) {
	p.frameMu.Lock()
	defer p.frameMu.Unlock()
	return p.writeMem(p.redirect(b, addr), addr)
}

// overlay shows, in b read at addr, the bytes a live remote-call frame
// (see settle) covers as they were before it was written.
func (p *Process) overlay(b []byte, addr int64) {
	p.frameMu.Lock()
	defer p.frameMu.Unlock()
	if f := p.live; f != nil {
		copyOverlap(b, uint64(addr), f.original, f.addr)
	}
}

// redirect: a write into a live frame goes to the bytes put back when
// the frame is retired, the frame itself stays (the held thread may still
// need it if graft dies). Called with frameMu held.
func (p *Process) redirect(b []byte, addr int64) []byte {
	f := p.live
	if f == nil || uint64(addr) >= f.addr+uint64(len(f.data)) || uint64(addr)+uint64(len(b)) <= f.addr {
		return b
	}
	copyOverlap(f.original, f.addr, b, uint64(addr))
	c := append([]byte(nil), b...)
	copyOverlap(c, uint64(addr), f.data, f.addr)
	return c
}

// copyOverlap copies src (at address sa) into dst (at address da) where
// the two ranges overlap.
func copyOverlap(dst []byte, da uint64, src []byte, sa uint64) {
	lo, hi := max(da, sa), min(da+uint64(len(dst)), sa+uint64(len(src)))
	if lo < hi {
		copy(dst[lo-da:hi-da], src[lo-sa:hi-sa])
	}
}

// writeMem is WriteAt without the live-frame redirection.
func (p *Process) writeMem(b []byte, addr int64) (int, error) {
	p.memMu.RLock()
	defer p.memMu.RUnlock()
	if p.mem == nil {
		return 0, fmt.Errorf("write memory of pid %d at %#x: %w", p.pid, addr, ErrClosed)
	}
	n, err := p.mem.WriteAt(b, addr)
	if err != nil {
		if processGone(p.pid) {
			return n, &ProcessExitedError{Pid: p.pid}
		}
		return n, fmt.Errorf("write memory of pid %d at %#x (%d bytes): %w", p.pid, addr, len(b), err)
	}
	return n, nil
}
