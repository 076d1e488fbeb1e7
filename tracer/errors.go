package tracer

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error tracer returns wraps at most one of them, so
// callers can tell the cases apart with errors.Is; the message around it
// carries the PID/TID and what to do about it.
var (
	// ErrNoSuchProcess: the PID does not exist (or is not visible to us).
	ErrNoSuchProcess = errors.New("no such process")
	// ErrProcessExited is what *ProcessExitedError matches with errors.Is.
	ErrProcessExited = errors.New("process exited")
	// ErrPermission: the kernel refused ptrace access (EPERM); the wrapping
	// message explains the likely reason (privileges, Yama, owner).
	ErrPermission = errors.New("permission denied")
	// ErrAlreadyTraced: another tracer (a debugger, strace, another graft)
	// holds the process.
	ErrAlreadyTraced = errors.New("already traced")
	// ErrZombie: the process has exited and waits to be reaped.
	ErrZombie = errors.New("process is a zombie")
	// ErrSelf: graft cannot trace its own process.
	ErrSelf = errors.New("cannot attach to graft itself")
	// ErrNotStopped: the operation needs the process stopped (Stop first).
	ErrNotStopped = errors.New("process not stopped")
	// ErrClosed: the Process was closed (detached).
	ErrClosed = errors.New("process detached")
	// ErrNoThread: the TID is not a thread held by this Process.
	ErrNoThread = errors.New("no such thread")
)

// ProcessExitedError reports that the target exited, before or in the
// middle of an operation. Status describes how ("exit status 3", "killed by
// signal 9") when graft saw it, and is empty when it only found the process
// gone.
type ProcessExitedError struct {
	Pid    int
	Status string
}

func (e *ProcessExitedError) Error() string {
	if e.Status == "" {
		return fmt.Sprintf("process %d exited", e.Pid)
	}
	return fmt.Sprintf("process %d exited (%s)", e.Pid, e.Status)
}

// Is makes errors.Is(err, ErrProcessExited) true.
func (e *ProcessExitedError) Is(target error) bool { return target == ErrProcessExited }
