package tracer

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ptraceGetSigmask returns a stopped tracee's blocked-signal mask. Inside
// sigsuspend, ppoll, pselect or epoll_pwait (TIF_RESTORE_SIGMASK set) the
// kernel answers with the mask the call will put back, not its temporary
// one: the thread's own mask.
func ptraceGetSigmask(tid int) (uint64, error) {
	var m uint64
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGMASK, uintptr(tid),
		unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return m, nil
}

// ptraceSetSigmask sets a stopped tracee's blocked-signal mask (SIGKILL
// and SIGSTOP are never blocked). It also drops TIF_RESTORE_SIGMASK: see
// remote_signals.go for why that is harmless when the mask set back is
// the one ptraceGetSigmask returned.
func ptraceSetSigmask(tid int, m uint64) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGMASK, uintptr(tid),
		unsafe.Sizeof(m), uintptr(unsafe.Pointer(&m)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func unsafePointer(p *[128]byte) unsafe.Pointer { return unsafe.Pointer(p) }
