package elfpatch

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// Frames that never leave (DESIGN.md).
//
// A thread may sit in a function being replaced for the life of the
// process (main, an accept loop). Its frame may finish in the code it is
// in when no changed instruction is reachable from where it resumes: the
// rest of that activation then does exactly what the other version would
// do from the corresponding place. resumeSide proves that, per return
// address (the only places a frame waits), from the two versions' code:
//
//   - OLD's and NEW's instructions (the entry symbol, then every .cold
//     part) are normalised as the diff does, with every reference into
//     the function itself masked, and aligned (longest common
//     subsequence);
//   - an instruction is the same in both when it is aligned to an equal
//     one and every successor maps to the aligned successor: the next
//     instruction, a branch target inside the function, each entry of a
//     jump table. A line inserted between two aligned instructions makes
//     the one before it differ, because its successor does;
//   - successors are followed: fall-through, direct and conditional
//     branches, resolved jump tables (a register jump in a function with
//     GCC's PIC switch tables may reach every entry of every table, and
//     every address of the function the code takes). A call returns to
//     the next instruction. A return, a jump out of the function (a tail
//     call, its target reached through its own entry) and a branch back
//     to the function's own entry (a self tail call) leave the frame;
//     ud2, hlt and int3 end it. A register or memory jump with no table
//     to resolve it is "not proven": where it goes is unknown;
//   - the call a frame waits in must return, in the other version too, to
//     the instruction aligned to its return address: code inserted right
//     after the call lies ahead of the frame;
//   - the data check (resume_flow.go): every register and stack slot the
//     rest of the activation may read must be set by instructions aligned
//     to each other on both sides (a loop invariant hoisted out of
//     changed code is caught there);
//   - a return address is proven when all of that holds. A call that ends
//     its function (to a function that never returns) leaves a frame
//     that never resumes: proven.
//
// The call a frame waits in has happened: what it returns and what it
// wrote through the pointers it was given are taken as given (the rule
// looks ahead of the frame, never behind it), so a frame waiting in
// read() inside a function whose greeting changed before the read stays.
//
// Calls and tail calls to changed functions are fine: the old code
// reaches the new version through the jump at the old entry, as the new
// code does directly, and since the instructions that set up the call are
// the same on both sides, so are its arguments (a changed signature
// included).
//
// The same run on NEW's side proves frames in new code for a revert,
// where new code stays mapped and old entries are restored: there, a
// reachable call, jump or reference to a function the patch replaces is
// also a difference, because the image calls its own new copy directly,
// not the old one, and so is a branch back to NEW's own entry.

// Resume holds, for one changed function, where a frame may stay.
type Resume struct {
	// Old covers OLD's instructions (link-time addresses of OLD): a
	// frame of the running OLD code resuming in a range without Why may
	// finish in OLD code while the patch goes in.
	Old ResumeRanges `json:"old,omitempty"`
	// New covers NEW's instructions (link-time addresses of NEW): a
	// frame in the patch's image resuming in a range without Why may
	// finish in new code after a revert.
	New ResumeRanges `json:"new,omitempty"`
	// Switch plans, for OLD's return addresses that are not proven, how
	// a frame waiting there continues in NEW's code (switch.go); Back
	// the same for NEW's, continuing in OLD's (revert).
	Switch SwitchPlans `json:"switch,omitempty"`
	Back   SwitchPlans `json:"back,omitempty"`
}

// ResumeRange is the verdict for the resume addresses in [Start, End):
// proven when Why is empty, otherwise why not. The analysis emits one
// per return address (End = Start+1); proven ones may be merged.
type ResumeRange struct {
	Start uint64 `json:"s"`
	End   uint64 `json:"e"`
	Why   string `json:"why,omitempty"`
	// To is, for a proven return address, the other version's return
	// address it corresponds to (link-time): a frame let stay at Start
	// behaves as one at To would, which a later patch made from the
	// other version can build on.
	To uint64 `json:"to,omitempty"`
}

