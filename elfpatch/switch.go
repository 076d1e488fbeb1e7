package elfpatch

import (
	"fmt"
	"sort"
	"strings"

	"github.com/go-delve/delve/pkg/dwarf/frame"
	"golang.org/x/arch/x86/x86asm"
)

// Frame switching (on-stack replacement, issue 12).
//
// A frame that waits in a call inside a function the patch replaces, and
// that can neither finish in its own code (resume.go) nor leave, because it
// never returns (main's accept loop, a worker's read loop), may instead go
// on in the other version's code: when its call returns it continues at the
// other version's matching return address, in a frame rebuilt in that
// version's layout. A patch that moves a global has no other way to carry
// such frames: the old code would go on with the old object.
//
// The plan for one return address R (in X, the code the frame is in) and
// its partner R' (in Y, the code it continues in) is a list of moves that
// build, from X's frame as it is when the call returns, everything Y's
// code may read from R' on:
//
//   - R' is the return address of Y's call that the alignment pairs with
//     the call R follows; both must call the same thing;
//   - the canonical frame address (CFA) stays: the caller's frame is not
//     touched. Both sides' CFI must give the CFA as rsp+k at R and R';
//   - the caller's callee-saved registers go from where X's CFI keeps them
//     at R (a save slot or the register) to where Y's keeps them at R';
//   - what Y reads from R' before setting it (registers and frame bytes,
//     by a liveness pass over Y's code with the frame addressed by CFA
//     offset) must each be explained: by a source variable that DWARF
//     places at R' in Y and at R in X (the same name, the same inline
//     path), or by rematerialising the instruction(s) that set it in Y
//     when they all compute the same thing from nothing live: an address
//     in the frame (lea off(%rsp)), an address the image's code computes
//     (lea sym(%rip), resolved by reading the loaded instruction, so it is
//     whatever the plan made of it), a constant;
//   - the call's results (rax, rdx) and the vector registers pass through
//     untouched (the switch code uses general registers only);
//   - anything else is refused with the location that could not be
//     explained.
//
// At apply, every 8-byte value moved from X's frame that points into a
// global the patch moves, or into one of X's frame objects that the moves
// copy, is relocated (trampoline.FrameSwitch).

// SwitchLoc is a location or value in a frame switch plan.
type SwitchLoc struct {
	// Kind: "reg" (Reg, DWARF number), "slot" (frame memory at CFA+Off),
	// "const" (Value), "frame" (the address CFA+Off, in the destination
	// frame), "lea" (the address the destination code's lea at link-time
	// address Value computes once loaded).
	Kind  string `json:"k"`
	Reg   int    `json:"r,omitempty"`
	Off   int64  `json:"o,omitempty"`
	Value uint64 `json:"v,omitempty"`
}

// SwitchMove copies Size bytes from Src (the source frame when its call
// has returned) to Dst (the destination frame or registers).
type SwitchMove struct {
	Dst  SwitchLoc `json:"d"`
	Src  SwitchLoc `json:"s"`
	Size int       `json:"n"`
	What string    `json:"w,omitempty"`
}

// SwitchObj is a frame object copied whole: pointers into it (from the
// moved values) follow it to its new place.
type SwitchObj struct {
	OldOff int64 `json:"o"`
	NewOff int64 `json:"n"`
	Size   int64 `json:"s"`
}

// SwitchPlan is how a frame waiting at From (link-time, the side the frame
// is in) continues at To (link-time, the other side).
type SwitchPlan struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// FromSize and ToSize are CFA-rsp at From and To.
	FromSize int64        `json:"from_size"`
	ToSize   int64        `json:"to_size"`
	Moves    []SwitchMove `json:"moves"`
	Objs     []SwitchObj  `json:"objs,omitempty"`
	// Why, when set, says why the frame cannot be switched (Moves empty).
	Why string `json:"why,omitempty"`
}

// SwitchPlans are sorted by From.
type SwitchPlans []SwitchPlan

// Lookup returns the plan for a frame waiting at link-time address from.
func (ps SwitchPlans) Lookup(from uint64) *SwitchPlan {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].From >= from })
	if i < len(ps) && ps[i].From == from {
		return &ps[i]
	}
	return nil
}

