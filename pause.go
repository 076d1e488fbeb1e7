package graft

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The pause as a transaction. Apply and revert both work the same way:
// everything that can be computed while the target runs is prepared first
// (the jumps, the records, the unwinder); then one pause stops every
// thread, waits for a safe point, and makes its writes in a fixed order,
// each one pushing its undo. If a later write fails, the undos run newest
// first and the threads resume, so the target is as it was before the
// pause. Once every write is in, end lets the threads go.

// undoList is a stack of undos: run takes them out newest first and
// returns every failure.
type undoList []func() error

func (u *undoList) push(f func() error) { *u = append(*u, f) }

func (u undoList) run() error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] == nil {
			continue
		}
		if err := u[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pause is one stop of every thread of the target. us receives the pause's
// length when it ends, whichever way.
type pause struct {
	p    proc
	t0   time.Time
	us   *int64
	undo undoList
}

// stopAll starts a pause.
func stopAll(p proc, us *int64) (*pause, error) {
	t0 := time.Now()
	if err := p.Stop(); err != nil {
		return nil, fmt.Errorf("stop threads: %w", err)
	}
	return &pause{p: p, t0: t0, us: us}, nil
}

// waitSafe waits, stopped, for a safe point; the pause counts from the
// last stop. On failure the threads have resumed.
func (ps *pause) waitSafe(ctx context.Context, ck checker, spec safeSpec, timeout time.Duration) error {
	last, err := ck.waitSafe(ctx, ps.p, spec, timeout)
	if err != nil {
		return ps.abort(withCause(ctx, err))
	}
	if !last.IsZero() {
		ps.t0 = last
	}
	return nil
}

// did records the undo of a write just made in the pause.
func (ps *pause) did(undo func() error) { ps.undo.push(undo) }

// abort undoes the pause's writes, newest first, resumes the threads and
// returns err with whatever else failed.
func (ps *pause) abort(err error) error {
	err = errors.Join(err, ps.undo.run())
	rerr := ps.p.Resume()
	*ps.us = time.Since(ps.t0).Microseconds()
	if rerr != nil {
		err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
	}
	return err
}

// end ends a pause whose writes are all in: the threads go on detached,
// one kept borrowed (for unmapping) if keep.
func (ps *pause) end(keep bool) error {
	err := endPause(ps.p, keep)
	*ps.us = time.Since(ps.t0).Microseconds()
	return err
}

// putSites writes one side of every site, in order: the jumps (jumps) or
// the original bytes. If a write fails, the sites already written get the
// other side back, newest first, so the target is never half patched or
// half reverted. It is the one loop behind writing and restoring jumps.
func putSites(p proc, sites []SiteRecord, jumps bool) error {
	for i, s := range sites {
		b, what := s.Orig, "restore %s at %#x: %w"
		if jumps {
			b, what = s.New, "write jump for %s at %#x: %w"
		}
		if _, err := p.WriteAt(b, int64(s.Addr)); err != nil {
			return errors.Join(fmt.Errorf(what, s.Func, s.Addr, err), takeSites(p, sites[:i], jumps))
		}
	}
	return nil
}

// takeSites undoes putSites for every site, newest first: where jumps were
// written the original bytes go back, and the other way round.
func takeSites(p proc, sites []SiteRecord, jumps bool) error {
	var errs []error
	for i := len(sites) - 1; i >= 0; i-- {
		s := sites[i]
		if jumps {
			if _, err := p.WriteAt(s.Orig, int64(s.Addr)); err != nil {
				errs = append(errs, fmt.Errorf("restore %d bytes of %s at %#x: %w", len(s.Orig), s.Func, s.Addr, err))
			}
		} else if _, err := p.WriteAt(s.New, int64(s.Addr)); err != nil {
			errs = append(errs, fmt.Errorf("re-write jump for %s at %#x: %w", s.Func, s.Addr, err))
		}
	}
	return errors.Join(errs...)
}