// ResumeRanges are sorted, disjoint ranges.
type ResumeRanges []ResumeRange

// Lookup says whether a frame resuming at link-time address addr may
// stay: proven, or why not.
func (rs ResumeRanges) Lookup(addr uint64) (proven bool, why string) {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].End > addr })
	if i == len(rs) || addr < rs[i].Start {
		return false, fmt.Sprintf("0x%x is not a return address the analysis covered (a frame running there, not waiting in a call)", addr)
	}
	return rs[i].Why == "", rs[i].Why
}

// Shift returns the ranges moved by delta (link-time to runtime).
func (rs ResumeRanges) Shift(delta uint64) ResumeRanges {
	out := make(ResumeRanges, len(rs))
	for i, r := range rs {
		out[i] = ResumeRange{Start: r.Start + delta, End: r.End + delta, Why: r.Why, To: r.To}
	}
	return out
}

// Proven is only the proven ranges.
func (rs ResumeRanges) Proven() ResumeRanges {
	var out ResumeRanges
	for _, r := range rs {
		if r.Why == "" {
			out = append(out, r)
		}
	}
	return out
}

// rkind is how control leaves an instruction.
type rkind uint8

const (
	rFall   rkind = iota // to the next instruction (calls included)
	rJmp                 // to target only
	rJcc                 // to the next instruction and target
	rExit                // out of the frame (ret, tail call)
	rStop                // nowhere (ud2, hlt, int3)
	rIndir               // a register or memory jump
	rBadDec              // bytes that did not decode
)

// rinst is one instruction as the resume analysis sees it.
type rinst struct {
	addr uint64
	sym  *symbol
	norm string
	kind rkind
	// target is an intra-function branch target (rJmp, rJcc; 0: none
	// or out of the function).
	target uint64
	// exitTo is a branch target outside the function (tail call).
	exitTo bool
	// refs are intra-function addresses the instruction takes (lea of a
	// label) besides its branch target; tab the entries of the jump
	// table it addresses.
	refs []uint64
	tab  []uint64
	// token is the normalised reference ("fn:key+off", ...), for the
	// NEW side's check of calls into the patch.
	token string
	// selfCall: a call whose target is inside the function.
	selfCall bool
	// next is the index of the following instruction in the same
	// symbol (-1: none).
	next int
	// in is the decoded instruction (kind != rBadDec), for the data flow.
	in x86asm.Inst
}

// rfunc is one side of one function, decoded.
type rfunc struct {
	u     *unit
	ins   []rinst
	at    map[uint64]int
	hasJT bool
	// taken are every intra-function address the code takes (tables and
	// leas): where a resolved register jump may go.
	taken []uint64
}

