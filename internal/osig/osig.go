// Package osig names the signals graft itself handles (not its targets':
// those are tracer's), so that cmd/graft needs no syscall import: the
// ones that end a command cleanly, and SIGPIPE, which must not kill graft
// while it holds a process.
package osig

import (
	"os"
	"syscall"
)

// Termination are the signals that cancel a running command.
var Termination = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// Pipe is SIGPIPE.
var Pipe os.Signal = syscall.SIGPIPE

// Number returns the signal's number (for exit status 128+N), 0 if s is
// not a system signal.
func Number(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 0
}

// Name names signal number n the way graft's messages do.
func Name(n int) string {
	switch s := syscall.Signal(n); s {
	case syscall.SIGINT:
		return "SIGINT (Ctrl-C)"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	default:
		return s.String()
	}
}
