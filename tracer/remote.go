package tracer

import (
	"bytes"
	"fmt"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Remote system calls run on a borrowed, stopped thread:
//
//  1. save its registers;
//  2. point rip at a `syscall; ret` (0f 05 c3) found in the target (libc's
//     syscall wrappers have it), put the number in rax and the arguments
//     in rdi, rsi, rdx, r10, r8, r9; set orig_rax to -1 so the kernel's
//     syscall-restart logic, which runs when the thread leaves its stop,
//     leaves the new rip and rax alone; point rsp at a frame written below
//     the red zone (remote_frame.go): [address of __restore_rt][rt_sigframe
//     holding the saved state];
//  3. PTRACE_SYSCALL to the syscall-enter-stop, PTRACE_SYSCALL to the
//     syscall-exit-stop: rax holds the result;
//  4. PTRACE_INTERRUPT and continue: the thread takes the trap before it
//     returns to user mode, inside the kernel's signal path, where the
//     restart logic runs after the stop (as in any stop the thread was
//     borrowed from);
//  5. restore the registers, orig_rax and an -ERESTART* rax included, and
//     the stack bytes the frame overwrote.
//
// Steps 4 and 5 are deferred while remote calls on the same thread follow
// one another (settle): the thread stays at its syscall-exit-stop, where
// setting step 2's registers again and PTRACE_SYSCALL start the next call
// with the frame already in place. The first other request settles it.
//
// Why not single-step: PTRACE_SINGLESTEP sets TF, and a graft killed
// while the thread is inside the call leaves it detached with TF set and
// graft's registers: it dies of SIGTRAP when the call returns. With
// PTRACE_SYSCALL nothing is pending at any moment; a graft killed anywhere
// in steps 2-4 leaves a thread that finishes the call (or makes it, if it
// had not reached it), returns to the `ret`, which pops __restore_rt, whose
// rt_sigreturn loads the frame: the thread's registers, signal mask and
// FPU/SSE/AVX state, and carries on where it was (an interrupted blocking
// call is entered again, see continuation). With graft alive the `ret` is
// never reached. Killed after step 5, the thread simply has its own state.
//
// The single-step remains the fallback when the target has no `syscall;
// ret` or no __restore_rt bytes (a static binary without libc), when the
// XSAVE area cannot be read or uses dynamically enabled features (AMX),
// or the frame cannot be written; that path is still exposed to SIGKILL.
//
// If the thread had been interrupted inside a blocking syscall (read,
// accept, nanosleep, futex), its saved regs say so (orig_rax = the call,
// rax = -ERESTARTSYS and friends) and the restart logic, now run on the
// restored registers when the thread is resumed, re-enters the original
// call: the program never sees EINTR. nanosleep's -ERESTART_RESTARTBLOCK
// continues through restart_syscall with the remaining time, kept in the
// thread's restart block, which mmap and friends do not touch. A thread in
// sigsuspend/ppoll/pselect has its temporary signal mask put back by the
// kernel when the call leaves without a handler, and gets it again when
// the call restarts.
//
// Signals. The thread runs the call with its asynchronous signals
// blocked and gets its own mask back with its registers (see
// remote_signals.go): signals arriving meanwhile stay queued and are
// delivered by the kernel when it runs. Where the mask cannot be set, a
// signal the thread dequeues before it reaches the syscall stops it
// (signal-delivery-stop); tracer suppresses it there and keeps it, as for
// a signal the thread was stopped for when borrowed. The thread ends in an event
// stop, from which no signal can be injected, so a kept signal is queued
// again from inside the target by a second remote call,
// rt_tgsigqueueinfo(pid, tid, sig, original siginfo) (a process may queue
// any siginfo to itself; graft may not), and is then delivered normally
// when the thread runs and has it unblocked. If that fails the signal is
// queued with tgkill on resume (its handler then sees graft as sender).
// On the single-step path the thread ends in a SIGTRAP
// signal-delivery-stop and the signal rides on the resume with its
// siginfo. (Two such signals at once are rare; the second is queued again
// with tgkill and loses its siginfo.)

// Syscall runs system call nr with up to six arguments inside the target
// on a borrowed thread and returns its result. A negative kernel return
// (-errno) comes back as an error wrapping syscall.Errno. Precondition:
// stopped.
func (p *Process) Syscall(nr uint64, args ...uint64) (uint64, error) {
	return p.SyscallOn(0, nr, args...)
}

// SyscallOn is Syscall on a given thread (tid 0: let tracer choose one,
// preferring a thread that is not inside a system call).
func (p *Process) SyscallOn(tid int, nr uint64, args ...uint64) (uint64, error) {
	if len(args) > 6 {
		return 0, fmt.Errorf("remote syscall %d in pid %d: %d arguments, at most 6", nr, p.pid, len(args))
	}
	var a [6]uint64
	copy(a[:], args)
	var ret uint64
	err := p.doReq(func() error {
		if err := p.usable(); err != nil {
			return err
		}
		t, err := p.syscallThread(nr, tid)
		if err != nil {
			return err
		}
		ret, err = p.remoteSyscall(t, nr, a)
		return err
	}, false)
	if err != nil {
		return 0, err
	}
	if int64(ret) < 0 && int64(ret) > -4096 {
		return ret, fmt.Errorf("remote syscall %d in pid %d: %w", nr, p.pid, syscall.Errno(-int64(ret)))
	}
	return ret, nil
}

// borrow picks the thread to run a remote syscall on: one in an ordinary
// stop (our interrupt or a signal) and, if one is, not inside a syscall,
// so no restart is involved at all. Group-stopped and clone-event threads
// are last resorts: they need re-parking afterwards.
func (p *Process) borrow() *thread {
	var plain, other []*thread
	for _, tid := range p.tids() {
		t := p.threads[tid]
		switch {
		case t.zombie:
		case t.state == stopEvent || t.state == stopSignal:
			plain = append(plain, t)
		default:
			other = append(other, t)
		}
	}
	// A thread in a signal-delivery-stop would have its signal queued
	// again after the call: take one in an event stop first.
	sort.SliceStable(plain, func(i, j int) bool { return plain[i].state == stopEvent && plain[j].state != stopEvent })
	for i, t := range plain {
		if i >= 8 {
			break // not worth more register reads
		}
		if r, err := p.regsOf(t); err == nil && int64(r.OrigRax) < 0 {
			return t
		}
	}
	if len(plain) > 0 {
		return plain[0]
	}
	sort.Slice(other, func(i, j int) bool { return other[i].state < other[j].state })
	if len(other) > 0 {
		return other[0]
	}
	return nil
}

// syscallGadget returns the address of a `syscall` instruction (0f 05) in
// an executable mapping of the target, the vDSO first. The two bytes are
// checked again on every use, in case the text was patched since.
func (p *Process) syscallGadget() (uint64, error) {
	if p.gadget != 0 {
		var b [2]byte
		if _, err := p.ReadAt(b[:], int64(p.gadget)); err == nil && b == [2]byte{0x0f, 0x05} {
			return p.gadget, nil
		}
		p.gadget = 0
	}
	maps, err := ReadMaps(p.pid)
	if err != nil {
		return 0, err
	}
	sort.SliceStable(maps, func(i, j int) bool {
		return maps[i].Path == "[vdso]" && maps[j].Path != "[vdso]"
	})
	buf := make([]byte, 64<<10)
	for _, m := range maps {
		if !m.Executable() || m.Path == "[vsyscall]" {
			continue
		}
		for a := m.Start; a < m.End; a += uint64(len(buf)) - 1 {
			n := min(uint64(len(buf)), m.End-a)
			k, _ := p.ReadAt(buf[:n], int64(a))
			if i := bytes.Index(buf[:k], []byte{0x0f, 0x05}); i >= 0 {
				p.gadget = a + uint64(i)
				return p.gadget, nil
			}
		}
	}
	return 0, fmt.Errorf("find syscall instruction in pid %d: none in any executable mapping", p.pid)
}

// remoteSyscall runs one syscall on stopped thread t (see the comment at
// the top of this file). On the self-restoring path it may leave t held
// (see settle): the next call on t in this stop then skips the frame
// building and writing and the parking.
func (p *Process) remoteSyscall(t *thread, nr uint64, a [6]uint64) (uint64, error) {
	retGadget, restorer, frameOK := p.frameGadgets()
	frameOK = frameOK && !p.forceStep
	if h := p.held; h != nil && (h != t || !frameOK || p.live == nil || p.live.restorer != restorer) {
		if err := p.settle(); err != nil {
			return 0, err
		}
	}
	if p.held == t {
		return p.chainedSyscall(t, retGadget, nr, a)
	}
	tid := t.tid
	if t.state == stopClone || t.state == stopOther {
		// Stopped inside a syscall's event report: the syscall would
		// finish after us and overwrite rax. Let it finish first.
		if err := p.repark(t); err != nil {
			return 0, err
		}
	}
	saved, err := p.regsOf(t)
	if err != nil {
		return 0, err
	}
	wasGroup := t.state == stopGroup
	if t.state == stopSignal && t.sig != 0 && t.info == nil {
		// Keep the siginfo of the signal it stopped for: the stop we
		// leave it in is ours, with our SIGTRAP's siginfo.
		if t.info, err = ptraceGetSiginfo(tid); err != nil {
			return 0, p.opErr("read siginfo", tid, err)
		}
	}

	r := saved
	r.Rax = nr
	r.OrigRax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	r.Rsp = (saved.Rsp - 128) &^ 15
	r.Eflags &^= 1 << 8 // TF: single-stepping sets its own

	// The self-restoring call when the target has the two gadgets and the
	// frame can be built and written; the single-step otherwise.
	var frame *sigframe
	if frameOK {
		if f, err := p.buildFrame(tid, saved, restorer); err == nil {
			if _, err := p.writeMem(f.data, int64(f.addr)); err == nil {
				frame = f
				r.Rip = retGadget
				r.Rsp = f.sp
			}
		}
	}
	var gadget uint64
	if frame == nil {
		if gadget, err = p.syscallGadget(); err != nil {
			return 0, err
		}
		r.Rip = gadget
	}
	t.regs = nil
	if err := ptraceSetRegs(tid, r); err != nil {
		if frame != nil {
			p.writeMem(frame.original, int64(frame.addr))
		}
		return 0, p.opErr("set registers for remote syscall", tid, err)
	}
	p.blockSignals(t) // after the registers: see remote_signals.go
	if frame != nil {
		p.handOver(t)
	}

	var ret uint64
	var runErr error
	if frame != nil {
		p.frameCalls++
		// Hold t at the syscall-exit-stop unless something must happen
		// right after the call: a group-stop to go back to, a signal to
		// queue again, or this is that requeue.
		hold := !wasGroup && !p.requeueing && t.sig == 0
		var parked bool
		ret, parked, runErr = p.traceSyscall(t, r.Rip, nr, hold)
		if !parked && runErr == nil && p.exited == nil {
			p.frameMu.Lock()
			p.live = frame
			p.frameMu.Unlock()
			p.held, p.heldSaved = t, saved
			t.regs = &saved // what Regs reports; the thread gets it back at settle
			return ret, nil
		}
	} else {
		ret, runErr = p.stepSyscall(t, gadget)
	}
	if p.exited != nil {
		return 0, p.exited
	}
	// Restore even if the call failed: the thread must carry on exactly
	// where it was.
	if err := p.restoreAfter(t, saved, frame, wasGroup, runErr); err != nil {
		return 0, err
	}
	return ret, nil
}

// chainedSyscall runs a call on the held thread t: it sits at the
// syscall-exit-stop of the previous call, its frame still in place and
// valid (its saved state has not changed: the process stayed stopped).
// From that stop new registers and PTRACE_SYSCALL take it straight back
// to the gadget; only the last call of the series parks it (settle).
func (p *Process) chainedSyscall(t *thread, gadget, nr uint64, a [6]uint64) (uint64, error) {
	r := p.heldSaved
	r.Rip = gadget
	r.Rax = nr
	r.OrigRax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	r.Rsp = p.live.sp
	r.Eflags &^= 1 << 8
	if err := ptraceSetRegs(t.tid, r); err != nil {
		serr := p.settle()
		if p.exited != nil {
			return 0, p.exited
		}
		if serr != nil {
			return 0, serr
		}
		return 0, p.opErr("set registers for remote syscall", t.tid, err)
	}
	p.frameCalls++
	ret, parked, err := p.traceSyscall(t, gadget, nr, true)
	if p.exited != nil {
		return 0, p.exited
	}
	if !parked && err == nil && t.sig == 0 {
		return ret, nil // still held
	}
	saved := p.heldSaved
	frame := p.live
	p.held = nil
	if err := p.restoreAfter(t, saved, frame, false, err); err != nil {
		return 0, err
	}
	return ret, nil
}

// settle puts the held thread back: parks it in an event stop inside the
// signal path (so the kernel's restart logic sees the restored registers,
// as in the stop it was borrowed from), restores its registers and the
// stack bytes under its frame, and queues again a signal it stopped for
// on the way. Every request other than a remote syscall settles first, so
// nothing else ever sees or moves a held thread, and the process never
// runs with one: Resume and Close are requests.
func (p *Process) settle() error {
	t := p.held
	if t == nil {
		return nil
	}
	saved, frame := p.heldSaved, p.live
	p.held = nil
	if p.exited != nil || p.threads[t.tid] != t {
		p.frameMu.Lock()
		p.live = nil
		p.frameMu.Unlock()
		return nil
	}
	final := stopEvent
	err := p.park(t, &final)
	if _, ok := p.threads[t.tid]; ok {
		t.state = final
	}
	if p.exited != nil {
		p.frameMu.Lock()
		p.live = nil
		p.frameMu.Unlock()
		return nil
	}
	return p.restoreAfter(t, saved, frame, false, err)
}

// restoreAfter gives t back its saved registers and the stack bytes the
// frame covered, queues again a signal kept during the call, and re-parks
// a thread taken from a group-stop. runErr is the call's error, returned
// if nothing worse happens.
func (p *Process) restoreAfter(t *thread, saved Regs, frame *sigframe, wasGroup bool, runErr error) error {
	tid := t.tid
	if err := p.unblockSignals(t); err != nil && runErr == nil {
		runErr = err
	}
	if err := ptraceSetRegs(tid, saved); err != nil && runErr == nil {
		runErr = p.opErr("restore registers after remote syscall", tid, err)
	}
	t.regs = &saved
	if frame != nil {
		// Below the red zone: dead stack for C code, but perhaps a
		// neighbour of a small Go goroutine stack. Put it back (with
		// whatever WriteAt put under it meanwhile).
		p.frameMu.Lock()
		if p.live == frame {
			p.live = nil
		}
		_, err := p.writeMem(frame.original, int64(frame.addr))
		p.frameMu.Unlock()
		if err != nil && runErr == nil && p.exited == nil {
			runErr = fmt.Errorf("restore stack of tid %d in pid %d after remote syscall: %w", tid, p.pid, err)
		}
	}
	if frame != nil && runErr == nil && t.sig != 0 && t.state != stopSignal {
		p.requeueKept(t, frame.sp)
	}
	if wasGroup && runErr == nil {
		// The process is job-control stopped: put the thread back into a
		// group-stop trap, so Resume can PTRACE_LISTEN it again.
		runErr = p.repark(t)
	}
	return runErr
}

// stepSyscall single-steps t until it has executed the syscall at gadget
// and returns rax. A signal dequeued on the way is suppressed and kept for
// delivery on resume (see the comment at the top of this file).
func (p *Process) stepSyscall(t *thread, gadget uint64) (uint64, error) {
	tid := t.tid
	final := stopSignal
	defer func() {
		// The thread now sits in a SIGTRAP signal-delivery-stop of ours
		// (or, interrupted, in an event stop); resuming it with t.sig (and
		// t.info put back) delivers the signal it stopped for, if any.
		if _, ok := p.threads[tid]; ok {
			t.state = final
		}
	}()
	deadline := time.Now().Add(p.stopTimeout)
	for i := 0; i < 32; i++ {
		if err := ptraceSingleStep(tid); err != nil {
			return 0, p.opErr("single-step remote syscall", tid, err)
		}
		ws, err := p.waitRaw(t, deadline, false)
		if err == errTimedOut {
			// The call blocks (or the thread sleeps uninterruptibly):
			// interrupt it so the registers can be restored.
			ptraceInterrupt(tid)
			if ws, err = p.waitRaw(t, time.Now().Add(p.stopTimeout), false); err == nil {
				ws = p.drainStepTrap(t, ws)
				if int(ws)>>16 != 0 {
					final = stopEvent
				}
				p.keepStop(t, ws)
				return 0, fmt.Errorf("remote syscall on tid %d in pid %d: %w within %v (interrupted)",
					tid, p.pid, ErrStopTimeout, p.stopTimeout)
			}
		}
		if err != nil {
			p.gone(tid, "")
			return 0, p.opErr("wait for remote syscall", tid, unix.ESRCH)
		}
		if !ws.Stopped() {
			p.record(tid, ws)
			if p.exited != nil {
				return 0, p.exited
			}
			return 0, fmt.Errorf("remote syscall on tid %d in pid %d: thread exited: %w", tid, p.pid, ErrNoThread)
		}
		sig := int(ws.StopSignal())
		if cause := int(ws) >> 16; cause != 0 {
			continue // an event stop (a late interrupt, a group-stop): step on
		}
		if sig == int(unix.SIGTRAP) {
			r, err := ptraceGetRegs(tid)
			if err != nil {
				return 0, p.opErr("read remote syscall result", tid, err)
			}
			if r.Rip == gadget+2 {
				return r.Rax, nil
			}
		}
		// A signal dequeued before the syscall ran: keep it.
		p.keepSignal(t, sig)
	}
	return 0, fmt.Errorf("remote syscall on tid %d in pid %d: thread never reached the syscall at %#x", tid, p.pid, gadget)
}

// drainStepTrap: a single-stepped syscall that we interrupted still
// raised its step trap on the way out, and the interrupt's event stop was
// reported first. That SIGTRAP is queued: delivered later it would kill
// the program. Let the thread dequeue it (synchronous signals go first)
// and stop for it, and return that stop.
func (p *Process) drainStepTrap(t *thread, ws unix.WaitStatus) unix.WaitStatus {
	if !ws.Stopped() || int(ws)>>16 == 0 || !sigPending(p.pid, t.tid, int(unix.SIGTRAP)) {
		return ws
	}
	if ptraceCont(t.tid, 0) != nil {
		return ws
	}
	next, err := p.waitRaw(t, time.Now().Add(p.stopTimeout), false)
	if err != nil {
		return ws
	}
	return next
}

// keepStop handles the stop an interrupted remote syscall ended in: a
// signal-delivery-stop's signal is kept, event stops need nothing.
func (p *Process) keepStop(t *thread, ws unix.WaitStatus) {
	if ws.Stopped() && int(ws)>>16 == 0 && ws.StopSignal() != unix.SIGTRAP {
		p.keepSignal(t, int(ws.StopSignal()))
	}
}

// keepSignal records a signal t stopped for, to be delivered when t is
// resumed; t must be in that signal's delivery-stop. One signal rides on
// the resume with its siginfo; a second is queued again with tgkill, but
// only when t goes back to its own code (deferSignal): queued at once it
// would be dequeued again at the next step of the remote call, stop the
// thread again, be queued again, and so on (a SIGCHLD of an exiting child
// of a borrowed ftpd did just that until the call gave up after 64 stops).
func (p *Process) keepSignal(t *thread, sig int) {
	if t.sig == 0 {
		t.sig = sig
		t.info, _ = ptraceGetSiginfo(t.tid)
		return
	}
	deferSignal(t, sig)
}

// repark moves a stopped thread into a PTRACE_EVENT_STOP trap (our
// interrupt, or a group-stop while the process is job-control stopped):
// interrupt it, let it go, and wait for the trap. A signal it stopped for
// stays recorded (resumeThread queues it again from an event stop).
func (p *Process) repark(t *thread) error {
	if err := ptraceInterrupt(t.tid); err != nil {
		return p.opErr("interrupt", t.tid, err)
	}
	sig, info := t.sig, t.info
	t.sig, t.info = 0, nil
	if err := ptraceCont(t.tid, 0); err != nil {
		return p.opErr("continue", t.tid, err)
	}
	t.state = running
	for i := 0; i < 32; i++ {
		ws, err := p.waitRaw(t, time.Now().Add(p.stopTimeout), false)
		if err == errTimedOut {
			return fmt.Errorf("re-park tid %d in pid %d: %w within %v", t.tid, p.pid, ErrStopTimeout, p.stopTimeout)
		}
		if err != nil {
			p.gone(t.tid, "")
		} else {
			p.record(t.tid, ws)
		}
		if p.exited != nil {
			return p.exited
		}
		if p.threads[t.tid] == nil {
			return fmt.Errorf("re-park tid %d in pid %d: thread exited: %w", t.tid, p.pid, ErrNoThread)
		}
		if t.state == stopEvent || t.state == stopGroup {
			if sig != 0 {
				t.sig, t.info = sig, info
			}
			return nil
		}
		if t.state == stopSignal {
			if sig == 0 {
				sig, info = t.sig, nil
				info, _ = ptraceGetSiginfo(t.tid)
			} else {
				deferSignal(t, t.sig)
			}
		}
		t.sig, t.info = 0, nil
		if err := ptraceCont(t.tid, 0); err != nil {
			return p.opErr("continue", t.tid, err)
		}
		t.state = running
	}
	return fmt.Errorf("re-park tid %d in pid %d: no trap after 32 stops", t.tid, p.pid)
}

// Mmap maps memory in the target (mmap(2) run remotely) and returns the
// address. Precondition: stopped.
func (p *Process) Mmap(addr, length uint64, prot, flags int, fd int64, off uint64) (uint64, error) {
	r, err := p.Syscall(unix.SYS_MMAP, addr, length, uint64(prot), uint64(flags), uint64(fd), off)
	if err != nil {
		return 0, fmt.Errorf("mmap %d bytes in pid %d: %w", length, p.pid, err)
	}
	return r, nil
}

// Munmap unmaps memory in the target. Precondition: stopped.
func (p *Process) Munmap(addr, length uint64) error {
	if _, err := p.Syscall(unix.SYS_MUNMAP, addr, length); err != nil {
		return fmt.Errorf("munmap %#x (%d bytes) in pid %d: %w", addr, length, p.pid, err)
	}
	return nil
}

// Mprotect changes the protection of target memory. A target under
// seccomp or MemoryDenyWriteExecute may refuse (EPERM/EACCES); callers can
// still write text through WriteAt. Precondition: stopped.
func (p *Process) Mprotect(addr, length uint64, prot int) error {
	if _, err := p.Syscall(unix.SYS_MPROTECT, addr, length, uint64(prot)); err != nil {
		return fmt.Errorf("mprotect %#x (%d bytes) in pid %d: %w", addr, length, p.pid, err)
	}
	return nil
}
