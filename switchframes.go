package graft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"graft/elfpatch"
	"graft/internal/x86dec"
	"graft/safepoint"
	"graft/trampoline"
)

// Frame switches (elfpatch/switch.go): in the pause of a patch that
// converts state, a frame waiting in a call inside a replaced function is
// carried into the new code. Its call's return address, on the stack, is
// pointed at generated code (trampoline.FrameSwitch) that, when the call
// returns, rebuilds the frame in the new layout (pointers into a moved
// global relocated) and jumps to the new code's matching return address.
// The code and its scratch live in an area at the end of the image.

// SwitchRecord is one switched frame: the stack slot holding its return
// address, the address it held (old code) and the switch code's.
type SwitchRecord struct {
	Tid      int    `json:"tid"`
	Function string `json:"function"`
	Slot     uint64 `json:"slot"`
	Orig     uint64 `json:"orig"`
	Stub     uint64 `json:"stub"`
	// To is where the frame goes on (the new code's return address).
	To uint64 `json:"to"`
}

// switchArea is the part of the image reserved for switch code: Code
// (read and execute) then Scratch (read and write), one slot of each per
// frame.
type switchArea struct {
	Off        uint64 // image offset of the code pages
	CodeSlot   uint64
	Scratch    uint64 // image offset of the scratch pages
	ScratchOne uint64
	Slots      int
}

const pageSz = 4096

func roundPage(n uint64) uint64 { return (n + pageSz - 1) &^ (pageSz - 1) }

// withSwitchArea returns a copy of im with room for n frame switches of
// the patch's plans at its end, or im itself when no plan can switch.
func withSwitchArea(im *elfpatch.Image, pt *Patch, n int) (*elfpatch.Image, *switchArea) {
	if len(pt.Transfers) == 0 || n <= 0 {
		return im, nil
	}
	var code, scratch uint64
	for _, rs := range pt.Resume {
		for _, ps := range []elfpatch.SwitchPlans{rs.Switch, rs.Back} {
			for i := range ps {
				p := &ps[i]
				if p.Why != "" {
					continue
				}
				c, s := switchSizes(p, pt)
				code, scratch = max(code, c), max(scratch, s)
			}
		}
	}
	if code == 0 {
		return im, nil
	}
	code = (code + 64 + 15) &^ 15
	scratch = (scratch + 64 + 15) &^ 15
	// Slots 0..n-1 for the apply's switches, n..2n-1 for a revert's.
	a := &switchArea{Off: im.Size, CodeSlot: code, ScratchOne: scratch, Slots: n}
	codeLen := roundPage(code * uint64(2*n))
	a.Scratch = a.Off + codeLen
	scratchLen := roundPage(scratch * uint64(2*n))
	out := *im
	out.Segments = append(append([]elfpatch.Segment(nil), im.Segments...),
		elfpatch.Segment{Vaddr: a.Off, Memsz: codeLen, Prot: 5},
		elfpatch.Segment{Vaddr: a.Scratch, Memsz: scratchLen, Prot: 3})
	out.Size = a.Scratch + scratchLen
	return &out, a
}

// switchSizes is an upper bound of the code and scratch one plan needs:
// the plan built with placeholder addresses (the encoding's size does not
// depend on them: addresses are 8-byte immediates).
func switchSizes(p *elfpatch.SwitchPlan, pt *Patch) (code, scratch uint64) {
	const far = 0x7f0000000000
	fs := &trampoline.FrameSwitch{Addr: far, Scratch: far + 0x100000, CFA: far + 0x200000,
		OldSize: uint64(p.FromSize), NewSize: uint64(p.ToSize), Target: far + 0x300000}
	for _, mv := range p.Moves {
		fs.Moves = append(fs.Moves, switchMove(mv, far+0x200000, func(uint64) uint64 { return far }))
	}
	fs.Relocs = placeholderRelocs(pt, p, far)
	b, err := trampoline.BuildFrameSwitch(fs)
	if err != nil {
		// Sized from the others; the pause reports this plan's error.
		return 0, 0
	}
	return uint64(len(b)), uint64(trampoline.ScratchSize(fs))
}