// frameRules are the CFI facts at one address: CFA = rsp+CFA, and where
// each callee-saved register the function saved is kept (CFA offset).
type frameRules struct {
	CFA   int64
	Saved map[int]int64
}

var calleeSavedRegs = []int{3, 6, 12, 13, 14, 15} // DWARF: rbx rbp r12-r15

func (b *Binary) frameRulesAt(pc uint64) (fr frameRules, err error) {
	fc, err := b.unwindRules(pc) // framevars.go: .eh_frame, parsed once per binary
	if err != nil {
		return fr, err
	}
	if fc.CFA.Rule != frame.RuleCFA || fc.CFA.Reg != 7 {
		return fr, fmt.Errorf("the frame at %#x is not addressed from rsp (a frame pointer or a realigned stack)", pc)
	}
	fr.CFA = fc.CFA.Offset
	fr.Saved = map[int]int64{}
	for _, r := range calleeSavedRegs {
		rule, ok := fc.Regs[uint64(r)]
		if !ok {
			continue
		}
		switch rule.Rule {
		case frame.RuleOffset:
			fr.Saved[r] = rule.Offset
		case frame.RuleUndefined, frame.RuleSameVal:
		default:
			return fr, fmt.Errorf("register %s at %#x is kept by a CFI rule graft does not switch", regName(r), pc)
		}
	}
	return fr, nil
}

func regName(r int) string { return "%" + dwarfRegName(r) }

// gpr (resume_flow's numbering: rax rcx rdx rbx rsp rbp rsi rdi r8..)
// to DWARF numbering and back.
var gprToDwarf = [16]int{0, 2, 1, 3, 7, 6, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15}

func dwarfToGPR(r int) int {
	for g, d := range gprToDwarf {
		if d == r {
			return g
		}
	}
	return -1
}

// swSide is one function's code prepared for the switch analysis.
type swSide struct {
	b    *Binary
	f    *rfunc
	succ [][]int
	pred [][]int
	cfad []int64 // CFA-rsp before each instruction (-1: unknown)
	lo   int64   // lowest CFA offset any access reaches
	eff  []swEffect
	live []swSet // live before each instruction
}

// swSet is a set of registers (bits 0-15, resume_flow numbering) and
// frame bytes (CFA offsets lo..-1).
type swSet struct {
	regs  uint16
	stack []uint64
}

type swEffect struct {
	readRegs, defRegs uint16
	// stack byte ranges read and fully written (CFA offsets).
	reads, defs [][2]int64
	bad         string // a stack access the analysis cannot place
}

func newSwSide(b *Binary, f *rfunc) (*swSide, error) {
	s := &swSide{b: b, f: f, succ: f.cfg()}
	s.pred = make([][]int, len(f.ins))
	for i, ss := range s.succ {
		for _, k := range ss {
			s.pred[k] = append(s.pred[k], i)
		}
	}
	s.cfad = make([]int64, len(f.ins))
	for i := range f.ins {
		fr, err := b.frameRulesAt(f.ins[i].addr)
		if err != nil {
			s.cfad[i] = -1
			continue
		}
		s.cfad[i] = fr.CFA
	}
	s.eff = make([]swEffect, len(f.ins))
	for i := range f.ins {
		s.eff[i] = s.effect(i)
		for _, r := range append(s.eff[i].reads, s.eff[i].defs...) {
			s.lo = min(s.lo, r[0])
		}
	}
	s.liveness()
	return s, nil
}

func (s *swSide) memOff(i int, m x86asm.Mem) (off int64, ok bool) {
	if s.cfad[i] < 0 {
		return 0, false
	}
	return m.Disp - s.cfad[i], true
}

