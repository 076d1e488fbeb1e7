package tracer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The self-restoring remote syscall (see doc.go, "Remote syscalls"): the
// borrowed thread runs `syscall; ret` with rsp pointing at
// [__restore_rt][rt_sigframe]. With graft alive the ret is never reached
// (registers are put back at the syscall-exit-stop); with graft dead the
// thread returns into __restore_rt, whose rt_sigreturn loads the frame:
// the thread's own registers, signal mask and FPU/SSE/AVX state.
//
// Layouts, from the kernel's arch/x86/include/uapi/asm/sigcontext.h,
// ucontext.h and arch/x86/kernel/signal_64.c, fpu/signal.c:
//
//	rt_sigframe: pretcode u64 | ucontext | siginfo (128)
//	ucontext:    uc_flags u64 | uc_link u64 | uc_stack {sp u64, flags i32,
//	             pad, size u64} | sigcontext (256) | uc_sigmask u64
//	sigcontext:  r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip,
//	             eflags, cs|gs<<16|fs<<32|ss<<48, err, trapno, oldmask,
//	             cr2, fpstate pointer, reserved[8]
//	fpstate:     XSAVE area (standard format), 64-byte aligned, with
//	             struct _fpx_sw_bytes at offset 464 (magic1, extended_size,
//	             xfeatures, xstate_size) and FP_XSTATE_MAGIC2 right after
//	             xstate_size bytes.
const (
	ucOff         = 8          // ucontext within rt_sigframe
	mcontextOff   = ucOff + 40 // sigcontext within rt_sigframe
	sigmaskOff    = mcontextOff + 256
	sigframeSize  = sigmaskOff + 8 + 128
	fpMagic1      = 0x46505853
	fpMagic2      = 0x46505845
	swBytesOff    = 464
	xstateHdrOff  = 512
	minXstateSize = 512 + 64
	ntX86Xstate   = 0x202

	ucFPXstate        = 0x1
	ucSigcontextSS    = 0x2
	ucStrictRestoreSS = 0x4

	erestartsys          = 512
	erestartnointr       = 513
	erestartnohand       = 514
	erestartRestartblock = 516
)

// frameGadgets finds `syscall; ret` and `mov $15,%rax; syscall` in the
// target's executable mappings, the vDSO first. Both are checked again on
// every use, in case the text was patched since. ok false: one is missing
// (a static binary without libc, say): the caller falls back to the
// single-step.
func (p *Process) frameGadgets() (ret, restorer uint64, ok bool) {
	retBytes := []byte{0x0f, 0x05, 0xc3}
	rtBytes := []byte{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}
	if p.noFrame {
		return 0, 0, false
	}
	if p.retGadget != 0 {
		a := make([]byte, 3)
		b := make([]byte, 9)
		_, e1 := p.ReadAt(a, int64(p.retGadget))
		_, e2 := p.ReadAt(b, int64(p.restorer))
		if e1 == nil && e2 == nil && bytes.Equal(a, retBytes) && bytes.Equal(b, rtBytes) {
			return p.retGadget, p.restorer, true
		}
		p.retGadget, p.restorer = 0, 0
	}
	maps, err := ReadMaps(p.pid)
	if err != nil {
		return 0, 0, false
	}
	sort.SliceStable(maps, func(i, j int) bool {
		return maps[i].Path == "[vdso]" && maps[j].Path != "[vdso]"
	})
	buf := make([]byte, 64<<10)
	for _, m := range maps {
		if !m.Executable() || m.Path == "[vsyscall]" {
			continue
		}
		for a := m.Start; a < m.End && (ret == 0 || restorer == 0); a += uint64(len(buf)) - 8 {
			n := min(uint64(len(buf)), m.End-a)
			k, _ := p.ReadAt(buf[:n], int64(a))
			if i := bytes.Index(buf[:k], retBytes); i >= 0 && ret == 0 {
				ret = a + uint64(i)
			}
			if i := bytes.Index(buf[:k], rtBytes); i >= 0 && restorer == 0 {
				restorer = a + uint64(i)
			}
			if n < uint64(len(buf)) {
				break
			}
		}
	}
	if ret == 0 || restorer == 0 {
		p.noFrame = true
		return 0, 0, false
	}
	p.retGadget, p.restorer = ret, restorer
	return ret, restorer, true
}