func placeholderRelocs(pt *Patch, p *elfpatch.SwitchPlan, far uint64) []trampoline.Reloc {
	at := far + 0x1000000 // apart from each other and from the frame
	next := func(size uint64) uint64 {
		a := at
		at += (size + 0x1000) &^ 0xfff
		return a
	}
	out := transferRelocs(pt.Transfers, func(i int) (uint64, uint64) {
		return next(pt.Transfers[i].OldSize + 1), next(pt.Transfers[i].NewSize)
	})
	// Frame objects lie below their CFA, by less than a frame's size
	// (trampoline.MaxFrameSize): each CFA in the middle of its own room.
	oldCFA := next(2*trampoline.MaxFrameSize) + trampoline.MaxFrameSize
	newCFA := next(2*trampoline.MaxFrameSize) + trampoline.MaxFrameSize
	return append(out, objRelocs(p.Objs, oldCFA, newCFA)...)
}

// transferRelocs are the relocations of values pointing into the
// transfers' moved objects (in place ones are where they were), whose
// i-th lies at old and goes to new (at).
func transferRelocs(ts []elfpatch.Transfer, at func(i int) (old, new uint64)) []trampoline.Reloc {
	var out []trampoline.Reloc
	for i := range ts {
		t := &ts[i]
		if t.InPlace {
			continue
		}
		old, new := at(i)
		os, ns, m := transferStride(t)
		out = append(out, trampoline.Reloc{OldBase: old, OldSize: t.OldSize, OldStride: os, NewBase: new, NewStride: ns, OffMap: m})
		if t.NextAtEnd != "" {
			// The old object's end is where another object starts
			// (sshd: sessions' end is &nusers): a value there is read
			// as that object's address and left alone (a loop's end
			// pointer is recomputed by the plan, never carried).
			end := old + t.OldSize
			out = append(out, trampoline.Reloc{OldBase: end, OldSize: 1, OldStride: 1, NewBase: end, NewStride: 1})
		}
	}
	return out
}

// objRelocs are the relocations of values pointing into the frame
// objects a switch copies whole, for a frame whose CFA is oldCFA before
// and newCFA after (the same frame: equal, but for sizing).
func objRelocs(objs []elfpatch.SwitchObj, oldCFA, newCFA uint64) []trampoline.Reloc {
	var out []trampoline.Reloc
	for _, o := range objs {
		out = append(out, trampoline.Reloc{OldBase: oldCFA + uint64(o.OldOff), OldSize: uint64(o.Size), OldStride: uint64(o.Size),
			NewBase: newCFA + uint64(o.NewOff), NewStride: uint64(o.Size)})
	}
	return out
}

// strideCache keeps transferStride's answers: the offset map of a large
// array takes milliseconds, and the pause must not.
var strideCache sync.Map // string -> strideInfo

type strideInfo struct {
	old, new uint64
	m        []int32
}