func (s *side) decodeResume(u *unit) *rfunc {
	n := newNormaliser(s.b)
	n.dataKey = s.objKey
	f := &rfunc{u: u, at: map[uint64]int{}}
	syms := append([]*symbol{u.sym}, u.parts...)
	for _, sym := range syms {
		code := s.b.read(sym.addr, sym.size)
		if code == nil {
			continue
		}
		first := len(f.ins)
		for off := 0; off < len(code); {
			pc := sym.addr + uint64(off)
			ri := rinst{addr: pc, sym: sym, next: -1}
			in, err := x86dec.Decode(code[off:], pc)
			if err != nil {
				ri.kind, ri.norm = rBadDec, fmt.Sprintf("?%02x", code[off])
				f.at[pc] = len(f.ins)
				f.ins = append(f.ins, ri)
				off++
				continue
			}
			raw := code[off : off+in.Len]
			var sb strings.Builder
			if in.RelSize == 0 {
				sb.Write(raw)
			} else {
				masked := append([]byte(nil), raw...)
				clear(masked[in.RelOff : in.RelOff+in.RelSize])
				sb.Write(masked)
				sb.WriteByte(0xff)
				if u.inUnit(in.Target) {
					sb.WriteString("@")
				} else {
					tmp := &unit{sym: u.sym, parts: u.parts}
					n.pc, n.anon = pc, 0
					tok := n.ref(tmp, &in.Inst, in.Target)
					switch {
					case strings.HasPrefix(tok, "anon:jt:"):
						for _, t := range tmp.targets {
							ri.tab = append(ri.tab, t.to)
						}
						tok = fmt.Sprintf("jt#%d", len(ri.tab))
						f.hasJT = true
					case n.anon != 0:
						tok += string(n.literal(n.anon, nil))
					}
					ri.token = tok
					sb.WriteString(tok)
				}
			}
			ri.norm = sb.String()
			ri.in = in.Inst
			ri.kind = rFall
			intra := in.RelSize != 0 && u.inUnit(in.Target)
			switch op := in.Op; {
			case op == x86asm.RET || op == x86asm.LRET || op == x86asm.IRET || op == x86asm.IRETD || op == x86asm.IRETQ:
				ri.kind = rExit
			case op == x86asm.UD1 || op == x86asm.UD2 || op == x86asm.HLT || (op == x86asm.INT && raw[0] == 0xcc):
				ri.kind = rStop
			case op == x86asm.JMP:
				switch {
				case in.RelSize != 0 && isRIPMem(in.Args[0]):
					ri.kind, ri.exitTo = rExit, true // through a GOT slot: a tail call out
				case in.RelSize != 0 && intra:
					ri.kind, ri.target = rJmp, in.Target
				case in.RelSize != 0:
					ri.kind, ri.exitTo = rExit, true
				default:
					ri.kind = rIndir
				}
			case isCondJump(op):
				if intra {
					ri.kind, ri.target = rJcc, in.Target
				} else {
					ri.kind, ri.exitTo = rJcc, true
				}
			case op == x86asm.CALL:
				ri.selfCall = intra
			default:
				if intra {
					ri.refs = append(ri.refs, in.Target)
				}
			}
			f.taken = append(f.taken, ri.tab...)
			f.taken = append(f.taken, ri.refs...)
			f.at[pc] = len(f.ins)
			f.ins = append(f.ins, ri)
			off += in.Len
		}
		for i := first; i+1 < len(f.ins); i++ {
			f.ins[i].next = i + 1
		}
	}
	return f
}

func isRIPMem(a x86asm.Arg) bool {
	m, ok := a.(x86asm.Mem)
	return ok && m.Base == x86asm.RIP
}

func isCondJump(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE,
		x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO,
		x86asm.JP, x86asm.JS, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ,
		x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		return true
	}
	return false
}

// maxAlignCells bounds the alignment's table (after the common prefix and
// suffix are taken off): past it the middle stays unaligned, which only
// proves less.
const maxAlignCells = 16 << 20

// align returns, for each instruction of a, the index of its partner in b
// (-1: none): the longest common subsequence of the normal forms.
func align(a, b []rinst) []int {
	m := make([]int, len(a))
	for i := range m {
		m[i] = -1
	}
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre].norm == b[pre].norm {
		m[pre] = pre
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf].norm == b[len(b)-1-suf].norm {
		m[len(a)-1-suf] = len(b) - 1 - suf
		suf++
	}
	na, nb := len(a)-pre-suf, len(b)-pre-suf
	if na == 0 || nb == 0 || na*nb > maxAlignCells || na >= 1<<16 || nb >= 1<<16 {
		return m
	}
	// L[i][j]: LCS of a[pre+i:] and b[pre+j:] (middle only).
	w := nb + 1
	L := make([]uint16, (na+1)*w)
	for i := na - 1; i >= 0; i-- {
		for j := nb - 1; j >= 0; j-- {
			if a[pre+i].norm == b[pre+j].norm {
				L[i*w+j] = L[(i+1)*w+j+1] + 1
			} else {
				L[i*w+j] = max(L[(i+1)*w+j], L[i*w+j+1])
			}
		}
	}
	for i, j := 0, 0; i < na && j < nb; {
		switch {
		case a[pre+i].norm == b[pre+j].norm:
			m[pre+i] = pre + j
			i++
			j++
		case L[(i+1)*w+j] >= L[i*w+j+1]:
			i++
		default:
			j++
		}
	}
	return m
}