// effect is instruction i's registers (from effectOf) and frame bytes.
func (s *swSide) effect(i int) swEffect {
	ri := &s.f.ins[i]
	e := effectOf(ri)
	var out swEffect
	out.readRegs = uint16(e.reads & 0xffff)
	out.defRegs = uint16(e.defs & 0xffff)
	if ri.kind == rBadDec {
		out.bad = "bytes that do not decode"
		return out
	}
	in := &ri.in
	if isCondJump(in.Op) {
		switch in.Op {
		case x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		default:
			out.readRegs &^= uint16(bit(gRCX)) // effectOf's catch-all for the rcx-testing jumps
		}
	}
	if plainVector[in.Op] {
		// Moves and arithmetic on vector registers: they use the
		// registers they name, nothing implicit (effectOf's default
		// case assumes string instructions' registers).
		out.readRegs, out.defRegs = 0, 0
		for k, a := range argsOf(in) {
			switch a := a.(type) {
			case x86asm.Reg:
				if l, full, ok := regLoc(a); ok && l < 16 {
					if k == 0 && full {
						out.defRegs |= 1 << uint(l)
					} else {
						out.readRegs |= 1 << uint(l)
					}
				}
			case x86asm.Mem:
				for _, r := range []x86asm.Reg{a.Base, a.Index} {
					if l, _, ok := regLoc(r); ok && l < 16 {
						out.readRegs |= 1 << uint(l)
					}
				}
			}
		}
	}
	switch in.Op {
	case x86asm.CALL:
		// A call reads its arguments through the moves that set them;
		// what it reads through pointers into the frame is covered by
		// the lea that made the pointer.
		out.readRegs = uint16(bit(gRSP))
		return out
	case x86asm.RET:
		out.readRegs = uint16(calleeSave | bit(gRSP))
		return out
	case x86asm.PUSH:
		if s.cfad[i] >= 0 {
			o := -s.cfad[i] - 8
			out.defs = append(out.defs, [2]int64{o, o + 8})
		}
		return out
	case x86asm.POP:
		if s.cfad[i] >= 0 {
			o := -s.cfad[i]
			out.reads = append(out.reads, [2]int64{o, o + 8})
		}
		return out
	}
	args := argsOf(in)
	for k, a := range args {
		m, ok := a.(x86asm.Mem)
		if !ok || (m.Base != x86asm.RSP && m.Index != x86asm.RSP) {
			if ok && (m.Base == x86asm.RBP || m.Index == x86asm.RBP) && s.cfad[i] < 0 {
				out.bad = "a frame addressed from rbp"
			}
			continue
		}
		off, ok := s.memOff(i, m)
		if !ok {
			out.bad = "an rsp-relative access where the frame size is unknown"
			continue
		}
		if in.Op == x86asm.LEA {
			// The address of a frame object escapes: the object is
			// read (by whoever gets the pointer) from here on.
			out.reads = append(out.reads, [2]int64{off, off + 1})
			continue
		}
		size := int64(in.MemBytes)
		if size <= 0 {
			size = 8
		}
		if m.Index != 0 {
			// An indexed access (a buffer's element): it touches the
			// object at off, somewhere.
			out.reads = append(out.reads, [2]int64{off, off + 1})
			continue
		}
		r := [2]int64{off, off + size}
		if k == 0 && pureStore(in.Op) {
			out.defs = append(out.defs, r)
		} else {
			out.reads = append(out.reads, r)
		}
	}
	return out
}

var plainVector = map[x86asm.Op]bool{
	x86asm.MOVAPS: true, x86asm.MOVUPS: true, x86asm.MOVDQA: true, x86asm.MOVDQU: true, x86asm.MOVQ: true,
	x86asm.MOVD: true, x86asm.MOVSS: true, x86asm.MOVSD_XMM: true, x86asm.MOVAPD: true, x86asm.MOVUPD: true,
	x86asm.MOVHPS: true, x86asm.MOVLPS: true, x86asm.PUNPCKLQDQ: true, x86asm.PXOR: true, x86asm.XORPS: true,
	x86asm.PADDQ: true, x86asm.PADDD: true, x86asm.PSHUFD: true, x86asm.MOVHLPS: true, x86asm.MOVLHPS: true,
	x86asm.CVTSI2SD: true, x86asm.CVTTSD2SI: true, x86asm.ADDSD: true, x86asm.MULSD: true, x86asm.DIVSD: true, x86asm.SUBSD: true,
}

func pureStore(op x86asm.Op) bool {
	switch op {
	case x86asm.MOV, x86asm.MOVAPS, x86asm.MOVUPS, x86asm.MOVDQA, x86asm.MOVDQU, x86asm.MOVQ,
		x86asm.MOVD, x86asm.MOVSS, x86asm.MOVSD_XMM, x86asm.MOVAPD, x86asm.MOVUPD, x86asm.MOVNTI, x86asm.MOVHPS, x86asm.MOVLPS,
		x86asm.SETA, x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETG, x86asm.SETGE,
		x86asm.SETL, x86asm.SETLE, x86asm.SETNE, x86asm.SETNO, x86asm.SETNP, x86asm.SETNS, x86asm.SETO, x86asm.SETP, x86asm.SETS:
		return true
	}
	return false
}

