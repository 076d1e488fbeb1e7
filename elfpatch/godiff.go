package elfpatch

import (
	"debug/elf"
	"encoding/hex"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// codeRef is the normal-form token for a PC-relative reference from Go
// code at pc (instruction inst) to target: what target denotes (see
// goImage), never where it lies. It records in u.refs the functions and
// globals the code names, in the tokens the rest of the diff uses.
func (g *goImage) codeRef(u *unit, pc uint64, inst *x86asm.Inst, target uint64) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	kind, s := g.where(target)
	switch kind {
	case goFunc:
		if s != nil {
			t := "fn:" + s.key()
			u.refs = append(u.refs, t)
			return t + "+" + strconv.FormatUint(target-s.addr, 10)
		}
	case goRWSym:
		t := "data:" + s.key()
		u.refs = append(u.refs, t)
		return t + "+" + strconv.FormatUint(target-s.addr, 10)
	case goROAnon, goGCBits:
		// A jump table (LEAQ table(IP), R; JMP (R)(idx*8)): the
		// offsets it leads to in this function, which are branch
		// targets of it too.
		if inst.Op == x86asm.LEA {
			var offs []string
			for a := target; ; a += 8 {
				p, _, ok := g.ptr(a)
				if !ok && !g.pie {
					// A default build's table holds bare addresses
					// inside the function, which ptr only takes
					// for entries.
					p, ok = g.u64(a)
				}
				if !ok || !u.inUnit(p) {
					break
				}
				u.targets = append(u.targets, branch{pc, p})
				offs = append(offs, strconv.FormatUint(p-u.sym.addr, 10))
			}
			if len(offs) > 0 {
				return "jt:" + strings.Join(offs, ",")
			}
		}
		// A load reads what its operand's size says, no more.
		if inst.Op != x86asm.LEA && inst.MemBytes > 0 && inst.MemBytes <= 64 {
			if d := g.b.read(target, uint64(inst.MemBytes)); d != nil {
				return "lit:" + hex.EncodeToString(d)
			}
		}
		// The address of a value whose type the code names next to it
		// (an interface built from a constant, a comparison with one):
		// the type's size is the value's.
		g.scanStrings()
		if n, ok := g.anonLen[pc]; ok {
			return "val:" + strconv.Quote(string(g.render(target, target+n, 1)))
		}
	case goString:
		g.scanStrings()
		n, ok := g.codeLen[pc]
		if !ok {
			n = -1
		}
		return g.str(target, n)
	}
	return g.denote(target, -1, 0)
}

// goABIRegs is the order of Go's register ABI for integer arguments: a
// string argument is a pointer in one register and its length in the
// next.
var goABIRegs = []x86asm.Reg{x86asm.RAX, x86asm.RBX, x86asm.RCX, x86asm.RDI, x86asm.RSI, x86asm.R8, x86asm.R9, x86asm.R10, x86asm.R11}

// reg64 maps a 32-bit register to its 64-bit register.
func reg64(r x86asm.Reg) x86asm.Reg {
	if r >= x86asm.EAX && r <= x86asm.R15L {
		return r - x86asm.EAX + x86asm.RAX
	}
	return r
}

// goInst is one decoded instruction of a function, at pc.
type goInst struct {
	pc uint64
	in x86dec.Inst
}

// goBranch reports a control transfer: the register-tracking searches of
// strLen stop there.
func goBranch(op x86asm.Op) bool {
	switch op {
	case x86asm.CALL, x86asm.JMP, x86asm.RET, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE,
		x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JO, x86asm.JNO, x86asm.JP, x86asm.JNP, x86asm.JS, x86asm.JNS,
		x86asm.UD2, x86asm.INT:
		return true
	}
	return false
}

// writes reports whether in writes register r (its first operand).
func writes(in *x86dec.Inst, r x86asm.Reg) bool {
	if a, ok := in.Args[0].(x86asm.Reg); ok && reg64(a) == r {
		return in.Op != x86asm.CMP && in.Op != x86asm.TEST && in.Op != x86asm.PUSH
	}
	return false
}

