package elfpatch

import (
	"fmt"
	"math/bits"
	"sort"

	"golang.org/x/arch/x86/x86asm"
)

// The data half of the resume proof. Control flow alone is not enough: a
// frame resuming in code that is the same in both versions still carries
// registers and stack slots that the code before it computed, and gcc
// hoists loop invariants (a string's address, a jump table's base) out of
// the loop into callee-saved registers. So for a resume address the
// locations the rest of the activation may read are traced back to the
// instructions that set them, through their inputs in turn, on both sides;
// the frame may stay only when both sides' sets of defining instructions
// are aligned to each other one to one. Locations are the 16 general
// registers, the 16 vector registers, the flags, the frame's stack slots
// (any memory addressed from rsp or rbp, as one location) and the slots
// push and pop use. Memory reached through other pointers is program
// state, shared by both versions, and not traced. An instruction whose
// effect is not modelled reads and may write everything it names and the
// registers string and multiply instructions use implicitly.

type locSet uint64

const (
	locFlags = 32
	locStack = 33
	locPush  = 34
)

var gprNames = [16]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

func locName(l int) string {
	switch {
	case l < 16:
		return "%" + gprNames[l]
	case l < 32:
		return fmt.Sprintf("%%xmm%d", l-16)
	case l == locFlags:
		return "the flags"
	case l == locStack:
		return "a stack slot"
	}
	return "a pushed register"
}

func bit(l int) locSet { return 1 << uint(l) }

const (
	gRAX = 0
	gRCX = 1
	gRDX = 2
	gRBX = 3
	gRSP = 4
	gRBP = 5
	gRSI = 6
	gRDI = 7
	gR8  = 8
	gR9  = 9
	gR10 = 10
	gR11 = 11
)

var (
	argRegs    = bit(gRDI) | bit(gRSI) | bit(gRDX) | bit(gRCX) | bit(gR8) | bit(gR9)
	calleeSave = bit(gRBX) | bit(gRBP) | bit(12) | bit(13) | bit(14) | bit(15)
	callerGPR  = bit(gRAX) | bit(gRCX) | bit(gRDX) | bit(gRSI) | bit(gRDI) | bit(gR8) | bit(gR9) | bit(gR10) | bit(gR11)
	allXMM     = locSet(0xffff) << 16
	argXMM     = locSet(0xff) << 16
	implicitRW = bit(gRAX) | bit(gRCX) | bit(gRDX) | bit(gRSI) | bit(gRDI)
)

// regLoc names the location of a register and whether writing it sets all
// of it (a 32- or 64-bit general register).
func regLoc(r x86asm.Reg) (l int, full, ok bool) {
	switch {
	case r >= x86asm.AL && r <= x86asm.R15B:
		i := int(r - x86asm.AL)
		if i >= 4 {
			i -= 4 // AH..BH share AL..BL's registers; SPB.. follow
			if i >= 4 && r >= x86asm.SPB {
				i = int(r-x86asm.SPB) + 4
			}
		}
		return i, false, true
	case r >= x86asm.AX && r <= x86asm.R15W:
		return int(r - x86asm.AX), false, true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return int(r - x86asm.EAX), true, true
	case r >= x86asm.RAX && r <= x86asm.R15:
		return int(r - x86asm.RAX), true, true
	case r >= x86asm.X0 && r <= x86asm.X15:
		return 16 + int(r-x86asm.X0), false, true
	case r >= x86asm.Y0 && r <= x86asm.Y15:
		return 16 + int(r-x86asm.Y0), false, true
	}
	return 0, false, false
}

// effect is what one instruction reads, sets entirely (defs) and may set
// (may).
type effect struct{ reads, defs, may locSet }

func (e *effect) readArg(a x86asm.Arg) {
	switch a := a.(type) {
	case x86asm.Reg:
		if l, _, ok := regLoc(a); ok {
			e.reads |= bit(l)
		}
	case x86asm.Mem:
		e.memAddr(a)
		if stackMem(a) {
			e.reads |= bit(locStack)
		}
	}
}

func (e *effect) memAddr(m x86asm.Mem) {
	for _, r := range []x86asm.Reg{m.Base, m.Index} {
		if l, _, ok := regLoc(r); ok {
			e.reads |= bit(l)
		}
	}
}

