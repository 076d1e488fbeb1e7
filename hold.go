package graft

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"graft/tracer"
)

// One stop per apply (DESIGN.md's budget: an idle thread of the target is
// stopped once per apply). Only the pause stops every thread. The system
// calls around it run on one borrowed thread while the others go on
// (tracer/borrow.go):
//
//   - apply works out everything it can from files and memory reads first
//     (the image's place, every jump, the unwinder, the records it will
//     write), links the image, then borrows one thread, maps the image and
//     creates the record on it, and stops the others: the borrowed thread
//     is held straight through into the pause, so it too is stopped once;
//   - the pause ends by detaching from the threads (instead of resuming
//     them and stopping them all again to detach at Close), keeping the
//     borrowed thread when a superseded image or, for revert, the
//     reverted image and the record must be unmapped after the pause.
//
// A process that cannot lend a thread (the controller's fake) is stopped
// whole for those calls, as before.

// lender is a proc that can lend one thread while the rest run.
type lender interface {
	Borrow(tid int) (int, error)
	Return() error
	Lent() int
	EndPause(keepOne bool) (int, error)
	Holds() []tracer.Hold
	Settle() error
}

// giveBack returns the borrowed thread, if one still is.
func giveBack(p proc) error {
	if l, ok := p.(lender); ok {
		return l.Return()
	}
	return nil
}

// withThread runs fn (remote system calls) on the borrowed thread if one
// is, else on one borrowed for fn alone, else with the target stopped.
func withThread(p proc, fn func() error) error {
	l, ok := p.(lender)
	if !ok {
		return stopped(p, fn)
	}
	if l.Lent() != 0 {
		return fn()
	}
	if _, err := l.Borrow(0); err != nil {
		return fmt.Errorf("borrow a thread for system calls: %w", err)
	}
	err := fn()
	if rerr := l.Return(); rerr != nil {
		err = errors.Join(err, fmt.Errorf("return the borrowed thread: %w", rerr))
	}
	return err
}

// endPause lets the threads go at the end of a pause: detached (keeping
// one stopped for system calls if keepOne), or resumed for a process that
// cannot lend one.
func endPause(p proc, keepOne bool) error {
	l, ok := p.(lender)
	if !ok {
		return p.Resume()
	}
	_, err := l.EndPause(keepOne)
	return err
}

// loadPlan carries to sys.load the address planned for the image (before
// the jumps were planned, so nothing of the target is touched in between;
// loadImage maps the image exactly there) and that the thread it borrows,
// only once the image is linked, stays borrowed for the pause.
type loadPlan struct {
	base uint64
	keep bool
}

type loadPlanKey struct{}

func withLoadPlan(ctx context.Context, base uint64) context.Context {
	return context.WithValue(ctx, loadPlanKey{}, loadPlan{base: base, keep: true})
}

func loadPlanOf(ctx context.Context) loadPlan {
	pl, _ := ctx.Value(loadPlanKey{}).(loadPlan)
	return pl
}

// ThreadHold is how long one thread of the target was held stopped by
// an apply or revert, by cause.
type ThreadHold struct {
	Tid int `json:"tid"`
	// Stops counts the times it was stopped.
	Stops int `json:"stops"`
	// PauseUS: stopped with every other thread (the pause, and any
	// earlier pauses of a wait for a safe point).
	PauseUS int64 `json:"pause_us"`
	// SyscallsUS: borrowed alone to run graft's system calls (loading the
	// image, creating the record, unmapping), the others running.
	SyscallsUS int64 `json:"syscalls_us,omitempty"`
}

// holdsOf reports the held time of every thread p stopped.
func holdsOf(p proc) []ThreadHold {
	l, ok := p.(lender)
	if !ok {
		return nil
	}
	var out []ThreadHold
	for _, h := range l.Holds() {
		out = append(out, ThreadHold{Tid: h.Tid, Stops: h.Stops, PauseUS: h.Pause.Microseconds(), SyscallsUS: h.Syscalls.Microseconds()})
	}
	return out
}

// loadForPause loads the image at base (the loader borrows a thread once
// the image is linked and keeps it) and creates the record if there is
// none yet (stateAddr 0) on the same thread, which stays borrowed for the
// pause that follows. On failure nothing is left in the target and the
// thread is given back. undo takes both out again.
func (sys *system) loadForPause(ctx context.Context, p proc, pid int, pr *prepared, exe *tracer.Module, mods []tracer.Module, base, stateAddr uint64) (loaded loadedImage, addr uint64, undo []func() error, err error) {
	defer func() {
		if err != nil {
			if gerr := giveBack(p); gerr != nil {
				err = errors.Join(err, gerr)
			}
		}
	}()
	l, err := sys.load(withLoadPlan(ctx, base), p, pid, pr.image, exe, mods, pr.patch.ID)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("load new code: %w", err)
	}
	undo = append(undo, func() error { return l.Unload(p) })
	if l.Base() != base {
		err := fmt.Errorf("load new code: mapped at %#x, planned at %#x", l.Base(), base)
		return nil, 0, nil, errors.Join(err, l.Unload(p))
	}
	addr = stateAddr
	if addr == 0 {
		err := withThread(p, func() (err error) {
			addr, err = createStateMapping(p)
			return err
		})
		if err != nil {
			return nil, 0, nil, errors.Join(err, l.Unload(p))
		}
		undo = append(undo, func() error {
			return withThread(p, func() error { return p.Munmap(addr, stateCapacity) })
		})
	}
	// Put the borrowed thread's registers and stack back now, not in
	// the pause (it stays stopped and borrowed).
	if lp, ok := p.(lender); ok {
		if err := lp.Settle(); err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				err = errors.Join(err, undo[i]())
			}
			return nil, 0, nil, err
		}
	}
	return l, addr, undo, nil
}

// forPause holds off graft's garbage collector until restore is called:
// a collection under way finishes now and the next one cannot start, so a
// pause never shares two cores with graft's own collector (the heap grows
// unchecked meanwhile, by what one apply allocates). Raising graft's
// priority for the pause as well (nice -10) was tried and dropped: on a
// loaded 2-core machine it left the share of slow pauses unchanged (7-9%
// against 8-13%, BenchmarkStackedPauses, same runs), nearly all of them
// being a target thread waiting for a CPU.
func forPause() (restore func()) {
	old := debug.SetGCPercent(-1) // waits for a running cycle to end
	return func() { debug.SetGCPercent(old) }
}
