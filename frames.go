package graft

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"graft/elfpatch"
	"graft/safepoint"
)

// Frames that never leave (DESIGN.md): a frame inside a function being
// replaced may stay when the patch's resume analysis (elfpatch/resume.go)
// proved that it finishes as the other version would; --allow-active
// names the others the operator lets stay; every frame that blocks is
// named at once.

// StayedFrame is a frame inside a replaced function that apply (or
// revert) let stay, and why.
type StayedFrame struct {
	Tid      int    `json:"tid"`
	Frame    int    `json:"frame"`
	Function string `json:"function"`
	PC       uint64 `json:"pc"`
	// Allowed: by --allow-active, not by proof.
	Allowed bool   `json:"allowed,omitempty"`
	Why     string `json:"why"`
}

// Blocker is one frame that kept a patch (or a revert) out.
type Blocker struct {
	Tid      int    `json:"tid"`
	Frame    int    `json:"frame"`
	Function string `json:"function,omitempty"`
	PC       uint64 `json:"pc"`
	// Why it could not be let stay; Allow the --allow-active value that
	// would let it ("" where no flag can: a stack that could not be
	// unwound, a PC inside the bytes a jump overwrites).
	Why   string `json:"why"`
	Allow string `json:"allow,omitempty"`
	Stack string `json:"stack"`
}

// Blockers lists every frame an apply or revert error names.
func Blockers(err error) []Blocker {
	var out []Blocker
	for _, b := range safepoint.Blockers(err) {
		x := Blocker{Tid: b.Tid, Frame: b.Frame, Function: b.Function, PC: b.PC, Stack: safepoint.FormatStack(b.Stack)}
		switch {
		case b.Incomplete:
			x.Why = "stack could not be unwound to its end: " + b.Reason
		case b.Entry:
			x.Why = "inside the bytes the jump overwrites"
		default:
			x.Why, x.Allow = b.Why, b.Allow
			if x.Why == "" {
				x.Why = "no proof that it may finish in its code"
			}
		}
		out = append(out, x)
	}
	return out
}

// StayedIn lists the frames the check an apply or revert error reports
// would have let stay.
func StayedIn(err error) []StayedFrame { return stayedFrames(safepoint.StayedIn(err)) }

// ErrUnknownAllow: --allow-active named no function of the patch.
var ErrUnknownAllow = errors.New("--allow-active names no function of the patch")

// operatorName is what the diff prints for a function and what
// --allow-active takes: a compiler clone's base name (main_noinetd for
// main_noinetd.constprop.0), the name itself otherwise.
func operatorName(pt *Patch, fn string) string {
	if o := pt.Origins[fn]; o != "" && !strings.HasSuffix(fn, ".cold") {
		return o
	}
	return fn
}

// resolveAllow maps the operator's --allow-active names to the patch's
// function names: a function's own name, its name without the clone
// number, or a clone's base name. A name matching nothing is refused
// (before anything is touched), listing the names the patch has.
func resolveAllow(pt *Patch, names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		found := false
		for _, r := range pt.Image.Redirects {
			fn := r.Name
			if n == fn || n == operatorName(pt, fn) || n == dropCloneNumbers(fn) {
				found = true
				if !slices.Contains(out, fn) {
					out = append(out, fn)
				}
			}
		}
		if !found {
			var have []string
			for _, r := range pt.Image.Redirects {
				have = append(have, operatorName(pt, r.Name))
			}
			sort.Strings(have)
			have = slices.Compact(have)
			return nil, fmt.Errorf("apply patch %s: %w: %q (the patch replaces: %s); nothing was done", pt.ID, ErrUnknownAllow, n, strings.Join(have, ", "))
		}
	}
	return out, nil
}

// proof is one copy of a function that an analysis covers: its runtime
// resume verdicts.
type proof struct {
	fn     string
	ranges elfpatch.ResumeRanges // runtime addresses
	extent []Range               // where this copy (and its parts) lies
	// switches, for a patch that converts state, are the plans that
	// carry a frame of this copy into the new code (link-time
	// addresses; shift is this copy's load bias).
	switches elfpatch.SwitchPlans
	shift    uint64
}

