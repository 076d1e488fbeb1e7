package elfpatch

// End pointers that coincide with the next object (issue 12, sshd v6).
//
// A loop over a global array, `for (s = sessions; s < sessions + 64; s++)`,
// compares against the array's end. gcc materialises that end as the
// address it is, and when another object starts exactly there the
// instruction (`lea nusers(%rip),%r15`) names nothing but that address:
// the end of the array and the start of the next object are the same
// bytes of NEW. As long as both objects are reached at OLD's addresses in
// the same layout, either reading gives the same target. When one of them
// is a transferred global that lives in NEW's image (moved), they part:
// the end of the moved array is in the image, the next object is OLD's.
//
// The use decides. The reference is the end pointer when the instruction
// is a LEA whose register is, on every path inside the function until it
// is set again, only compared (an operand of CMP): nothing dereferences it.
// It is the other object when the instruction itself accesses memory at
// that address (a load or store of that object). Anything else is refused,
// naming both objects. Calls keep callee-saved registers and clobber the
// others (a call that may take the register as an argument is a use).

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// coincide returns, for an address of NEW's writable data, the object
// ending there (end) and the one starting there (start), when both exist
// and at least one of them is a transferred global moved into the image:
// then "end of end" and "start of start" lead to different places.
func (p *planner) coincide(addr uint64) (end, start *psym) {
	for _, c := range p.newSyms.containing(addr) {
		if !isFuncSym(c) && c.value == addr && c.size > 0 {
			start = c
			break
		}
	}
	if start == nil {
		return nil, nil
	}
	syms := p.newSyms.syms
	lo, hi := 0, len(syms)
	for lo < hi {
		m := (lo + hi) / 2
		if syms[m].value < addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for j := lo - 1; j >= 0 && j >= lo-64; j-- {
		c := syms[j]
		if c.size > 0 && c.value+c.size == addr && !isFuncSym(c) {
			end = c
			break
		}
	}
	if end == nil || !p.moved(end) && !p.moved(start) {
		return nil, nil
	}
	return end, start
}

// codeRef plans the PC-relative field of in, at pc in the run function f
// (whose bytes are code): refTarget, unless the address is both the end of
// one object and the start of another and one of them moved, where the
// use decides which it is.
func (p *planner) codeRef(f *psym, code []byte, pc uint64, in x86dec.Inst) (*Fixup, error) {
	branch := isBranch(in.Inst)
	if branch || f.contains(in.Target) {
		return p.refTarget(f, pc, in.Target, branch)
	}
	end, start := p.coincide(in.Target)
	if end == nil {
		return p.refTarget(f, pc, in.Target, branch)
	}
	isEnd, reason := p.endOrStart(f, code, pc, in, end, start)
	if reason != "" {
		return nil, &PlanError{Func: f.label(), Addr: pc, Symbol: end.label() + " / " + start.label(), Reason: reason}
	}
	if !isEnd {
		return p.refTarget(f, pc, in.Target, branch)
	}
	fail := func(sym, reason string) error {
		return &PlanError{Func: f.label(), Addr: pc, Symbol: sym, Reason: reason}
	}
	return p.dataFixup(fail, end, in.Target)
}

// ambiguous is the reason refusing a reference that may be either.
func ambiguous(end, start *psym, p *planner, why string) string {
	what := func(s *psym) string {
		if p.moved(s) {
			return "moved " + s.label()
		}
		return s.label()
	}
	return fmt.Sprintf("ambiguous: end of %s or start of %s (the same address in the new build; one of them moves into the patch, so they lead to different places): %s; build the new version with the two objects apart (another global or an alignment between them) and diff again", what(end), what(start), why)
}

// endOrStart decides a code reference at pc (instruction in, in function
// f whose bytes are code) to an address where end ends and start starts.
// isEnd is true for end's end pointer; a non-empty reason refuses.
func (p *planner) endOrStart(f *psym, code []byte, pc uint64, in x86dec.Inst, end, start *psym) (isEnd bool, reason string) {
	if in.Op != x86asm.LEA {
		for _, a := range in.Args {
			if m, ok := a.(x86asm.Mem); ok && m.Base == x86asm.RIP {
				return false, "" // an access to the object there
			}
		}
		return false, ambiguous(end, start, p, fmt.Sprintf("the instruction at new 0x%x (%v) neither loads nor stores there nor takes the address with lea", pc, in.Op))
	}
	dst, ok := in.Args[0].(x86asm.Reg)
	if !ok || dst < x86asm.RAX || dst > x86asm.R15 {
		return false, ambiguous(end, start, p, fmt.Sprintf("lea at new 0x%x does not set a 64-bit register", pc))
	}
	if why := onlyCompared(f, code, pc+uint64(in.Len), dst); why != "" {
		return false, ambiguous(end, start, p, fmt.Sprintf("the address lea at new 0x%x puts in %%%s %s", pc, gprNames[dst-x86asm.RAX], why))
	}
	return true, ""
}

// maxEndSteps bounds the walk over one function's paths.
const maxEndSteps = 1 << 16

// onlyCompared follows every path of f from from with the register r
// (a 64-bit general register) holding the address and returns why it is
// not only compared, or "" when each use is an operand of CMP.
func onlyCompared(f *psym, code []byte, from uint64, r x86asm.Reg) string {
	l := int(r - x86asm.RAX)
	decoded := map[uint64]x86dec.Inst{}
	decode := func(pc uint64) (x86dec.Inst, bool) {
		if in, ok := decoded[pc]; ok {
			return in, true
		}
		if pc < f.value || pc >= f.value+uint64(len(code)) {
			return x86dec.Inst{}, false
		}
		in, err := x86dec.Decode(code[pc-f.value:], pc)
		if err != nil {
			return x86dec.Inst{}, false
		}
		decoded[pc] = in
		return in, true
	}
	seen := map[uint64]bool{}
	work := []uint64{from}
	for steps := 0; len(work) > 0; steps++ {
		if steps > maxEndSteps {
			return "is used on more paths than graft follows"
		}
		pc := work[len(work)-1]
		work = work[:len(work)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		in, ok := decode(pc)
		if !ok {
			return fmt.Sprintf("reaches new 0x%x, outside the function or not decodable", pc)
		}
		next := pc + uint64(in.Len)
		intra := in.RelSize != 0 && f.contains(in.Target) && !isRIPMem(in.Args[0])
		op := in.Op
		switch {
		case op == x86asm.CMP:
			for _, a := range in.Args {
				if m, ok := a.(x86asm.Mem); ok && (regIs(m.Base, l) || regIs(m.Index, l)) {
					return fmt.Sprintf("is dereferenced at new 0x%x", pc)
				}
			}
			work = append(work, next)
			continue
		case op == x86asm.JMP && intra:
			work = append(work, in.Target)
			continue
		case isCondJump(op) && op != x86asm.JCXZ && op != x86asm.JECXZ && op != x86asm.JRCXZ && op != x86asm.LOOP && op != x86asm.LOOPE && op != x86asm.LOOPNE:
			if !intra {
				return fmt.Sprintf("is live at the branch out of the function at new 0x%x", pc)
			}
			work = append(work, next, in.Target)
			continue
		}
		kind := rFall
		switch {
		case op == x86asm.RET:
			kind = rExit
		case op == x86asm.UD1 || op == x86asm.UD2 || op == x86asm.HLT:
			kind = rStop
		case op == x86asm.JMP:
			kind = rIndir
		}
		e := effectOf(&rinst{in: in.Inst, kind: kind})
		switch {
		case e.reads&bit(l) != 0 || e.may&bit(l) != 0:
			return fmt.Sprintf("is used at new 0x%x (%v), not only compared", pc, op)
		case e.defs&bit(l) != 0 || kind == rExit || kind == rStop:
			continue // set again (or the path ends): this path is done
		case kind == rIndir:
			return fmt.Sprintf("is live at the indirect jump at new 0x%x", pc)
		}
		work = append(work, next)
	}
	return ""
}

// regIs reports whether reg is general register l (any width).
func regIs(reg x86asm.Reg, l int) bool {
	k, _, ok := regLoc(reg)
	return ok && k == l && reg != 0
}