func stackMem(m x86asm.Mem) bool {
	switch m.Base {
	case x86asm.RSP, x86asm.RBP, x86asm.ESP, x86asm.EBP:
		return true
	}
	return false
}

// writeArg records a write of a; pure says the old value is not read
// (a move), so a full register write ends its history.
func (e *effect) writeArg(a x86asm.Arg, pure bool) {
	switch a := a.(type) {
	case x86asm.Reg:
		l, full, ok := regLoc(a)
		if !ok {
			return
		}
		if full && pure {
			e.defs |= bit(l)
			return
		}
		e.may |= bit(l)
		e.reads |= bit(l)
	case x86asm.Mem:
		e.memAddr(a)
		if stackMem(a) {
			e.may |= bit(locStack)
			e.reads |= bit(locStack)
		}
	}
}

func argsOf(in *x86asm.Inst) []x86asm.Arg {
	var out []x86asm.Arg
	for _, a := range in.Args {
		if a == nil {
			break
		}
		out = append(out, a)
	}
	return out
}

// effectOf models ri. Anything not listed is treated as reading and maybe
// writing everything it names plus the implicit registers.
func effectOf(ri *rinst) effect {
	var e effect
	if ri.kind == rBadDec {
		e.reads, e.may = ^locSet(0), ^locSet(0)
		return e
	}
	in := &ri.in
	args := argsOf(in)
	for len(args) < 3 {
		args = append(args, nil) // a malformed decode reads nothing, never panics
	}
	rest := func(from int) {
		for _, a := range args[from:] {
			e.readArg(a)
		}
	}
	tail := func() { // leaving the frame: everything the caller or a callee sees
		e.reads |= 0xffff | argXMM | bit(locStack) | bit(locPush)
		rest(0)
	}
	op := in.Op
	switch op {
	case x86asm.NOP, x86asm.UD1, x86asm.UD2, x86asm.HLT, x86asm.INT:
	case x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD:
		e.writeArg(args[0], true)
		rest(1)
	case x86asm.LEA:
		e.writeArg(args[0], true)
		if m, ok := args[1].(x86asm.Mem); ok {
			e.memAddr(m)
		}
	case x86asm.XOR, x86asm.SUB:
		if args[0] != nil && args[0] == args[1] && args[2] == nil {
			e.writeArg(args[0], true) // zeroing idiom
			e.defs |= bit(locFlags)
			break
		}
		fallthrough
	case x86asm.ADD, x86asm.AND, x86asm.OR, x86asm.SHL, x86asm.SHR, x86asm.SAR,
		x86asm.ROL, x86asm.ROR, x86asm.NEG, x86asm.NOT:
		rest(0)
		e.writeArg(args[0], true)
		e.defs |= bit(locFlags)
	case x86asm.INC, x86asm.DEC:
		rest(0)
		e.writeArg(args[0], true)
		e.may |= bit(locFlags)
		e.reads |= bit(locFlags)
	case x86asm.IMUL:
		if len(args) < 2 {
			rest(0)
			e.reads |= bit(gRAX)
			e.defs |= bit(gRAX) | bit(gRDX) | bit(locFlags)
			break
		}
		rest(0)
		e.writeArg(args[0], len(args) == 3)
		e.defs |= bit(locFlags)
	case x86asm.MUL, x86asm.DIV, x86asm.IDIV:
		rest(0)
		e.reads |= bit(gRAX) | bit(gRDX)
		e.defs |= bit(gRAX) | bit(gRDX) | bit(locFlags)
	case x86asm.CMP, x86asm.TEST, x86asm.BT:
		rest(0)
		e.defs |= bit(locFlags)
	case x86asm.CDQE, x86asm.CWDE:
		e.reads |= bit(gRAX)
		e.may |= bit(gRAX)
	case x86asm.CQO, x86asm.CDQ:
		e.reads |= bit(gRAX)
		e.defs |= bit(gRDX)
	case x86asm.PUSH:
		rest(0)
		e.reads |= bit(gRSP)
		e.defs |= bit(gRSP)
		e.may |= bit(locPush)
		e.reads |= bit(locPush)
	case x86asm.POP:
		e.reads |= bit(gRSP) | bit(locPush)
		e.writeArg(args[0], true)
		e.defs |= bit(gRSP)
	case x86asm.LEAVE:
		e.reads |= bit(gRBP) | bit(locPush) | bit(locStack)
		e.defs |= bit(gRSP) | bit(gRBP)
	case x86asm.CALL:
		rest(0)
		e.reads |= argRegs | bit(gRAX) | bit(gRSP) | argXMM | bit(locStack)
		e.defs |= callerGPR | allXMM | bit(locFlags)
	case x86asm.RET:
		e.reads |= bit(gRAX) | bit(gRDX) | bit(16) | bit(17) | calleeSave | bit(gRSP) | bit(locPush) | bit(locStack)
	case x86asm.SYSCALL:
		e.reads |= bit(gRAX) | bit(gRDI) | bit(gRSI) | bit(gRDX) | bit(gR10) | bit(gR8) | bit(gR9)
		e.defs |= bit(gRAX) | bit(gRCX) | bit(gR11)
	case x86asm.JMP:
		if ri.kind != rJmp {
			tail()
		}
	default:
		switch {
		case isCondJump(op):
			e.reads |= bit(locFlags) | bit(gRCX)
			if ri.exitTo {
				tail()
			}
		case op >= x86asm.CMOVA && op <= x86asm.CMOVS:
			rest(0)
			e.reads |= bit(locFlags)
			e.writeArg(args[0], false)
		case op >= x86asm.SETA && op <= x86asm.SETS:
			e.reads |= bit(locFlags)
			e.writeArg(args[0], false)
		default:
			rest(0)
			for _, a := range args {
				e.writeArg(a, false)
			}
			e.reads |= bit(locFlags) | implicitRW | bit(locStack)
			e.may |= bit(locFlags) | implicitRW | bit(locStack)
		}
	}
	return e
}

