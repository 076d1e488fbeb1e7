package elfpatch

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"sort"
	"strings"

	"graft/internal/x86dec"
)

// GoPlan is the offline plan of a live patch of a Go program: which
// functions of NEW replace which of OLD, and where every reference of the
// new code must point so that it shares the running program's runtime,
// heap, types and state. It is pure data computed from the binaries by
// PlanGo; the live half (mapping NEW's image, registering its module,
// rewriting the fields, writing the jumps) consumes it.
//
// Addresses are link-time virtual addresses: OLD's as in OLD's ELF file
// (add the running program's load bias, 0 for a default build), NEW's as
// in the loaded build's ELF file (Load: add the bias at which its image is
// mapped).
type GoPlan struct {
	// Old and Load are the paths of OLD and of the NEW build whose code
	// is loaded (a PIE); Diffed is the NEW build compared with OLD (Load
	// itself, or a build of the same source in OLD's build mode).
	Old, Diffed, Load string
	// OldBuildID and LoadBuildID are the GNU build-ids.
	OldBuildID, LoadBuildID string
	// Toolchain is the common `go version` of OLD and NEW.
	Toolchain string
	// Funcs are the functions whose code runs from NEW's image: the
	// changed ones (with OLD's entry, which gets the jump) and the added
	// ones (OldEntry 0).
	Funcs []GoFunc
	// Redirects are the fields in Funcs' code that must be rewritten to
	// reach OLD's copy of what they denote. Sorted by Field.
	Redirects []GoRedirect
	// Kept are the references that stay inside NEW's image (its own code,
	// other functions of Funcs, string literals, constants, jump tables):
	// the image must be mapped with them, relocated. Sorted by Field.
	Kept []GoRedirect
	// Refusals name what the plan cannot do (a new type, itab or global
	// with no twin in OLD; a signature change); a plan with refusals
	// must not be applied.
	Refusals []Reason
	// Report is the diff of OLD and Diffed the plan is made from.
	Report *Report
}

// GoFunc is one function the patch runs from NEW's image.
type GoFunc struct {
	Name string `json:"name"`
	// OldEntry and OldSize locate OLD's copy (0 for an added function);
	// the jump goes at OldEntry.
	OldEntry uint64 `json:"old_entry"`
	OldSize  uint64 `json:"old_size"`
	// NewEntry and NewSize locate the code in the loaded build.
	NewEntry uint64 `json:"new_entry"`
	NewSize  uint64 `json:"new_size"`
	Added    bool   `json:"added,omitempty"`
	// Pad is how many bytes of the alignment padding after OLD's
	// function the 5-byte jump at OldEntry overwrites (a function
	// shorter than the jump), as Func.Pad.
	Pad uint64 `json:"pad,omitempty"`
	// Source is the declaration's file:line.
	Source string `json:"source,omitempty"`
}

// GoRedirect is one PC-relative field of NEW's code: a rel32 call or jump
// displacement, or a RIP-relative disp32 operand.
type GoRedirect struct {
	// Func is the function of GoPlan.Funcs the field is in.
	Func string `json:"func"`
	// Field is the NEW link-time address of the 4-byte field; End the
	// address of the end of its instruction. The field's value is
	// Target - End, computed in the address space the code runs in.
	Field uint64 `json:"field"`
	End   uint64 `json:"end"`
	// Target is the link-time address the field must reach: in OLD for a
	// redirect, in NEW for a kept reference.
	Target uint64 `json:"target"`
	// Kind is what the target is: "function", "global", "type", "itab",
	// "cache" (type-assertion or interface-switch cache), "dict",
	// "funcval", "rodata", "string", "code" (inside its own function).
	Kind string `json:"kind"`
	// What names the target: a symbol and offset, a type's name.
	What string `json:"what"`
}

// ErrGoPlanRefused is wrapped by PlanGo's error when the plan has
// refusals; the plan itself is returned with them.
var ErrGoPlanRefused = errors.New("the Go patch cannot be applied live")

