package elfpatch

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// goImage indexes what the Go linker lays out in a binary, so that an
// address can be named by what it denotes rather than by where it lies.
//
// The Go linker groups its read-only data: type descriptors (from the
// "type:*" marker; in a PIE in .data.rel.ro), string literals
// ("go:string.*", packed, no terminator), static funcvals ("go:funcdesc",
// "go:funcdescrel"), GC bitmaps ("runtime.gcbits.*"), then the named
// objects (itabs "go:itab.*", generic dictionaries "pkg..dict.F[T]",
// float constants "$f64.*", ...). Only the named objects have sized
// symbols. A default (non-PIE) build keeps no relocations, so a pointer in
// read-only data is a bare absolute address; a PIE has an
// R_X86_64_RELATIVE relocation for each.
//
// The identity of each kind of target:
//   - a function: its symbol name and the offset in it;
//   - a type descriptor: its abi.Type content (name, kind, size, pointer
//     bytes, hash, flags, alignment, GC mask, and for pointer, slice,
//     array, chan and map types their element's identity);
//   - a string literal: its bytes, over the length the code loads with it
//     or the header holding it gives;
//   - a funcval: the function it holds;
//   - a named read-only object: its name (dropped for compiler-numbered
//     ones, "..stmp_N") and its value with every pointer replaced by what
//     it denotes (transitively, a few levels deep);
//   - a type-assertion or interface-switch cache ("..typeAssert.N",
//     "..interfaceSwitch.N", numbered per package): its content;
//   - any other global: its name.
type goImage struct {
	// mu serialises users: Diff prepares both sides at once, and both
	// may be one Binary.
	mu  sync.Mutex
	b   *Binary
	pie bool
	// lo and hi bound the image's allocated sections.
	lo, hi uint64
	// typesBase is moduledata.types (runtime.types), the origin of the
	// nameOff and typeOff offsets inside type descriptors.
	typesBase uint64
	types     addrRange // type descriptors
	strs      addrRange // string literals
	funcdesc  []addrRange
	gcbits    addrRange
	// dataMask is the pointer mask of .data (from runtime.gcdata), one
	// bit per word from dataLo.
	dataLo   uint64
	dataMask []byte
	// idents caches typeIdent per address.
	idents map[uint64]string
	// values caches objValueHash per symbol.
	values map[*symbol]string
	// busy guards against cycles while rendering values.
	busy map[uint64]bool
	// scanStrings' results: the string lengths code loads, by the
	// address of the instruction taking the string's address, and every
	// known start and end of a string, sorted.
	scanned   bool
	codeLen   map[uint64]int64
	anonLen   map[uint64]uint64
	strBounds []uint64
	// anonBounds are the addresses of anonymous read-only data that code
	// refers to, sorted: one such object ends at the latest where the
	// next one starts.
	anonBounds []uint64
	// typeRefs are the code's references into the type descriptors,
	// in code order; oldIdx the identity index (goplan.go).
	typeRefs []uint64
	oldIdx   *goIndex
	// rwBounds are the addresses of unnamed writable data that code or
	// data refers to, sorted.
	rwBounds []uint64
}

// goNumbered matches the compiler's per-package numbered symbols, whose
// numbers shift when another one is added before them.
var goNumbered = regexp.MustCompile(`\.\.(stmp_|typeAssert\.|interfaceSwitch\.)\d+$`)

// goCache matches the writable caches of type assertions and interface
// switches, which the runtime fills in at run time.
var goCache = regexp.MustCompile(`\.\.(typeAssert|interfaceSwitch)\.\d+$`)

// goImage returns b's index, nil for a binary that is not Go.
func (b *Binary) goImage() *goImage {
	if b.goBuild() == nil {
		return nil
	}
	b.goImOnce.Do(func() { b.goIm = newGoImage(b) })
	return b.goIm
}