// strLen finds the length the code loads with a string literal's address
// (LEAQ str(IP), R, insts[i]): the constant moved into the next ABI
// register after R (a string argument or result), before or after the
// LEAQ, or the constant stored 8 bytes past where R is stored (a string
// header built in memory). -1 if none is found within a few instructions
// on either side, without a branch between.
func strLen(insts []goInst, i int, wb func(uint64) bool) int64 {
	in := &insts[i].in
	if in.Op != x86asm.LEA {
		return -1
	}
	dst, ok := in.Args[0].(x86asm.Reg)
	if !ok {
		return -1
	}
	dst = reg64(dst)
	var next x86asm.Reg
	for k, r := range goABIRegs[:len(goABIRegs)-1] {
		if r == dst {
			next = goABIRegs[k+1]
		}
	}
	immTo := func(j int, r x86asm.Reg) (int64, bool) {
		c := &insts[j].in
		if c.Op != x86asm.MOV {
			return 0, false
		}
		a, ok := c.Args[0].(x86asm.Reg)
		if !ok || reg64(a) != r {
			return 0, false
		}
		imm, ok := c.Args[1].(x86asm.Imm)
		return int64(imm), ok
	}
	const window = 8
	if next != 0 {
		for j := i + 1; j < len(insts) && j <= i+window && !goBranch(insts[j].in.Op); j++ {
			if n, ok := immTo(j, next); ok {
				return n
			}
			if writes(&insts[j].in, next) || writes(&insts[j].in, dst) {
				break
			}
		}
		for j := i - 1; j >= 0 && j >= i-window && !goBranch(insts[j].in.Op); j-- {
			if n, ok := immTo(j, next); ok {
				return n
			}
			if writes(&insts[j].in, next) {
				break
			}
		}
	}
	// A header in memory: MOVQ R, d(B) next to MOVQ $len, d+8(B).
	var store *x86asm.Mem
	for j := i + 1; j < len(insts) && j <= i+window && !goBranch(insts[j].in.Op); j++ {
		c := &insts[j].in
		if m, ok := c.Args[0].(x86asm.Mem); ok && c.Op == x86asm.MOV {
			if r, ok := c.Args[1].(x86asm.Reg); ok && reg64(r) == dst {
				store = &m
				break
			}
		}
		if writes(c, dst) {
			break
		}
	}
	if store == nil {
		return -1
	}
	lenAt := func(j int) (int64, bool) {
		c := &insts[j].in
		m, ok := c.Args[0].(x86asm.Mem)
		if !ok || c.Op != x86asm.MOV || m.Base != store.Base || m.Index != store.Index || m.Scale != store.Scale || m.Disp != store.Disp+8 {
			return 0, false
		}
		imm, ok := c.Args[1].(x86asm.Imm)
		return int64(imm), ok
	}
	for j := i + 1; j < len(insts) && j <= i+2*window && !goBranch(insts[j].in.Op); j++ {
		if n, ok := lenAt(j); ok {
			return n
		}
	}
	// Backwards the length store may precede a write barrier: the
	// barrier's conditional jump and its call (which keeps every
	// register) do not end this search.
	for j := i - 1; j >= 0 && j >= i-2*window; j-- {
		c := &insts[j].in
		if goBranch(c.Op) && c.Op != x86asm.JMP && c.Op != x86asm.CALL && c.Op != x86asm.RET && c.Op != x86asm.UD2 && c.Op != x86asm.INT {
			continue // a conditional branch
		}
		if c.Op == x86asm.CALL && wb != nil && c.RelSize > 0 && wb(c.Target) {
			continue
		}
		if goBranch(c.Op) {
			break
		}
		if n, ok := lenAt(j); ok {
			return n
		}
		if writes(c, store.Base) {
			break
		}
	}
	return -1
}

// isWriteBarrier reports whether addr is the entry of one of the runtime's
// write-barrier helpers, which preserve every general register.
func (g *goImage) isWriteBarrier(addr uint64) bool {
	s := g.b.symbolAt(addr)
	return s != nil && s.addr == addr && strings.HasPrefix(s.name, "runtime.gcWriteBarrier")
}

// decodeFunc decodes a function symbol's code, up to the first byte that
// does not decode.
func (g *goImage) decodeFunc(s *symbol) []goInst {
	return g.decodeInto(nil, s)
}

