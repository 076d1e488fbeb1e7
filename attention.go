package graft

import (
	"errors"
	"fmt"
)

// ErrNeedsAttention marks a failure that could not leave the target
// exactly as it was (a rollback or a clean-up in the target failed): the
// operator should look (graft status) and clean up (graft revert --all).
// The CLI exits with status 3 for it.
var ErrNeedsAttention = errors.New("the process needs attention")

// attentionError wraps such a failure with what to do next.
type attentionError struct {
	pid int
	err error
}

func (e *attentionError) Error() string {
	return fmt.Sprintf("%v; check with 'graft status -p %d' and clean up with 'graft revert -p %d --all'", e.err, e.pid, e.pid)
}

func (e *attentionError) Unwrap() []error { return []error{e.err, ErrNeedsAttention} }

func needsAttention(pid int, err error) error {
	if err == nil || errors.Is(err, ErrNeedsAttention) {
		return err
	}
	return &attentionError{pid, err}
}
