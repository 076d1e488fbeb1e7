package elfpatch

import (
	"debug/elf"
	"fmt"
	"sort"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// code decodes every instruction of a NEW function that may run and plans
// each PC-relative field it holds (RIP-relative operands, VEX and EVEX
// ones included, rel32 and rel8 branches). It decodes with x86dec.Decode, as
// the diff does.
func (p *planner) code(f *psym) error {
	if f.size == 0 {
		return &PlanError{Func: f.label(), Addr: f.value, Reason: "function has no size in the symbol table: cannot decode it"}
	}
	b, err := p.bytesAt(f.value, f.size)
	if err != nil {
		return &PlanError{Func: f.label(), Addr: f.value, Reason: err.Error()}
	}
	for off := 0; off < len(b); {
		pc := f.value + uint64(off)
		in, err := x86dec.Decode(b[off:], pc)
		if err != nil {
			return &PlanError{Func: f.label(), Addr: pc, Reason: fmt.Sprintf("decode instruction: %v", err)}
		}
		next := pc + uint64(in.Len)
		switch {
		case in.RelSize == 0:
		case in.RelSize != 4:
			// A short branch cannot be redirected, so its target must
			// run from NEW too. gcc emits them for tail calls to a
			// neighbouring function (`jmp helper` in 2 bytes): NEW's
			// copy of that function joins the run set, which is safe
			// for any function since its own references are planned
			// in turn.
			if !f.contains(in.Target) && !p.inRun(in.Target) {
				g := p.funcAt(in.Target)
				if g == nil {
					return &PlanError{Func: f.label(), Addr: pc, Reason: fmt.Sprintf("short branch to new 0x%x leaves the function for code outside any function symbol", in.Target)}
				}
				p.addRun(g)
			}
		default:
			fix, err := p.codeRef(f, b, pc, in)
			if err != nil {
				return err
			}
			if fix != nil {
				fix.Off = pc + uint64(in.RelOff)
				fix.Kind = FixupPC32
				fix.PCNext = next
				if err := p.addFixup(*fix); err != nil {
					return err
				}
			}
		}
		off += in.Len
	}
	return nil
}

func isBranch(inst x86asm.Inst) bool {
	for _, a := range inst.Args {
		if _, ok := a.(x86asm.Rel); ok {
			return true
		}
	}
	return false
}

// funcAt returns NEW's function symbol covering addr, or nil.
func (p *planner) funcAt(addr uint64) *psym {
	for _, s := range p.newSyms.containing(addr) {
		if isFuncSym(s) {
			return s
		}
	}
	return nil
}

// inRun reports whether addr lies inside a function of the run set, or
// inside the cold part of one (which then joins it).
func (p *planner) inRun(addr uint64) bool {
	for _, s := range p.newSyms.containing(addr) {
		if !isFuncSym(s) {
			continue
		}
		if p.run[s] {
			return true
		}
		if p.isColdOfRun(s) {
			p.addRun(s)
			return true
		}
	}
	return false
}

// refTarget decides where a PC-relative reference from the run function
// from (at NEW's pc) to NEW's target must point. It returns nil when the
// target stays inside NEW's image, or a Fixup (Target and Symbol set) to
// OLD's copy.
func (p *planner) refTarget(from *psym, pc, target uint64, branch bool) (*Fixup, error) {
	if from.contains(target) {
		// A function taking its own address (lea fn, to store a
		// handler pointer) gets OLD's entry like every other address
		// taker: one identity per function. Branches stay inside.
		if o := matchOld(p.oldSyms, p.newSyms, from); !branch && target == from.value && o != nil {
			return &Fixup{Target: o.value, Symbol: from.label()}, nil
		}
		return nil, nil
	}
	fail := func(sym, reason string) error {
		return &PlanError{Func: from.label(), Addr: pc, Symbol: sym, Reason: reason}
	}
	sec := p.section(target)
	if sec == nil {
		// One past the end of the last object (a loop's end pointer).
		if s := p.writableEnd(target); s != nil {
			return p.dataFixup(fail, s, target)
		}
		return nil, fail(fmt.Sprintf("new 0x%x", target), "target lies outside every section of the new build")
	}
	switch sec.Name {
	case ".plt", ".plt.sec", ".plt.got", ".got", ".got.plt":
		// NEW's own PLT and GOT: the slots are filled at apply time from
		// the target's libraries (Imports), so the code keeps using them.
		return nil, nil
	}
	if sec.Flags&elf.SHF_EXECINSTR != 0 {
		s := p.funcAt(target)
		if s == nil {
			return nil, fail(fmt.Sprintf("new 0x%x in %s", target, sec.Name), "target is code outside any function symbol")
		}
		off := target - s.value
		o := matchOld(p.oldSyms, p.newSyms, s)
		switch {
		case p.run[s] && (branch || off != 0 || o == nil):
			// A call or jump to another function that runs in NEW goes
			// straight to it: no detour through OLD's trampoline, and it
			// works even where OLD's entry is too short for a jump.
			return nil, nil
		case p.isColdOfRun(s):
			p.addRun(s)
			return nil, nil
		case o == nil:
			// A function only NEW has (an added helper, a new compiler
			// clone): it runs from NEW's image and is planned in turn.
			p.addRun(s)
			return nil, nil
		case off != 0:
			// A reference into the middle of an unchanged function has no
			// safe counterpart in OLD; run NEW's copy of the whole function.
			p.addRun(s)
			return nil, nil
		}
		if reason := p.resizedUnchanged(s, o); reason != "" {
			return nil, fail(s.label(), reason)
		}
		// An unchanged function (or the address of a changed one, taken
		// with lea) resolves to OLD's entry: one function-pointer identity
		// for the whole process, and later patches of it reach this caller
		// through OLD's trampoline.
		return &Fixup{Target: o.value, Symbol: s.label()}, nil
	}
	if p.readOnly(target) {
		// Constants, string literals, jump tables, switch tables and
		// .data.rel.ro: NEW's copy holds exactly what NEW's code was
		// compiled against and nothing ever writes it, so there is no
		// state to share with OLD.
		return nil, nil
	}
	s := p.dataAt(target)
	if s == nil {
		return nil, fail(fmt.Sprintf("new 0x%x in %s", target, sec.Name), "writable data outside any symbol: cannot tell whether OLD has it")
	}
	return p.dataFixup(fail, s, target)
}

// dataFixup points a reference to NEW's writable object s (at target,
// inside it or one past its end) at OLD's copy, or leaves it in NEW for
// an object only NEW has.
func (p *planner) dataFixup(fail func(sym, reason string) error, s *psym, target uint64) (*Fixup, error) {
	to, shared, reason := p.oldObject(s, target)
	switch {
	case reason != "":
		return nil, fail(s.label(), reason)
	case !shared:
		return nil, nil
	}
	return &Fixup{Target: to, Symbol: s.label()}, nil
}

// oldObject decides where a reference (a PC-relative field or a pointer)
// to NEW's writable object s, at target inside it or one past its end,
// must lead: OLD's copy at to (shared), or NEW's own for an object only
// NEW has, initialised from NEW's data. A reason says why neither is safe.
func (p *planner) oldObject(s *psym, target uint64) (to uint64, shared bool, reason string) {
	o := matchOld(p.oldSyms, p.newSyms, s)
	if o == nil {
		if _, ok := p.copied[s.value]; ok {
			return 0, false, "the new build copies a library's data object into the program (a copy relocation) and the old one does not, so the running libraries use an instance the old program never made: keep that object's use as in the old build, or build the program with -fPIE so it does not copy it"
		}
		return 0, false, ""
	}
	if t := p.xfer[s.value]; t != nil {
		if t.InPlace {
			// NEW's layout is written over OLD's object, in its slot.
			return o.value + (target - s.value), true, ""
		}
		return 0, false, "" // NEW's object, filled from OLD's in the pause
	}
	if o.size != s.size {
		return 0, false, fmt.Sprintf("size differs between builds (old %d, new %d bytes): its type or layout changed; refusing to point new code at the old object", o.size, s.size)
	}
	return o.value + (target - s.value), true, ""
}

// moved reports whether NEW's object s is a transferred global that lives
// in NEW's image.
func (p *planner) moved(s *psym) bool {
	t := p.xfer[s.value]
	return t != nil && !t.InPlace
}

// resizedUnchanged explains why NEW's function s cannot be replaced by
// OLD's o: their sizes differ although s is not among the functions that
// run from NEW, so the diff and the plan disagree about it.
func (p *planner) resizedUnchanged(s, o *psym) string {
	if p.run[s] || o.size == s.size {
		return ""
	}
	return fmt.Sprintf("function differs in size between builds (old %d, new %d bytes) but is not among the changed functions", o.size, s.size)
}

// dataAt returns NEW's data object a reference to addr reaches: one
// covering it, else one ending exactly there (endOf); nil if none.
func (p *planner) dataAt(addr uint64) *psym {
	for _, c := range p.newSyms.containing(addr) {
		if !isFuncSym(c) {
			return c
		}
	}
	return p.endOf(addr)
}

// writableEnd returns the writable object ending at addr, for an address
// past every section (the end pointer of the last object in .bss).
func (p *planner) writableEnd(addr uint64) *psym {
	if s := p.endOf(addr); s != nil && !p.readOnly(s.value) {
		return s
	}
	return nil
}

// endOf returns the sized data object that ends exactly at addr, when no
// object starts there: the compiler's "one past the end" pointer (a
// loop bound, an end marker) belongs to the object before it.
func (p *planner) endOf(addr uint64) *psym {
	for _, c := range p.newSyms.containing(addr) {
		if c.size > 0 || !isFuncSym(c) && c.typ == elf.STT_OBJECT {
			return nil // something starts or lies here: not an end pointer
		}
	}
	i := sort.Search(len(p.newSyms.syms), func(i int) bool { return p.newSyms.syms[i].value >= addr })
	for j := i - 1; j >= 0 && j >= i-64; j-- {
		c := p.newSyms.syms[j]
		if c.size > 0 && c.value+c.size == addr && !isFuncSym(c) {
			return c
		}
	}
	return nil
}
