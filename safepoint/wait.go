package safepoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"graft/tracer"
)

// Target is the part of a traced process safepoint needs; *tracer.Process
// satisfies it.
type Target interface {
	Memory
	Stop() error
	Resume() error
	Threads() []int
	Regs(tid int) (tracer.Regs, error)
}

// StacksOf unwinds every thread of a stopped target. A thread that exited
// since Threads listed it is left out. Stacks that could not be unwound to
// their end are included with their last frame marked Incomplete.
func (u *Unwinder) StacksOf(t Target) (map[int][]Frame, error) {
	out := map[int][]Frame{}
	for _, tid := range t.Threads() {
		regs, err := t.Regs(tid)
		if err != nil {
			if errors.Is(err, tracer.ErrNoThread) {
				continue
			}
			return nil, fmt.Errorf("unwind thread %d: %w", tid, err)
		}
		frames, _ := u.Unwind(regs, t) // incompleteness is marked in frames
		markSyscall(frames, regs, t)
		out[tid] = frames
	}
	return out, nil
}

// Backoff bounds for WaitSafe: short enough that a function that returns
// quickly is caught soon, long enough that the target makes progress
// between the pauses.
const (
	minBackoff = 200 * time.Microsecond
	maxBackoff = 20 * time.Millisecond
)

// WaitSafe waits until no thread of t is inside the code s protects.
// Precondition: t is stopped. It unwinds every thread and checks; when safe
// it returns nil with t still stopped, so the caller can write the
// trampolines in the same pause. When not, it resumes the whole process
// (never only some threads: a stopped thread may hold a lock the others
// need), waits with bounded exponential backoff, stops it again and
// re-checks, seeing threads created or exited meanwhile. On timeout or
// cancellation it returns the last check's *BlockedError, naming every
// blocking frame (errors.As also finds the first as an *ActiveError), wrapped (with the
// context's error too, on cancellation), with t stopped; the caller
// decides whether to resume.
func WaitSafe(ctx context.Context, t Target, u *Unwinder, s Spec, timeout time.Duration) error {
	_, err := WaitSafeStacks(ctx, t, u, s, timeout)
	return err
}

// WaitSafeStacks is WaitSafe that also returns the stacks of its last
// check (by thread id; nil if no check ran): when it returns nil they are
// the stacks of the pause the caller is in, so deciding more in that pause
// (may an image below be unmapped?) needs no second unwind.
func WaitSafeStacks(ctx context.Context, t Target, u *Unwinder, s Spec, timeout time.Duration) (map[int][]Frame, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	backoff := minBackoff
	lastReport := start
	for attempt := 1; ; attempt++ {
		if err := t.Stop(); err != nil {
			return nil, fmt.Errorf("wait for safe point: stop: %w", err)
		}
		stacks, err := u.StacksOf(t)
		if err != nil {
			return nil, fmt.Errorf("wait for safe point: %w", err)
		}
		j := Judge(stacks, s)
		if len(j.Blockers) == 0 {
			return stacks, nil
		}
		var cerr error = &BlockedError{Blockers: j.Blockers, Stayed: j.Stayed}
		now := time.Now()
		if err := ctx.Err(); err != nil {
			return stacks, fmt.Errorf("wait for safe point: %w after %d checks in %v: %w", err, attempt, now.Sub(start).Round(time.Millisecond), cerr)
		}
		if !now.Before(deadline) {
			return stacks, fmt.Errorf("wait for safe point: timed out after %d checks in %v: %w", attempt, now.Sub(start).Round(time.Millisecond), cerr)
		}
		if err := t.Resume(); err != nil {
			return nil, fmt.Errorf("wait for safe point: resume: %w", err)
		}
		s.reportProgress(&lastReport, start, deadline, now, attempt, cerr)
		wait := min(backoff, deadline.Sub(now))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		timer.Stop()
		backoff = min(2*backoff, maxBackoff)
	}
}

// markSyscall notes in frame 0 whether the thread is stopped inside a
// system call: orig_rax holds a system call number and the instruction
// before the PC is a syscall (0f 05). A thread stopped in user code has
// orig_rax -1.
func markSyscall(frames []Frame, regs tracer.Regs, mem Memory) {
	if len(frames) == 0 || int64(regs.OrigRax) < 0 || regs.OrigRax > 1<<12 || regs.Rip < 2 {
		return
	}
	var b [2]byte
	if _, err := mem.ReadAt(b[:], int64(regs.Rip-2)); err != nil || b != [2]byte{0x0f, 0x05} {
		return
	}
	frames[0].InSyscall, frames[0].Syscall = true, int64(regs.OrigRax)
	frames[0].SyscallArgs = [6]uint64{regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9}
}
