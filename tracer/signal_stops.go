package tracer

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Signal-delivery-stops met while stopping the process.
//
// The kernel drops the signal of a signal-delivery-stop when its tracer
// dies (measured: a tracer that exits with its tracee in such a stop
// leaves a queued real-time signal undelivered, its handler never run).
// So a stop that kept such a thread until Resume lost that signal whenever
// graft was SIGKILLed meanwhile: about 1 signal in 100 under a stream of
// signals and random kills. Instead, a signal the program has a handler
// for is delivered at once: PTRACE_CONT with it sets up the handler's
// frame, and the interrupt still pending stops the thread right after,
// before the handler's first instruction, in an event stop (the handler
// runs after Resume, as it would have). From then on the signal is the
// kernel's business: graft dying loses nothing. A thread does this at
// most maxEarly times per stop (a storm must not keep it from stopping);
// beyond that, for signals without a handler (default actions: stop,
// terminate, ignore), and for SIGURG, the stop is kept as before and the
// signal goes back in on Resume.
const maxEarly = 8

// deliverCaught delivers the signal t just stopped for, if the process
// catches it, and marks t running again so that stop waits for its
// event stop.
func (p *Process) deliverCaught(t *thread) {
	if t.state != stopSignal || t.sig == 0 || isStopSignal(t.sig) || t.early >= maxEarly {
		return
	}
	if syscall.Signal(t.sig) == unix.SIGURG {
		// Go's preemption request, every 10 ms per busy thread: one
		// lost costs nothing, and a thread parked at runtime.sigtramp
		// is no help to the goroutine walk.
		return
	}
	if !caught(p.pid, t.sig) {
		return
	}
	sig := p.prepareSignal(t)
	if err := ptraceCont(t.tid, sig); err != nil {
		return // stays in its stop; Resume delivers it
	}
	t.early++
	t.state = running
	t.sig, t.info, t.regs = 0, nil, nil
}

// caught reports whether the process has a handler for sig (SigCgt).
func caught(pid, sig int) bool {
	st, err := status(pid)
	if err != nil {
		return false
	}
	var mask uint64
	for _, c := range st["SigCgt"] {
		var v uint64
		switch {
		case c >= '0' && c <= '9':
			v = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			v = uint64(c-'a') + 10
		default:
			continue
		}
		mask = mask<<4 | v
	}
	return sig >= 1 && sig <= 64 && mask&(1<<(sig-1)) != 0 && syscall.Signal(sig) != unix.SIGKILL
}