// decodeInto is decodeFunc reusing buf's storage.
func (g *goImage) decodeInto(buf []goInst, s *symbol) []goInst {
	code := g.b.read(s.addr, s.size)
	out := buf[:0]
	for off := 0; off < len(code); {
		in, err := x86dec.Decode(code[off:], s.addr+uint64(off))
		if err != nil {
			break
		}
		out = append(out, goInst{s.addr + uint64(off), in})
		off += in.Len
	}
	return out
}

// scanStrings finds, once, every place where a string literal starts and
// ends as far as anyone says: the code's references with the lengths it
// loads (codeLen, by instruction address), and the string headers in data
// (a pointer into the string group followed by its length). A string
// whose length nothing states extends to the next of these boundaries.
func (g *goImage) scanStrings() {
	if g.scanned {
		return
	}
	g.scanned = true
	g.codeLen = map[uint64]int64{}
	g.anonLen = map[uint64]uint64{}
	bounds := map[uint64]bool{}
	anon := map[uint64]bool{}
	rw := map[uint64]bool{}
	var insts []goInst
	for _, s := range g.b.syms {
		if !s.fn {
			continue
		}
		insts = g.decodeInto(insts, s)
		for i := range insts {
			in := &insts[i].in
			if in.RelSize == 0 {
				continue
			}
			if g.types.has(in.Target) {
				g.typeRefs = append(g.typeRefs, in.Target)
			}
			if !g.strs.has(in.Target) {
				k, _ := g.where(in.Target)
				if k == goRWAnon {
					rw[in.Target] = true
				}
				if k == goROAnon || k == goGCBits {
					anon[in.Target] = true
					if n := g.valueSize(insts, i); n > 0 {
						g.anonLen[insts[i].pc] = n
					} else if n := strLen(insts, i, g.isWriteBarrier); n >= 0 {
						// String bytes the linker put among its
						// content-addressed constants.
						g.anonLen[insts[i].pc] = uint64(n)
					}
				}
				continue
			}
			bounds[in.Target] = true
			if n := strLen(insts, i, g.isWriteBarrier); n >= 0 && in.Target+uint64(n) <= g.strs.hi {
				g.codeLen[insts[i].pc] = n
				bounds[in.Target+uint64(n)] = true
			}
		}
	}
	word := func(a uint64) {
		p, _, ok := g.ptr(a)
		if !ok {
			return
		}
		if g.gcbits.has(p) {
			anon[p] = true // a type's GC mask
		}
		if k, _ := g.where(p); k == goRWAnon {
			rw[p] = true
		}
		if !g.strs.has(p) {
			return
		}
		bounds[p] = true
		if _, _, isPtr := g.ptr(a + 8); !isPtr {
			if l, ok := g.u64(a + 8); ok && l < 1<<20 && p+l <= g.strs.hi {
				bounds[p+l] = true
			}
		}
	}
	if g.pie {
		for _, a := range g.b.relocOffs {
			word(a)
		}
	} else {
		for _, sec := range g.b.secs {
			if sec.Flags&elf.SHF_EXECINSTR != 0 || sec.Type == elf.SHT_NOBITS {
				continue
			}
			for a := (sec.Addr + 7) &^ 7; a+8 <= sec.Addr+sec.Size; a += 8 {
				word(a)
			}
		}
	}
	for a := range bounds {
		g.strBounds = append(g.strBounds, a)
	}
	sort.Slice(g.strBounds, func(i, j int) bool { return g.strBounds[i] < g.strBounds[j] })
	for a := range anon {
		g.anonBounds = append(g.anonBounds, a)
	}
	sort.Slice(g.anonBounds, func(i, j int) bool { return g.anonBounds[i] < g.anonBounds[j] })
	for a := range rw {
		g.rwBounds = append(g.rwBounds, a)
	}
	sort.Slice(g.rwBounds, func(i, j int) bool { return g.rwBounds[i] < g.rwBounds[j] })
}