// cfg returns every instruction's successors inside the function
// (unresolved register jumps get every taken address).
func (f *rfunc) cfg() [][]int {
	succ := make([][]int, len(f.ins))
	entry := func(a uint64) bool {
		e := f.u.sym.addr
		return a == e || (f.u.endbr && a == e+4)
	}
	for i := range f.ins {
		ri := &f.ins[i]
		add := func(a uint64) {
			if k, ok := f.at[a]; ok {
				succ[i] = append(succ[i], k)
			}
		}
		if (ri.kind == rFall || ri.kind == rJcc) && ri.next >= 0 {
			succ[i] = append(succ[i], ri.next)
		}
		if (ri.kind == rJmp || ri.kind == rJcc) && ri.target != 0 && !entry(ri.target) {
			add(ri.target)
		}
		if ri.kind == rIndir {
			for _, t := range f.taken {
				add(t)
			}
		}
	}
	return succ
}

// defsFor walks back from the start of instruction r and returns the
// instructions (with the location each sets) that the locations in live
// depend on, transitively through their inputs.
//
// A call is modelled as setting the caller-saved registers: rax, rdx and
// xmm0-1 (its results) from its arguments, the others to garbage with no
// inputs (not traced further). The call the frame waits in has happened: its results are what
// the callee returned, taken as given.
func defsFor(f *rfunc, r int, live, args locSet, pred [][]int, eff []effect, budget *int) map[[2]int]bool {
	// arg marks a location read as a call's argument: the callee's
	// arity is unknown, so an argument register another call left
	// behind is taken as garbage the callee does not read.
	type item struct {
		k, l int
		arg  bool
	}
	seen := map[item]bool{}
	defs := map[[2]int]bool{}
	var work []item
	push := func(k int, s locSet, arg bool) {
		for s != 0 {
			l := bits.TrailingZeros64(uint64(s))
			s &^= bit(l)
			if it := (item{k, l, arg}); !seen[it] {
				seen[it] = true
				work = append(work, it)
			}
		}
	}
	push(r, live, false)
	push(r, args, true)
	for len(work) > 0 {
		it := work[len(work)-1]
		work = work[:len(work)-1]
		*budget -= 1 + len(pred[it.k])
		if *budget < 0 {
			return nil
		}
		for _, p := range pred[it.k] {
			e := &eff[p]
			b := bit(it.l)
			isCall := f.ins[p].kind == rFall && f.ins[p].in.Op == x86asm.CALL
			switch {
			case isCall && e.defs&b != 0:
				// A clobbered register holds garbage no correct code
				// reads: nothing to compare.
				results := bit(gRAX) | bit(gRDX) | bit(16) | bit(17)
				if b&results != 0 && !it.arg {
					defs[[2]int{p, it.l}] = true
					if p != r-1 {
						push(p, e.reads, true)
					}
				}
			case e.defs&b != 0:
				defs[[2]int{p, it.l}] = true
				push(p, e.reads, isCall)
			case e.may&b != 0 && isCall && p == r-1:
				// What the call the frame waits in wrote through the
				// pointers it was given (read into a buffer) has
				// happened, like its results: given. Earlier writes
				// to the rest of the location still count.
				push(p, b, it.arg)
			case e.may&b != 0:
				defs[[2]int{p, it.l}] = true
				push(p, e.reads, isCall)
				push(p, b, it.arg)
			default:
				push(p, b, it.arg)
			}
		}
	}
	return defs
}

