package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"graft"
	"graft/internal/osig"
	"graft/safepoint"
	"graft/tracer"
)

// Exit statuses (README, "Exit status"):
const (
	exitOK        = 0 // done
	exitFailed    = 1 // failed; the target is as it was
	exitUsage     = 2 // the command line is wrong; nothing was touched
	exitAttention = 3 // the target's state needs attention (see the message)
	// 128+N: interrupted by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP)
)

// usageError is a wrong command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// statusError carries the exit status of a command whose logic function
// returns one (func runX(ctx, stdout, stderr, opts) int) and has already
// said why: run exits with it and prints nothing more.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitWith adapts such a function's result to a cobra RunE:
//
//	RunE: func(c *cobra.Command, args []string) error {
//		ctx, stop := interruptible()
//		defer stop()
//		return exitWith(runPlay(ctx, stdout, stderr, o))
//	},
func exitWith(code int) error {
	if code == 0 {
		return nil
	}
	return &statusError{code}
}

// outcome is how run reports an error.
type outcome struct {
	exit    int
	code    string // stable, for scripts (the "code" of --json errors)
	message string
}

// classify maps an error to its exit status, code and message.
func classify(err error) outcome {
	msg := err.Error()
	var se *statusError
	if errors.As(err, &se) {
		return outcome{se.code, "", ""}
	}
	var ue *usageError
	switch {
	case errors.Is(err, graft.ErrNeedsAttention):
		return outcome{exitAttention, "needs_attention", msg}
	case sigOf() != 0:
		s := int(sigOf())
		return outcome{128 + s, "interrupted", fmt.Sprintf("interrupted by %s before finishing: the process was left as it was and released; nothing changed", osig.Name(s))}
	case errors.As(err, &ue) || isFlagError(err):
		return outcome{exitUsage, "usage", msg}
	}
	code := "failed"
	for _, c := range []struct {
		err  error
		code string
	}{
		{tracer.ErrNoSuchProcess, "no_such_process"},
		{tracer.ErrProcessExited, "process_exited"},
		{tracer.ErrZombie, "zombie"},
		{tracer.ErrKernelThread, "kernel_thread"},
		{tracer.ErrPermission, "permission_denied"},
		{tracer.ErrAlreadyTraced, "already_traced"},
		{tracer.ErrSelf, "self"},
		{tracer.ErrStopTimeout, "stop_timeout"},
		{tracer.ErrSignalStorm, "signal_storm"},
		{safepoint.ErrActive, "not_safe"},
		{graft.ErrBuildIDMismatch, "build_mismatch"},
		{graft.ErrRefused, "refused"},
		{graft.ErrNothingApplied, "nothing_applied"},
		{graft.ErrAlreadyApplied, "already_applied"},
		{graft.ErrRecordChanged, "record_changed"},
		{context.DeadlineExceeded, "timeout"},
	} {
		if errors.Is(err, c.err) {
			code = c.code
			break
		}
	}
	if h := hints[code]; h != "" && !strings.Contains(msg, h) {
		msg += "; " + h
	}
	return outcome{exitFailed, code, msg}
}

// hints say what to do next, for failures whose message does not.
var hints = map[string]string{
	"no_such_process": "check the PID (pgrep NAME)",
	"process_exited":  "the process exited meanwhile; nothing of graft is left in it",
	"not_safe":        "nothing was changed: try again when the process is less busy, give a longer --timeout, or, if that function's running frame may finish in the old code (an accept loop, main), name it with --allow-active",
	"stop_timeout":    "nothing was changed: a thread did not stop in time (uninterruptible sleep, state D); try again when it wakes, or give a longer --timeout",
	"signal_storm":    "nothing was changed: try again when the signal load is lower",
	"build_mismatch":  "make the patch from the build that runs: graft diff /proc/PID/exe NEW -o FILE (or from the NEW of the newest patch in effect)",
	"nothing_applied": "'graft status -p PID' shows what is in effect",
	"timeout":         "nothing was changed; give a longer --timeout",
}

func sigOf() int32 { return interruptedBy.Load() }

// isFlagError recognises cobra's and pflag's own parse errors, which
// come as plain errors.
func isFlagError(err error) bool {
	m := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "unknown command", "accepts ", "requires at least", "bad flag syntax", "if any flags in the group"} {
		if strings.Contains(m, p) {
			return true
		}
	}
	return false
}