// resumeSide proves, for every instruction of x, whether a frame resuming
// there reaches only instructions that are the same in y (m maps x to y).
// newSide adds the checks that matter for a frame left in new code.
func resumeSide(x, y *rfunc, m []int, newSide bool, patched map[string]bool) ResumeRanges {
	yat := y.at
	mapsTo := func(xa, ya uint64) bool {
		i, ok := x.at[xa]
		if !ok {
			return false
		}
		j, ok := yat[ya]
		return ok && m[i] == j
	}
	entry := func(f *rfunc, a uint64) bool {
		e := f.u.sym.addr
		return a == e || (f.u.endbr && a == e+4)
	}
	n := len(x.ins)
	bad := make([]string, n) // why an instruction differs ("" if not)
	succ := make([][]int, n)
	for i := range x.ins {
		xi := &x.ins[i]
		here := resumeSymOff(xi.sym, xi.addr)
		add := func(a uint64) {
			if k, ok := x.at[a]; ok {
				succ[i] = append(succ[i], k)
			} else {
				bad[i] = fmt.Sprintf("a branch at %s into the middle of an instruction is reachable", here)
			}
		}
		switch xi.kind {
		case rFall, rJcc:
			if xi.next >= 0 {
				succ[i] = append(succ[i], xi.next)
			}
		}
		selfTail := false
		if xi.kind == rJmp || xi.kind == rJcc {
			if xi.target != 0 {
				if entry(x, xi.target) {
					selfTail = true // a self tail call leaves the frame
				} else {
					add(xi.target)
				}
			}
		}
		if xi.kind == rIndir {
			if !x.hasJT {
				bad[i] = fmt.Sprintf("an indirect jump at %s whose targets are unknown is reachable", here)
			}
			for _, t := range x.taken {
				add(t)
			}
		}
		if bad[i] != "" {
			continue
		}
		switch {
		case xi.kind == rBadDec:
			bad[i] = fmt.Sprintf("bytes at %s that do not decode are reachable", here)
			continue
		case m[i] < 0:
			bad[i] = fmt.Sprintf("a changed instruction (%s) is reachable", here)
			continue
		}
		yi := &y.ins[m[i]]
		diff := func() {
			bad[i] = fmt.Sprintf("a changed instruction (%s) is reachable", here)
		}
		// Successors must correspond.
		if xi.kind == rFall || xi.kind == rJcc {
			switch {
			case xi.next < 0 && yi.next < 0:
			case xi.next < 0 || yi.next < 0 || m[xi.next] != yi.next:
				diff()
			}
		}
		if xi.target != 0 && !(entry(x, xi.target) && entry(y, yi.target)) && !mapsTo(xi.target, yi.target) {
			diff()
		}
		if len(xi.tab) != len(yi.tab) || len(xi.refs) != len(yi.refs) {
			diff()
		} else {
			for k := range xi.tab {
				if !mapsTo(xi.tab[k], yi.tab[k]) {
					diff()
				}
			}
			for k := range xi.refs {
				if !mapsTo(xi.refs[k], yi.refs[k]) {
					diff()
				}
			}
		}
		if xi.kind == rIndir && !y.hasJT {
			diff()
		}
		if bad[i] != "" || !newSide {
			continue
		}
		switch {
		case xi.selfCall || selfTail:
			bad[i] = fmt.Sprintf("%s, which calls the new %s itself, is reachable", here, x.u.sym.name)
		case strings.HasPrefix(xi.token, "fn:"):
			key := xi.token[3:]
			if p := strings.LastIndexByte(key, '+'); p >= 0 {
				key = key[:p]
			}
			if patched[key] {
				bad[i] = fmt.Sprintf("%s, which reaches the new %s directly, is reachable", here, key)
			}
		}
	}
	// Multi-source search backwards from every differing instruction.
	pred := make([][]int, n)
	for i, ss := range succ {
		for _, k := range ss {
			pred[k] = append(pred[k], i)
		}
	}
	why := make([]string, n)
	var queue []int
	for i := range bad {
		if bad[i] != "" {
			why[i] = bad[i]
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, p := range pred[i] {
			if why[p] == "" {
				why[p] = why[i]
				queue = append(queue, p)
			}
		}
	}
	// Only return addresses are places a frame waits; each gets its
	// verdict, the data check included.
	xs, ys := newFlowSide(x), newFlowSide(y)
	var out ResumeRanges
	for i := range x.ins {
		if c := &x.ins[i]; c.next < 0 && c.kind == rFall && c.in.Op == x86asm.CALL && c.addr+uint64(c.in.Len) == c.sym.addr+c.sym.size {
			// A call ending the function (to a function that never
			// returns: gcc leaves nothing after it): its frame never
			// resumes, so nothing of this code runs again.
			end := c.addr + uint64(c.in.Len)
			rr := ResumeRange{Start: end, End: end + 1}
			if j := m[i]; j >= 0 && y.ins[j].next < 0 && y.ins[j].addr+uint64(y.ins[j].in.Len) == y.ins[j].sym.addr+y.ins[j].sym.size {
				rr.To = y.ins[j].addr + uint64(y.ins[j].in.Len)
			}
			out = append(out, rr)
		}
		if !isResumePoint(x, i) {
			continue
		}
		w := why[i]
		if c := i - 1; w == "" && (m[c] < 0 || m[i] < 0 || y.ins[m[c]].next != m[i]) {
			// The frame waits in call c: the other version's call
			// must return to the instruction aligned to this one.
			w = fmt.Sprintf("the call it waits in (%s) returns to code that changed (something was inserted, removed or altered right after it)", resumeSymOff(x.ins[c].sym, x.ins[c].addr))
		}
		if w == "" {
			w = flowCheck(xs, ys, m, i)
		}
		rr := ResumeRange{Start: x.ins[i].addr, End: x.ins[i].addr + 1, Why: w}
		if w == "" {
			rr.To = y.ins[m[i]].addr
		}
		out = append(out, rr)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Start < out[b].Start })
	return out
}

