package elfpatch

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"strconv"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// unit is one function as the diff sees it: its entry symbol plus the
// out-of-line parts GCC split from it (foo.cold), which are entered only
// from foo and so are compared, and replaced, together with it.
type unit struct {
	sym   *symbol
	parts []*symbol
	key   string

	hash [32]byte
	// norm is the normal form until finish hashes it; anons are the
	// literals still to be inserted into it.
	norm  []byte
	anons []anonRef
	// refs are the symbols the code refers to, as normalised tokens
	// ("fn:key", "data:key", "ro:key", "got:name", "plt:name").
	refs []string
	// targets are the branch targets inside the unit's entry bytes' reach:
	// every intra-unit jump and jump-table target, as absolute vaddrs.
	targets []branch
	// badEntry is set when the first instructions did not decode.
	badEntry bool
	// undecoded is the first address in the unit that did not decode
	// (0 if all did): branch targets past it are unknown.
	undecoded uint64
	// endbr is true when the function starts with endbr64.
	endbr bool
	// bounds are the instruction starts in the first 64 bytes, as
	// offsets from the entry.
	bounds []uint64
	// doubt is the address of read-only data the unit refers to whose
	// extent is unknown (0 if none): the unit compares as changed.
	doubt uint64
}

// branch is a control transfer from one address to another.
type branch struct{ from, to uint64 }

// endbr64 is the CET landing pad a trampoline must keep intact.
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// normaliser turns the machine code of one binary into a form that is equal
// for two builds exactly when the code does the same thing: every
// PC-relative field is masked and replaced by what it refers to.
type normaliser struct {
	b      *Binary
	roHash map[*symbol]string
	pltSym map[uint64]string
	pc     uint64 // address of the instruction being normalised
	// dataKey names a data symbol (function-local statics qualified by
	// their function, which the symbol table does not say).
	dataKey func(*symbol) string
	// anon is set by ref to the address of a literal whose contents
	// finish inserts after the token.
	anon uint64
	// anonSeen are the anonymous read-only addresses code refers to in
	// any way: where objects begin (objectStarts).
	anonSeen []uint64
	// labels are the function symbols without a size (codeLabels).
	labels map[uint64]string
	// goRef names references of Go code (godiff.go), nil for C.
	goRef func(u *unit, pc uint64, inst *x86asm.Inst, target uint64) string
}

func newNormaliser(b *Binary) *normaliser {
	return &normaliser{b: b, roHash: map[*symbol]string{}, pltSym: map[uint64]string{}, dataKey: (*symbol).key, labels: codeLabels(b)}
}

// normalise decodes u into its normalised form. The hash is computed by
// finish, once every unit is decoded, because the extent of an anonymous
// literal depends on what other code refers to.
func (n *normaliser) normalise(u *unit) {
	var buf bytes.Buffer
	n.body(u, u.sym, &buf, true)
	for _, p := range u.parts {
		buf.WriteString("\x00part:" + p.ck + "\x00")
		n.body(u, p, &buf, false)
	}
	u.norm = buf.Bytes()
	sort.Strings(u.refs)
	u.refs = dedup(u.refs)
}

// anonRef is an address of anonymous read-only data taken by code (a lea
// of a string literal); its contents go at pos of the unit's normal form.
type anonRef struct {
	pos  int
	addr uint64
}

