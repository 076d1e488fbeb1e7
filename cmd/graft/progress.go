package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"graft/safepoint"
)

// progressPrinter returns the ApplyOptions.Progress that says on stderr,
// once a second, what keeps graft waiting for a safe point.
func progressPrinter(stderr io.Writer, verb string) func(safepoint.Waiting) {
	return func(w safepoint.Waiting) {
		fmt.Fprintf(stderr, "graft %s: waiting for a safe point (%s, %d checks): %s; giving up in %s (--timeout)\n",
			verb, w.Elapsed.Round(100*time.Millisecond), w.Checks, blockerText(w.Blocker), w.Left.Round(100*time.Millisecond))
	}
}

// blockerText names the thread, function and frame in the way.
func blockerText(err error) string {
	var ae *safepoint.ActiveError
	if !errors.As(err, &ae) {
		return fmt.Sprint(err)
	}
	switch {
	case ae.Incomplete:
		return fmt.Sprintf("thread %d's stack cannot be unwound to its end (%s)", ae.Tid, ae.Reason)
	case ae.Entry:
		return fmt.Sprintf("thread %d is at the start of %s, where the jump goes (frame #%d, pc %#x)", ae.Tid, ae.Function, ae.Frame, ae.PC)
	}
	return fmt.Sprintf("thread %d is inside %s (frame #%d, pc %#x)", ae.Tid, ae.Function, ae.Frame, ae.PC)
}