func resumeSymOff(s *symbol, a uint64) string {
	return fmt.Sprintf("%s+0x%x", s.name, a-s.addr)
}

// resumeAll fills in Resume for the changed functions functions found
// (in the order of each batch, at its index in the report): where frames
// may stay, and, for a patch that converts state (the transfers are
// known by now), how they switch (switch.go), from one decoding.
func (d *differ) resumeAll() {
	for _, rp := range d.resumed {
		patched := map[string]bool{}
		for _, p := range rp.pair {
			patched[p[1].key] = true
		}
		for k, p := range rp.pair {
			x, y := d.old.decodeResume(p[0]), d.new.decodeResume(p[1])
			m := align(x.ins, y.ins)
			rs := &Resume{
				Old: resumeSide(x, y, m, false, nil),
				New: resumeSide(y, x, inverse(m, len(y.ins)), true, patched),
			}
			if len(d.r.Transfers) > 0 {
				// Only a patch that converts state switches frames.
				rs.Switch, rs.Back = planSwitches(d.old.b, d.new.b, x, y, m)
			}
			d.r.Changed[rp.base+k].Resume = rs
		}
	}
}

type resumedPair struct {
	pair [][2]*unit
	base int
}

// inverse maps each of n instructions of the other side back to its
// partner in the alignment m (-1: none).
func inverse(m []int, n int) []int {
	inv := make([]int, n)
	for j := range inv {
		inv[j] = -1
	}
	for i, j := range m {
		if j >= 0 {
			inv[j] = i
		}
	}
	return inv
}
