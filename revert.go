package graft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"graft/internal/record"
	"slices"
	"strings"
	"time"

	"graft/safepoint"
	"graft/tracer"
)

// RevertOptions tune Revert.
type RevertOptions struct {
	// ID names the patch to take out; it must be the newest one (patches
	// stack: each was bound to the one below). Empty: the newest.
	ID string
	// All takes out every patch.
	All bool
	// Timeout bounds the wait for a safe point (default 5s).
	Timeout time.Duration
	// AllowActive names functions of the new code whose running frames
	// may stay though not proven: they finish in the new code, whose
	// image stays mapped (pending) until they leave.
	AllowActive []string
	// Progress: as ApplyOptions.Progress.
	Progress func(safepoint.Waiting)
}

// RevertResult says what Revert did.
type RevertResult struct {
	// Reverted are the patches taken out, newest first. It holds more
	// than the one asked for when the patch below had been superseded
	// and unloaded: its code is gone, so it goes too.
	Reverted  []string `json:"reverted"`
	Functions []string `json:"functions"`
	PauseUS   int64    `json:"pause_us"`
	// Unswitched counts the frames an apply had switched to the new
	// code whose call had not returned: they go on in the old code.
	Unswitched int `json:"unswitched,omitempty"`
	// SwitchedBack are the frames in the new code carried back to the
	// old (their image stays mapped, pending, until they have passed).
	SwitchedBack []SwitchRecord `json:"switched_back,omitempty"`
	// Orphans are images of a graft killed before its pause that --all
	// unmapped.
	Orphans []Range `json:"orphans,omitempty"`
	// Stayed are frames left in new code (proven to finish as the old
	// version would); Pending the patches whose image therefore stays
	// mapped; Reaped earlier pending images found free and unmapped.
	Stayed  []StayedFrame `json:"stayed,omitempty"`
	Pending []string      `json:"pending,omitempty"`
	Reaped  []string      `json:"reaped,omitempty"`
	// Held is, per thread, how long it was held stopped and why (hold.go).
	Held []ThreadHold `json:"held,omitempty"`
	// Descriptors are graft memfds a killed graft left open that --all
	// closed.
	Descriptors []Descriptor `json:"descriptors,omitempty"`
	// EmptyRecord: --all unmapped a record that held no patch (a revert
	// killed before it removed it).
	EmptyRecord bool `json:"empty_record,omitempty"`
}

func (sys *system) revert(ctx context.Context, pid int, opts RevertOptions) (res *RevertResult, err error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if err := sys.checkPid(pid); err != nil {
		return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
	}
	maps, err := sys.readMaps(pid)
	if err != nil {
		return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
	}
	var fds []Descriptor
	if opts.All {
		if fds, err = sys.leftDescriptors(pid); err != nil {
			return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
		}
	}
	if findStateMapping(maps) == 0 && (!opts.All || len(orphanImages(maps, &State{})) == 0 && len(fds) == 0) {
		return nil, fmt.Errorf("revert in pid %d: %w", pid, ErrNothingApplied)
	}
	mods, err := sys.modules(pid)
	if err != nil {
		return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
	}
	p, err := sys.attach(pid)
	if err != nil {
		return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
	}
	boundStops(p, opts.Timeout)
	defer func() {
		if cerr := p.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("revert in pid %d: detach: %w", pid, cerr)
		}
		if res != nil {
			res.Held = holdsOf(p)
		}
	}()
	// Read the record only once attached: no other graft can change it
	// while we hold the process.
	st, err := readState(p, pid, maps)
	if err != nil {
		return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
	}
	reaped, err := sys.reapPendingCtx(ctx, pid, p, st, mods, true)
	if err != nil {
		return nil, fmt.Errorf("revert in pid %d: unmap a pending image: %w", pid, err)
	}
	var orphans []Range
	if opts.All {
		orphans = orphanImages(maps, st)
		// Attached, no other graft can open or close one now.
		if fds, err = sys.leftDescriptors(pid); err != nil {
			return nil, fmt.Errorf("revert in pid %d: %w", pid, err)
		}
	}
	if st.Top() == nil && len(orphans) == 0 && len(fds) == 0 && (len(reaped) > 0 || len(st.Pending) > 0) {
		if len(st.Pending) > 0 {
			return nil, fmt.Errorf("revert in pid %d: %w (graft status -p %d)", pid, ErrPending, pid)
		}
		return &RevertResult{Reverted: []string{}, Functions: []string{}, Reaped: reaped}, nil
	}
	// Descriptors a killed graft left open go first, in a stop of their
	// own (each is checked again with every thread stopped, so a number
	// the program reused is never closed): they have nothing to do with
	// the patches, and the revert's pause ends with the threads let go.
	if len(fds) > 0 {
		if err := stopped(p, func() error { return closeDescriptors(p, pid, fds) }); err != nil {
			return nil, fmt.Errorf("revert in pid %d: close descriptors left by a killed graft: %w", pid, err)
		}
	}
	// A revert killed after it emptied the record but before it unmapped
	// it leaves a record with no patch: --all takes it out.
	emptyRecord := opts.All && len(st.Patches) == 0 && len(st.Pending) == 0 && len(st.Retained) == 0 && st.Addr != 0
	if len(st.Patches) == 0 && len(orphans) == 0 && (len(fds) > 0 || emptyRecord) {
		res = &RevertResult{Reverted: []string{}, Functions: []string{}}
		if emptyRecord {
			if err := stopped(p, func() error { return p.Munmap(st.Addr, stateCapacity) }); err != nil {
				return res, needsAttention(pid, fmt.Errorf("revert in pid %d: unmap the empty graft record at %#x: %w", pid, st.Addr, err))
			}
			res.EmptyRecord = true
		}
	} else if res, err = sys.revertAttached(ctx, pid, p, st, mods, orphans, opts); err != nil {
		if res != nil {
			res.Reaped, res.Descriptors = reaped, fds
		}
		return res, err
	}
	res.Reaped, res.Descriptors = reaped, fds
	return res, nil
}

