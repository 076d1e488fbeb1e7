package tracer

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ptraceGetSigmask and ptraceSetSigmask read and replace a stopped thread's
// blocked-signal mask (PTRACE_GETSIGMASK/SETSIGMASK, Linux 3.11+). Remote
// syscalls block every signal while they run so that no queued signal is
// dequeued (and lost to graft) in the middle.
func ptraceGetSigmask(tid int) (uint64, error) {
	var mask uint64
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGMASK, uintptr(tid),
		unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return mask, nil
}

func ptraceSetSigmask(tid int, mask uint64) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGMASK, uintptr(tid),
		unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
