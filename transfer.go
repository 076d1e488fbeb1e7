package graft

// State transfer in the pause (issue 12).
//
// A patch whose globals changed layout carries a generated transformer per
// global (elfpatch/transform.go). Apply runs them in its pause: after every
// thread is stopped and the activeness check passed, before the record and
// any jump are written, so no update a running thread made is lost and no
// thread sees a half-converted object. For each global graft reads OLD's
// object from the target, builds NEW's bytes in graft and writes them:
//
//   - in place (NEW's object fits in OLD's slot): over OLD's object, at its
//     address. Unchanged functions address it as NEW's copies would.
//   - moved: into NEW's copy in the image; every OLD function that uses the
//     global is in the patch (redirected to NEW's copy, so it joins the
//     activeness check), and a pointer to the old object found in the
//     other globals' pointer fields is rewritten to the new one.
//
// The record keeps, per global, OLD's bytes as they were, the reverse
// operations and the pointers rewritten: revert converts back in its pause,
// before the jumps go, or refuses up front when no reverse mapping exists.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"graft/elfpatch"
)

// TransferRecord is a global a patch converted, as recorded in the target.
type TransferRecord struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
	// Old and New are the absolute addresses of OLD's and NEW's objects
	// (equal when converted in place).
	Old     uint64 `json:"old"`
	OldSize uint64 `json:"old_size"`
	New     uint64 `json:"new"`
	NewSize uint64 `json:"new_size"`
	InPlace bool   `json:"in_place,omitempty"`
	// OldBytes is OLD's object as it was in the pause: the base revert
	// builds OLD's object on (members NEW lacks are not carried back).
	OldBytes HexBytes `json:"old_bytes,omitempty"`
	// Reverse rebuilds OLD's object from NEW's; empty when Irreversible.
	Reverse      []elfpatch.XferOp `json:"reverse,omitempty"`
	Irreversible string            `json:"irreversible,omitempty"`
	// Pointers are the pointer fields of other globals that were
	// rewritten from the old object to the new one.
	Pointers []PointerRecord `json:"pointers,omitempty"`
}

// PointerRecord is one rewritten pointer field.
type PointerRecord struct {
	Global string `json:"global"`
	Addr   uint64 `json:"addr"`
	Old    uint64 `json:"old"`
	New    uint64 `json:"new"`
	// Pointee: elfpatch.PtrSite.Pointee, for the way back.
	Pointee uint64 `json:"pointee,omitempty"`
}

// TransferResult is what apply and status say of a transferred global.
type TransferResult struct {
	Name         string `json:"name"`
	Type         string `json:"type,omitempty"`
	Old          uint64 `json:"old"`
	New          uint64 `json:"new"`
	OldSize      uint64 `json:"old_size"`
	NewSize      uint64 `json:"new_size"`
	InPlace      bool   `json:"in_place"`
	Pointers     int    `json:"pointers_rewritten"`
	Irreversible string `json:"irreversible,omitempty"`
}

func transferResults(ts []TransferRecord) []TransferResult {
	var out []TransferResult
	for _, t := range ts {
		out = append(out, TransferResult{Name: t.Name, Type: t.Type, Old: t.Old, New: t.New, OldSize: t.OldSize, NewSize: t.NewSize,
			InPlace: t.InPlace, Pointers: len(t.Pointers), Irreversible: t.Irreversible})
	}
	return out
}

// Irreversible says why a patch cannot be reverted ("" if it can).
func (r *PatchRecord) Irreversible() string {
	var why []string
	for _, t := range r.Transfers {
		if t.Irreversible != "" {
			why = append(why, t.Name+": "+t.Irreversible)
		}
	}
	return strings.Join(why, "; ")
}

// xfProgramTimeout bounds an operator's C transformer, run while the
// target is stopped.
const xfProgramTimeout = 2 * time.Second

// ErrIrreversible marks a revert refused because a patch converted state
// without a reverse mapping.
var ErrIrreversible = errors.New("patch is irreversible")