// popCount decides how many patches, from the top, a revert takes out.
func popCount(pid int, st *State, opts RevertOptions) (int, error) {
	top := st.Top()
	if top == nil {
		return 0, fmt.Errorf("revert in pid %d: %w", pid, ErrNothingApplied)
	}
	if opts.All {
		return len(st.Patches), nil
	}
	if opts.ID != "" && opts.ID != top.ID {
		if _, i := st.Find(opts.ID); i >= 0 {
			return 0, fmt.Errorf("revert patch %s in pid %d: patch %s is applied on top of it; revert that first (or use --all)", opts.ID, pid, top.ID)
		}
		return 0, fmt.Errorf("revert patch %s in pid %d: not applied (newest is %s)", opts.ID, pid, top.ID)
	}
	n := 1
	for n < len(st.Patches) && st.Patches[len(st.Patches)-1-n].Unloaded {
		n++
	}
	return n, nil
}

func (sys *system) revertAttached(ctx context.Context, pid int, p proc, st *State, mods []tracer.Module, orphans []Range, opts RevertOptions) (*RevertResult, error) {
	n, err := popCount(pid, st, opts)
	if err != nil && !(errors.Is(err, ErrNothingApplied) && len(orphans) > 0) {
		return nil, err
	}
	keep := st.Patches[:len(st.Patches)-n]
	popped := st.Patches[len(st.Patches)-n:]
	if err := checkReversible(pid, popped); err != nil {
		return nil, err
	}
	res := &RevertResult{Orphans: orphans}
	fail := func(err error) error {
		if len(popped) == 0 {
			return fmt.Errorf("revert in pid %d: %w", pid, err)
		}
		return fmt.Errorf("revert patch %s in pid %d: %w", popped[len(popped)-1].ID, pid, err)
	}

	restore, spec, inGone := revertPlan(st, popped, orphans, res)
	spec.Progress = opts.Progress
	if err := checkRevertAllow(popped, opts.AllowActive); err != nil {
		return nil, fail(err)
	}
	spec.Stay = revertStay(popped, opts.AllowActive)
	if slices.ContainsFunc(popped, func(r PatchRecord) bool { return len(r.Transfers) > 0 }) {
		// Converted state goes back to the old layout in the pause: a
		// frame left in new code would go on with the new one. No frame
		// in the new code stays; one the patch planned a switch back
		// for goes on in the old code.
		revertSwitchSpec(&spec, popped)
	}
	if err := checkTopJumps(p, popped, inGone); err != nil {
		return nil, fail(err)
	}

	next := &State{Patches: slices.Clone(keep), Retained: slices.Clone(st.Retained), Pending: st.Pending}
	for _, r := range popped {
		if r.GoModule != 0 && !r.Unloaded {
			next.Retained = append(next.Retained, r)
		}
	}
	buf, err := encodeState(next, st.Generation+1)
	if err != nil {
		return nil, fail(err)
	}
	// The record as it will be if frames stay in every popped image,
	// encoded now, outside the pause (pending.go).
	allPending, allBuf, err := pendingOutcome(st, next, popped)
	if err != nil {
		return nil, fail(err)
	}
	ck, err := sys.newChecker(pid, mods, loadedModules(st))
	if err != nil {
		return nil, fail(fmt.Errorf("build unwinder: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return nil, fail(err)
	}

	warmBackSwitches(popped)
	defer forPause()()
	ps, err := stopAll(p, &res.PauseUS)
	if err != nil {
		return nil, fail(err)
	}
	if err := ps.waitSafe(ctx, ck, spec, opts.Timeout); err != nil {
		return nil, fail(err)
	}
	// Frames proven (or allowed) to finish in new code stay: their
	// images become pending. The usual outcome was encoded before the
	// pause; only a subset of several popped images is encoded here.
	res.Stayed = lastStayed(ck)
	if err := switchBackInPause(ps, ck, popped, res); err != nil {
		return nil, fail(err)
	}
	inImage := slices.Clone(res.Stayed)
	for _, s := range res.SwitchedBack {
		// Waiting to return into switch code in the image: it stays
		// mapped until they have passed.
		inImage = append(inImage, StayedFrame{Tid: s.Tid, Function: s.Function, PC: s.Stub})
	}
	if pend := pendingOf(popped, inImage); len(pend) > 0 {
		// A pending image keeps, as its switches, the frames switched
		// back whose call has not returned: their return addresses
		// lead into it (the unwinder reads them as the frames they
		// are until then).
		backIn := false
		for i := range pend {
			pend[i].Switches = nil
			for _, s := range res.SwitchedBack {
				if s.Stub >= pend[i].Base && s.Stub < pend[i].Base+pend[i].Size {
					pend[i].Switches = append(pend[i].Switches, s)
					backIn = true
				}
			}
		}
		next.Pending = append(slices.Clone(st.Pending), pend...)
		if len(pend) == allPending && !backIn {
			buf = allBuf
		} else {
			b, err := encodeState(next, st.Generation+1)
			if err != nil {
				return nil, fail(ps.abort(err))
			}
			buf = b
		}
		for _, r := range pend {
			res.Pending = append(res.Pending, r.ID)
		}
	}
	if err := revertInPause(ps, popped, restore, buf, st.Addr); err != nil {
		return nil, fail(err)
	}
	if len(res.SwitchedBack) > 0 {
		undo, err := pointReturns(p, res.SwitchedBack)
		if err != nil {
			return nil, fail(ps.abort(err))
		}
		ps.did(undo)
	}
	// The threads go on detached; one stays borrowed for the unmapping.
	dropRecord := len(keep) == 0 && len(next.Retained) == 0 && len(next.Pending) == 0 && st.Addr != 0
	gone := unmappable(popped, res.Pending)
	unmap := len(orphans) > 0 || dropRecord || len(gone) > 0
	if err := ps.end(unmap); err != nil {
		return res, fail(fmt.Errorf("resume after reverting: %w", err))
	}

	// No thread is in the popped images and no jump leads there: unmap.
	// (Nothing to unmap: the threads are detached already.)
	if !unmap {
		return res, nil
	}
	if err := sys.unmapReverted(p, gone, orphans, dropRecord, st.Addr); err != nil {
		// The patches are out; their code or the record stays mapped.
		return res, needsAttention(pid, fail(err))
	}
	return res, nil
}

// revertPlan lists the jumps to restore (newest patch first, so where
// several patches wrote the same entry the oldest original bytes end up
// there) and what the safe point must check; inGone tells the addresses
// in images unloaded earlier, whose memory is gone: jumps once written
// there need no restoring.
func revertPlan(st *State, popped []PatchRecord, orphans []Range, res *RevertResult) (restore []SiteRecord, spec safeSpec, inGone func(uint64) bool) {
	var gone []Range
	for _, r := range st.Patches {
		if r.Unloaded {
			gone = append(gone, Range{r.Base, r.Base + r.Size})
		}
	}
	inGone = func(a uint64) bool {
		return slices.ContainsFunc(gone, func(g Range) bool { return g.Contains(a) })
	}
	for i := len(popped) - 1; i >= 0; i-- {
		r := popped[i]
		res.Reverted = append(res.Reverted, r.ID)
		for _, f := range r.Functions {
			if !slices.Contains(res.Functions, f.Name) {
				res.Functions = append(res.Functions, f.Name)
			}
		}
		if !r.Unloaded {
			for _, x := range r.Exec {
				spec.Functions = append(spec.Functions, namedRange{"patch " + r.ID, x})
			}
		}
		for _, s := range r.Sites {
			if inGone(s.Addr) {
				continue
			}
			restore = append(restore, s)
			spec.Entries = append(spec.Entries, namedRange{s.Func, Range{s.Addr, s.Addr + uint64(len(s.New))}})
		}
	}
	for _, o := range orphans {
		spec.Functions = append(spec.Functions, namedRange{"orphaned graft image", o})
	}
	return restore, spec, inGone
}

// checkTopJumps checks that the newest patch's jumps are what graft wrote,
// or the original bytes (a graft killed inside its pause wrote the record
// but not every jump: revert finishes the clean-up). Anything else means
// the code changed behind graft's back and the saved bytes may be wrong.
func checkTopJumps(p proc, popped []PatchRecord, inGone func(uint64) bool) error {
	if len(popped) == 0 {
		return nil
	}
	for _, s := range popped[len(popped)-1].Sites {
		if inGone(s.Addr) {
			continue
		}
		cur := make([]byte, len(s.New))
		if _, err := p.ReadAt(cur, int64(s.Addr)); err != nil {
			return fmt.Errorf("read jump for %s at %#x: %w", s.Func, s.Addr, err)
		}
		if !bytes.Equal(cur, s.New) && !bytes.Equal(cur, s.Orig) {
			return fmt.Errorf("code of %s at %#x is % x, not the jump graft wrote (% x); refusing to restore", s.Func, s.Addr, cur, []byte(s.New))
		}
	}
	return nil
}

// revertInPause makes the revert's writes in a pause at a safe point:
// converted state back first (transfer.go), while no thread runs and
// before the old code can run again; then the original bytes; then the
// record (none when only orphans are taken out). On failure the pause is
// aborted: undone and resumed, the target stays fully patched.
func revertInPause(ps *pause, popped []PatchRecord, restore []SiteRecord, buf []byte, stateAddr uint64) error {
	p := ps.p
	xundo, err := revertTransfers(p, popped)
	if err != nil {
		return ps.abort(err)
	}
	ps.did(xundo)
	if err := putSites(p, restore, false); err != nil {
		return ps.abort(err)
	}
	ps.did(func() error { return takeSites(p, restore, false) })
	if stateAddr == 0 {
		return nil
	}
	if err := record.Write(p, stateAddr, buf); err != nil {
		return ps.abort(fmt.Errorf("write graft record at %#x: %w", stateAddr, err))
	}
	return nil
}

// unmappable lists the reverted patches whose image goes after the pause:
// not one unloaded already, nor a Go image (its module stays registered
// with the runtime), nor a pending one (a frame is still in it: unmapped
// once it leaves).
func unmappable(popped []PatchRecord, pending []string) []PatchRecord {
	var out []PatchRecord
	for _, r := range popped {
		if !r.Unloaded && r.GoModule == 0 && !slices.Contains(pending, r.ID) {
			out = append(out, r)
		}
	}
	return out
}

// unmapReverted takes out, after the pause, the images of the reverted
// patches no thread is in (gone), the orphaned images, and the record if
// nothing graft did is left (so the process looks as it did before the
// first apply).
func (sys *system) unmapReverted(p proc, gone []PatchRecord, orphans []Range, dropRecord bool, stateAddr uint64) error {
	var errs []error
	serr := withThread(p, func() error {
		for _, r := range gone {
			if err := sys.unmapImage(p, r.Base, r.Size); err != nil {
				errs = append(errs, fmt.Errorf("unmap code of %s at %#x: %w", r.ID, r.Base, err))
			}
		}
		for _, o := range orphans {
			if err := p.Munmap(o.Start, o.End-o.Start); err != nil {
				errs = append(errs, fmt.Errorf("unmap orphaned image at %#x: %w", o.Start, err))
			}
		}
		if dropRecord {
			if err := p.Munmap(stateAddr, stateCapacity); err != nil {
				errs = append(errs, fmt.Errorf("unmap graft record at %#x: %w", stateAddr, err))
			}
		}
		return nil
	})
	if serr != nil {
		errs = append(errs, serr)
	}
	return errors.Join(errs...)
}

// orphanImages finds images graft mapped ("/memfd:graft-<id>") that the
// record does not know: left by a graft killed before its pause. No jump
// leads into them (jumps are written only after the record).
func orphanImages(maps []tracer.Mapping, st *State) []Range {
	var out []Range
	byName := map[string]int{}
	for _, m := range maps {
		name := strings.TrimSuffix(m.Path, " (deleted)")
		if !strings.HasPrefix(name, "/memfd:graft-") || strings.HasPrefix(name, stateMapPrefix) {
			continue
		}
		if slices.ContainsFunc(append(append(slices.Clone(st.Patches), st.Retained...), st.Pending...), func(r PatchRecord) bool {
			return !r.Unloaded && m.Start >= r.Base && m.Start < r.Base+r.Size
		}) {
			continue
		}
		if i, ok := byName[name]; ok {
			out[i].Start = min(out[i].Start, m.Start)
			out[i].End = max(out[i].End, m.End)
			continue
		}
		byName[name] = len(out)
		out = append(out, Range{m.Start, m.End})
	}
	return out
}
