package tracer

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Signals during a remote syscall.
//
// A borrowed thread runs the injected call with every catchable signal
// blocked (PTRACE_SETSIGMASK), and gets its own mask back when its
// registers go back (restoreAfter). Without that, a thread with a signal
// pending and unblocked dequeues it each time it is let go towards the
// `syscall` instruction and stops for it (signal-delivery-stop) before
// ever reaching the call; under a steady stream of signals (timers,
// signal-driven I/O, sigqueue) it never got there. Blocked, a signal that
// arrives during the call simply stays queued where the kernel put it
// (real-time signals one entry each, with their siginfo; a standard
// signal already pending merges exactly as it would while the program
// itself blocked it), and is delivered by the kernel, once, when the
// thread runs again with its own mask. Process-directed signals go to
// another thread that does not block them, or wait in the shared queue.
//
// What is not blocked: the synchronous signals (SIGSEGV, SIGBUS, SIGILL,
// SIGFPE, SIGTRAP, SIGSYS) keep the thread's own setting, because the
// kernel resets the handler of a forced signal that is blocked to
// SIG_DFL (force_sig_info), and the single-step fallback raises SIGTRAP.
//
// The own mask is the one PTRACE_GETSIGMASK reports: for a thread inside
// sigsuspend, ppoll, pselect or epoll_pwait, the mask the call restores on
// the way out, not its temporary one. PTRACE_SETSIGMASK clears the
// kernel's TIF_RESTORE_SIGMASK, so putting that mask back leaves the
// thread with the mask it would have had after the call; the call, when
// the restart logic enters it again, installs its temporary mask once
// more. The signal frame a SIGKILL-safe call returns through
// (remote_frame.go) carries the same own mask, so a graft killed while
// signals are blocked leaves a thread that unblocks them itself in
// rt_sigreturn.
//
// A signal the thread had already dequeued when it was borrowed (it sat
// in a signal-delivery-stop) cannot stay in that stop. It goes back to
// the kernel as the thread leaves the stop: PTRACE_SYSCALL passes it, and
// since it is blocked by then, the kernel queues it again itself, with
// its siginfo, in the queue it came from (ptrace_signal), so no moment
// exists where only graft knows of it: a graft killed at any point loses
// no signal (handOver). Only where the mask could not be set, or for a
// synchronous signal, is it kept and queued again after the call
// (requeueKept). borrow prefers threads in an event stop anyway.

// syncSignals are never blocked for a remote call (see above).
const syncSignals = 1<<(unix.SIGSEGV-1) | 1<<(unix.SIGBUS-1) | 1<<(unix.SIGILL-1) |
	1<<(unix.SIGFPE-1) | 1<<(unix.SIGTRAP-1) | 1<<(unix.SIGSYS-1)

// ownSigmask returns t's own blocked mask: the saved one while a remote
// call has it blocked, otherwise what the kernel reports (falling back to
// /proc's SigBlk where PTRACE_GETSIGMASK is missing).
func (p *Process) ownSigmask(tid int) (uint64, error) {
	if t := p.threads[tid]; t != nil && t.masked {
		return t.ownMask, nil
	}
	if m, err := ptraceGetSigmask(tid); err == nil {
		return m, nil
	}
	return blockedMask(p.pid, tid)
}

// blockSignals blocks every catchable, asynchronous signal on stopped
// thread t for a remote call. A failure leaves the mask as it was; the
// call then runs with the signals it lets in, kept as before.
func (p *Process) blockSignals(t *thread) {
	if t.masked || p.noSigmask {
		return
	}
	own, err := ptraceGetSigmask(t.tid)
	if err != nil {
		p.noSigmask = err == unix.EIO || err == unix.EINVAL
		return
	}
	if err := ptraceSetSigmask(t.tid, ^uint64(0)&^syncSignals|own&syncSignals); err != nil {
		return
	}
	t.masked, t.ownMask = true, own
}

// unblockSignals gives t its own mask back. It runs before t's registers
// are restored: a graft killed in between leaves the thread at the
// gadget, which returns through the frame (same mask).
func (p *Process) unblockSignals(t *thread) error {
	if !t.masked {
		return nil
	}
	if err := ptraceSetSigmask(t.tid, t.ownMask); err != nil && err != unix.ESRCH {
		return p.opErr("restore signal mask after remote syscall", t.tid, err)
	}
	t.masked = false
	return nil
}

// signalStopsError is the failure when a remote call never reached its
// system call because the thread kept stopping for signals: possible
// only where signals could not be blocked (PTRACE_SETSIGMASK missing).
func (p *Process) signalStopsError(tid int, sigs []int) error {
	seen := map[int]int{}
	var names []string
	for _, s := range sigs {
		if seen[s] == 0 {
			names = append(names, sigName(s))
		}
		seen[s]++
	}
	if len(names) > 4 {
		names = append(names[:4], "...")
	}
	return fmt.Errorf("system call injected into tid %d of pid %d: the thread stopped %d times for signals (%s) before the call could run, and its signals could not be blocked (PTRACE_SETSIGMASK refused): %w",
		tid, p.pid, len(sigs), strings.Join(names, ", "), ErrSignalStorm)
}

// ErrSignalStorm: a remote call could not run for signals arriving
// faster than the thread could be got to the call.
var ErrSignalStorm = errors.New("signals kept arriving")

// sigName names a signal the way kill -l does (SIGRTMIN+N for glibc's
// real-time range, which starts at 34).
func sigName(s int) string {
	if s >= 34 && s <= 64 {
		return fmt.Sprintf("SIGRTMIN+%d", s-34)
	}
	if n := unix.SignalName(unix.Signal(s)); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", s)
}

// handOver gives the signal t stopped for back to the kernel as it
// leaves its signal-delivery-stop (see above). Precondition: t's
// registers are set for the call.
func (p *Process) handOver(t *thread) {
	if !t.masked || t.state != stopSignal || t.sig == 0 || syncSignals&(1<<(t.sig-1)) != 0 {
		return
	}
	if t.info != nil && t.info.signo() == t.sig {
		ptraceSetSiginfo(t.tid, t.info)
	}
	t.resumeSig = t.sig
	t.sig, t.info = 0, nil
}