// goValue is a Go data object's initial value with every pointer replaced
// by what it denotes, for the comparison of globals.
func (g *goImage) goValue(o *symbol) []byte {
	if o.bss {
		// Zero-initialised: nothing to denote (the C path compares
		// the zeros; the size is compared on its own).
		return make([]byte, min(o.size, 64))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.render(o.addr, o.addr+o.size, 0)
}

// goLinkerTable names the Go linker's own tables among the data symbols:
// the module record and the tables it points to, the build information.
// They describe the build (every one differs when any code moves) and are
// not program state, like C's .got and .dynamic.
func goLinkerTable(name string) bool {
	switch name {
	case "runtime.firstmoduledata", "runtime.lastmoduledatap", "runtime.textsectionmap", "runtime.itablink",
		"runtime.typelink", "runtime.modinfo", "runtime.modinfo.str", "runtime.buildVersion", "runtime.buildVersion.str",
		"runtime.findfunctab", "runtime.pclntab", "runtime.runtime_inittasks", "runtime.gcdata", "runtime.gcbss", "runtime.pcheader", "go:buildinfo", "go:buildinfo.ref":
		return true
	}
	return false
}

// goChecks adds the Go refusals to a diff of two Go builds: another
// toolchain or other build settings, and a changed signature (a goroutine
// that grows its stack at a function's entry, or is preempted there,
// re-enters OLD's entry with OLD's arguments, whatever its callers are).
func (d *differ) goChecks() {
	if d.old.b.goBuild() == nil && d.new.b.goBuild() == nil {
		return
	}
	if err := CheckGoBuilds(d.old.b, d.new.b); err != nil {
		// Every function may differ: nothing else to say about them.
		d.reason(VerdictRefused, "go build", "", "%v", err)
		return
	}
	if d.old.b.goBuild() == nil || d.new.b.goBuild() == nil {
		return
	}
	// What the plan would refuse (a new type, itab, cache or global; a
	// changed signature), with NEW's own code standing for the build
	// that will be loaded.
	pl := newGoPlanner(&GoPlan{}, d.old.b, d.new.b)
	pl.twins = d.twins
	pl.lock()
	pl.indexOld()
	pl.funcs(d.r)
	for _, f := range pl.p.Funcs {
		pl.code(f)
	}
	pl.unlock()
	seen := map[string]bool{}
	for _, rs := range pl.p.Refusals {
		if strings.Contains(rs.Message, "cannot take a jump") || seen[rs.Symbol+rs.Message] {
			continue // already a reason of the diff
		}
		seen[rs.Symbol+rs.Message] = true
		d.reason(VerdictRefused, rs.Symbol, "", "%s", rs.Message)
	}
	if d.new.b.f.Type != elf.ET_DYN {
		d.r.Warnings = append(d.r.Warnings, "NEW is a default (non-PIE) Go build: to apply the patch, build NEW again with -buildmode=pie (graft loads that build's code next to the running program)")
	}
}

// valueSize is the size of the value whose address insts[i] takes (LEAQ
// of anonymous read-only data), from the type descriptor or itab the code
// takes the address of, or compares with, within a few instructions
// before it: an interface made of a constant (type, then data) or the
// comparison of an interface with one (itab, then ifaceeq's data). 0 if
// there is none.
func (g *goImage) valueSize(insts []goInst, i int) uint64 {
	if insts[i].in.Op != x86asm.LEA {
		return 0
	}
	for j := i - 1; j >= 0 && j >= i-12; j-- {
		in := &insts[j].in
		if in.RelSize == 0 {
			if goBranch(in.Op) {
				return 0
			}
			continue
		}
		if in.Op == x86asm.JMP || in.Op == x86asm.CALL {
			return 0
		}
		t := in.Target
		typ := uint64(0)
		if k, s := g.where(t); k == goType {
			typ = t
		} else if k == goROSym && strings.HasPrefix(s.name, "go:itab.") && t == s.addr {
			if p, _, ok := g.ptr(t + 8); ok && g.types.has(p) {
				typ = p
			}
		}
		if typ == 0 {
			continue // a conditional branch: this is its fall-through path
		}
		if g.typeIdent(typ, 0) == "" {
			return 0
		}
		size, ok := g.u64(typ)
		if !ok || size == 0 || size > 4096 {
			return 0
		}
		return size
	}
	return 0
}

// goClosureNum is the number the compiler gives a function literal, a go
// or a defer wrapper inside its function ("main.f.func2"), which shifts
// when another is added before it.
var goClosureNum = regexp.MustCompile(`\.(func|gowrap|deferwrap)\d+`)

// goFuncKey is the pairing key of a Go function: closures without their
// numbers, so that the functions of one parent pair by identical code
// first, then in order (a closure inserted before another is added, the
// other stays paired with its OLD self).
func goFuncKey(k string) string {
	return goClosureNum.ReplaceAllString(k, ".$1#")
}
