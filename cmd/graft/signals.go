package main

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"

	"graft/internal/osig"
)

// interruptedBy is the signal (SIGINT, SIGTERM, SIGHUP) that cancelled
// the running command's context, 0 if none: run turns it into exit
// status 128+N and a sentence instead of "context canceled".
var interruptedBy atomic.Int32

func resetInterrupt() { interruptedBy.Store(0) }

// interruptible returns a context cancelled on SIGINT, SIGTERM or SIGHUP.
// Commands that hold a traced process pass it down so an operator's
// Ctrl-C makes graft detach cleanly (or roll back) instead of dying with
// the target stopped. The returned stop function restores default
// signal handling.
func interruptible() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, osig.Termination...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			interruptedBy.CompareAndSwap(0, int32(osig.Number(s)))
			cancel()
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}
