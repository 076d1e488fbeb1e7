package tracer

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// siginfo is the kernel's siginfo_t, kept opaque: tracer only saves one
// and puts it back, so a signal re-injected after a remote syscall reaches
// its handler with the sender's si_pid, si_code and value intact.
type siginfo [128]byte

func (si *siginfo) signo() int {
	return int(int32(uint32(si[0]) | uint32(si[1])<<8 | uint32(si[2])<<16 | uint32(si[3])<<24))
}

// code returns si_code.
func (si *siginfo) code() int {
	return int(int32(uint32(si[8]) | uint32(si[9])<<8 | uint32(si[10])<<16 | uint32(si[11])<<24))
}

func ptraceGetSiginfo(tid int) (*siginfo, error) {
	si := new(siginfo)
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGINFO, uintptr(tid),
		0, uintptr(unsafe.Pointer(si)), 0, 0)
	if errno != 0 {
		return nil, errno
	}
	return si, nil
}

func ptraceSetSiginfo(tid int, si *siginfo) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGINFO, uintptr(tid),
		0, uintptr(unsafe.Pointer(si)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