// flowSide is one side's data needed by the data check.
type flowSide struct {
	f    *rfunc
	succ [][]int
	pred [][]int
	eff  []effect
	// liveIn is what each instruction's future may read as a value
	// before setting it (calls' arguments aside).
	liveIn []locSet
	// budget bounds the work of the data check on this function (steps
	// of defsFor); past it the remaining resume addresses are not
	// proven, so a huge function cannot stall a diff.
	budget int
}

// flowBudget is the data check's work limit per function and side: ample
// for real functions (a 2,000-instruction main with 300 calls uses a
// few million steps).
const flowBudget = 50_000_000

func newFlowSide(f *rfunc) *flowSide {
	s := &flowSide{f: f, succ: f.cfg(), eff: make([]effect, len(f.ins)), budget: flowBudget}
	s.pred = make([][]int, len(f.ins))
	for i, ss := range s.succ {
		for _, k := range ss {
			s.pred[k] = append(s.pred[k], i)
		}
	}
	for i := range f.ins {
		s.eff[i] = effectOf(&f.ins[i])
	}
	// A call given an address in this frame may write the frame's stack
	// slots (init(&opts)); one given none may not (a log line).
	esc := s.stackAddrs()
	for i := range f.ins {
		if ri := &f.ins[i]; ri.kind == rFall && ri.in.Op == x86asm.CALL && esc[i]&argRegs != 0 {
			s.eff[i].may |= bit(locStack)
		}
	}
	s.liveIn = make([]locSet, len(f.ins))
	for changed := true; changed; {
		changed = false
		for i := len(f.ins) - 1; i >= 0; i-- {
			var out locSet
			for _, k := range s.succ[i] {
				out |= s.liveIn[k]
			}
			e := s.eff[i]
			reads := e.reads
			if f.ins[i].kind == rFall && f.ins[i].in.Op == x86asm.CALL {
				reads &= bit(gRSP) | bit(locStack)
			}
			in := reads | (out &^ e.defs)
			if in != s.liveIn[i] {
				s.liveIn[i] = in
				changed = true
			}
		}
	}
	return s
}

// live over-approximates what the code reachable from r reads: as
// values, and as arguments of calls (args).
func (s *flowSide) live(r int) (out, args locSet) {
	seen := make([]bool, len(s.succ))
	work := []int{r}
	seen[r] = true
	for len(work) > 0 {
		i := work[len(work)-1]
		work = work[:len(work)-1]
		if s.f.ins[i].kind == rFall && s.f.ins[i].in.Op == x86asm.CALL {
			args |= s.eff[i].reads
		} else {
			out |= s.eff[i].reads
		}
		for _, k := range s.succ[i] {
			if !seen[k] {
				seen[k] = true
				work = append(work, k)
			}
		}
	}
	return out, args &^ out
}

