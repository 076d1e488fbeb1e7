package tracer

import (
	"golang.org/x/sys/unix"
)

// Thin wrappers over the ptrace requests graft uses. Every one of them must
// run on the Process's tracer goroutine (the OS thread that seized the
// tracee); the kernel answers ESRCH to any other thread.

// PTRACE_O_TRACESYSGOOD marks syscall-stops (SIGTRAP|0x80), which only
// the remote syscalls' PTRACE_SYSCALL produces.
const seizeOptions = unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACESYSGOOD

func ptraceSeize(tid int) error {
	return ptrace(unix.PTRACE_SEIZE, tid, 0, seizeOptions)
}

func ptraceInterrupt(tid int) error { return ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0) }

func ptraceCont(tid, sig int) error { return ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig)) }

func ptraceListen(tid int) error { return ptrace(unix.PTRACE_LISTEN, tid, 0, 0) }

func ptraceDetach(tid, sig int) error { return ptrace(unix.PTRACE_DETACH, tid, 0, uintptr(sig)) }

func ptraceSyscall(tid int) error { return ptrace(unix.PTRACE_SYSCALL, tid, 0, 0) }

func ptraceSingleStep(tid int) error { return ptrace(unix.PTRACE_SINGLESTEP, tid, 0, 0) }

func ptraceEventMsg(tid int) (uint, error) { return unix.PtraceGetEventMsg(tid) }

func ptrace(req, tid int, addr, data uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func ptraceGetRegs(tid int) (Regs, error) {
	var u unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &u); err != nil {
		return Regs{}, err
	}
	return Regs{
		R15: u.R15, R14: u.R14, R13: u.R13, R12: u.R12, Rbp: u.Rbp, Rbx: u.Rbx,
		R11: u.R11, R10: u.R10, R9: u.R9, R8: u.R8, Rax: u.Rax, Rcx: u.Rcx,
		Rdx: u.Rdx, Rsi: u.Rsi, Rdi: u.Rdi, OrigRax: u.Orig_rax, Rip: u.Rip,
		Cs: u.Cs, Eflags: u.Eflags, Rsp: u.Rsp, Ss: u.Ss, FsBase: u.Fs_base,
		GsBase: u.Gs_base, Ds: u.Ds, Es: u.Es, Fs: u.Fs, Gs: u.Gs,
	}, nil
}

func ptraceSetRegs(tid int, r Regs) error {
	u := unix.PtraceRegs{
		R15: r.R15, R14: r.R14, R13: r.R13, R12: r.R12, Rbp: r.Rbp, Rbx: r.Rbx,
		R11: r.R11, R10: r.R10, R9: r.R9, R8: r.R8, Rax: r.Rax, Rcx: r.Rcx,
		Rdx: r.Rdx, Rsi: r.Rsi, Rdi: r.Rdi, Orig_rax: r.OrigRax, Rip: r.Rip,
		Cs: r.Cs, Eflags: r.Eflags, Rsp: r.Rsp, Ss: r.Ss, Fs_base: r.FsBase,
		Gs_base: r.GsBase, Ds: r.Ds, Es: r.Es, Fs: r.Fs, Gs: r.Gs,
	}
	return unix.PtraceSetRegs(tid, &u)
}

// wait4 waits for a state change of one thread (__WALL: threads are
// "clone children" for wait purposes). It never waits for "any child": the
// process embedding tracer (a test binary, say) has children of its own
// whose exit statuses are not ours to reap.
func wait4(tid int, nohang bool) (int, unix.WaitStatus, error) {
	var ws unix.WaitStatus
	opts := unix.WALL
	if nohang {
		opts |= unix.WNOHANG
	}
	for {
		wpid, err := unix.Wait4(tid, &ws, opts, nil)
		if err == unix.EINTR {
			continue
		}
		return wpid, ws, err
	}
}

// yield gives the CPU to another runnable thread (the tracee we wait for,
// on a machine with few cores) without sleeping.
func yield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