// xstate reads tid's XSAVE area (standard format, as ptrace hands it out)
// and the size and feature mask a signal frame may claim for it. ptrace
// puts the user feature mask (XCR0) in the first 8 bytes of the fxsave
// sw_reserved area and sizes the area for those features. A signal frame
// may claim no more than the thread's signal-frame size (fpstate's
// user_size): that is the whole area unless the CPU has dynamically
// enabled features (AMX, bits 17 and 18), which are refused here (the
// caller falls back to the single-step).
func xstate(tid int) (area []byte, size uint32, features uint64, err error) {
	buf := make([]byte, 64<<10)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(tid),
		ntX86Xstate, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if errno != 0 {
		return nil, 0, 0, errno
	}
	area = buf[:iov.Len]
	if len(area) < minXstateSize {
		return nil, 0, 0, fmt.Errorf("xstate of %d bytes, want at least %d", len(area), minXstateSize)
	}
	features = binary.LittleEndian.Uint64(area[swBytesOff:])
	if features&3 != 3 {
		return nil, 0, 0, fmt.Errorf("xstate feature mask %#x lacks x87/SSE", features)
	}
	if features&(1<<17|1<<18) != 0 {
		return nil, 0, 0, fmt.Errorf("xstate feature mask %#x has dynamic (AMX) features", features)
	}
	return area, uint32(len(area)), features, nil
}

// blockedMask reads the thread's blocked-signal mask (SigBlk).
func blockedMask(pid, tid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no SigBlk line")
}

// continuation is what a thread in saved state executes next, as the
// kernel's restart logic would make it: a call interrupted with
// -ERESTART* is entered again. -ERESTART_RESTARTBLOCK re-enters the
// original call too, not restart_syscall: rt_sigreturn (restore_sigcontext)
// resets the restart block to do_no_restart_syscall, so restart_syscall
// would fail with EINTR; the original call, with its arguments still in
// the registers, sleeps its full (relative) time again instead.
func continuation(saved Regs) Regs {
	r := saved
	if int64(saved.OrigRax) < 0 {
		return r
	}
	switch -int64(saved.Rax) {
	case erestartsys, erestartnointr, erestartnohand, erestartRestartblock:
		r.Rax = saved.OrigRax
		r.Rip -= 2
	}
	return r
}

// sigframe is a frame prepared below a thread's stack: where it goes,
// what it holds, and what it overwrote (put back after the call).
type sigframe struct {
	sp       uint64 // the rsp the gadget runs with: [sp] = restorer
	addr     uint64 // lowest byte written
	data     []byte
	original []byte
	restorer uint64 // the __restore_rt it returns to
}

// buildFrame lays out [restorer][rt_sigframe] ... [fpstate] below the red
// zone under saved.Rsp.
func (p *Process) buildFrame(tid int, saved Regs, restorer uint64) (*sigframe, error) {
	area, size, features, err := xstate(tid)
	if err != nil {
		return nil, fmt.Errorf("read xstate of tid %d in pid %d: %w", tid, p.pid, err)
	}
	mask, err := p.ownSigmask(tid)
	if err != nil {
		return nil, fmt.Errorf("read signal mask of tid %d in pid %d: %w", tid, p.pid, err)
	}
	top := saved.Rsp - 128
	fpAddr := (top - uint64(size) - 4) &^ 63
	sp := (fpAddr - sigframeSize) &^ 15
	data := make([]byte, top-sp)
	le := binary.LittleEndian
	put := func(off int, v uint64) { le.PutUint64(data[off:], v) }

	put(0, restorer)
	put(ucOff, ucFPXstate|ucSigcontextSS|ucStrictRestoreSS)
	// uc_stack: an invalid ss_flags makes rt_sigreturn's sigaltstack
	// fail (its error is ignored), leaving the thread's alternate stack
	// as it is, whatever it is.
	le.PutUint32(data[ucOff+16+8:], 0xffff)
	c := continuation(saved)
	for i, v := range []uint64{c.R8, c.R9, c.R10, c.R11, c.R12, c.R13, c.R14, c.R15,
		c.Rdi, c.Rsi, c.Rbp, c.Rbx, c.Rdx, c.Rax, c.Rcx, c.Rsp, c.Rip, c.Eflags,
		c.Cs&0xffff | (c.Gs&0xffff)<<16 | (c.Fs&0xffff)<<32 | (c.Ss&0xffff)<<48} {
		put(mcontextOff+8*i, v)
	}
	put(mcontextOff+8*23, fpAddr) // after err, trapno, oldmask, cr2
	put(sigmaskOff, mask)

	fp := data[fpAddr-sp:]
	copy(fp, area)
	sw := fp[swBytesOff:]
	clear(sw[:48])
	le.PutUint32(sw, fpMagic1)
	le.PutUint32(sw[4:], size+4)
	le.PutUint64(sw[8:], features)
	le.PutUint32(sw[16:], size)
	// Claim no component beyond what xstate_size holds.
	le.PutUint64(fp[xstateHdrOff:], le.Uint64(fp[xstateHdrOff:])&features)
	le.PutUint32(fp[size:], fpMagic2)

	f := &sigframe{sp: sp, addr: sp, data: data, original: make([]byte, len(data)), restorer: restorer}
	if _, err := p.ReadAt(f.original, int64(sp)); err != nil {
		return nil, err
	}
	return f, nil
}