// flowCheck says why the state a frame carries at x's instruction r may
// differ from what y's code would have at m[r] ("" if it cannot).
func flowCheck(x, y *flowSide, m []int, r int) string {
	j := m[r]
	if j < 0 {
		return "its instruction changed"
	}
	_, ax := x.live(r)
	_, ay := y.live(j)
	lx, ly := x.liveIn[r], y.liveIn[j]
	live, args := lx|ly, (ax|ay)&^(lx|ly)
	dx := defsFor(x.f, r, live, args, x.pred, x.eff, &x.budget)
	dy := defsFor(y.f, j, live, args, y.pred, y.eff, &y.budget)
	if x.budget < 0 || y.budget < 0 {
		return "the function is too large for the data check (work limit reached)"
	}
	name := func(f *rfunc, i int) string { return resumeSymOff(f.ins[i].sym, f.ins[i].addr) }
	for _, d := range sortedDefs(dx) {
		if m[d[0]] < 0 || !dy[[2]int{m[d[0]], d[1]}] {
			return fmt.Sprintf("%s, live here, was set by code that changed or differs on the other side (%s)", locName(d[1]), name(x.f, d[0]))
		}
	}
	if len(dx) != len(dy) {
		for _, d := range sortedDefs(dy) {
			found := false
			for e := range dx {
				if m[e[0]] == d[0] && e[1] == d[1] {
					found = true
					break
				}
			}
			if !found {
				return fmt.Sprintf("%s, live here, is set differently by the other version (%s there)", locName(d[1]), name(y.f, d[0]))
			}
		}
	}
	return ""
}

func sortedDefs(d map[[2]int]bool) [][2]int {
	out := make([][2]int, 0, len(d))
	for k := range d {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i][0] != out[j][0] {
			return out[i][0] < out[j][0]
		}
		return out[i][1] < out[j][1]
	})
	return out
}

// isResumePoint: a frame can only wait at a return address (or after a
// system call made in the function itself).
func isResumePoint(f *rfunc, i int) bool {
	if i == 0 {
		return false
	}
	p := &f.ins[i-1]
	return p.next == i && p.kind == rFall && (p.in.Op == x86asm.CALL || p.in.Op == x86asm.SYSCALL)
}

// stackAddrs returns, per instruction, the general registers that may
// hold an address in this frame on entry to it (derived from rsp or rbp
// by lea, moves and arithmetic; calls clobber the caller-saved ones). An
// address stored to memory and loaded back is not followed: a callee
// reaching the frame that way is not modelled.
func (s *flowSide) stackAddrs() []locSet {
	n := len(s.f.ins)
	in := make([]locSet, n)
	out := make([]locSet, n)
	stackish := bit(gRSP) | bit(gRBP)
	regOf := func(a x86asm.Arg) (int, bool) {
		r, ok := a.(x86asm.Reg)
		if !ok {
			return 0, false
		}
		l, _, ok := regLoc(r)
		return l, ok && l < 16
	}
	transfer := func(i int, st locSet) locSet {
		ri := &s.f.ins[i]
		if ri.kind == rBadDec {
			return 0xffff
		}
		args := argsOf(&ri.in)
		has := func(st locSet, a x86asm.Arg) bool {
			switch a := a.(type) {
			case x86asm.Reg:
				l, ok := regOf(a)
				return ok && st&bit(l) != 0
			case x86asm.Mem:
				for _, r := range []x86asm.Reg{a.Base, a.Index} {
					if l, ok := regOf(r); ok && st&bit(l) != 0 {
						return true
					}
				}
			}
			return false
		}
		cur := st | stackish
		switch op := ri.in.Op; {
		case op == x86asm.CALL:
			return st &^ callerGPR
		case len(args) == 0:
			return st
		}
		d, ok := regOf(args[0])
		if !ok {
			return st
		}
		switch ri.in.Op {
		case x86asm.LEA, x86asm.MOV:
			if len(args) > 1 && ri.in.Op == x86asm.LEA && has(cur, args[1]) {
				return st | bit(d)
			}
			if len(args) > 1 && ri.in.Op == x86asm.MOV {
				if _, isReg := args[1].(x86asm.Reg); isReg && has(cur, args[1]) {
					return st | bit(d)
				}
			}
			return st &^ bit(d)
		case x86asm.CMP, x86asm.TEST, x86asm.PUSH:
			return st
		}
		for _, a := range args[1:] {
			if _, isReg := a.(x86asm.Reg); isReg && has(cur, a) {
				return st | bit(d)
			}
		}
		return st // arithmetic on it keeps what it was
	}
	for changed := true; changed; {
		changed = false
		for i := 0; i < n; i++ {
			var x locSet
			for _, p := range s.pred[i] {
				x |= out[p]
			}
			in[i] = x
			if o := transfer(i, x); o != out[i] {
				out[i] = o
				changed = true
			}
		}
	}
	return in
}