// transferStride finds the smallest element size the transfer's offset
// map repeats with (an array of structs: one element), and the map of one
// element. A plain struct is its own element.
func transferStride(t *elfpatch.Transfer) (oldStride, newStride uint64, offMap []int32) {
	key := fmt.Sprintf("%s\x00%d\x00%d\x00%p", t.Name, t.OldSize, t.NewSize, t.Ops)
	if v, ok := strideCache.Load(key); ok {
		si := v.(strideInfo)
		return si.old, si.new, si.m
	}
	full := make([]int64, t.OldSize)
	for off := range full {
		v, ok := elfpatch.OffsetMap(t.Ops, t.OldSize, t.NewSize, uint64(off), 0)
		full[off] = -1
		if ok {
			full[off] = int64(v)
		}
	}
	si := strideInfo{old: t.OldSize, new: t.NewSize}
	for k := t.OldSize; k >= 1; k-- {
		if t.OldSize%k != 0 || t.NewSize%k != 0 {
			continue
		}
		os, ns := t.OldSize/k, t.NewSize/k
		if k > 1 && os < 8 {
			continue
		}
		ok := true
		for off := os; off < t.OldSize && ok; off++ {
			want := full[off%os]
			if want >= 0 {
				want += int64(off/os) * int64(ns)
			}
			// An element's start maps to its start either way.
			if got := full[off]; got != want && !(off%os == 0 && got == int64(off/os*ns)) {
				ok = false
			}
		}
		if ok {
			si.old, si.new = os, ns
			break
		}
	}
	si.m = make([]int32, si.old)
	for off := range si.m {
		si.m[off] = int32(full[off])
	}
	strideCache.Store(key, si)
	return si.old, si.new, si.m
}

// switchMove converts a plan's move for a frame at cfa; lea resolves an
// image instruction's computed address.
func switchMove(mv elfpatch.SwitchMove, cfa uint64, lea func(uint64) uint64) trampoline.Move {
	loc := func(l elfpatch.SwitchLoc) trampoline.Loc {
		switch l.Kind {
		case "reg":
			return trampoline.Loc{Kind: trampoline.LocReg, Reg: l.Reg}
		case "slot":
			return trampoline.Loc{Kind: trampoline.LocSlot, Off: l.Off}
		case "frame":
			return trampoline.Loc{Kind: trampoline.LocConst, Value: cfa + uint64(l.Off)}
		case "lea":
			return trampoline.Loc{Kind: trampoline.LocConst, Value: lea(l.Value)}
		}
		return trampoline.Loc{Kind: trampoline.LocConst, Value: l.Value}
	}
	out := trampoline.Move{Dst: loc(mv.Dst), Src: loc(mv.Src), Size: mv.Size}
	if (mv.Src.Kind == "reg" || mv.Src.Kind == "slot") && mv.Size%8 == 0 {
		out.Reloc = true
	}
	return out
}