func (s *swSide) words() int { return int((-s.lo + 63) / 64) }

func (s *swSide) setRange(st []uint64, r [2]int64, v bool) {
	for o := r[0]; o < r[1]; o++ {
		if o < s.lo || o >= 0 {
			continue
		}
		k := o - s.lo
		if v {
			st[k/64] |= 1 << uint(k%64)
		} else {
			st[k/64] &^= 1 << uint(k%64)
		}
	}
}

func (s *swSide) liveness() {
	n := len(s.f.ins)
	s.live = make([]swSet, n)
	for i := range s.live {
		s.live[i].stack = make([]uint64, s.words())
	}
	out := swSet{stack: make([]uint64, s.words())}
	for changed := true; changed; {
		changed = false
		for i := n - 1; i >= 0; i-- {
			out.regs = 0
			clear(out.stack)
			for _, k := range s.succ[i] {
				out.regs |= s.live[k].regs
				for w := range out.stack {
					out.stack[w] |= s.live[k].stack[w]
				}
			}
			e := &s.eff[i]
			in := out.regs&^e.defRegs | e.readRegs
			for _, d := range e.defs {
				s.setRange(out.stack, d, false)
			}
			for _, r := range e.reads {
				s.setRange(out.stack, r, true)
			}
			cur := &s.live[i]
			if cur.regs != in {
				cur.regs = in
				changed = true
			}
			for w := range out.stack {
				if cur.stack[w] != out.stack[w] {
					cur.stack[w] = out.stack[w]
					changed = true
				}
			}
		}
	}
}

// liveBytes lists the live frame byte offsets at instruction i.
func (s *swSide) liveBytes(i int) []int64 {
	var out []int64
	for k := int64(0); k < -s.lo; k++ {
		if s.live[i].stack[k/64]&(1<<uint(k%64)) != 0 {
			out = append(out, k+s.lo)
		}
	}
	return out
}

// remat is a value an instruction computes from nothing live.
type remat struct {
	loc SwitchLoc
	ok  bool
	why string
}

// rematOf says what instruction p computes into its destination, when
// that does not depend on the frame's state.
func (s *swSide) rematOf(p int, depth int) remat {
	ri := &s.f.ins[p]
	in := &ri.in
	args := argsOf(in)
	if len(args) < 2 {
		return remat{why: "set by " + in.Op.String()}
	}
	switch in.Op {
	case x86asm.LEA:
		m, ok := args[1].(x86asm.Mem)
		if !ok || m.Index != 0 {
			break
		}
		switch m.Base {
		case x86asm.RIP:
			return remat{loc: SwitchLoc{Kind: "lea", Value: ri.addr}, ok: true}
		case x86asm.RSP:
			if off, ok := s.memOff(p, m); ok {
				return remat{loc: SwitchLoc{Kind: "frame", Off: off}, ok: true}
			}
		}
	case x86asm.MOV:
		switch a := args[1].(type) {
		case x86asm.Imm:
			v := uint64(a)
			if r, ok := args[0].(x86asm.Reg); ok && r >= x86asm.EAX && r <= x86asm.R15L {
				v = uint64(uint32(v))
			}
			return remat{loc: SwitchLoc{Kind: "const", Value: v}, ok: true}
		case x86asm.Reg:
			if depth > 3 {
				break
			}
			l, full, ok := regLoc(a)
			if !ok || !full || l >= 16 {
				break
			}
			return s.rematLoc(p, l, 0, false, depth+1)
		}
	case x86asm.XOR:
		if args[0] == args[1] {
			return remat{loc: SwitchLoc{Kind: "const", Value: 0}, ok: true}
		}
	}
	return remat{why: fmt.Sprintf("set by %s at %s, which depends on the frame's state", in.Op, resumeSymOff(ri.sym, ri.addr))}
}