// PlanGo plans a live patch of a Go program running OLD with NEW's code.
//
// diffed is the NEW build compared with OLD to find what changed; load is
// the NEW build whose code is loaded into the process, which must be a
// PIE (-buildmode=pie). When OLD is itself a PIE, pass the same binary
// twice. When OLD is a default (non-PIE) build, the compiler's PIE code
// differs from the default build's in places no source change touched (g
// reloads, TLS access in assembly), so diffed must be NEW built the way
// OLD was and load NEW built with -buildmode=pie from the same source; the
// functions of the diff are looked up in load by name.
//
// It checks that OLD, diffed and load were built by one toolchain with the
// same settings (CheckGoBuilds), then decodes every changed or added
// function of load with internal/x86dec and classifies each rel32 and
// RIP-relative field:
//
//   - kept in NEW: its own code, the other functions of the plan, string
//     literals, pointer-free read-only data (float constants, GC masks),
//     read-only data whose pointers all lead to kept things (jump tables,
//     static string headers), funcvals of functions of the plan;
//   - redirected to OLD's twin: every other function (the runtime's
//     morestack, write barriers, mallocgc, duffzero at an offset...), by
//     name; every global (runtime.writeBarrier included) by name; type
//     descriptors by identity (abi.Type content: name, kind, size, hash,
//     GC mask, element types); itabs and dictionaries by name;
//     type-assertion and interface-switch caches and funcvals by content;
//     other read-only data with pointers by name and value;
//   - refused, naming the symbol: what has no twin in OLD and carries
//     identity or state (a new type, itab, dictionary, cache or global),
//     a function whose signature changed (a goroutine growing its stack
//     re-enters OLD's entry with OLD's arguments), unnamed writable data.
//
// The result is deterministic. With refusals it is returned together with
// an error wrapping ErrGoPlanRefused.
func PlanGo(old, diffed, load *Binary) (*GoPlan, error) {
	if old == nil || diffed == nil || load == nil {
		return nil, fmt.Errorf("plan go patch: nil binary")
	}
	if old.goBuild() == nil {
		return nil, fmt.Errorf("plan go patch: %s is not a Go program", old.path)
	}
	if err := CheckGoBuilds(old, diffed); err != nil {
		return nil, fmt.Errorf("plan go patch: %w", err)
	}
	if load != diffed {
		if err := CheckGoBuilds(old, load); err != nil {
			return nil, fmt.Errorf("plan go patch: %w", err)
		}
	}
	if err := CheckGoNewPIE(load); err != nil {
		return nil, fmt.Errorf("plan go patch: %w", err)
	}
	if load == diffed && old.f.Type != diffed.f.Type {
		return nil, fmt.Errorf("plan go patch: OLD %s is a default (non-PIE) build and NEW %s a PIE: the PIE's code differs from a default build's beyond the source change; diff against NEW built the way OLD was and load the PIE (PlanGo(old, newDefault, newPIE))", old.path, diffed.path)
	}
	d, err := diff(old, diffed, nil)
	if err != nil {
		return nil, err
	}
	r := d.r
	p := &GoPlan{Old: old.path, Diffed: diffed.path, Load: load.path, OldBuildID: old.buildID,
		LoadBuildID: load.buildID, Toolchain: old.goBuild().GoVersion, Report: r}
	pl := newGoPlanner(p, old, load)
	pl.twins = d.twins
	pl.lock()
	defer pl.unlock()
	pl.indexOld()
	pl.funcs(r)
	for _, f := range p.Funcs {
		pl.code(f)
	}
	sort.Slice(p.Redirects, func(i, j int) bool { return p.Redirects[i].Field < p.Redirects[j].Field })
	sort.Slice(p.Kept, func(i, j int) bool { return p.Kept[i].Field < p.Kept[j].Field })
	sort.SliceStable(p.Refusals, func(i, j int) bool {
		if p.Refusals[i].Symbol != p.Refusals[j].Symbol {
			return p.Refusals[i].Symbol < p.Refusals[j].Symbol
		}
		return p.Refusals[i].Message < p.Refusals[j].Message
	})
	// One refusal per symbol and message: a new type used ten times is
	// one reason.
	var uniq []Reason
	for i, rs := range p.Refusals {
		if i > 0 && rs.Symbol == p.Refusals[i-1].Symbol && rs.Message == p.Refusals[i-1].Message {
			continue
		}
		uniq = append(uniq, rs)
	}
	p.Refusals = uniq
	if len(p.Refusals) > 0 {
		var msgs []string
		for _, rs := range p.Refusals {
			msgs = append(msgs, rs.Message)
		}
		return p, fmt.Errorf("%w: %s", ErrGoPlanRefused, strings.Join(msgs, "; "))
	}
	return p, nil
}

