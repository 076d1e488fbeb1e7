package graft

import (
	"context"
	"errors"
	"fmt"
	"graft/internal/record"
	"slices"
	"sort"
	"strings"

	"graft/safepoint"
	"graft/tracer"
)

// Reverting past a frame that never leaves (DESIGN.md): a thread may wait
// in a patch's new code for the life of the process (the new accept
// wrapper of an idle server). When the resume analysis proved that frame
// finishes as the old version would, revert restores the jumps at once
// (new calls take the old code) and keeps the image mapped: the patch
// moves from State.Patches to State.Pending, status shows it as reverted
// with its image pending, and the next apply or revert that finds no frame
// in it unmaps it (reapPending).

// stayAt lists the proven resume addresses of the patch's new code, as
// runtime addresses of the image mapped at base: where a frame may stay
// in it after a revert. Recorded in the target (PatchRecord.StayAt).
func stayAt(pt *Patch, base uint64) []uint64 {
	var out []uint64
	for _, r := range pt.Image.Redirects {
		rs := pt.Resume[r.Name]
		if rs == nil {
			continue
		}
		for _, x := range rs.New.Proven() {
			for a := x.Start; a < x.End; a++ {
				out = append(out, base+a)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return slices.Compact(out)
}

// revertStay decides whether a frame in a popped patch's image may stay
// past the revert: proven (StayAt), or its function named by the
// operator (allow: --allow-active of revert, the names status and the
// diff print; a clone's base name too). fn is the range's name ("patch
// ID").
func revertStay(popped []PatchRecord, allow []string) func(fn string, pc uint64, exact bool) safepoint.StayVerdict {
	return func(fn string, pc uint64, exact bool) safepoint.StayVerdict {
		for i := range popped {
			r := &popped[i]
			if fn != "patch "+r.ID {
				continue
			}
			where, name := fmt.Sprintf("%#x", pc), ""
			if s, ok := imageFuncAt(r, pc, exact); ok {
				where, name = fmt.Sprintf("%s+%#x", s.Name, pc-s.Addr), s.Name
			}
			op := baseName(name)
			for _, a := range allow {
				if name != "" && (a == name || a == op || a == dropCloneNumbers(name)) {
					return safepoint.StayVerdict{OK: true, Allowed: true, Function: name, Why: "allowed by --allow-active " + a + "; its image stays mapped until it leaves"}
				}
			}
			if _, ok := slices.BinarySearch(r.StayAt, pc); ok {
				return safepoint.StayVerdict{OK: true, Function: name, Why: fmt.Sprintf("proven: from %s in the new code nothing that differs from the old version is reachable, and every value it reads was set the same way; its image stays mapped until it leaves", where)}
			}
			v := safepoint.StayVerdict{Allow: op, Function: name}
			if len(r.StayAt) == 0 {
				v.Why = fmt.Sprintf("the thread is in the new code at %s and the patch recorded no resume analysis (applied by an older graft or from a version-2 patch file)", where)
			} else {
				v.Why = fmt.Sprintf("the thread is in the new code at %s, and from there code that differs from the old version is reachable (or a value it reads was set differently)", where)
			}
			return v
		}
		return safepoint.StayVerdict{}
	}
}

// baseName is a compiler clone's base name (main_noinetd for
// main_noinetd.constprop.0), the name itself otherwise.
func baseName(name string) string {
	for _, suf := range []string{".constprop", ".isra", ".part", ".cold", ".lto_priv", ".localalias", ".specialization"} {
		if i := strings.Index(name, suf); i > 0 {
			return name[:i]
		}
	}
	return name
}

// checkRevertAllow refuses a revert --allow-active name that no function
// of the patches being reverted has.
func checkRevertAllow(popped []PatchRecord, allow []string) error {
	for _, a := range allow {
		found := false
		var have []string
		for _, r := range popped {
			for _, s := range r.Symbols {
				if s.Data {
					continue
				}
				have = append(have, baseName(s.Name))
				found = found || a == s.Name || a == baseName(s.Name) || a == dropCloneNumbers(s.Name)
			}
		}
		if !found {
			sort.Strings(have)
			return fmt.Errorf("%w: %q (the new code being reverted has: %s); nothing was done", ErrUnknownAllow, a, strings.Join(slices.Compact(have), ", "))
		}
	}
	return nil
}

// pendingOf moves the popped patches a stayed frame is in to pending: the
// record keeps them (jumps gone: Sites cleared) so that their images stay
// known until free.
func pendingOf(popped []PatchRecord, stayed []StayedFrame) []PatchRecord {
	var out []PatchRecord
	for _, r := range popped {
		if r.Unloaded {
			continue
		}
		for _, f := range stayed {
			if f.PC >= r.Base && f.PC <= r.Base+r.Size {
				r.Sites = nil
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// pendingRanges are the images of st's pending patches.
func pendingRanges(st *State) []Range {
	var rs []Range
	for _, r := range st.Pending {
		rs = append(rs, Range{r.Base, r.Base + r.Size})
	}
	return rs
}

// reapPending unmaps every pending image no thread is in any more, in one
// short stop of its own, and writes the record without them; st is
// updated. With dropEmpty (revert), a record left with nothing in it is
// unmapped too (st.Addr becomes 0), so the process looks as before the
// first apply. It returns the ids unmapped.
func (sys *system) reapPending(pid int, p proc, st *State, mods []tracer.Module, dropEmpty bool) ([]string, error) {
	if len(st.Pending) == 0 || st.Addr == 0 {
		return nil, nil
	}
	ck, err := sys.newChecker(pid, mods, loadedModules(st))
	if err != nil {
		return nil, fmt.Errorf("build unwinder: %w", err)
	}
	var gone []string
	err = stopped(p, func() error {
		hit, err := ck.framesIn(p, pendingRanges(st))
		if err != nil {
			return err
		}
		var keep, free []PatchRecord
		for i, r := range st.Pending {
			if hit[i] {
				keep = append(keep, r)
			} else {
				free = append(free, r)
			}
		}
		if len(free) == 0 {
			return nil
		}
		next := &State{Patches: st.Patches, Retained: st.Retained, Pending: keep}
		buf, err := encodeState(next, st.Generation+1)
		if err != nil {
			return err
		}
		// The record first: an image it does not name is an orphan,
		// which revert --all cleans up; never the other way round.
		if err := record.Write(p, st.Addr, buf); err != nil {
			return fmt.Errorf("write graft record at %#x: %w", st.Addr, err)
		}
		st.Generation++
		st.Pending = keep
		var errs []error
		for _, r := range free {
			if err := sys.unmapImage(p, r.Base, r.Size); err != nil {
				errs = append(errs, fmt.Errorf("unmap pending image of reverted patch %s at %#x: %w", r.ID, r.Base, err))
				continue
			}
			gone = append(gone, r.ID)
		}
		if dropEmpty && len(errs) == 0 && len(st.Patches) == 0 && len(st.Retained) == 0 && len(st.Pending) == 0 {
			if err := p.Munmap(st.Addr, stateCapacity); err != nil {
				return fmt.Errorf("unmap graft record at %#x: %w", st.Addr, err)
			}
			st.Addr = 0
		}
		return errors.Join(errs...)
	})
	return gone, err
}

// ErrPending: revert found nothing applied, but a reverted patch's image
// is still pending.
var ErrPending = errors.New("nothing applied; a reverted patch's image is still mapped because a thread is in it, and the next graft apply or revert that finds it free unmaps it")

// PendingStatus is a reverted patch whose image stays mapped while a
// frame is in it.
type PendingStatus struct {
	ID        string   `json:"id"`
	Base      uint64   `json:"base"`
	Size      uint64   `json:"size"`
	Functions []string `json:"functions"`
}

func pendingStatus(st *State) []PendingStatus {
	var out []PendingStatus
	for _, r := range st.Pending {
		ps := PendingStatus{ID: r.ID, Base: r.Base, Size: r.Size, Functions: []string{}}
		for _, f := range r.Functions {
			ps.Functions = append(ps.Functions, f.Name)
		}
		out = append(out, ps)
	}
	return out
}

// reapCtx: reaping is part of an invocation's preparation; it honours
// cancellation before its stop.
func (sys *system) reapPendingCtx(ctx context.Context, pid int, p proc, st *State, mods []tracer.Module, dropEmpty bool) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return sys.reapPending(pid, p, st, mods, dropEmpty)
}

// idTaken: a patch in effect or a pending one has this id (a pair of
// builds re-applied while its earlier image is still pending gets a new
// one, as when it is still in effect).
func idTaken(st *State, id string) bool {
	if rec, _ := st.Find(id); rec != nil {
		return true
	}
	return slices.ContainsFunc(st.Pending, func(r PatchRecord) bool { return r.ID == id })
}

// dropCloneNumbers drops the numbers GCC appends to clones
// ("f.constprop.0" -> "f.constprop"); a plain name ("f2") is left alone.
func dropCloneNumbers(name string) string {
	parts := strings.Split(name, ".")
	out := parts[:1]
	for _, p := range parts[1:] {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

// pendingOutcome encodes the record a revert writes when a frame stays in
// every popped image (the usual case: one patch, one waiting thread), so
// the pause need not encode it. It returns how many images that is.
func pendingOutcome(st, next *State, popped []PatchRecord) (int, []byte, error) {
	var all []PatchRecord
	for _, r := range popped {
		if !r.Unloaded {
			r.Sites = nil
			all = append(all, r)
		}
	}
	if len(all) == 0 {
		return 0, nil, nil
	}
	n := &State{Patches: next.Patches, Pending: append(slices.Clone(st.Pending), all...)}
	buf, err := encodeState(n, st.Generation+1)
	return len(all), buf, err
}

// imageFuncAt is the function of r's image holding pc: a return address
// may be one past the end of its function (after a call to a function
// that does not return).
func imageFuncAt(r *PatchRecord, pc uint64, exact bool) (SymRecord, bool) {
	var found SymRecord
	ok := false
	for _, s := range r.Symbols {
		if !s.Data && pc >= s.Addr && (pc < s.Addr+s.Size || (!exact && pc == s.Addr+s.Size)) {
			found, ok = s, true
		}
	}
	return found, ok
}
