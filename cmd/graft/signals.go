package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// interruptible returns a context cancelled on SIGINT or SIGTERM. Commands
// that hold a traced process pass it down so an operator's Ctrl-C makes graft
// detach cleanly (or roll back) instead of dying with the target stopped.
// The returned stop function restores default signal handling.
func interruptible() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
}