type goPlanner struct {
	p         *GoPlan
	old, load *Binary
	og, lg    *goImage
	// kept are the functions of the plan in load, by name.
	kept map[string]*symbol
	// twins are the diff's pairs: OLD's function for each NEW one, by
	// NEW's key (load and the diffed build share names).
	twins map[string]*symbol
	// OLD's twins by identity.
	oldByName   map[string]*symbol
	oldTypes    map[string]uint64
	oldCaches   map[string]*symbol
	oldFuncvals map[string]uint64
}

func newGoPlanner(p *GoPlan, old, load *Binary) *goPlanner {
	return &goPlanner{p: p, old: old, load: load, og: old.goImage(), lg: load.goImage(), kept: map[string]*symbol{}}
}

// lock takes both images' locks (one when OLD and load are one binary).
func (pl *goPlanner) lock() {
	pl.og.mu.Lock()
	if pl.lg != pl.og {
		pl.lg.mu.Lock()
	}
}

func (pl *goPlanner) unlock() {
	if pl.lg != pl.og {
		pl.lg.mu.Unlock()
	}
	pl.og.mu.Unlock()
}

func (pl *goPlanner) refuse(sym, format string, args ...any) {
	pl.p.Refusals = append(pl.p.Refusals, Reason{Verdict: VerdictRefused, Symbol: sym, Message: fmt.Sprintf(format, args...)})
}

// indexOld indexes OLD's symbols by name, its type descriptors by
// identity (those its code, its itabs, its typelinks and its DWARF
// reach), its caches and funcvals by content.
func (pl *goPlanner) indexOld() {
	og := pl.og
	if og.oldIdx == nil {
		og.oldIdx = og.identityIndex()
	}
	x := og.oldIdx
	pl.oldByName, pl.oldTypes, pl.oldCaches, pl.oldFuncvals = x.byName, x.types, x.caches, x.funcvals
}

// goIndex is a binary's objects by identity, for finding the twins of
// NEW's objects in it; made once per binary (the diff's refusals and
// PlanGo both need it).
type goIndex struct {
	byName   map[string]*symbol
	types    map[string]uint64
	caches   map[string]*symbol
	funcvals map[string]uint64
}

// identityIndex indexes the binary's symbols by name, its type
// descriptors by identity (those its code, its data, its typelinks reach),
// its caches and funcvals by content. The caller holds g.mu.
func (g *goImage) identityIndex() *goIndex {
	x := &goIndex{byName: map[string]*symbol{}, types: map[string]uint64{}, caches: map[string]*symbol{}, funcvals: map[string]uint64{}}
	b := g.b
	for _, s := range b.syms {
		if _, dup := x.byName[s.key()]; !dup {
			x.byName[s.key()] = s
		}
		if goCache.MatchString(s.name) {
			id := string(g.render(s.addr, s.addr+s.size, 0))
			if _, dup := x.caches[id]; !dup {
				x.caches[id] = s
			}
		}
	}
	addType := func(a uint64) {
		if !g.types.has(a) {
			return
		}
		if start, id := g.typeAt(a); id != "" {
			if prev, dup := x.types[id]; !dup || start < prev {
				x.types[id] = start
			}
		}
	}
	g.scanStrings()
	for _, a := range g.typeRefs {
		addType(a)
	}
	for _, s := range b.syms {
		if s.fn {
			continue
		}
		// Pointers in data (itabs, dictionaries, type fields).
		for a := (s.addr + 7) &^ 7; a+8 <= s.addr+s.size; a += 8 {
			if t, _, ok := g.ptr(a); ok {
				addType(t)
			}
		}
	}
	// typelinks: int32 offsets from moduledata.types.
	if sec := b.f.Section(".typelink"); sec != nil {
		if d, err := sec.Data(); err == nil {
			for i := 0; i+4 <= len(d); i += 4 {
				off := int32(uint32(d[i]) | uint32(d[i+1])<<8 | uint32(d[i+2])<<16 | uint32(d[i+3])<<24)
				addType(g.typesBase + uint64(off))
			}
		}
	}
	// DWARF: every type the program declares that has a descriptor
	// carries its offset from moduledata.types (DW_AT_go_runtime_type).
	if b.dw != nil {
		func() {
			defer func() { _ = recover() }() // malformed DWARF: fewer types
			r := b.dw.Reader()
			for {
				e, err := r.Next()
				if err != nil || e == nil {
					return
				}
				if off, ok := e.Val(dwarf.Attr(0x2904)).(uint64); ok {
					addType(g.typesBase + off)
				}
			}
		}()
	}
	for _, r := range g.funcdesc {
		for a := r.lo; a+8 <= r.hi; a += 8 {
			id := g.denote(a, -1, 0)
			if _, dup := x.funcvals[id]; !dup {
				x.funcvals[id] = a
			}
		}
	}
	return x
}