// syscallStop is the stop signal of a syscall-stop (PTRACE_O_TRACESYSGOOD).
const syscallStop = unix.SIGTRAP | 0x80

// traceSyscall runs t, its registers set up at gadget (`syscall; ret`), to
// the syscall-exit-stop of call nr and returns rax there; then parks t in
// a stop inside the kernel's signal path (park) so that the registers
// restored there are what the restart logic sees. No trap is ever pending:
// a tracer killed at any moment leaves a thread that finishes the call and
// returns through the frame.
//
// hold: at a clean syscall-exit-stop (no timeout, no signal kept), leave
// t there unparked (parked false): it is as safe as anywhere in the call,
// and the next call can start right from it (chainedSyscall); settle
// parks it later.
func (p *Process) traceSyscall(t *thread, gadget, nr uint64, hold bool) (ret uint64, parked bool, err error) {
	tid := t.tid
	final := stopEvent
	defer func() {
		if _, ok := p.threads[tid]; ok {
			t.state = final
		}
	}()
	deadline := time.Now().Add(p.stopTimeout)
	entered, interrupted := false, false
	var callErr error
	var sigs []int // signals t stopped for on the way (see remote_signals.go)
	for i := 0; ; i++ {
		if i >= 64 {
			// t is stopped (we only get here after a stop): park it.
			callErr = fmt.Errorf("remote syscall on tid %d in pid %d: no syscall-exit-stop after 64 stops", tid, p.pid)
			if len(sigs) > 32 {
				callErr = p.signalStopsError(tid, sigs)
			}
			if err := p.park(t, &final); err != nil {
				return 0, true, err
			}
			return 0, true, callErr
		}
		pass := t.resumeSig
		t.resumeSig = 0
		if err := ptrace(unix.PTRACE_SYSCALL, tid, 0, uintptr(pass)); err != nil {
			return 0, false, p.opErr("run remote syscall", tid, err)
		}
		ws, err := p.waitRaw(t, deadline, false)
		if err == errTimedOut && !interrupted {
			// The call blocks: interrupt it; its syscall-exit-stop (or,
			// not entered yet, an event stop) follows.
			ptraceInterrupt(tid)
			interrupted = true
			callErr = fmt.Errorf("remote syscall on tid %d in pid %d: %w within %v (interrupted)",
				tid, p.pid, ErrStopTimeout, p.stopTimeout)
			ws, err = p.waitRaw(t, time.Now().Add(p.stopTimeout), false)
		}
		if err != nil {
			p.gone(tid, "")
			return 0, false, p.opErr("wait for remote syscall", tid, unix.ESRCH)
		}
		if !ws.Stopped() {
			p.record(tid, ws)
			if p.exited != nil {
				return 0, false, p.exited
			}
			return 0, false, fmt.Errorf("remote syscall on tid %d in pid %d: thread exited: %w", tid, p.pid, ErrNoThread)
		}
		sig := ws.StopSignal()
		switch {
		case sig == syscallStop && !entered:
			r, err := ptraceGetRegs(tid)
			if err != nil {
				return 0, false, p.opErr("read remote syscall registers", tid, err)
			}
			if r.Rip != gadget+2 || r.OrigRax != nr {
				return 0, false, fmt.Errorf("remote syscall on tid %d in pid %d: syscall-enter-stop at %#x for call %d, want %#x for %d",
					tid, p.pid, r.Rip, int64(r.OrigRax), gadget+2, nr)
			}
			entered = true
		case sig == syscallStop:
			r, err := ptraceGetRegs(tid)
			if err != nil {
				return 0, false, p.opErr("read remote syscall result", tid, err)
			}
			if hold && callErr == nil && t.sig == 0 {
				return r.Rax, false, nil
			}
			if err := p.park(t, &final); err != nil {
				return 0, true, err
			}
			if callErr != nil {
				return 0, true, callErr
			}
			return r.Rax, true, nil
		case int(ws)>>16 != 0:
			if interrupted && !entered {
				// Stopped by our interrupt before the call ran: this
				// event stop is inside the signal path; done.
				return 0, true, callErr
			}
			// A late interrupt or a group-stop: go on.
		default:
			// A signal dequeued before the syscall ran: keep it.
			sigs = append(sigs, int(sig))
			p.keepSignal(t, int(sig))
		}
	}
}