// prepareTransfers checks a patch's transformers (checkTransfers) and puts
// their C programs, if any, where the pause can run them. The cleanup
// removes them.
func prepareTransfers(pid int, pt *Patch, st *State, allow []string) (func(), error) {
	cleanup := func() {}
	if err := checkTransfers(pid, pt, st, allow); err != nil {
		return cleanup, err
	}
	var paths []string
	cleanup = func() {
		for _, p := range paths {
			os.Remove(p)
		}
	}
	for i := range pt.Transfers {
		t := &pt.Transfers[i]
		if len(t.Program) == 0 {
			continue
		}
		f, err := os.CreateTemp("", "xf-*")
		if err == nil {
			paths = append(paths, f.Name())
			_, err = f.Write(t.Program)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Chmod(f.Name(), 0o700)
			}
		}
		if err != nil {
			cleanup()
			return func() {}, fmt.Errorf("apply patch %s to pid %d: put the C transformer of %s in place: %w", pt.ID, pid, t.Name, err)
		}
		t.ProgramPath = f.Name()
	}
	return cleanup, nil
}

// checkTransfers refuses, before anything is touched, a patch whose
// transformers cannot run: a TODO left, a stacked patch, or a function
// that must leave the stack (it uses a moved global) allowed to stay.
func checkTransfers(pid int, pt *Patch, st *State, allow []string) error {
	if len(pt.Transfers) == 0 {
		return nil
	}
	var todo []string
	for _, t := range pt.Transfers {
		for _, x := range t.Todo {
			todo = append(todo, t.Name+": "+x)
		}
	}
	if len(todo) > 0 {
		return &RefusedError{PatchID: pt.ID, Reasons: append([]string{"the state transformer has unresolved TODOs; fill the state description (graft diff -o writes FILE.state.yaml) and run graft diff again with --state"}, todo...)}
	}
	for _, t := range pt.Transfers {
		if a := pointerUserAllowed(&t, allow); a != "" {
			return fmt.Errorf("apply patch %s to pid %d: --allow-active %s: it reaches %s's objects through pointers (sole_home_of); a frame left running in the old code would keep its pointer into the old object", pt.ID, pid, a, t.Name)
		}
		if t.InPlace {
			continue
		}
		for _, a := range allow {
			if slices.Contains(t.Users, a) {
				return fmt.Errorf("apply patch %s to pid %d: --allow-active %s: it uses %s, whose contents move to a new object; a frame left running in the old code would keep using the old object", pt.ID, pid, a, t.Name)
			}
		}
	}
	return nil
}

func transferNames(ts []elfpatch.Transfer) string {
	var n []string
	for _, t := range ts {
		n = append(n, t.Name)
	}
	return strings.Join(n, ", ")
}

// xferSpan is one transfer located in the target.
type xferSpan struct {
	t        *elfpatch.Transfer
	old, new uint64
}

func (x xferSpan) relocate(v, pointee uint64) (uint64, bool, error) {
	if v < x.old || v > x.old+x.t.OldSize {
		return 0, false, nil
	}
	m, ok := elfpatch.OffsetMap(x.t.Ops, x.t.OldSize, x.t.NewSize, v-x.old, pointee)
	if !ok {
		return 0, false, fmt.Errorf("holds %#x, a pointer into %s+%d, a part the new layout does not carry", v, x.t.Name, v-x.old)
	}
	return x.new + m, true, nil
}