// funcs fills Funcs from the diff: changed and added functions, found in
// load by name.
func (pl *goPlanner) funcs(r *Report) {
	byName := map[string]*symbol{}
	for _, s := range pl.load.syms {
		if s.fn {
			if _, dup := byName[s.key()]; !dup {
				byName[s.key()] = s
			}
		}
	}
	add := func(f Func, added bool) {
		key := cloneKey(f.Name)
		if f.File != "" {
			key = f.File + ":" + key
		}
		s := byName[key]
		if s == nil {
			pl.refuse(f.Name, "%s is not in the loaded build %s (a different source, or a function only the other build mode has)", f.Name, pl.load.path)
			return
		}
		gf := GoFunc{Name: f.Name, NewEntry: s.addr, NewSize: s.size, Added: added, Source: f.Source}
		if !added {
			gf.OldEntry, gf.OldSize, gf.Pad = f.OldAddr, f.OldSize, f.Pad
			if !f.Patchable {
				pl.refuse(f.Name, "%s changed but its entry cannot take a jump: %s", f.Name, f.Why)
			}
		}
		pl.kept[s.key()] = s
		pl.p.Funcs = append(pl.p.Funcs, gf)
	}
	for _, f := range r.Changed {
		add(f, false)
	}
	for _, f := range r.Added {
		add(f, true)
	}
	for _, s := range r.Signatures {
		pl.refuse(s.Name, "signature of %s changed (%s -> %s): a goroutine that grows its stack in it, or is preempted at its entry, re-enters the old entry with the old arguments; rename the new function instead", s.Name, s.Old, s.New)
	}
	sort.Slice(pl.p.Funcs, func(i, j int) bool { return pl.p.Funcs[i].Name < pl.p.Funcs[j].Name })
}

// code classifies every PC-relative field of one function of the plan.
func (pl *goPlanner) code(f GoFunc) {
	s := pl.load.symbolAt(f.NewEntry)
	if s == nil {
		return
	}
	code := pl.load.read(s.addr, s.size)
	for off := 0; off < len(code); {
		pc := s.addr + uint64(off)
		in, err := x86dec.Decode(code[off:], pc)
		if err != nil {
			pl.refuse(f.Name, "%s: the instruction at %#x does not decode; its references cannot all be found", f.Name, pc)
			return
		}
		off += in.Len
		if in.RelSize == 0 {
			continue
		}
		rd := GoRedirect{Func: f.Name, Field: pc + uint64(in.RelOff), End: pc + uint64(in.Len), Target: in.Target}
		if in.RelSize != 4 {
			// rel8 branches: always inside the function.
			if in.Target >= s.addr && in.Target < s.addr+s.size {
				continue
			}
			pl.refuse(f.Name, "%s: a short branch at %#x leaves the function", f.Name, pc)
			continue
		}
		if in.Target >= s.addr && in.Target < s.addr+s.size {
			rd.Kind, rd.What = "code", fmt.Sprintf("%s+%#x", s.name, in.Target-s.addr)
			pl.p.Kept = append(pl.p.Kept, rd)
			continue
		}
		pl.classify(f.Name, rd)
	}
}

func (pl *goPlanner) keep(rd GoRedirect, kind, what string) {
	rd.Kind, rd.What = kind, what
	pl.p.Kept = append(pl.p.Kept, rd)
}