// switchFrame is a frame the pause switches into the new code.
type switchFrame struct {
	fn    string
	plan  *elfpatch.SwitchPlan
	shift uint64 // the waiting copy's bias: plan.From+shift is the PC
	// toBias, when set, is the destination copy's (a revert's).
	toBias uint64
}

// stayChecker decides, in the pause, whether a frame may stay.
type stayChecker struct {
	proofs []proof
	// note says where the analysis does not reach ("" if everywhere).
	note map[string]string
	// carry translates a return address in an older copy (one an earlier
	// patch let a frame stay in) to its equivalent in the copy the
	// proofs cover, through the records' Carry maps.
	carry func(pc uint64) (uint64, bool)
	// ptrUsers are the unchanged functions that reach a moved type
	// through pointers (pointer_users.go): their frames wait, never
	// stay.
	ptrUsers map[string]bool
}

func (c *stayChecker) stay(fn string, pc uint64, exact bool) safepoint.StayVerdict {
	for _, p := range c.proofs {
		if p.fn != fn {
			continue
		}
		in := false
		for _, e := range p.extent {
			in = in || e.Contains(pc) || (!exact && e.Contains(pc-1))
		}
		if !in {
			continue
		}
		if p.switches != nil || p.ranges == nil {
			if exact {
				return safepoint.StayVerdict{Why: "the patch converts state, and this frame is running (not waiting in a call), so it cannot be switched to the new code"}
			}
			sw := p.switches.Lookup(pc - p.shift)
			if sw == nil {
				return safepoint.StayVerdict{Why: "the patch converts state, and no switch to the new code was planned for this return address"}
			}
			if sw.Why != "" {
				return safepoint.StayVerdict{Why: "the patch converts state, and the frame cannot be switched to the new code: " + sw.Why}
			}
			return safepoint.StayVerdict{OK: true, Why: fmt.Sprintf("switched: continues in the new code at its return address, its frame rebuilt in the new layout (%d moves)", len(sw.Moves)),
				Switch: &switchFrame{fn: fn, plan: sw, shift: p.shift}}
		}
		ok, why := p.ranges.Lookup(pc)
		if ok {
			return safepoint.StayVerdict{OK: true, Why: "proven: nothing that differs in the new version is reachable from here, and every register and stack slot it reads was set by code the same in both"}
		}
		return safepoint.StayVerdict{Why: why}
	}
	if n := c.note[fn]; n != "" {
		return safepoint.StayVerdict{Why: n}
	}
	if c.ptrUsers[fn] {
		return safepoint.StayVerdict{Why: "it reaches a type the patch moves through pointers (sole_home_of) and may hold a pointer into the old object; the patch waits until it returns"}
	}
	if c.carry != nil {
		if to, ok := c.carry(pc); ok {
			for _, p := range c.proofs {
				if p.fn != fn {
					continue
				}
				if ok, why := p.ranges.Lookup(to); ok {
					return safepoint.StayVerdict{OK: true, Why: fmt.Sprintf("proven: an earlier patch proved this frame equivalent to one at %#x in the code this patch was made from, and from there nothing that differs is reachable", to)}
				} else if why != "" {
					return safepoint.StayVerdict{Why: fmt.Sprintf("in code from before an earlier patch, equivalent to %#x, where: %s", to, why)}
				}
			}
		}
	}
	return safepoint.StayVerdict{Why: "the frame is in a copy of the function from before an earlier patch, at a return address no earlier patch proved equivalent to the code this patch was made from"}
}

// carryChain follows pc through every record's Carry map, oldest first:
// each maps the copy its patch was made from to its own image.
func carryChain(st *State) func(uint64) (uint64, bool) {
	return func(pc uint64) (uint64, bool) {
		moved := false
		for _, r := range st.Patches {
			i := sort.Search(len(r.Carry), func(i int) bool { return r.Carry[i].From >= pc })
			if i < len(r.Carry) && r.Carry[i].From == pc {
				pc, moved = r.Carry[i].To, true
			}
		}
		return pc, moved
	}
}