func newGoImage(b *Binary) *goImage {
	g := &goImage{b: b, pie: b.f.Type == elf.ET_DYN, idents: map[uint64]string{}, values: map[*symbol]string{}, busy: map[uint64]bool{}}
	g.lo = ^uint64(0)
	for _, s := range b.secs {
		g.lo = min(g.lo, s.Addr)
		g.hi = max(g.hi, s.Addr+s.Size)
	}
	// The group markers are unsized symbols, which readSymbols skips.
	syms, _ := b.f.Symbols()
	marks := map[string]uint64{}
	var addrs []uint64
	for _, s := range syms {
		if s.Size != 0 || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE {
			continue
		}
		switch s.Name {
		case "runtime.types", "type:*", "go:string.*", "go:funcdesc", "go:funcdescrel", "runtime.gcbits.*",
			"runtime.etypes", "runtime.erodata", "runtime.egcdata", "runtime.noptrdata", "runtime.data",
			"runtime.pclntab", "runtime.rodata", "typerel.*":
			marks[s.Name] = s.Value
			addrs = append(addrs, s.Value)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	// end is the next marker or sized symbol after a group's start.
	end := func(start uint64) uint64 {
		e := g.hi
		if i := sort.Search(len(addrs), func(i int) bool { return addrs[i] > start }); i < len(addrs) {
			e = addrs[i]
		}
		if i := sort.Search(len(b.syms), func(i int) bool { return b.syms[i].addr >= start }); i < len(b.syms) && b.syms[i].addr < e {
			e = b.syms[i].addr
		}
		if sec := b.section(start); sec != nil && sec.Addr+sec.Size < e {
			e = sec.Addr + sec.Size
		}
		return e
	}
	if a, ok := marks["runtime.types"]; ok {
		g.typesBase = a
	}
	if a, ok := marks["type:*"]; ok {
		g.types = addrRange{a, end(a)}
		if g.typesBase == 0 {
			g.typesBase = a
		}
	}
	if a, ok := marks["go:string.*"]; ok {
		g.strs = addrRange{a, end(a)}
	}
	if a, ok := marks["runtime.gcbits.*"]; ok {
		g.gcbits = addrRange{a, end(a)}
	}
	if lo, ok := marks["runtime.data"]; ok {
		for _, s := range b.syms {
			if s.name == "runtime.gcdata" {
				if sec := b.section(lo); sec != nil {
					g.dataLo = lo
					g.dataMask = gcProgMask(b.read(s.addr, s.size), (sec.Addr+sec.Size-lo+7)/8)
				}
			}
		}
	}
	for _, n := range []string{"go:funcdesc", "go:funcdescrel"} {
		if a, ok := marks[n]; ok {
			r := addrRange{a, end(a)}
			// An empty group shares its address with the next one (a
			// PIE's go:funcdesc, whose funcvals are in go:funcdescrel).
			if g.gcbits.lo >= a && g.gcbits.lo < r.hi {
				r.hi = g.gcbits.lo
			}
			if r.hi > r.lo {
				g.funcdesc = append(g.funcdesc, r)
			}
		}
	}
	return g
}

func (r addrRange) has(a uint64) bool { return a >= r.lo && a < r.hi }

// u64 reads a little-endian word of the file image, ok false outside it.
func (g *goImage) u64(addr uint64) (uint64, bool) {
	d := g.b.read(addr, 8)
	if d == nil {
		return 0, false
	}
	return binary.LittleEndian.Uint64(d), true
}

// ptr reads the pointer stored at addr: in a PIE the target of its
// RELATIVE relocation, in a default build the word itself when it lies
// inside the image. sym is set instead for a pointer bound to a dynamic
// symbol (cgo imports).
func (g *goImage) ptr(addr uint64) (target uint64, sym string, ok bool) {
	if r, found := g.b.relocs[addr]; found {
		if r.sym != "" {
			return 0, r.sym, true
		}
		if r.typ == elf.R_X86_64_RELATIVE {
			return uint64(r.addend), "", true
		}
	}
	// A default build has no relocations; a PIE leaves some pointers
	// without one too (itab slots of methods the linker found
	// unreachable hold runtime.unreachableMethod's link-time address).
	v, ok := g.u64(addr)
	if !ok || v < g.lo || v >= g.hi {
		return 0, "", false
	}
	if g.pie {
		if s := g.b.symbolAt(v); s != nil && s.fn && s.addr == v {
			return v, "", true
		}
		return 0, "", false
	}
	// Writable data says which words are pointers: .noptrdata none,
	// .data those of its GC mask.
	if sec := g.b.section(addr); sec != nil && sec.Flags&elf.SHF_WRITE != 0 {
		switch {
		case sec.Name == ".noptrdata":
			// No Go pointers, but code addresses held as uintptr
			// (a package's inittask lists its init functions).
			if s := g.b.symbolAt(v); s != nil && s.fn && s.addr == v {
				return v, "", true
			}
			return 0, "", false
		case g.dataMask != nil && addr >= g.dataLo && (addr-g.dataLo)/8 < uint64(len(g.dataMask))*8:
			i := (addr - g.dataLo) / 8
			if g.dataMask[i/8]&(1<<(i%8)) == 0 {
				// Pointers the collector need not see: an
				// interface's itab, type pointers past the declared
				// type (an interface switch's cases beyond the
				// first), code addresses.
				if g.types.has(v) {
					if _, id := g.typeAt(v); id != "" {
						return v, "", true
					}
				}
				if s := g.b.symbolAt(v); s != nil && (s.addr == v && (s.fn || strings.HasPrefix(s.name, "go:itab."))) {
					return v, "", true
				}
				return 0, "", false
			}
			return v, "", true
		}
	}
	if !g.plausible(v) {
		return 0, "", false
	}
	// Read-only data of a default build pointing at zero-initialised
	// globals is rare; integers of pointer-free tables (masks) that land
	// in the large .bss/.noptrbss are not.
	if sec := g.b.section(v); sec != nil && sec.Type == elf.SHT_NOBITS {
		return 0, "", false
	}
	return v, "", true
}

// gcProgMask runs a GC program (runtime.gcdata: the pointer words of
// the .data section) into a pointer mask of 1 bit per word: a byte
// 0x01..0x7f emits that many literal bits from the bytes that follow; a
// byte 0x80|n (n = 0: a varint follows) repeats the last n bits a
// varint count of times; 0 ends it. nil on a malformed program.
func gcProgMask(prog []byte, words uint64) []byte {
	mask := make([]byte, (words+7)/8)
	var n uint64 // bits emitted
	bit := func(i uint64) byte { return (mask[i/8] >> (i % 8)) & 1 }
	set := func(b byte) bool {
		if n >= words {
			return b == 0
		}
		mask[n/8] |= b << (n % 8)
		n++
		return true
	}
	for p := 0; p < len(prog); {
		x := prog[p]
		p++
		if x == 0 {
			return mask
		}
		if x&0x80 == 0 {
			c := uint64(x)
			for i := uint64(0); i < c; i++ {
				if p+int(i/8) >= len(prog) {
					return nil
				}
				if !set((prog[p+int(i/8)] >> (i % 8)) & 1) {
					return nil
				}
			}
			p += int((c + 7) / 8)
			continue
		}
		size := uint64(x & 0x7f)
		if size == 0 {
			v, w := binary.Uvarint(prog[p:])
			if w <= 0 {
				return nil
			}
			size, p = v, p+w
		}
		count, w := binary.Uvarint(prog[p:])
		if w <= 0 || size == 0 || size > n {
			return nil
		}
		p += w
		start := n - size
		for r := uint64(0); r < count; r++ {
			for i := uint64(0); i < size; i++ {
				if !set(bit(start + i)) {
					return nil
				}
			}
		}
	}
	return nil
}

// plausible says whether a word of a default build's data that lies in the
// image is taken for a pointer: it must reach a function's entry, a type,
// a string, a funcval, a GC mask, or into a sized object. Integers that
// happen to fall in the image's range (index tables) mostly do not.
func (g *goImage) plausible(v uint64) bool {
	if g.types.has(v) || g.strs.has(v) || g.gcbits.has(v) || g.inFuncdesc(v) {
		return true
	}
	s := g.b.symbolAt(v)
	return s != nil && (!s.fn || s.addr == v)
}

func (g *goImage) inFuncdesc(a uint64) bool {
	for _, r := range g.funcdesc {
		if r.has(a) {
			return true
		}
	}
	return false
}

// goKind says what an address denotes in a Go binary.
type goKind int

const (
	goOther    goKind = iota
	goFunc            // code: a function (by symbol)
	goType            // a type descriptor
	goString          // string literal bytes
	goFuncval         // a static funcval (go:funcdesc)
	goGCBits          // a GC bitmap of a type
	goROSym           // a named read-only object (itab, dictionary, constant, ...)
	goRWSym           // a named writable global
	goCacheSym        // a type-assertion / interface-switch cache (writable)
	goROAnon          // anonymous read-only data (a static string header, ...)
	goRWAnon          // anonymous writable data
)

func (k goKind) String() string {
	return [...]string{"other", "function", "type", "string", "funcval", "gcbits", "rodata", "global", "cache", "anonymous rodata", "anonymous data"}[k]
}

// where classifies addr and returns the sized symbol holding it, if any.
func (g *goImage) where(addr uint64) (goKind, *symbol) {
	b := g.b
	if s := b.symbolAt(addr); s != nil {
		switch {
		case s.fn:
			return goFunc, s
		case s.ro:
			return goROSym, s
		case goCache.MatchString(s.name):
			return goCacheSym, s
		case s.sect == ".data.rel.ro" || strings.HasPrefix(s.sect, ".data.rel.ro."):
			// RELRO: written once by the dynamic loader, read-only after.
			return goROSym, s
		default:
			return goRWSym, s
		}
	}
	switch {
	case g.types.has(addr):
		return goType, nil
	case g.strs.has(addr):
		return goString, nil
	case g.inFuncdesc(addr):
		return goFuncval, nil
	case g.gcbits.has(addr):
		return goGCBits, nil
	}
	sec := b.section(addr)
	if sec == nil {
		return goOther, nil
	}
	switch {
	case sec.Flags&elf.SHF_EXECINSTR != 0:
		return goFunc, nil
	case sec.Flags&elf.SHF_WRITE == 0 || strings.HasPrefix(sec.Name, ".data.rel.ro"):
		return goROAnon, nil
	}
	return goRWAnon, nil
}

// name reads a runtime name (abi.Name): a flags byte, a varint length,
// the bytes.
func (g *goImage) name(addr uint64) string {
	hdr := g.b.read(addr, 1)
	if hdr == nil {
		return ""
	}
	lenb := g.b.read(addr+1, 10)
	if lenb == nil {
		lenb = g.b.read(addr+1, 2)
		if lenb == nil {
			return ""
		}
	}
	n, w := binary.Uvarint(lenb)
	if w <= 0 || n > 1<<16 {
		return ""
	}
	s := g.b.read(addr+1+uint64(w), n)
	return string(s)
}

// Go's abi.Kind values used below.
const (
	goKindArray = 17
	goKindChan  = 18
	goKindMap   = 21
	goKindPtr   = 22
	goKindSlice = 23
)

// typeIdent is a type descriptor's identity (see goImage), "" when addr
// does not hold a plausible descriptor. Only top-level results are cached,
// so that an identity never depends on the order of the lookups.
func (g *goImage) typeIdent(addr uint64, depth int) string {
	if id, ok := g.idents[addr]; ok && depth == 0 {
		return id
	}
	d := g.b.read(addr, 48)
	if d == nil {
		return ""
	}
	size := binary.LittleEndian.Uint64(d[0:])
	ptrBytes := binary.LittleEndian.Uint64(d[8:])
	hash := binary.LittleEndian.Uint32(d[16:])
	tflag, align, falign, kind := d[20], d[21], d[22], d[23]&0x1f
	str := int32(binary.LittleEndian.Uint32(d[40:]))
	if kind == 0 || kind > 26 || str < 0 {
		return ""
	}
	name := g.name(g.typesBase + uint64(str))
	if name == "" {
		return ""
	}
	if tflag&2 != 0 && name[0] == '*' { // TFlagExtraStar
		name = name[1:]
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s|k%d|s%d|p%d|h%08x|f%x|a%d.%d", name, kind, size, ptrBytes, hash, tflag, align, falign)
	// The GC mask says which words hold pointers.
	if gc, _, ok := g.ptr(addr + 32); ok && ptrBytes > 0 && ptrBytes <= 1<<16 && g.gcbits.has(gc) {
		if m := g.b.read(gc, (ptrBytes/8+7)/8); m != nil {
			sb.WriteString("|g" + hex.EncodeToString(m))
		}
	}
	if depth < 3 && !g.busy[addr] {
		var elems []uint64
		switch kind {
		case goKindPtr, goKindSlice, goKindArray, goKindChan:
			elems = []uint64{addr + 48}
		case goKindMap:
			elems = []uint64{addr + 48, addr + 56}
		}
		g.busy[addr] = true
		for _, e := range elems {
			if t, _, ok := g.ptr(e); ok && g.types.has(t) {
				sb.WriteString("|e(" + g.typeIdent(t, depth+1) + ")")
			}
		}
		delete(g.busy, addr)
	}
	id := sb.String()
	if depth == 0 {
		g.idents[addr] = id
	}
	return id
}

// typeAt finds the type descriptor whose header holds addr: code reads
// a descriptor's fields (its flags byte, say) at an offset. The start is
// the closest 8-aligned address at most 48 bytes before that reads as a
// descriptor.
func (g *goImage) typeAt(addr uint64) (start uint64, id string) {
	for a := addr &^ 7; a+48 > addr && a >= g.types.lo; a -= 8 {
		if id := g.typeIdent(a, 0); id != "" {
			return a, id
		}
	}
	return 0, ""
}

// strBoundary ends a string whose length nothing states: at the next
// place where a string is known to start or end (scanStrings), the end of
// the string group, or after 4096 bytes. The Go linker packs whole
// literals, deduplicated but never merged into each other's tails, so a
// boundary inside a literal means something takes a substring of it;
// past its real end the extent only makes a neighbour's change count too.
func (g *goImage) strBoundary(addr uint64) uint64 {
	g.scanStrings()
	end := min(g.strs.hi, addr+4096)
	if i := sort.Search(len(g.strBounds), func(i int) bool { return g.strBounds[i] > addr }); i < len(g.strBounds) {
		end = min(end, g.strBounds[i])
	}
	return end
}

// str renders n bytes at addr (n < 0: unknown, up to strBoundary).
func (g *goImage) str(addr uint64, n int64) string {
	end := g.strBoundary(addr)
	if n >= 0 {
		end = addr + uint64(n)
	}
	if end < addr || end-addr > 1<<20 {
		return "str?"
	}
	d := g.b.read(addr, end-addr)
	if d == nil {
		return "str?"
	}
	if n < 0 {
		return "str~" + strconv.Quote(string(d))
	}
	return "str:" + strconv.Quote(string(d))
}

// denote names what the pointer target addr denotes, independent of where
// the linker put it. lenHint is the length of a string the pointer is
// known to start (from a header or the code), -1 if unknown.
func (g *goImage) denote(addr uint64, lenHint int64, depth int) string {
	kind, s := g.where(addr)
	switch kind {
	case goFunc:
		if s == nil {
			return "text?" + g.near(addr)
		}
		return "fn:" + s.key() + "+" + strconv.FormatUint(addr-s.addr, 10)
	case goType:
		if start, id := g.typeAt(addr); id != "" {
			return "type:" + id + "+" + strconv.FormatUint(addr-start, 10)
		}
		return "typearea?" + g.near(addr)
	case goString:
		return g.str(addr, lenHint)
	case goFuncval:
		if p, sym, ok := g.ptr(addr); ok && depth < 8 {
			if sym != "" {
				return "fv:dyn:" + sym
			}
			return "fv:" + g.denote(p, -1, depth+1)
		}
		return "fv?"
	case goGCBits:
		// Pointer-free tables the linker put among the GC masks.
		return "bits:" + hex.EncodeToString(g.b.read(addr, g.anonEnd(addr)-addr))
	case goROSym:
		return "ro:" + g.roKey(s) + "+" + strconv.FormatUint(addr-s.addr, 10) + "#" + g.symValue(s, depth)
	case goCacheSym:
		return "cache:" + g.symValue(s, depth) + "+" + strconv.FormatUint(addr-s.addr, 10)
	case goRWSym:
		return "data:" + s.key() + "+" + strconv.FormatUint(addr-s.addr, 10)
	case goROAnon:
		return "anon:" + g.anonValue(addr, depth)
	case goRWAnon:
		// Unnamed initialised data (the backing array of a package's
		// slice literal) by its initial bytes up to the next object;
		// unnamed zeroed data by its place.
		sec := g.b.section(addr)
		if sec == nil || sec.Type == elf.SHT_NOBITS {
			return "rw:" + g.near(addr)
		}
		g.scanStrings()
		end := min(sec.Addr+sec.Size, addr+256)
		if i := sort.Search(len(g.b.syms), func(i int) bool { return g.b.syms[i].addr > addr }); i < len(g.b.syms) {
			end = min(end, g.b.syms[i].addr)
		}
		if i := sort.Search(len(g.rwBounds), func(i int) bool { return g.rwBounds[i] > addr }); i < len(g.rwBounds) {
			end = min(end, g.rwBounds[i])
		}
		if depth > 3 || g.busy[addr] {
			return "rw:" + sec.Name + ":@"
		}
		g.busy[addr] = true
		v := g.render(addr, end, depth)
		delete(g.busy, addr)
		sum := sha256.Sum256(v)
		return "rw:" + sec.Name + ":" + hex.EncodeToString(sum[:8])
	}
	return "abs?" + strconv.FormatUint(addr, 16)
}

// roKey names a read-only object; compiler-numbered ones by content only.
func (g *goImage) roKey(s *symbol) string {
	if goNumbered.MatchString(s.name) {
		return ""
	}
	return s.key()
}

// near names an address without a symbol of its own by the section, the
// closest symbol before it in that section and the distance: stable while
// the objects before it keep their sizes.
func (g *goImage) near(addr uint64) string {
	sec := g.b.section(addr)
	if sec == nil {
		return "?"
	}
	i := sort.Search(len(g.b.syms), func(i int) bool { return g.b.syms[i].addr > addr }) - 1
	if i >= 0 && g.b.syms[i].addr >= sec.Addr {
		s := g.b.syms[i]
		return sec.Name + ":" + s.key() + "+" + strconv.FormatUint(addr-s.addr, 10)
	}
	return sec.Name + "+" + strconv.FormatUint(addr-sec.Addr, 10)
}

// symValue renders a named object's initial value with its pointers
// denoted, hashed.
func (g *goImage) symValue(s *symbol, depth int) string {
	if h, ok := g.values[s]; ok && depth == 0 {
		return h
	}
	if depth > 3 || g.busy[s.addr] {
		return "@" + g.roKey(s)
	}
	g.busy[s.addr] = true
	v := g.render(s.addr, s.addr+s.size, depth)
	delete(g.busy, s.addr)
	sum := sha256.Sum256(v)
	h := hex.EncodeToString(sum[:8])
	if depth == 0 {
		g.values[s] = h
	}
	return h
}

// anonValue renders anonymous read-only data from addr to the next symbol
// or group (at most 512 bytes), hashed.
func (g *goImage) anonValue(addr uint64, depth int) string {
	if depth > 3 || g.busy[addr] {
		return "@anon"
	}
	g.busy[addr] = true
	v := g.render(addr, g.anonEnd(addr), depth)
	delete(g.busy, addr)
	sum := sha256.Sum256(v)
	return hex.EncodeToString(sum[:8])
}

// render is the bytes of [lo, hi) with every pointer replaced by what it
// denotes; a pointer to a string followed by a plausible length is a
// string header and renders as the string.
func (g *goImage) render(lo, hi uint64, depth int) []byte {
	d := g.b.read(lo, hi-lo)
	if d == nil {
		return []byte("unreadable")
	}
	var out bytes.Buffer
	for i := uint64(0); i < uint64(len(d)); {
		a := lo + i
		if a%8 == 0 && i+8 <= uint64(len(d)) {
			if p, sym, ok := g.ptr(a); ok {
				out.WriteByte(0xff)
				switch {
				case sym != "":
					out.WriteString("dyn:" + sym)
				case g.strs.has(p):
					n := int64(-1)
					if i+16 <= uint64(len(d)) {
						if _, _, isPtr := g.ptr(a + 8); !isPtr {
							l := binary.LittleEndian.Uint64(d[i+8:])
							if l < 1<<20 && p+l <= g.strs.hi {
								n = int64(l)
							}
						}
					}
					out.WriteString(g.str(p, n))
				default:
					out.WriteString(g.denote(p, -1, depth+1))
				}
				out.WriteByte(0)
				i += 8
				continue
			}
		}
		out.WriteByte(d[i])
		i++
	}
	return out.Bytes()
}