// runTransfers computes, in the pause, every transferred global's new
// bytes from the live ones (checking every value) and the pointers to
// rewrite. It writes nothing: commit writes them and returns an undo that
// puts OLD's bytes and the pointers back. A dry run (dry) only computes,
// with no image loaded: a moved object starts from NEW's initial value
// as the patch carries it.
func runTransfers(p proc, pt *Patch, at *xferLocs, base uint64, dry bool) ([]TransferRecord, func() (func() error, error), error) {
	spans := make([]xferSpan, len(pt.Transfers))
	for i := range pt.Transfers {
		t := &pt.Transfers[i]
		spans[i] = xferSpan{t: t, old: at.old[i], new: base + t.NewAddr}
		if t.InPlace {
			spans[i].new = spans[i].old
		}
	}
	reloc := func(v, pointee uint64) (uint64, bool, error) {
		for _, s := range spans {
			if nv, ok, err := s.relocate(v, pointee); ok || err != nil {
				return nv, ok, err
			}
		}
		return 0, false, nil
	}
	reloc = endChecked(spans, reloc)
	imageLo, imageHi := base, base+pt.Image.Size
	read := func(addr, n uint64) ([]byte, error) {
		b := make([]byte, n)
		if dry && addr >= imageLo && addr < imageHi {
			return b, nil // not loaded: zero, as the mapping starts
		}
		if _, err := p.ReadAt(b, int64(addr)); err != nil {
			return nil, fmt.Errorf("read %d bytes at %#x: %w", n, addr, err)
		}
		return b, nil
	}
	type write1 struct {
		addr      uint64
		old, data []byte
	}
	var writes []write1
	recs := make([]TransferRecord, len(spans))
	for i, s := range spans {
		t := s.t
		old, err := read(s.old, t.OldSize)
		if err != nil {
			return nil, nil, fmt.Errorf("transfer %s: %w", t.Name, err)
		}
		var init []byte
		if t.InPlace || dry {
			init = t.Init
		} else if init, err = read(s.new, t.NewSize); err != nil {
			// NEW's copy as the loader initialised it (relocated).
			return nil, nil, fmt.Errorf("transfer %s: %w", t.Name, err)
		}
		data, err := elfpatch.RunOps(t.Ops, t.Name, old, init, t.NewSize, reloc)
		if err == nil && len(t.Program) > 0 {
			if t.ProgramPath == "" {
				err = fmt.Errorf("its C transformer was not put in place")
			} else {
				data, err = elfpatch.RunProgram(t.ProgramPath, t.Name, old, data, xfProgramTimeout)
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("transfer %s: %w", t.Name, err)
		}
		prior, err := read(s.new, t.NewSize)
		if err != nil {
			return nil, nil, fmt.Errorf("transfer %s: %w", t.Name, err)
		}
		if t.InPlace && t.NewSize > t.OldSize {
			// The slot's tail was alignment padding in OLD: nothing
			// may have written there.
			for _, c := range prior[t.OldSize:] {
				if c != 0 {
					return nil, nil, fmt.Errorf("transfer %s: the %d bytes after it at %#x, which its new layout takes, are not zero padding: something uses them; nothing was changed", t.Name, t.NewSize-t.OldSize, s.old+t.OldSize)
				}
			}
		}
		writes = append(writes, write1{s.new, prior, data})
		recs[i] = TransferRecord{Name: t.Name, Type: t.Type, Old: s.old, OldSize: t.OldSize, New: s.new, NewSize: t.NewSize,
			InPlace: t.InPlace, OldBytes: old, Reverse: t.Reverse, Irreversible: t.Irreversible}
	}
	// The pointer fields, read one global at a time (sites are sorted
	// by address; a global's fields are contiguous in the list).
	var chunk []byte
	var chunkAt uint64
	for k, ps := range pt.PtrSites {
		addr := at.ptr[k]
		if chunk == nil || addr < chunkAt || addr+8 > chunkAt+uint64(len(chunk)) {
			end := k
			for end+1 < len(pt.PtrSites) && pt.PtrSites[end+1].Global == ps.Global && pt.PtrSites[end+1].Addr-ps.Addr < 1<<16 {
				end++
			}
			c, err := read(addr, pt.PtrSites[end].Addr-ps.Addr+8)
			if err != nil {
				return nil, nil, fmt.Errorf("pointer in %s: %w", ps.Global, err)
			}
			chunk, chunkAt = c, addr
		}
		b := slices.Clone(chunk[addr-chunkAt : addr-chunkAt+8])
		v := binary.LittleEndian.Uint64(b)
		nv, ok, err := reloc(v, ps.Pointee)
		if err != nil {
			return nil, nil, fmt.Errorf("pointer in %s at %#x: %w", ps.Global, addr, err)
		}
		if !ok || nv == v {
			continue
		}
		for i, s := range spans {
			if v >= s.old && v <= s.old+s.t.OldSize {
				recs[i].Pointers = append(recs[i].Pointers, PointerRecord{Global: ps.Global, Addr: addr, Old: v, New: nv, Pointee: ps.Pointee})
			}
		}
		nb := binary.LittleEndian.AppendUint64(nil, nv)
		writes = append(writes, write1{addr, b, nb})
	}
	undo := func(ws []write1) error {
		var errs []error
		for i := len(ws) - 1; i >= 0; i-- {
			if _, err := p.WriteAt(ws[i].old, int64(ws[i].addr)); err != nil {
				errs = append(errs, fmt.Errorf("put back %d bytes at %#x: %w", len(ws[i].old), ws[i].addr, err))
			}
		}
		return errors.Join(errs...)
	}
	// Nothing is written until commit: the caller encodes the record
	// first, so the converted state, the record and the jumps go in
	// back to back.
	commit := func() (func() error, error) {
		for i, w := range writes {
			if _, err := p.WriteAt(w.data, int64(w.addr)); err != nil {
				err = fmt.Errorf("write converted state at %#x: %w", w.addr, err)
				return nil, errors.Join(err, undo(writes[:i]))
			}
		}
		return func() error { return undo(writes) }, nil
	}
	return recs, commit, nil
}

// revertTransfers converts the transferred globals of the popped patches
// back, newest patch first, in revert's pause, before the jumps go. It
// returns an undo that restores NEW's objects.
func revertTransfers(p proc, popped []PatchRecord) (func() error, error) {
	type write1 struct {
		addr      uint64
		old, data []byte
	}
	var writes []write1
	for i := len(popped) - 1; i >= 0; i-- {
		ts := popped[i].Transfers
		reloc := func(v, pointee uint64) (uint64, bool, error) {
			for k := range ts {
				t := &ts[k]
				if v < t.New || v > t.New+t.NewSize {
					continue
				}
				m, ok := elfpatch.OffsetMap(t.Reverse, t.NewSize, t.OldSize, v-t.New, pointee)
				if !ok {
					return 0, false, fmt.Errorf("holds %#x, a pointer into %s+%d, a part the old layout lacks", v, t.Name, v-t.New)
				}
				return t.Old + m, true, nil
			}
			return 0, false, nil
		}
		for k := range ts {
			t := &ts[k]
			if t.Irreversible != "" {
				return nil, fmt.Errorf("%w: %s: %s", ErrIrreversible, t.Name, t.Irreversible)
			}
			cur := make([]byte, t.NewSize)
			if _, err := p.ReadAt(cur, int64(t.New)); err != nil {
				return nil, fmt.Errorf("read %s at %#x: %w", t.Name, t.New, err)
			}
			data, err := elfpatch.RunOps(t.Reverse, t.Name, cur, t.OldBytes, t.OldSize, reloc)
			if err != nil {
				return nil, fmt.Errorf("convert %s back: %w", t.Name, err)
			}
			n := t.OldSize
			if t.InPlace {
				n = max(t.OldSize, t.NewSize)
			}
			prior := make([]byte, n)
			if _, err := p.ReadAt(prior, int64(t.Old)); err != nil {
				return nil, fmt.Errorf("read %s at %#x: %w", t.Name, t.Old, err)
			}
			if t.InPlace && t.NewSize > t.OldSize {
				// In place, grown: the slot's tail goes back to what
				// it held before the apply (zero padding).
				data = append(data, make([]byte, t.NewSize-t.OldSize)...)
			}
			writes = append(writes, write1{t.Old, prior, data})
			for _, pr := range t.Pointers {
				b := make([]byte, 8)
				if _, err := p.ReadAt(b, int64(pr.Addr)); err != nil {
					return nil, fmt.Errorf("read pointer in %s at %#x: %w", pr.Global, pr.Addr, err)
				}
				v := binary.LittleEndian.Uint64(b)
				nv, ok, err := reloc(v, pr.Pointee)
				if err != nil {
					return nil, fmt.Errorf("pointer in %s at %#x: %w", pr.Global, pr.Addr, err)
				}
				if ok && nv != v {
					writes = append(writes, write1{pr.Addr, b, binary.LittleEndian.AppendUint64(nil, nv)})
				}
			}
		}
	}
	undo := func() error {
		var errs []error
		for i := len(writes) - 1; i >= 0; i-- {
			if _, err := p.WriteAt(writes[i].old, int64(writes[i].addr)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for i, w := range writes {
		if _, err := p.WriteAt(w.data, int64(w.addr)); err != nil {
			writes = writes[:i]
			return nil, errors.Join(fmt.Errorf("write converted state at %#x: %w", w.addr, err), undo())
		}
	}
	return undo, nil
}

// checkReversible refuses a revert that would pop a patch whose state
// transfer has no reverse mapping, before anything is touched.
func checkReversible(pid int, popped []PatchRecord) error {
	for _, r := range popped {
		if why := r.Irreversible(); why != "" {
			return fmt.Errorf("revert patch %s in pid %d: %w: %s; nothing was changed", r.ID, pid, ErrIrreversible, why)
		}
	}
	return nil
}

// hasTransfer reports whether the report carries a transformer for sym:
// its layout change is then the transformer's business (checkTransfers
// refuses one with TODOs left).
func hasTransfer(r *elfpatch.Report, sym string) bool {
	for _, t := range r.Transfers {
		if t.Name == sym {
			return true
		}
	}
	return false
}

// holdsState reports whether a patch's image holds a global's contents
// (a transfer that moved it there): the image must stay mapped, whatever
// code supersedes it, since other globals may point into it.
func holdsState(r *PatchRecord) bool {
	for _, t := range r.Transfers {
		if !t.InPlace {
			return true
		}
	}
	return false
}

// xferLocs are where a patch's transferred globals (old) and the pointer
// fields it checks (ptr, parallel to PtrSites) live in the process: at
// OLD's addresses in the executable, or, on top of other patches, where
// the symbols are found by name (an earlier patch may have added the
// global, or moved it into its image).
type xferLocs struct {
	old []uint64
	ptr []uint64
}

// plainXferLocs: OLD is the executable itself.
func plainXferLocs(pt *Patch, bias uint64) *xferLocs {
	at := &xferLocs{}
	for _, t := range pt.Transfers {
		at.old = append(at.old, bias+t.OldAddr)
	}
	for _, ps := range pt.PtrSites {
		at.ptr = append(at.ptr, bias+ps.Addr)
	}
	return at
}

// stackedXferLocs finds them by name through the layers (resolve), an
// earlier transfer of the same global taking precedence: its object is
// the live one.
func stackedXferLocs(pt *Patch, recs []*PatchRecord, resolve func(name, file string, off uint64) (addr, size, room uint64, ok bool), uses func(*PatchRecord)) (*xferLocs, error) {
	at := &xferLocs{}
	for _, t := range pt.Transfers {
		addr, size, room, ok := uint64(0), uint64(0), uint64(0), false
		for _, r := range recs {
			for _, x := range r.Transfers {
				if x.Name == t.Name {
					addr, size, room, ok = x.New, x.NewSize, x.NewSize, true
					uses(r)
				}
			}
		}
		if !ok {
			addr, size, room, ok = resolve(t.Name, t.File, 0)
		}
		if !ok {
			return nil, fmt.Errorf("the global %s it converts is not found in the running program", t.Name)
		}
		if size != t.OldSize {
			return nil, fmt.Errorf("the global %s it converts is %d bytes in the running program, not %d as in the patch's OLD: the patch was not made from the code that runs", t.Name, size, t.OldSize)
		}
		if t.InPlace && room < t.NewSize {
			// The patch fits the new layout in OLD's slot; the running
			// program's neighbours are not OLD's.
			return nil, fmt.Errorf("the global %s it converts in place grows to %d bytes, and in the running program another object starts %d bytes after it", t.Name, t.NewSize, room)
		}
		at.old = append(at.old, addr)
	}
	for _, ps := range pt.PtrSites {
		if ps.GlobalAddr == 0 || ps.Addr < ps.GlobalAddr {
			return nil, fmt.Errorf("the patch does not say where in %s its pointer fields are (made by an older graft): make it again to apply it on top of another patch", ps.Global)
		}
		addr, _, _, ok := resolve(ps.Global, ps.File, ps.Addr-ps.GlobalAddr)
		if !ok {
			return nil, fmt.Errorf("the global %s, whose pointer fields it checks, is not found in the running program", ps.Global)
		}
		at.ptr = append(at.ptr, addr)
	}
	return at, nil
}

// readStateFile reads an operator's state description (apply --new
// --state, a playbook's patch.state).
func readStateFile(path string) (map[string]*elfpatch.Rules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("state description: %w", err)
	}
	defer f.Close()
	rules, err := elfpatch.ReadStateRules(f)
	if err != nil {
		return nil, fmt.Errorf("state description %s: %w", path, err)
	}
	return rules, nil
}