// carryOf is the Carry map of a patch mapped at base: the proven return
// addresses of the copy it was made from (the executable's, or the top
// patch's image) and their equivalents in its image, sorted.
func carryOf(pr *prepared, base uint64) []CarryRecord {
	pt := pr.patch
	shift := pr.exeBias
	if top := pr.state.TopFor(pr.module); top != nil {
		shift = top.Base
	}
	var out []CarryRecord
	for _, r := range pt.Image.Redirects {
		rs := pt.Resume[r.Name]
		if rs == nil {
			continue
		}
		for _, x := range rs.Old.Proven() {
			if x.To != 0 {
				out = append(out, CarryRecord{From: x.Start + shift, To: x.To + base})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From < out[j].From })
	return out
}

// frameSpec fills in what lets frames stay: the operator's names
// (resolved against the patch) and the proofs for OLD's copy of each
// function, the one the patch was made from: the executable's, or the
// top patch's image when stacked.
func (pr *prepared) frameSpec(spec *safeSpec, exeBias uint64) error {
	pt := pr.patch
	allow, err := resolveAllow(pt, pr.allowNames)
	if err != nil {
		return err
	}
	spec.AllowActive = allow
	spec.Allow = map[string]string{}
	for _, r := range pt.Image.Redirects {
		spec.Allow[r.Name] = operatorName(pt, r.Name)
	}
	// A patch that converts globals: a frame left in old code would go
	// on with the old layout (or the old object, when the global moved),
	// which the resume analysis does not see, since it compares code,
	// not data. No frame stays; a frame the analysis can rebuild in the
	// new layout switches to the new code instead (switch.go).
	xfer := len(pt.Transfers) > 0
	if xfer {
		spec.Thread = startingThread
		var moved []Range
		for k, t := range pt.Transfers {
			if !t.InPlace && pr.xfer != nil && k < len(pr.xfer.old) {
				moved = append(moved, Range{pr.xfer.old[k], pr.xfer.old[k] + t.OldSize})
			}
		}
		spec.SwitchOK = func(st []safepoint.Frame, i int) string { return switchable(st, i, moved) }
	}
	// OLD's copy lives in the executable, or in the top patch's image
	// when this patch is stacked on it.
	shift, lo, hi := exeBias, uint64(0), ^uint64(0)
	top := pr.state.TopFor(pr.module)
	if top != nil {
		shift, lo, hi = top.Base, top.Base, top.Base+top.Size
	}
	inLayer := func(a uint64) bool {
		if top == nil {
			return !inAnyImage(pr.state, a)
		}
		return a >= lo && a < hi
	}
	sc := &stayChecker{note: map[string]string{}}
	current := pr.currentCopies()
	for _, v := range pr.versions {
		rs := pt.Resume[v.name]
		if rs == nil {
			sc.note[v.name] = "the patch carries no analysis of " + v.name + " (made by an older graft, or a version-2 patch file)"
			continue
		}
		if xfer {
			// Switch plans are for OLD's code, which is the copy that
			// runs now: the top image's, or, for a function no earlier
			// patch replaced, the executable's (the same instructions
			// at the same offsets: the diff found it unchanged).
			if current[v.name] != v {
				continue // an older copy: its frames block
			}
			shift := pr.copyBias(v)
			p := proof{fn: v.name, extent: []Range{{v.entry, v.entry + v.size}}, shift: shift, switches: rs.Switch}
			same := func(a uint64) bool { return inAnyImage(pr.state, a) == inAnyImage(pr.state, v.entry) }
			for _, part := range pr.parts {
				if part.Name == v.name && same(part.Start) {
					p.extent = append(p.extent, part.Range)
				}
			}
			sc.proofs = append(sc.proofs, p)
			continue
		}
		if !inLayer(v.entry) {
			continue // a copy older than OLD (stacked): not what the analysis saw
		}
		p := proof{fn: v.name, ranges: rs.Old.Shift(shift), extent: []Range{{v.entry, v.entry + v.size}}, shift: shift}
		for _, part := range pr.parts {
			if part.Name == v.name && inLayer(part.Start) {
				p.extent = append(p.extent, part.Range)
			}
		}
		sc.proofs = append(sc.proofs, p)
	}
	if !xfer {
		sc.carry = carryChain(pr.state)
	}
	sc.ptrUsers = map[string]bool{}
	for _, t := range pt.Transfers {
		for _, fn := range t.PointerUsers {
			sc.ptrUsers[fn] = true
		}
	}
	spec.Stay = sc.stay
	return nil
}

// stayedFrames converts safepoint's verdicts.
func stayedFrames(ss []safepoint.Stayed) []StayedFrame {
	var out []StayedFrame
	for _, s := range ss {
		if s.Switch != nil {
			continue // switched, not stayed: ApplyResult.Switched
		}
		out = append(out, StayedFrame{Tid: s.Tid, Frame: s.Frame, Function: s.Function, PC: s.PC, Allowed: s.Allowed, Why: s.Why})
	}
	return out
}

// lastStayed asks the checker which frames the last successful wait let
// stay (a checker that cannot tell: none).
func lastStayed(ck checker) []StayedFrame {
	if s, ok := ck.(interface{ stayed() []safepoint.Stayed }); ok {
		return stayedFrames(s.stayed())
	}
	return nil
}

// switchable says why frame i of a thread may not be switched now ("" if
// it may): below it, the thread must be blocked in a system call (not
// running C library or program code, which may hold a pointer into the
// moved global where no switch sees it, not creating a thread or process,
// whose argument may be such a pointer), and no argument of that system
// call may point into a moved global (the kernel would write the old
// object after the switch).
func switchable(st []safepoint.Frame, i int, moved []Range) string {
	top := st[0]
	if !top.InSyscall {
		return "a frame below it is running (not blocked in a system call) and may hold a pointer into the global the patch moves; waiting for the thread to block"
	}
	switch top.Syscall {
	case 56, 57, 58, 435: // clone, fork, vfork, clone3
		return "the thread is creating a thread or process, whose argument may point into the global the patch moves; waiting"
	}
	for _, a := range top.SyscallArgs {
		for _, r := range moved {
			if a >= r.Start && a <= r.End {
				return fmt.Sprintf("the thread waits in system call %d with an argument (%#x) pointing into the global the patch moves; waiting", top.Syscall, a)
			}
		}
	}
	return ""
}

// startingThread blocks a thread that is being started (or is ending):
// in the C library's start_thread with no frame of the program's own
// below it, the start routine's argument (a pointer, perhaps into a
// global the patch moves) is held where no frame switch can see it.
// It is a moment: the check waits it out. Only shallow stacks count
// (start_thread, clone3 and at most one call): a helper thread the C
// library parks for good has its own function below start_thread.
func startingThread(st []safepoint.Frame) string {
	start := false
	for _, f := range st {
		switch f.Function {
		case "start_thread":
			start = true
		case "clone", "clone3", "__clone", "__clone3", "__GI___clone", "__GI___clone3", "__GI___clone_internal", "__clone_internal":
			start = true // a child before start_thread: clone's frame alone
		default:
			if f.Function != "" && !libcFrame(f) {
				return ""
			}
		}
	}
	// A thread parked in the C library for good (a helper thread) is
	// deeper than start_thread and one call.
	if start && len(st) <= 3 {
		return "the thread is being started or is ending (inside the C library's start_thread with no frame of the program yet): its start routine's argument may point into a global the patch moves"
	}
	return ""
}

// libcFrame: a frame in the C library or the dynamic linker.
func libcFrame(f safepoint.Frame) bool {
	return strings.HasPrefix(f.Module, "libc.so") || strings.HasPrefix(f.Module, "libc-") || strings.HasPrefix(f.Module, "ld-linux") || strings.HasPrefix(f.Module, "libpthread")
}

// currentCopies is, per function the patch redirects, the copy that runs
// now: the last one found (the executable's, then each image's in order).
func (pr *prepared) currentCopies() map[string]version {
	current := map[string]version{}
	for _, v := range pr.versions {
		current[v.name] = v
	}
	return current
}

// copyBias is what a link-time address of OLD's function adds to land in
// copy v: the copy holds OLD's instructions at the same offsets.
func (pr *prepared) copyBias(v version) uint64 {
	return v.entry - pr.patch.Image.Redirects[v.redir].Old
}
