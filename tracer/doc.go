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
// swallowed, and kill -STOP is never undone. One exception, for a graft
// that may die: a signal the program catches is delivered as soon as the
// thread stops for it (its handler's frame is set up and the pending
// interrupt stops the thread before the handler runs), because the kernel
// drops the signal of a signal-delivery-stop whose tracer dies
// (signal_stops.go).
//
// # Remote syscalls
//
// See remote.go: registers saved, rip pointed at a `syscall; ret` found
// in the target, orig_rax set to -1, the call run with PTRACE_SYSCALL to
// its syscall-exit-stop, the thread parked in an interrupt stop inside the
// kernel's signal path, registers restored. Consecutive calls on one
// thread within a stop share that work: the thread is held at the
// syscall-exit-stop of its last call, its frame left in place (the saved
// state cannot change while the process is stopped), and the next call
// starts from there (new registers, PTRACE_SYSCALL: two stops per call
// instead of three, no XSAVE read, no frame write). Every request other
// than a remote syscall, Resume and Close included, first settles the
// held thread (park, registers back, stack bytes back), so nothing else
// sees it and the process never runs with it; meanwhile ReadAt shows the
// stack bytes under the frame as they were and WriteAt there writes to
// the copy put back at settle. A thread interrupted in a
// blocking call keeps orig_rax and its -ERESTART* rax, and the kernel
// restarts the call when it goes on: the program sees no EINTR. The
// borrowed thread runs the call with every asynchronous signal blocked
// (PTRACE_SETSIGMASK) and gets its own mask back with its registers, so a
// steady stream of signals cannot keep it from the call, and each signal
// that arrives meanwhile stays queued, with its siginfo, for the kernel to
// deliver once when the thread runs (remote_signals.go). A signal
// the borrowed thread had already stopped for is queued
// again from inside the target with its original siginfo
// (rt_tgsigqueueinfo as a second remote call) and delivered normally on
// resume. A thread that must go back into its group-stop, when the
// process is job-control stopped, or a signal whose requeue failed, gets
// it queued again with tgkill, and its handler then sees graft as the
// sender (si_code SI_TKILL, si_pid graft's), not the original one. A
// remote call that blocks is interrupted at the stop timeout.
//
// # Borrowing one thread
//
// See borrow.go. Remote syscalls need one stopped thread, not a stopped
// process: Borrow interrupts a single thread (one asleep in a call that
// waits for work, accept/epoll_wait/poll..., then read or a futex wait,
// before a timed sleeper or a running thread) while every other thread
// runs on,
// and Syscall then runs on it exactly as above. Return lets it go. While
// it is borrowed, what the others stop for is passed on as usual (poll
// after each request), and nothing resumes it behind the borrower's
// back. A Stop while a thread is borrowed stops the others and takes the
// borrowed one in without letting it run, so a thread borrowed to load an
// image and then held through the pause is stopped once. EndPause ends a
// pause by detaching from every thread (each with its pending signal)
// instead of resuming it, optionally keeping one stopped and borrowed for
// the calls that follow the pause; Close then has nothing left to stop.
// Every stop is booked per thread, from the interrupt to the resume or
// detach, by cause (the pause, or borrowed for system calls): Holds. A
// borrowed thread is as safe against a SIGKILL of graft as one in a
// stopped process (the same frame); tracer/borrow_kill_test.go kills a
// tracer at random moments while it borrows. One more exposure: while the
// others run, the bytes the frame covers below a borrowed thread's stack
// are not only dead to that thread but may be live to a neighbour (a Go
// goroutine stack next to a small one): C and Go system stacks are fine.
//
// # Surviving a SIGKILL of graft
//
// graft can die at any instruction (SIGKILL, OOM killer); the kernel then
// detaches every thread as it is. Invariant: at every moment of a remote
// syscall the borrowed thread is in a state it can continue from on its
// own. Before its registers are changed and after they are restored that
// is its own state. In between, no trap is pending (PTRACE_SYSCALL, never
// TF), rip is at the `syscall; ret` or just past the syscall, and rsp
// points at [__restore_rt][rt_sigframe], written below the red zone, 16-
// (frame) and 64-byte (XSAVE area) aligned, holding the saved registers
// (with rip and rax set as the kernel's restart would set them), the
// blocked mask read from /proc (SigBlk) and the XSAVE area read with
// PTRACE_GETREGSET(NT_X86_XSTATE) with the signal-frame magic fields
// (fpu/signal.c's check_xstate_in_sigframe). The call finishes, ret jumps
// to __restore_rt, rt_sigreturn puts everything back; the injected call
// may or may not have happened, which the controller's record and revert
// handle. uc_stack holds an invalid ss_flags so that rt_sigreturn's
// sigaltstack fails (its error is ignored) and the thread's alternate
// stack stays as it is. Limits: the frame needs roughly 3 KB of stack
// below rsp-128 (more with AVX-512): fine on C and Go system stacks, but a
// Go thread borrowed while on a small goroutine stack may have memory
// below its stack overwritten; graft alive puts those bytes back, graft
// killed mid-call, or between two calls while the thread is held, cannot
// (a held thread is as safe as one mid-call: it returns through the
// frame; a WriteAt redirected under the frame is then lost). A thread borrowed inside sigsuspend/ppoll/
// pselect whose graft dies mid-call gets the call's temporary mask as its
// mask after the restarted call (the real one is not visible in /proc).
// -ERESTART_RESTARTBLOCK (nanosleep, poll, futex with a timeout) is
// restarted by re-entering the original call rather than
// restart_syscall, because rt_sigreturn resets the restart block: a
// relative sleep then starts over. The single-step fallback (remote.go)
// keeps the old exposure. tracer/kill_remote_test.go kills a tracer 50
// times at random moments of remote calls on a thread blocked in read()
// and a busy thread holding a ymm register: the single-step lost the
// target 42 times in 50, the frame never.
//
// # Close
//
// Close stops the world (PTRACE_DETACH needs a stopped tracee), then
// detaches each thread with its pending signal; a thread in a group-stop
// goes back to it. After EndPause only the kept thread, if any, is left
// to detach, and nothing is stopped. Close is idempotent, safe from a deferred call after a
// panic (a panic inside a request is recovered on the tracer goroutine),
// and a process that exited meanwhile is not an error.
//
// # Reading /proc without tracing
//
// tracer owns /proc: no other package of graft builds a /proc path
// (internal/testutil aside). ReadMaps, MemfdDescriptors (a process's open
// memfds, from /proc/PID/fd) and ScanMemfds (every process on the host
// mapping or holding a memfd with a given name prefix: graft's host-wide
// status) never attach or stop anything; nor do the helpers of procfs.go:
// ExePath (the running executable, even deleted), ModuleFile and
// ModulePaths (a module's file through the target's root or map_files),
// OpenMem/ProcMem, Tasks, SleepingAt, Comm, TracerPid, FDLink(s), OpenFD,
// NetFile, Pids, ReadProcStat. remote_memfd.go holds the remote calls the
// controller and the loader share (CreateMemfd, CloseFD) and the mmap
// constants, so kernel ABI numbers stay here.
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