func (pl *goPlanner) redirect(rd GoRedirect, kind, what string, target uint64) {
	rd.Kind, rd.What, rd.Target = kind, what, target
	pl.p.Redirects = append(pl.p.Redirects, rd)
}

func symOff(s *symbol, a uint64) string {
	if a == s.addr {
		return s.name
	}
	return fmt.Sprintf("%s+%#x", s.name, a-s.addr)
}

// classify decides one field of fn whose target lies outside fn.
func (pl *goPlanner) classify(fn string, rd GoRedirect) {
	lg := pl.lg
	t := rd.Target
	kind, s := lg.where(t)
	switch kind {
	case goFunc:
		if s == nil {
			pl.refuse(fn, "%s refers to code at %#x that belongs to no function symbol", fn, t)
			return
		}
		if _, ok := pl.kept[s.key()]; ok {
			pl.keep(rd, "function", symOff(s, t))
			return
		}
		o := pl.twins[s.key()]
		if o == nil && goClosureNum.FindString(s.name) == "" {
			o = pl.oldByName[s.key()]
		}
		if o != nil && o.fn && t-s.addr < o.size {
			pl.redirect(rd, "function", symOff(s, t), o.addr+(t-s.addr))
			return
		}
		pl.refuse(s.name, "%s calls %s, which OLD does not have and the patch does not add", fn, s.name)
	case goRWSym:
		if o := pl.oldByName[s.key()]; o != nil && !o.fn && t-s.addr < max(o.size, 1) {
			pl.redirect(rd, "global", symOff(s, t), o.addr+(t-s.addr))
			return
		}
		pl.refuse(s.name, "%s uses the global %s, which OLD does not have: new globals are not supported yet (the running program has no storage for it)", fn, s.name)
	case goCacheSym:
		id := string(lg.render(s.addr, s.addr+s.size, 0))
		if o := pl.oldCaches[id]; o != nil {
			pl.redirect(rd, "cache", symOff(s, t), o.addr+(t-s.addr))
			return
		}
		pl.refuse(s.name, "%s uses %s, a type-assertion or interface-switch cache with no twin in OLD (a new type assertion on an interface OLD never asserts to): not supported yet", fn, s.name)
	case goType:
		start, id := lg.typeAt(t)
		name, _, _ := strings.Cut(id, "|")
		if a, ok := pl.oldTypes[id]; ok && id != "" {
			what := name
			if t != start {
				what = fmt.Sprintf("%s+%#x", name, t-start)
			}
			pl.redirect(rd, "type", what, a+(t-start))
			return
		}
		if id == "" {
			pl.refuse(fn, "%s refers to %#x among the type descriptors, which does not read as one", fn, t)
			return
		}
		pl.refuse("type "+name, "%s uses the type %s, whose descriptor OLD does not have (a new or changed type): the running program's runtime would not know it", fn, name)
	case goROSym:
		pl.classifyRO(fn, rd, s)
	case goString:
		pl.keep(rd, "string", lg.near(t))
	case goGCBits:
		pl.keep(rd, "rodata", lg.near(t)) // pointer-free
	case goFuncval:
		id := lg.denote(t, -1, 0)
		if p, _, ok := lg.ptr(t); ok {
			if ps := pl.load.symbolAt(p); ps != nil && ps.addr == p {
				if _, kept := pl.kept[ps.key()]; kept {
					pl.keep(rd, "funcval", "funcval of "+ps.name)
					return
				}
			}
		}
		if p, _, ok := lg.ptr(t); ok {
			// By the function the diff paired it with (closures are
			// renumbered).
			if ps := pl.load.symbolAt(p); ps != nil && ps.addr == p {
				if o := pl.twins[ps.key()]; o != nil {
					id = "fv:fn:" + o.key() + "+0"
				}
			}
		}
		if a, ok := pl.oldFuncvals[id]; ok {
			pl.redirect(rd, "funcval", strings.TrimPrefix(id, "fv:"), a)
			return
		}
		pl.refuse(fn, "%s uses a funcval (%s) with no twin in OLD", fn, id)
	case goROAnon:
		if pl.keepable(lg.anonEnd(t), t, 0) {
			pl.keep(rd, "rodata", lg.near(t))
			return
		}
		pl.refuse(fn, "%s refers to unnamed read-only data at %#x (%s) holding pointers to what OLD owns; it has no name to find OLD's copy by", fn, t, lg.near(t))
	case goRWAnon:
		// Unnamed data (a package's static composite literals, which
		// its init fills in) is found by the named object before it
		// and the distance, when OLD has the same object before an
		// unnamed gap at that distance.
		if a, ok := pl.oldNear(t); ok {
			pl.redirect(rd, "global", lg.near(t), a)
			return
		}
		pl.refuse(fn, "%s refers to unnamed writable data at %#x (%s) and OLD has no unnamed data at the same place after the same object", fn, t, lg.near(t))
	default:
		pl.refuse(fn, "%s refers to %#x, outside any section of %s", fn, t, pl.load.path)
	}
}

