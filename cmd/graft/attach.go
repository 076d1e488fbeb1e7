package main

import (
	"errors"
	"sync"

	"graft/tracer"
)

// errInterrupted is what a command reports after an interrupt detached it.
var errInterrupted = errors.New("interrupted: detached")

// attached is a process held by a read-only command (inspect, stacks).
// When interrupted closes (SIGINT or SIGTERM, through interruptible) the
// process is detached at once from a watcher goroutine: a target the
// command stopped is released even while graft is blocked on it. Calls on
// the process fail from then on, and check turns that into
// errInterrupted.
type attached struct {
	*tracer.Process
	interrupted <-chan struct{}
	done        chan struct{}
	once        sync.Once
}

// attachInterruptible attaches to pid (Attach explains a wrong PID or
// missing privileges) and starts the watcher. The caller must release.
func attachInterruptible(pid int, interrupted <-chan struct{}) (*attached, error) {
	p, err := tracer.Attach(pid)
	if err != nil {
		return nil, err
	}
	a := &attached{Process: p, interrupted: interrupted, done: make(chan struct{})}
	go func() {
		select {
		case <-interrupted:
			p.Close() // releases the target at once; later calls fail
		case <-a.done:
		}
	}()
	return a, nil
}

// check returns errInterrupted once an interrupt has arrived.
func (a *attached) check() error {
	select {
	case <-a.interrupted:
		return errInterrupted
	default:
		return nil
	}
}

// release stops the watcher and detaches. It is safe to call twice.
func (a *attached) release() error {
	a.once.Do(func() { close(a.done) })
	return a.Process.Close()
}