// park moves t from its syscall-exit-stop into an event stop inside the
// signal path (PTRACE_INTERRUPT, continue: the trap is taken before the
// thread returns to user mode). A signal stop met on the way is kept.
// *final gets the stop t ends in.
func (p *Process) park(t *thread, final *stopKind) error {
	tid := t.tid
	// Again even if the call was interrupted: its syscall-exit-stop may
	// have used that interrupt up.
	if err := ptraceInterrupt(tid); err != nil {
		return p.opErr("interrupt after remote syscall", tid, err)
	}
	if err := ptraceCont(tid, 0); err != nil {
		return p.opErr("continue after remote syscall", tid, err)
	}
	for i := 0; i < 32; i++ {
		ws, err := p.waitRaw(t, time.Now().Add(p.stopTimeout), false)
		if err != nil {
			p.gone(tid, "")
			return p.opErr("wait after remote syscall", tid, unix.ESRCH)
		}
		if !ws.Stopped() {
			p.record(tid, ws)
			if p.exited != nil {
				return p.exited
			}
			return fmt.Errorf("remote syscall on tid %d in pid %d: thread exited: %w", tid, p.pid, ErrNoThread)
		}
		if int(ws)>>16 != 0 {
			*final = stopEvent
			return nil
		}
		// A signal stop before the trap (the trap is pending, so the
		// thread stops again before user mode).
		p.keepSignal(t, int(ws.StopSignal()))
		if err := ptraceCont(tid, 0); err != nil {
			return p.opErr("continue after remote syscall", tid, err)
		}
	}
	return fmt.Errorf("remote syscall on tid %d in pid %d: no stop after the call", tid, p.pid)
}

// requeueKept queues t's kept signal again, with its original siginfo,
// from inside the target (rt_tgsigqueueinfo to itself is allowed with any
// si_code; from graft it would be EPERM). t is in an event stop, where a
// signal cannot be injected. The siginfo goes below the frame area
// (below, the lowest address the frame used), which is put back after.
// On failure the signal stays kept and is queued with tgkill on resume.
func (p *Process) requeueKept(t *thread, below uint64) {
	if t.info == nil || t.info.signo() != t.sig || p.requeueing {
		return
	}
	p.requeueing = true
	defer func() { p.requeueing = false }()
	addr := (below - 256) &^ 15
	orig := make([]byte, len(t.info))
	if _, err := p.ReadAt(orig, int64(addr)); err != nil {
		return
	}
	if _, err := p.WriteAt(t.info[:], int64(addr)); err != nil {
		return
	}
	sig, info := t.sig, t.info
	t.sig, t.info = 0, nil
	ret, err := p.remoteSyscall(t, unix.SYS_RT_TGSIGQUEUEINFO, [6]uint64{uint64(p.pid), uint64(t.tid), uint64(sig), addr})
	if err != nil || int64(ret) < 0 {
		if t.sig == 0 {
			t.sig, t.info = sig, info
		}
	}
	p.WriteAt(orig, int64(addr))
}
