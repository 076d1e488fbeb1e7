// Package tracer controls one live process through ptrace: it seizes every
// thread, stops and resumes them together, reads and writes registers and
// memory, runs system calls inside the target on a borrowed thread, and
// lists the modules mapped into it.
//
// It is the only package that touches a live process. Everything else in
// graft works on files (elfpatch) or on the data tracer hands out
// (safepoint, trampoline).
//
// # One tracer thread
//
// The kernel ties a tracee to the thread that attached it: only that OS
// thread may make ptrace requests on it (though any thread of the process
// can consume its wait reports; see Stop). Attach therefore
// starts one goroutine per Process, locked to its OS thread for good, and
// every ptrace and wait call runs there; exported methods send it closures
// over a channel (delve's execPtraceFunc). The goroutine never unlocks: if
// it ever ends with tracees attached, its thread exits and the kernel
// detaches them, leaving them running, rather than a recycled thread
// owning them. Stopped, Threads and Regs answer from a snapshot the
// goroutine publishes, because each hand-off costs two goroutine switches.
//
// # Attach
//
// PTRACE_SEIZE (never PTRACE_ATTACH, which sends SIGSTOP) on every thread
// in /proc/PID/task, with PTRACE_O_TRACECLONE so that threads created by a
// seized thread are attached by the kernel. The listing is repeated until
// it shows nothing new. A clone already under way when its parent was
// seized creates a thread the kernel does not attach and that a listing
// can miss; the first Stop lists again once every known thread is stopped
// (nothing of ours is then mid-clone) and seizes such stragglers.
//
// # Events while running
//
// A seized process runs, but its threads still stop for us: a new
// thread's first stop, a clone event, every signal (signal-delivery-stop),
// job-control stops. The goroutine waits for SIGCHLD (and polls every
// 50 ms in case one was coalesced), collects each thread's state change
// with wait4(tid, WNOHANG|__WALL) and sends it on: new threads are
// tracked and continued, signals delivered with PTRACE_CONT(sig), and a
// group-stop (SIGSTOP, SIGTSTP, ...) is honoured with PTRACE_LISTEN, so
// the process stays stopped until someone sends SIGCONT. tracer never
// waits for "any child": the program embedding it has children of its own.
//
// # Stop and Resume
//
// Stop sends PTRACE_INTERRUPT to every thread and collects each one's
// report (the leader last: a dying process reports its leader only after
// every other thread), recording what each stop was: our interrupt, a
// signal (kept, to be delivered on resume), a group-stop, a clone event
// (whose child is then waited for too). It polls with WNOHANG, yielding
// the CPU for the first 2 ms and then sleeping until SIGCHLD, rather than
// blocking in wait4, so it cannot hang: a thread in uninterruptible sleep
// (D) makes Stop give up after SetStopTimeout (10 s by default), resume
// what it stopped and name the thread (ErrStopTimeout). A stop whose
// report another thread of this process consumed (the target's real
// parent waiting for it from the same process, which the kernel treats
// as a ptrace wait) is recognised from /proc and PTRACE_GETSIGINFO.
// Resume continues each thread with its recorded signal, or
// PTRACE_LISTENs it if it was in a group-stop. So a signal that arrives
// while the process is held is delivered after Resume (or Close), never
// swallowed, and kill -STOP is never undone.
//
// # Remote syscalls
//
// See remote.go: registers saved, rip pointed at a `syscall` instruction
// found in the vDSO or libc, orig_rax set to -1, one PTRACE_SINGLESTEP,
// registers restored. A thread interrupted in a blocking call keeps
// orig_rax and its -ERESTART* rax, and the kernel restarts the call when
// it goes on: the program sees no EINTR. A signal the borrowed thread had
// stopped for, or dequeued on the way, is delivered on resume, with its
// original siginfo when the thread is left in a signal-delivery-stop. A
// thread that must go back into an event stop instead (its group-stop,
// when the process is job-control stopped, or a syscall-stop it is
// re-parked from) cannot carry a signal out of it: the signal is queued
// again with tgkill, and its handler then sees graft as the sender
// (si_code SI_TKILL, si_pid graft's), not the original one. A remote call
// that blocks is interrupted at the stop timeout.
//
// # Close
//
// Close stops the world (PTRACE_DETACH needs a stopped tracee), then
// detaches each thread with its pending signal; a thread in a group-stop
// goes back to it. Close is idempotent, safe from a deferred call after a
// panic (a panic inside a request is recovered on the tracer goroutine),
// and a process that exited meanwhile is not an error.
//
// # Limits
//
// An execve by the target while held is not followed (the threads it
// replaces are dropped as they vanish, and writes through the old
// /proc/PID/mem fail). PTRACE_O_TRACEEXIT is not used: thread exits are
// seen when they are reaped. A recovered stolen stop (above) still leaves
// the thief with a bogus "stopped" status; internal/testutil therefore
// reaps its targets only after they have exited.
package tracer