// finish fills in the anonymous literals and hashes every unit. In a C
// program a literal is the whole object at its address (cObject); one
// whose extent is unknown makes its function differ from every other
// build. In a Go program a literal's extent is up to its NUL, the next
// address any code refers to, or the next symbol, whichever comes first:
// Go's unterminated strings end where the next one that code uses starts.
func (n *normaliser) finish(units []*unit) {
	var addrs []uint64
	for _, u := range units {
		for _, a := range u.anons {
			addrs = append(addrs, a.addr)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	goBin := n.b.isGoBinary()
	var starts []uint64
	if !goBin {
		starts = n.objectStarts()
	}
	var out []byte
	for _, u := range units {
		if len(u.anons) == 0 {
			u.hash = sha256.Sum256(u.norm)
			u.norm = nil
			continue
		}
		out = out[:0]
		last := 0
		for _, a := range u.anons {
			out = append(out, u.norm[last:a.pos]...)
			if goBin {
				out = append(out, n.literal(a.addr, addrs)...)
			} else if obj, known := n.cObject(a.addr, starts); known {
				// Length first: the object may hold NULs.
				out = strconv.AppendInt(out, int64(len(obj)), 10)
				out = append(out, ':')
				out = append(out, obj...)
			} else {
				// When in doubt the function is in the patch: no
				// other build produces this token.
				out = append(out, "\x00unknown-extent:"+n.b.buildID+":"+n.b.path...)
				u.doubt = a.addr
			}
			last = a.pos
		}
		out = append(out, u.norm[last:]...)
		u.hash = sha256.Sum256(out)
		u.norm = nil
	}
}

func (n *normaliser) literal(addr uint64, addrs []uint64) []byte {
	sec := n.b.section(addr)
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil
	}
	d, err := n.b.sectionData(sec)
	if err != nil || addr-sec.Addr >= uint64(len(d)) {
		return nil
	}
	end := min(sec.Addr+uint64(len(d)), addr+4096)
	if i := sort.Search(len(addrs), func(i int) bool { return addrs[i] > addr }); i < len(addrs) && addrs[i] < end {
		end = addrs[i]
	}
	i := sort.Search(len(n.b.syms), func(i int) bool { return n.b.syms[i].addr > addr })
	if i < len(n.b.syms) && n.b.syms[i].addr < end {
		end = n.b.syms[i].addr
	}
	lit := d[addr-sec.Addr : end-sec.Addr]
	if z := bytes.IndexByte(lit, 0); z >= 0 {
		lit = lit[:z]
	}
	return lit
}

func dedup(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// inUnit reports whether addr lies in the unit's entry symbol or a part.
func (u *unit) inUnit(addr uint64) bool {
	if addr >= u.sym.addr && addr < u.sym.addr+u.sym.size {
		return true
	}
	for _, p := range u.parts {
		if addr >= p.addr && addr < p.addr+p.size {
			return true
		}
	}
	return false
}

func (n *normaliser) body(u *unit, s *symbol, buf *bytes.Buffer, entry bool) {
	code := n.b.read(s.addr, s.size)
	if code == nil {
		buf.WriteString("\x00unreadable\x00")
		return
	}
	var masked [16]byte
	for off := 0; off < len(code); {
		pc := s.addr + uint64(off)
		in, err := x86dec.Decode(code[off:], pc)
		if err != nil {
			if entry && off < 16 {
				u.badEntry = true
			}
			if u.undecoded == 0 {
				u.undecoded = s.addr + uint64(off)
			}
			// Not decodable (newer extension, data in text): compare the
			// raw byte; at worst a spurious change, never a missed one.
			buf.WriteByte(code[off])
			off++
			continue
		}
		inst := &in.Inst
		raw := code[off : off+inst.Len]
		if entry && off < 64 {
			u.bounds = append(u.bounds, uint64(off))
			if off == 0 && bytes.HasPrefix(raw, endbr64) {
				u.endbr = true
			}
		}
		if in.RelSize == 0 {
			buf.Write(raw)
			off += inst.Len
			continue
		}
		copy(masked[:], raw)
		clear(masked[in.RelOff : in.RelOff+in.RelSize])
		buf.Write(masked[:inst.Len])
		buf.WriteByte(0xff)
		n.pc = pc
		n.anon = 0
		buf.WriteString(n.ref(u, inst, in.Target))
		if n.anon != 0 {
			u.anons = append(u.anons, anonRef{pos: buf.Len(), addr: n.anon})
		}
		buf.WriteByte(0)
		off += inst.Len
	}
}

// ref names what target refers to, independent of where the linker put it.
func (n *normaliser) ref(u *unit, inst *x86asm.Inst, target uint64) string {
	b := n.b
	if u.inUnit(target) {
		u.targets = append(u.targets, branch{n.pc, target})
		// Offsets are relative to the symbol holding the target so the
		// entry and its cold part may move independently.
		s := b.symbolAt(target)
		if s == nil {
			s = u.sym
		}
		if n.goRef != nil {
			// Go has no split parts; a closure's own name carries a
			// number that shifts (godiff.go, goFuncKey).
			return "@" + goFuncKey(s.ck) + "+" + strconv.FormatUint(target-s.addr, 10)
		}
		return "@" + s.ck + "+" + strconv.FormatUint(target-s.addr, 10)
	}
	if b.inPLT(target) {
		return "plt:" + n.pltName(target)
	}
	if n.goRef != nil {
		return n.goRef(u, n.pc, inst, target)
	}
	if s := b.symbolAt(target); s != nil {
		off := "+" + strconv.FormatUint(target-s.addr, 10)
		switch {
		case s.fn:
			t := "fn:" + s.key()
			u.refs = append(u.refs, t)
			return t + off
		case s.ro:
			// By name without its file and by value: constant data
			// holds no state, and the file of a static is what strip
			// -g removes (__func__.N in every function).
			t := "ro:" + s.ck
			u.refs = append(u.refs, t)
			return t + off + "#" + n.roContent(s)
		default:
			t := "data:" + n.dataKey(s)
			u.refs = append(u.refs, t)
			return t + off
		}
	}
	if r, ok := b.relocs[target]; ok {
		if r.sym != "" {
			t := "got:" + r.sym
			u.refs = append(u.refs, t)
			return t + "+" + strconv.FormatInt(r.addend, 10)
		}
		if r.typ == elf.R_X86_64_RELATIVE {
			if s := b.symbolAt(uint64(r.addend)); s != nil {
				t := "gotrel:" + s.key()
				u.refs = append(u.refs, t)
				return t + "+" + strconv.FormatUint(uint64(r.addend)-s.addr, 10)
			}
		}
	}
	if name, ok := n.labels[target]; ok {
		t := "label:" + name
		u.refs = append(u.refs, t)
		return t
	}
	sec := b.section(target)
	if sec == nil {
		return "abs?"
	}
	if sec.Flags&(elf.SHF_WRITE|elf.SHF_EXECINSTR) == 0 {
		return "anon:" + n.anonContent(u, inst, sec, target)
	}
	// Anonymous writable data or code without a symbol: the best stable
	// name is the position inside its section.
	return "sec:" + sec.Name + "+" + strconv.FormatUint(target-sec.Addr, 10)
}

// anonContent describes anonymous read-only data by its bytes: a jump table
// by the offsets it leads to, a load by the bytes it loads, an address
// (lea, usually a string literal) by the NUL-terminated bytes there.
func (n *normaliser) anonContent(u *unit, inst *x86asm.Inst, sec *elf.Section, target uint64) string {
	d, err := n.b.sectionData(sec)
	if err != nil || sec.Type == elf.SHT_NOBITS {
		return "?"
	}
	off := target - sec.Addr
	if off >= uint64(len(d)) {
		return "?"
	}
	d = d[off:]
	n.anonSeen = append(n.anonSeen, target)
	if inst.Op == x86asm.LEA {
		if jt, ok := n.jumpTable(u, d, target); ok {
			return jt
		}
		// The literal's bytes follow the token (finish); the NUL after
		// them ends the token.
		n.anon = target
		return "str:"

	}
	size := inst.MemBytes
	if size <= 0 || size > 64 {
		size = 8
	}
	size = min(size, len(d))
	return "lit:" + hex.EncodeToString(d[:size])
}

// jumpTable recognises GCC's PIC switch tables: int32 entries relative to
// the table's own address, each leading back into the function. The table
// is described by the offsets of its targets, and the targets count as
// branch targets for the patchability check.
func (n *normaliser) jumpTable(u *unit, d []byte, base uint64) (string, bool) {
	var sb bytes.Buffer
	count := 0
	for i := 0; i+4 <= len(d) && count < 4096; i += 4 {
		t := base + uint64(int64(int32(binary.LittleEndian.Uint32(d[i:]))))
		if !u.inUnit(t) {
			break
		}
		u.targets = append(u.targets, branch{n.pc, t})
		s := n.b.symbolAt(t)
		if s == nil {
			s = u.sym
		}
		sb.WriteString(s.ck + "+" + strconv.FormatUint(t-s.addr, 10) + ",")
		count++
	}
	if count == 0 {
		return "", false
	}
	return "jt:" + sb.String(), true
}

func (n *normaliser) roContent(s *symbol) string {
	if h, ok := n.roHash[s]; ok {
		return h
	}
	h := "?"
	if d := n.b.read(s.addr, s.size); d != nil {
		sum := sha256.Sum256(n.b.objectValue(s, d))
		h = hex.EncodeToString(sum[:8])
	}
	n.roHash[s] = h
	return h
}

// pltName names a PLT stub by the symbol its GOT slot is bound to.
func (n *normaliser) pltName(addr uint64) string {
	if name, ok := n.pltSym[addr]; ok {
		return name
	}
	name := "?"
	code := n.b.read(addr, 16)
	for off := 0; code != nil && off < len(code); {
		in, err := x86dec.Decode(code[off:], addr+uint64(off))
		if err != nil {
			break
		}
		off += in.Len
		if in.Op != x86asm.JMP {
			continue
		}
		if m, ok := in.Args[0].(x86asm.Mem); ok && m.Base == x86asm.RIP {
			if r, ok := n.b.relocs[in.Target]; ok && r.sym != "" {
				name = r.sym
			}
		}
		break
	}
	n.pltSym[addr] = name
	return name
}

// objectValue is a data object's initial value with every relocated
// pointer replaced by the name of what it points to, so that a table of
// pointers compares equal when only the addresses moved.
func (b *Binary) objectValue(s *symbol, d []byte) []byte {
	i := sort.Search(len(b.relocOffs), func(i int) bool { return b.relocOffs[i] >= s.addr })
	if i == len(b.relocOffs) || b.relocOffs[i] >= s.addr+uint64(len(d)) {
		return d // no pointers inside: the bytes are the value
	}
	var out []byte
	for i := 0; i < len(d); {
		if r, ok := b.relocs[s.addr+uint64(i)]; ok && i+8 <= len(d) {
			out = append(out, 0xff)
			switch {
			case r.sym != "":
				out = append(out, "sym:"+r.sym+"+"+strconv.FormatInt(r.addend, 10)...)
			case r.typ == elf.R_X86_64_RELATIVE:
				if t := b.symbolAt(uint64(r.addend)); t != nil {
					out = append(out, "sym:"+t.key()+"+"+strconv.FormatUint(uint64(r.addend)-t.addr, 10)...)
				} else if sec := b.section(uint64(r.addend)); sec != nil && sec.Type != elf.SHT_NOBITS {
					// An anonymous literal (a string in a table of
					// messages): its bytes.
					sd, _ := b.sectionData(sec)
					o := uint64(r.addend) - sec.Addr
					if o < uint64(len(sd)) {
						e := bytes.IndexByte(sd[o:], 0)
						if e < 0 || e > 4096 {
							e = min(64, len(sd)-int(o))
						}
						out = append(out, "str:"+string(sd[o:o+uint64(e)])...)
					}
				}
			}
			out = append(out, 0)
			i += 8
			continue
		}
		out = append(out, d[i])
		i++
	}
	return out
}

// padding counts the nop and int3 bytes between the end of s and the next
// symbol or the end of its section (at most 16: alignment never needs
// more), which no code reaches: a jump may spill into them.
func (b *Binary) padding(s *symbol) uint64 {
	end := s.addr + s.size
	limit := end + 16
	i := sort.Search(len(b.syms), func(i int) bool { return b.syms[i].addr >= end })
	if i < len(b.syms) && b.syms[i].addr < limit {
		limit = b.syms[i].addr
	}
	if sec := b.section(s.addr); sec != nil && sec.Addr+sec.Size < limit {
		limit = sec.Addr + sec.Size
	}
	if limit <= end {
		return 0
	}
	code := b.read(end, limit-end)
	// Plain x86asm on purpose: an endbr64 (a landing pad, which
	// x86dec.Decode reads as a NOP) is never padding.
	pad := 0
	for pad < len(code) {
		inst, err := x86asm.Decode(code[pad:], 64)
		if err != nil || (inst.Op != x86asm.NOP && code[pad] != 0xcc) {
			break
		}
		pad += inst.Len
	}
	return uint64(pad)
}
