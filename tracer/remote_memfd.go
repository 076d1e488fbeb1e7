package tracer

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Remote system calls the controller and the loader share, so that the
// numbers and flags of the kernel's ABI stay in tracer.

// Syscaller runs a system call in the target (Process.Syscall, or a fake).
type Syscaller interface {
	Syscall(nr uint64, args ...uint64) (uint64, error)
}

// Protections and flags for Process.Mmap.
const (
	ProtNone     = unix.PROT_NONE
	ProtRead     = unix.PROT_READ
	ProtWrite    = unix.PROT_WRITE
	ProtExec     = unix.PROT_EXEC
	MapPrivate   = unix.MAP_PRIVATE
	MapAnonymous = unix.MAP_ANONYMOUS
)

// CreateMemfd runs memfd_create (close-on-exec) in the target with the
// NUL-terminated name the target holds at nameAddr, and sizes the memfd to
// size. A memfd that cannot be sized is closed again. Precondition:
// stopped, or a thread borrowed.
func CreateMemfd(p Syscaller, nameAddr, size uint64) (fd uint64, err error) {
	fd, err = p.Syscall(unix.SYS_MEMFD_CREATE, nameAddr, unix.MFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("memfd_create: %w", err)
	}
	if _, err := p.Syscall(unix.SYS_FTRUNCATE, fd, size); err != nil {
		p.Syscall(unix.SYS_CLOSE, fd)
		return 0, fmt.Errorf("ftruncate: %w", err)
	}
	return fd, nil
}

// CloseFD closes descriptor fd in the target. Precondition: stopped, or a
// thread borrowed.
func CloseFD(p Syscaller, fd uint64) error {
	_, err := p.Syscall(unix.SYS_CLOSE, fd)
	return err
}