// classifyRO decides a reference to a named read-only object.
func (pl *goPlanner) classifyRO(fn string, rd GoRedirect, s *symbol) {
	lg, t := pl.lg, rd.Target
	kind := "rodata"
	switch {
	case strings.HasPrefix(s.name, "go:itab."):
		kind = "itab"
	case strings.Contains(s.name, "..dict."):
		kind = "dict"
	}
	if kind == "rodata" && pl.keepable(s.addr+s.size, s.addr, 0) {
		pl.keep(rd, kind, symOff(s, t))
		return
	}
	if kind == "itab" {
		o := pl.oldByName[s.key()]
		if o != nil && !o.fn && o.size == s.size {
			if why := pl.itabSlots(o, s); why != "" {
				pl.refuse(s.name, "%s uses %s, but OLD's copy of it %s", fn, s.name, why)
				return
			}
			pl.redirect(rd, kind, symOff(s, t), o.addr+(t-s.addr))
			return
		}
	}
	if !goNumbered.MatchString(s.name) {
		if o := pl.oldByName[s.key()]; o != nil && !o.fn && o.size == s.size &&
			string(lg.render(s.addr, s.addr+s.size, 0)) == string(pl.og.render(o.addr, o.addr+o.size, 0)) {
			pl.redirect(rd, kind, symOff(s, t), o.addr+(t-s.addr))
			return
		}
	}
	switch kind {
	case "itab":
		pl.refuse(s.name, "%s uses %s, an interface table OLD does not have (a type newly converted to an interface): the running program's runtime would not know it", fn, s.name)
	case "dict":
		pl.refuse(s.name, "%s uses %s, a generic dictionary with no identical twin in OLD (a new instantiation): not supported yet", fn, s.name)
	default:
		pl.refuse(s.name, "%s uses %s, read-only data holding pointers to types or code, with no identical twin in OLD", fn, s.name)
	}
}