// rematLoc finds the definitions reaching instruction i of a register
// (gpr numbering) or of the 8-byte slot at CFA+off (slot), and returns
// their common rematerialisable value. Reaching the function's entry
// yields Kind "entry".
func (s *swSide) rematLoc(i int, reg int, off int64, slot bool, depth int) remat {
	seen := map[int]bool{}
	work := append([]int(nil), s.pred[i]...)
	var got *remat
	entry := i == 0
	for len(work) > 0 {
		p := work[len(work)-1]
		work = work[:len(work)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		e := &s.eff[p]
		def, partial := false, false
		if slot {
			for _, d := range e.defs {
				if d[0] == off && d[1] == off+8 {
					def = true
				} else if d[0] < off+8 && d[1] > off {
					partial = true
				}
			}
			if s.f.ins[p].in.Op == x86asm.CALL && s.escapes(off) {
				partial = true
			}
		} else {
			if e.defRegs&(1<<uint(reg)) != 0 {
				def = true
			}
			if eff := effectOf(&s.f.ins[p]); eff.may&bit(reg) != 0 {
				partial = true
			}
		}
		if partial {
			return remat{why: fmt.Sprintf("partly set at %s", resumeSymOff(s.f.ins[p].sym, s.f.ins[p].addr))}
		}
		if def {
			var r remat
			if slot {
				r = s.storedValue(p, depth)
			} else {
				r = s.rematOf(p, depth)
			}
			if !r.ok {
				return r
			}
			if got != nil && got.loc != r.loc {
				return remat{why: "set to different values on different paths"}
			}
			got = &r
			continue
		}
		if p == 0 {
			entry = true // the function's entry (a pred-less instruction elsewhere is padding nobody reaches)
		}
		work = append(work, s.pred[p]...)
	}
	if entry {
		if got != nil {
			return remat{why: "set on some paths only"}
		}
		return remat{loc: SwitchLoc{Kind: "entry"}, ok: true}
	}
	if got == nil {
		return remat{why: "never set"}
	}
	return *got
}

// storedValue is what store p writes into its slot.
func (s *swSide) storedValue(p int, depth int) remat {
	in := &s.f.ins[p].in
	args := argsOf(in)
	if in.Op != x86asm.MOV || len(args) < 2 {
		return remat{why: fmt.Sprintf("set by %s at %s", in.Op, resumeSymOff(s.f.ins[p].sym, s.f.ins[p].addr))}
	}
	switch a := args[1].(type) {
	case x86asm.Imm:
		return remat{loc: SwitchLoc{Kind: "const", Value: uint64(int64(a))}, ok: true}
	case x86asm.Reg:
		l, full, ok := regLoc(a)
		if ok && full && l < 16 && depth <= 3 {
			return s.rematLoc(p, l, 0, false, depth+1)
		}
	}
	return remat{why: fmt.Sprintf("stored at %s from a value that depends on the frame's state", resumeSymOff(s.f.ins[p].sym, s.f.ins[p].addr))}
}

// escapes says whether the function takes the address of the slot at off.
func (s *swSide) escapes(off int64) bool {
	for i := range s.f.ins {
		in := &s.f.ins[i].in
		if s.f.ins[i].kind == rBadDec || in.Op != x86asm.LEA {
			continue
		}
		if m, ok := in.Args[1].(x86asm.Mem); ok && m.Base == x86asm.RSP {
			if o, ok := s.memOff(i, m); ok && o <= off && off < o+8 {
				return true
			}
		}
	}
	return false
}

// switchPlan works out how a frame of x waiting at return address
// instruction r continues in y. m aligns x to y.
func switchPlan(xs, ys *swSide, m []int, r int) SwitchPlan {
	x, y := xs.f, ys.f
	plan := SwitchPlan{From: x.ins[r].addr}
	fail := func(format string, a ...any) SwitchPlan {
		plan.Why = fmt.Sprintf(format, a...)
		plan.Moves = nil
		plan.Objs = nil
		return plan
	}
	c := r - 1
	if c < 0 || x.ins[c].in.Op != x86asm.CALL || x.ins[c].next != r {
		return fail("the frame does not wait in a call")
	}
	// The partner call: aligned, else the same callee at the same
	// ordinal among calls to it.
	j := -1
	if k := m[c]; k >= 0 && y.ins[k].in.Op == x86asm.CALL && y.ins[k].next >= 0 {
		j = k
	} else {
		ord := func(f *rfunc, at int) (int, int) {
			n, o := 0, -1
			for i := range f.ins {
				if f.ins[i].in.Op == x86asm.CALL && f.ins[i].norm == f.ins[at].norm {
					if i == at {
						o = n
					}
					n++
				}
			}
			return n, o
		}
		nx, ox := ord(x, c)
		for k := range y.ins {
			if y.ins[k].in.Op == x86asm.CALL && y.ins[k].norm == x.ins[c].norm {
				if ny, oy := ord(y, k); ny == nx && oy == ox {
					j = k
				}
			}
		}
	}
	if j < 0 || y.ins[j].next < 0 || y.ins[j].norm != x.ins[c].norm {
		return fail("the other version has no call matching the one the frame waits in (%s)", resumeSymOff(x.ins[c].sym, x.ins[c].addr))
	}
	rj := y.ins[j].next
	plan.To = y.ins[rj].addr
	fx, err := xs.b.frameRulesAt(plan.From)
	if err != nil {
		return fail("%v", err)
	}
	fy, err := ys.b.frameRulesAt(plan.To)
	if err != nil {
		return fail("%v", err)
	}
	plan.FromSize, plan.ToSize = fx.CFA, fy.CFA
	for i := range y.ins {
		if ys.eff[i].bad != "" {
			return fail("the new code has %s at %s", ys.eff[i].bad, resumeSymOff(y.ins[i].sym, y.ins[i].addr))
		}
	}
	vx, err := xs.b.FrameVarsAt(x.u.sym.addr, plan.From)
	if err != nil {
		return fail("variables at %#x: %v", plan.From, err)
	}
	vy, err := ys.b.FrameVarsAt(y.u.sym.addr, plan.To)
	if err != nil {
		return fail("variables at %#x: %v", plan.To, err)
	}
	byPath := map[string]FrameVar{}
	for _, v := range vx {
		byPath[v.Path] = v
	}
	srcOf := func(v FrameVar) (SwitchLoc, bool) {
		switch v.Kind {
		case VarReg:
			return SwitchLoc{Kind: "reg", Reg: v.Reg}, v.Reg >= 0 && v.Reg < 16 && v.Reg != 7
		case VarFrame:
			return SwitchLoc{Kind: "slot", Off: v.Off}, true
		case VarConst:
			return SwitchLoc{Kind: "const", Value: v.Value}, !v.LinkAddr
		}
		return SwitchLoc{}, false
	}
	// 1. The caller's callee-saved registers.
	written := map[int]bool{} // destination registers (DWARF) set
	covered := map[int64]bool{}
	for _, reg := range calleeSavedRegs {
		src := SwitchLoc{Kind: "reg", Reg: reg}
		if o, ok := fx.Saved[reg]; ok {
			src = SwitchLoc{Kind: "slot", Off: o}
		}
		dst := SwitchLoc{Kind: "reg", Reg: reg}
		if o, ok := fy.Saved[reg]; ok {
			dst = SwitchLoc{Kind: "slot", Off: o}
			for b := o; b < o+8; b++ {
				covered[b] = true
			}
		} else {
			written[reg] = true
		}
		if src != dst {
			plan.Moves = append(plan.Moves, SwitchMove{Dst: dst, Src: src, Size: 8, What: "caller's " + regName(reg)})
		}
	}
	for b := int64(-8); b < 0; b++ {
		covered[b] = true // the return address, the caller's
	}
	// 2. Live registers.
	live := ys.live[rj]
	for g := 0; g < 16; g++ {
		if live.regs&(1<<uint(g)) == 0 || g == gRSP || g == gRAX || g == gRDX {
			continue
		}
		reg := gprToDwarf[g]
		if _, saved := fy.Saved[reg]; !saved && bit(g)&calleeSave != 0 {
			continue // the caller's value, moved above
		}
		if bit(g)&calleeSave == 0 {
			return fail("the new code reads %s after the call returns without setting it", regName(reg))
		}
		var mv *SwitchMove
		for _, v := range vy {
			if v.Kind == VarReg && v.Reg == reg {
				ov, ok := byPath[v.Path]
				if !ok {
					return fail("%s holds %q in the new code at %#x, which the old code has no variable for at %#x", regName(reg), v.Path, plan.To, plan.From)
				}
				src, ok := srcOf(ov)
				if !ok {
					return fail("%s holds %q in the new code, and the old code's debug information has no location for it at %#x (%s)", regName(reg), v.Path, plan.From, ov.Why)
				}
				mv = &SwitchMove{Dst: SwitchLoc{Kind: "reg", Reg: reg}, Src: src, Size: 8, What: v.Path}
				break
			}
		}
		if mv == nil {
			rm := ys.rematLoc(rj, g, 0, false, 0)
			switch {
			case !rm.ok:
				return fail("the new code reads %s after the call returns; no variable is there and its value cannot be recomputed (%s)", regName(reg), rm.why)
			case rm.loc.Kind == "entry":
				// Still the caller's value on every path here.
				src := SwitchLoc{Kind: "reg", Reg: reg}
				if o, ok := fx.Saved[reg]; ok {
					src = SwitchLoc{Kind: "slot", Off: o}
				}
				rm.loc = src
			}
			mv = &SwitchMove{Dst: SwitchLoc{Kind: "reg", Reg: reg}, Src: rm.loc, Size: 8, What: "recomputed " + rm.loc.Kind}
		}
		written[reg] = true
		plan.Moves = append(plan.Moves, *mv)
	}
	// 3. Live frame bytes: variables first, then unnamed 8-byte slots.
	bytes := ys.liveBytes(rj)
	var need []int64
	for _, b := range bytes {
		if !covered[b] {
			need = append(need, b)
		}
	}
	usedVar := map[string]bool{}
	for _, b := range need {
		if covered[b] {
			continue
		}
		done := false
		for _, v := range vy {
			if v.Kind != VarFrame || b < v.Off || b >= v.Off+v.Size || usedVar[v.Path] {
				continue
			}
			ov, ok := byPath[v.Path]
			if !ok {
				return fail("the new code reads %q (at CFA%+d) after the call returns, which the old code has no variable for at %#x", v.Path, b, plan.From)
			}
			src, ok := srcOf(ov)
			if !ok {
				return fail("the new code reads %q after the call returns, and the old code's debug information has no location for it at %#x (%s)", v.Path, plan.From, ov.Why)
			}
			if src.Kind != "slot" && v.Size != 8 {
				return fail("%q is %d bytes in the new frame but in a register or constant in the old one", v.Path, v.Size)
			}
			plan.Moves = append(plan.Moves, SwitchMove{Dst: SwitchLoc{Kind: "slot", Off: v.Off}, Src: src, Size: int(v.Size), What: v.Path})
			if src.Kind == "slot" {
				plan.Objs = append(plan.Objs, SwitchObj{OldOff: src.Off, NewOff: v.Off, Size: v.Size})
			}
			usedVar[v.Path] = true
			for k := v.Off; k < v.Off+v.Size; k++ {
				covered[k] = true
			}
			done = true
			break
		}
		if done {
			continue
		}
		slot := b &^ 7
		if b < 0 && slot > b {
			slot -= 8
		}
		rm := ys.rematLoc(rj, 0, slot, true, 0)
		if !rm.ok || rm.loc.Kind == "entry" {
			why := rm.why
			if rm.ok {
				why = "never set in the function"
			}
			return fail("the new code reads the frame at CFA%+d after the call returns; no variable is there and its value cannot be recomputed (%s)", b, why)
		}
		plan.Moves = append(plan.Moves, SwitchMove{Dst: SwitchLoc{Kind: "slot", Off: slot}, Src: rm.loc, Size: 8, What: "recomputed " + rm.loc.Kind})
		for k := slot; k < slot+8; k++ {
			covered[k] = true
		}
	}
	// 4. Frame objects whose address the new code holds (a recomputed
	// frame address, given to a call later: pthread_create(&attr)) are
	// read through it: copied whole when a variable names them. An
	// unnamed one (a buffer a call fills) is not: its contents are
	// taken to be written before they are read.
	for k := 0; k < len(plan.Moves); k++ {
		mv := plan.Moves[k]
		if mv.Src.Kind != "frame" {
			continue
		}
		for _, v := range vy {
			if v.Kind != VarFrame || mv.Src.Off < v.Off || mv.Src.Off >= v.Off+max(v.Size, 1) || usedVar[v.Path] {
				continue
			}
			ov, ok := byPath[v.Path]
			if !ok || ov.Kind != VarFrame || ov.Size != v.Size {
				return fail("the new code holds the address of %q (CFA%+d) after the call returns, and the old code has no such object in its frame at %#x", v.Path, v.Off, plan.From)
			}
			usedVar[v.Path] = true
			plan.Moves = append(plan.Moves, SwitchMove{Dst: SwitchLoc{Kind: "slot", Off: v.Off}, Src: SwitchLoc{Kind: "slot", Off: ov.Off}, Size: int(v.Size), What: v.Path + " (its address is held)"})
			plan.Objs = append(plan.Objs, SwitchObj{OldOff: ov.Off, NewOff: v.Off, Size: v.Size})
		}
	}
	for _, mv := range plan.Moves {
		if mv.Src.Kind == "slot" && (mv.Src.Off < -plan.FromSize || mv.Src.Off+int64(mv.Size) > 0) {
			return fail("%s is outside the old frame (CFA%+d)", mv.What, mv.Src.Off)
		}
		if mv.Dst.Kind == "slot" && (mv.Dst.Off < -plan.ToSize || mv.Dst.Off+int64(mv.Size) > -8) {
			return fail("%s is outside the new frame (CFA%+d)", mv.What, mv.Dst.Off)
		}
	}
	return plan
}

// switchSide plans every return address of x for a switch into y (a
// patch that converts state switches proven frames too: the old code
// would go on with the old object).
func switchSide(xb, yb *Binary, x, y *rfunc, m []int) SwitchPlans {
	var xs, ys *swSide
	var out SwitchPlans
	for i := range x.ins {
		if !isResumePoint(x, i) || x.ins[i-1].in.Op != x86asm.CALL {
			continue
		}
		if xs == nil {
			var err error
			if xs, err = newSwSide(xb, x); err == nil {
				ys, err = newSwSide(yb, y)
			}
			if err != nil {
				return SwitchPlans{{From: x.ins[i].addr, Why: err.Error()}}
			}
		}
		out = append(out, switchPlan(xs, ys, m, i))
	}
	return out
}

// planSwitches plans both ways for one aligned pair (m maps x, OLD's, to
// y, NEW's): fwd for OLD's return addresses, back for NEW's.
func planSwitches(xb, yb *Binary, x, y *rfunc, m []int) (fwd, back SwitchPlans) {
	return switchSide(xb, yb, x, y, m), switchSide(yb, xb, y, x, inverse(m, len(y.ins)))
}

// describeSwitch is a one-line account of a plan, for reports.
func describeSwitch(p *SwitchPlan) string {
	if p.Why != "" {
		return "cannot switch: " + p.Why
	}
	var parts []string
	for _, mv := range p.Moves {
		parts = append(parts, mv.What)
	}
	return fmt.Sprintf("%#x -> %#x, frame %d -> %d bytes: %s", p.From, p.To, p.FromSize, p.ToSize, strings.Join(parts, ", "))
}

// SwitchCoverage plans a frame switch (both ways) for every return
// address of every function r reports changed, whether or not the patch
// converts state, and counts how many can switch: a measure of how much
// of a real program's optimised code the analysis explains (make
// realworld).
func SwitchCoverage(old, new *Binary, r *Report) (switchable, total int) {
	os, ns := prepare(old, true), prepare(new, true)
	byName := func(s *side, name string) *unit {
		for _, u := range s.units {
			if u.sym.name == name {
				return u
			}
		}
		return nil
	}
	for _, c := range r.Changed {
		on := c.Name
		if c.OldName != "" {
			on = c.OldName
		}
		u, w := byName(os, on), byName(ns, c.Name)
		if u == nil || w == nil {
			continue
		}
		x, y := os.decodeResume(u), ns.decodeResume(w)
		fwd, back := planSwitches(old, new, x, y, align(x.ins, y.ins))
		for _, ps := range []SwitchPlans{fwd, back} {
			for _, p := range ps {
				total++
				if p.Why == "" {
					switchable++
				}
			}
		}
	}
	return switchable, total
}