// switchedFrames are the frames the last safe-point check decided to
// switch, innermost first per thread.
func switchedFrames(ck checker) []safepoint.Stayed {
	s, ok := ck.(interface{ stayed() []safepoint.Stayed })
	if !ok {
		return nil
	}
	var out []safepoint.Stayed
	for _, f := range s.stayed() {
		if _, ok := f.Switch.(*switchFrame); ok {
			out = append(out, f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Tid < out[j].Tid })
	return out
}

// doSwitches writes, in the pause, the switch code of every frame to
// switch (pointReturns then points the frames at it). base is the new
// image's; xrecs the transfers just made (their objects are what pointers
// are relocated to).
func doSwitches(p proc, area *switchArea, base uint64, frames []safepoint.Stayed, pt *Patch, xrecs []TransferRecord) ([]SwitchRecord, error) {
	ts := pt.Transfers
	if len(xrecs) < len(ts) {
		ts = ts[:len(xrecs)]
	}
	relocs := transferRelocs(ts, func(i int) (uint64, uint64) { return xrecs[i].Old, xrecs[i].New })
	return writeSwitches(p, area, base, 0, frames, relocs, base, base, nil)
}

// doBackSwitches is a revert's: the frames in the new code of the patch
// recorded in r go back to the old code, with the old objects.
func doBackSwitches(p proc, r *PatchRecord, frames []safepoint.Stayed) ([]SwitchRecord, error) {
	back, recs := backTransfers(r)
	relocs := transferRelocs(back, func(i int) (uint64, uint64) { return recs[i].New, recs[i].Old })
	first := 0
	if r.SwitchArea != nil {
		first = r.SwitchArea.Slots
	}
	// The old code's entries still hold the patch's jumps: read what the
	// revert puts back.
	return writeSwitches(p, r.SwitchArea, r.Base, first, frames, relocs, 0, 0, r.Sites)
}

// writeSwitches writes the switch code of frames into area's slots from
// first on (the image at base), after checking that each frame's return
// address is where its layout says; the switch code is inert until
// pointReturns points a frame at it. A plan's To is relative to toBias (or the frame's own, for a
// revert: each function's old copy has its own); its "lea" values name
// instructions of the destination code, at the same bias, read as they
// are once the jumps of sites are taken out.
func writeSwitches(p proc, area *switchArea, base uint64, first int, frames []safepoint.Stayed, relocs []trampoline.Reloc, toBias, leaBias uint64, sites []SiteRecord) ([]SwitchRecord, error) {
	if len(frames) == 0 {
		return nil, nil
	}
	if area == nil || len(frames) > area.Slots {
		n := 0
		if area != nil {
			n = area.Slots
		}
		return nil, fmt.Errorf("%d frames must be switched, and the image has room for %d (more threads than when the patch was applied); try again", len(frames), n)
	}
	lea := func(bias, link uint64) (uint64, error) {
		at := bias + link
		buf := make([]byte, 16)
		if _, err := p.ReadAt(buf, int64(at)); err != nil {
			return 0, err
		}
		for _, st := range sites {
			for k := range st.Orig {
				if a := st.Addr + uint64(k); a >= at && a < at+uint64(len(buf)) {
					buf[a-at] = st.Orig[k]
				}
			}
		}
		in, err := x86dec.Decode(buf, at)
		if err != nil || in.RelSize == 0 {
			return 0, fmt.Errorf("the code at %#x is not the address computation the plan expects", at)
		}
		return in.Target, nil
	}
	var recs []SwitchRecord
	for i, f := range frames {
		sf := f.Switch.(*switchFrame)
		plan := sf.plan
		if f.CFA == 0 {
			return nil, fmt.Errorf("switch %s's frame in thread %d: its frame address is unknown", sf.fn, f.Tid)
		}
		toBias, leaBias := toBias, leaBias
		if sf.toBias != 0 {
			toBias, leaBias = sf.toBias, sf.toBias
		}
		var lerr error
		k := uint64(first + i)
		fs := &trampoline.FrameSwitch{
			Addr:    base + area.Off + k*area.CodeSlot,
			Scratch: base + area.Scratch + k*area.ScratchOne,
			CFA:     f.CFA,
			OldSize: uint64(plan.FromSize),
			NewSize: uint64(plan.ToSize),
			Target:  toBias + plan.To,
			Relocs:  append([]trampoline.Reloc(nil), relocs...),
		}
		for _, mv := range plan.Moves {
			fs.Moves = append(fs.Moves, switchMove(mv, f.CFA, func(a uint64) uint64 {
				v, err := lea(leaBias, a)
				if err != nil && lerr == nil {
					lerr = err
				}
				return v
			}))
		}
		fs.Relocs = append(fs.Relocs, objRelocs(plan.Objs, f.CFA, f.CFA)...)
		code, err := trampoline.BuildFrameSwitch(fs)
		if err == nil {
			err = lerr
		}
		if err == nil && (uint64(len(code)) > area.CodeSlot || uint64(trampoline.ScratchSize(fs)) > area.ScratchOne) {
			err = fmt.Errorf("switch code of %d bytes does not fit its slot of %d", len(code), area.CodeSlot)
		}
		if err != nil {
			return nil, fmt.Errorf("switch %s's frame in thread %d: %w", sf.fn, f.Tid, err)
		}
		slot := f.CFA - uint64(plan.FromSize) - 8
		if v, err := readWord(p, slot); err != nil || v != f.PC {
			return nil, fmt.Errorf("switch %s's frame in thread %d: its return address is not at %#x as the frame's layout says", sf.fn, f.Tid, slot)
		}
		if _, err := p.WriteAt(code, int64(fs.Addr)); err != nil {
			return nil, fmt.Errorf("write switch code at %#x: %w", fs.Addr, err)
		}
		recs = append(recs, SwitchRecord{Tid: f.Tid, Function: sf.fn, Slot: slot, Orig: f.PC, Stub: fs.Addr, To: toBias + plan.To})
	}
	return recs, nil
}

// readWord and writeWord read and write the 8-byte word at addr (a
// return address slot).
func readWord(p proc, addr uint64) (uint64, error) {
	var b [8]byte
	if _, err := p.ReadAt(b[:], int64(addr)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func writeWord(p proc, addr, v uint64) error {
	_, err := p.WriteAt(binary.LittleEndian.AppendUint64(nil, v), int64(addr))
	return err
}

// pointReturns points each switched frame's return address at its switch
// code: the last write of a switch, made once the record that lists it is
// in (a graft killed before leaves no frame headed for code the record
// does not name). The undo puts the return addresses back.
func pointReturns(p proc, recs []SwitchRecord) (func() error, error) {
	var undo undoList
	for _, r := range recs {
		if v, err := readWord(p, r.Slot); err != nil || v != r.Orig {
			return nil, errors.Join(fmt.Errorf("thread %d's return address at %#x changed during the pause", r.Tid, r.Slot), undo.run())
		}
		if err := writeWord(p, r.Slot, r.Stub); err != nil {
			return nil, errors.Join(fmt.Errorf("point thread %d's return address at the switch code: %w", r.Tid, err), undo.run())
		}
		undo.push(func() error { return writeWord(p, r.Slot, r.Orig) })
	}
	return undo.run, nil
}

// unswitch puts back, in a revert's pause, the return addresses of the
// switched frames whose call has not returned yet (the slot still holds
// the switch code's address): they go on in the old code, which the
// revert restores. The undo points them at the switch code again.
func unswitch(p proc, recs []SwitchRecord) (int, func() error, error) {
	var undo undoList
	n := 0
	for _, r := range recs {
		v, err := readWord(p, r.Slot)
		if err != nil {
			continue // the thread is gone, and its stack with it
		}
		if v != r.Stub {
			continue // the call returned: the frame is in the new code
		}
		if err := writeWord(p, r.Slot, r.Orig); err != nil {
			return 0, nil, errors.Join(fmt.Errorf("put back thread %d's return address at %#x: %w", r.Tid, r.Slot, err), undo.run())
		}
		undo.push(func() error { return writeWord(p, r.Slot, r.Stub) })
		n++
	}
	return n, undo.run, nil
}

// BackSet is one function's plans back to its old copy at Bias.
type BackSet struct {
	Function string               `json:"function"`
	Bias     uint64               `json:"bias"`
	Plans    elfpatch.SwitchPlans `json:"plans"`
}

// backPlans are the patch's plans that carry a frame from the new code
// back to the copy of each function that ran before it (for a revert),
// recorded with the patch.
func backPlans(pr *prepared) []BackSet {
	pt := pr.patch
	var out []BackSet
	for name, v := range pr.currentCopies() {
		rs := pt.Resume[name]
		if rs == nil {
			continue
		}
		set := BackSet{Function: name, Bias: pr.copyBias(v)}
		for _, p := range rs.Back {
			if p.Why == "" {
				set.Plans = append(set.Plans, p)
			}
		}
		if len(set.Plans) > 0 {
			sort.Slice(set.Plans, func(i, j int) bool { return set.Plans[i].From < set.Plans[j].From })
			out = append(out, set)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Function < out[j].Function })
	return out
}

// revertSwitchStay offers, for the frames in the new code of a popped
// patch that converted state, a switch back to the old code.
func revertSwitchStay(popped []PatchRecord) func(fn string, pc uint64, exact bool) safepoint.StayVerdict {
	return func(fn string, pc uint64, exact bool) safepoint.StayVerdict {
		for i := range popped {
			r := &popped[i]
			if fn != "patch "+r.ID {
				continue
			}
			fnSym, _ := imageFuncAt(r, pc, exact)
			name := fnSym.Name
			if exact {
				return safepoint.StayVerdict{Function: name, Why: "the patch converted state, and this frame is running in the new code (not waiting in a call), so it cannot be switched back"}
			}
			var plan *elfpatch.SwitchPlan
			bias := uint64(0)
			for _, set := range r.Back {
				if p := set.Plans.Lookup(pc - r.Base); p != nil {
					plan, bias = p, set.Bias
				}
			}
			if plan == nil {
				return safepoint.StayVerdict{Function: name, Why: "the patch converted state, and no switch back to the old code was planned for this return address in the new code"}
			}
			return safepoint.StayVerdict{OK: true, Function: name, Why: fmt.Sprintf("switched back: continues in the old code, its frame rebuilt in the old layout (%d moves)", len(plan.Moves)),
				Switch: &switchFrame{fn: name, plan: plan, shift: r.Base, toBias: bias}}
		}
		return safepoint.StayVerdict{}
	}
}

// warmBackSwitches works out, before a revert's pause, the offset maps
// its switches back would need.
func warmBackSwitches(popped []PatchRecord) {
	for i := range popped {
		if len(popped[i].Back) == 0 {
			continue
		}
		back, _ := backTransfers(&popped[i])
		for j := range back {
			transferStride(&back[j])
		}
	}
}

// backTransfers are the reverse conversions of r's moved globals (new to
// old), with their records, in the same order.
func backTransfers(r *PatchRecord) ([]elfpatch.Transfer, []TransferRecord) {
	var ts []elfpatch.Transfer
	var recs []TransferRecord
	for _, x := range r.Transfers {
		if x.InPlace || len(x.Reverse) == 0 {
			continue
		}
		ts = append(ts, elfpatch.Transfer{Name: x.Name, Ops: x.Reverse, OldSize: x.NewSize, NewSize: x.OldSize})
		recs = append(recs, x)
	}
	return ts, recs
}

// revertSwitchSpec makes a revert's safe-point check offer switches back
// for frames in the new code of popped patches that converted state
// (moved objects: their new copies, which the revert leaves).
func revertSwitchSpec(spec *safeSpec, popped []PatchRecord) {
	spec.Stay = revertSwitchStay(popped)
	spec.Thread = startingThread
	var moved []Range
	for _, q := range popped {
		for _, x := range q.Transfers {
			if !x.InPlace {
				moved = append(moved, Range{x.New, x.New + x.NewSize})
			}
		}
	}
	spec.SwitchOK = func(st []safepoint.Frame, i int) string { return switchable(st, i, moved) }
}

// switchBackInPause makes a revert's switch writes: the frames an apply
// switched whose call has not returned go back to the old code they were
// taken from (unswitch); the frames in the new code get their switch
// code back to the old (pointed at once the record is written).
func switchBackInPause(ps *pause, ck checker, popped []PatchRecord, res *RevertResult) error {
	for _, r := range popped {
		if len(r.Switches) == 0 {
			continue
		}
		n, undo, err := unswitch(ps.p, r.Switches)
		if err != nil {
			return ps.abort(err)
		}
		ps.did(undo)
		res.Unswitched += n
	}
	frames := switchedFrames(ck)
	for i := range popped {
		r := &popped[i]
		var mine []safepoint.Stayed
		for _, f := range frames {
			if f.PC >= r.Base && f.PC < r.Base+r.Size {
				mine = append(mine, f)
			}
		}
		if len(mine) == 0 {
			continue
		}
		recs, err := doBackSwitches(ps.p, r, mine)
		if err != nil {
			return ps.abort(err)
		}
		res.SwitchedBack = append(res.SwitchedBack, recs...)
	}
	return nil
}