// keepable says whether read-only data [lo, hi) of load may stay in NEW's
// image: every pointer in it leads to a string, pointer-free data, a
// function of the plan, or other keepable data.
func (pl *goPlanner) keepable(hi, lo uint64, depth int) bool {
	lg := pl.lg
	if depth > 3 {
		return false
	}
	for a := (lo + 7) &^ 7; a+8 <= hi; a += 8 {
		p, sym, ok := lg.ptr(a)
		if !ok {
			continue
		}
		if sym != "" {
			return false
		}
		kind, s := lg.where(p)
		switch kind {
		case goString, goGCBits:
		case goFunc:
			if s == nil {
				return false
			}
			if _, kept := pl.kept[s.key()]; !kept {
				return false
			}
		case goROSym:
			if strings.HasPrefix(s.name, "go:itab.") || !pl.keepable(s.addr+s.size, s.addr, depth+1) {
				return false
			}
		case goROAnon:
			if !pl.keepable(lg.anonEnd(p), p, depth+1) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// anonEnd is where anonymous read-only data starting at addr ends at the
// latest: after 16 bytes for a string header (a pointer to a string and
// its length), else at the next anonymous object code refers to, symbol,
// group or section end (at most 512 bytes). Past the object's real end
// the extent only makes a neighbour's change count too.
func (g *goImage) anonEnd(addr uint64) uint64 {
	// A jump table: consecutive addresses into one function.
	if p, _, ok := g.ptr(addr); ok {
		if f := g.b.symbolAt(p); f != nil && f.fn {
			end := addr + 8
			for ; ; end += 8 {
				q, _, ok := g.ptr(end)
				if !ok || q < f.addr || q >= f.addr+f.size {
					break
				}
			}
			return end
		}
	}
	if p, _, ok := g.ptr(addr); ok && g.strs.has(p) {
		if _, _, isPtr := g.ptr(addr + 8); !isPtr {
			if l, ok := g.u64(addr + 8); ok && l < 1<<20 && p+l <= g.strs.hi {
				return addr + 16
			}
		}
	}
	g.scanStrings()
	end := addr + 512
	if i := sort.Search(len(g.anonBounds), func(i int) bool { return g.anonBounds[i] > addr }); i < len(g.anonBounds) {
		end = min(end, g.anonBounds[i])
	}
	if sec := g.b.section(addr); sec != nil {
		end = min(end, sec.Addr+sec.Size)
	}
	if i := sort.Search(len(g.b.syms), func(i int) bool { return g.b.syms[i].addr > addr }); i < len(g.b.syms) {
		end = min(end, g.b.syms[i].addr)
	}
	for _, r := range append([]addrRange{g.types, g.strs, g.gcbits}, g.funcdesc...) {
		if r.lo > addr {
			end = min(end, r.lo)
		}
	}
	return end
}

// oldNear finds OLD's twin of unnamed writable data at t in load: the
// named object before t in its section, its OLD twin of the same size,
// and at the same distance after it an address of OLD that is unnamed
// data too, in a section of the same name.
func (pl *goPlanner) oldNear(t uint64) (uint64, bool) {
	lb, ob := pl.load, pl.old
	sec := lb.section(t)
	i := sort.Search(len(lb.syms), func(i int) bool { return lb.syms[i].addr > t }) - 1
	if sec == nil || i < 0 || lb.syms[i].addr < sec.Addr {
		return 0, false
	}
	s := lb.syms[i]
	o := pl.oldByName[s.key()]
	if o == nil || o.fn || o.size != s.size {
		return 0, false
	}
	a := o.addr + (t - s.addr)
	osec := ob.section(a)
	if osec == nil || osec.Name != sec.Name || ob.symbolAt(a) != nil {
		return 0, false
	}
	// The unnamed gap after the object must be the same in both: as
	// long, with the same initial contents (pointers denoted), else
	// the distance may lead to another object.
	nextL, nextO := sec.Addr+sec.Size, osec.Addr+osec.Size
	if j := sort.Search(len(lb.syms), func(j int) bool { return lb.syms[j].addr > s.addr }); j < len(lb.syms) {
		nextL = min(nextL, lb.syms[j].addr)
	}
	if j := sort.Search(len(ob.syms), func(j int) bool { return ob.syms[j].addr > o.addr }); j < len(ob.syms) {
		nextO = min(nextO, ob.syms[j].addr)
	}
	gapL, gapO := s.addr+s.size, o.addr+o.size
	if a >= nextO || nextL-gapL != nextO-gapO || nextL-gapL > 1<<16 {
		return 0, false
	}
	if string(pl.lg.render(gapL, nextL, 1)) != string(pl.og.render(gapO, nextO, 1)) {
		return 0, false
	}
	return a, true
}

// itabSlots compares OLD's itab o with load's n of the same name: the
// same interface, type and hash, and every method NEW's code may call
// through it present in OLD's (the linker fills the slots of methods it
// finds unreachable with runtime.unreachableMethod, which throws).
// "" when OLD's serves.
func (pl *goPlanner) itabSlots(o, n *symbol) string {
	og, lg := pl.og, pl.lg
	if string(og.render(o.addr, o.addr+24, 1)) != string(lg.render(n.addr, n.addr+24, 1)) {
		return "is for another interface or type"
	}
	for off := uint64(24); off+8 <= n.size; off += 8 {
		nv := string(lg.render(n.addr+off, n.addr+off+8, 1))
		if strings.Contains(nv, "fn:runtime.unreachableMethod+") {
			continue
		}
		if ov := string(og.render(o.addr+off, o.addr+off+8, 1)); ov != nv {
			return fmt.Sprintf("lacks method %d (OLD's linker found it unreachable): calling it through OLD's itab would throw", (off-24)/8)
		}
	}
	return ""
}
