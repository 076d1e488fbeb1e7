package elfpatch

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"graft/internal/elfx"
)

// Binary is one build of a program opened for diffing: its ELF file, its
// symbols (with the source file each static symbol belongs to) and, when
// present, an index of its DWARF. It holds the whole file in memory and no
// file descriptor, so it needs no Close.
type Binary struct {
	path    string
	f       *elf.File
	buildID string

	// syms are the sized function and data symbols, sorted by address,
	// deduplicated by address (an alias keeps the global name).
	syms []*symbol
	// imports maps a GOT slot or other relocated 8-byte field to the symbol
	// it is bound to at load time (JUMP_SLOT, GLOB_DAT, R_X86_64_64).
	relocs    map[uint64]dynReloc
	relocOffs []uint64 // keys of relocs, sorted
	// plt is the address range of the PLT sections, whose stubs are named
	// by the GOT slot they jump through.
	plt []addrRange

	secs    []*elf.Section // allocated sections, by address
	secData map[*elf.Section][]byte

	dw     *dwarf.Data
	dwErr  error
	dwIdx  *dwarfIndex
	dwOnce sync.Once

	// Location lists and CFI for FrameVarsAt (framevars.go).
	fvOnce sync.Once
	fv     *frameData

	// Go binaries (gobuild.go, goident.go): build info and the index of
	// the Go linker's data, made on first use.
	goOnce   sync.Once
	goInfo   *GoBuild
	goImOnce sync.Once
	goIm     *goImage
}

type addrRange struct{ lo, hi uint64 }

type symbol struct {
	name  string
	file  string // STT_FILE in effect for a local symbol; "" for globals
	addr  uint64
	size  uint64
	fn    bool // STT_FUNC / IFUNC in an executable section
	local bool
	ro    bool // in a non-writable, non-executable section (const data)
	tls   bool
	bss   bool // SHT_NOBITS: zero-initialised
	sect  string
	// ck and k are cloneKey(name) and key(), computed once at Open: the
	// normaliser needs them for every reference.
	ck, k string
}

// key names a symbol the same way in both builds: statics are qualified by
// their source file, compiler clone numbers are dropped (cloneKey).
func (s *symbol) key() string { return s.k }

func (s *symbol) setKeys() {
	s.ck = cloneKey(s.name)
	s.k = s.ck
	if s.local {
		s.k = s.file + ":" + s.ck
	}
}

type dynReloc struct {
	typ    elf.R_X86_64
	sym    string
	addend int64
}

// Open reads the x86-64 ELF file at path with its symbol table and, if
// present, its DWARF. It fails with a clear error for a file that is not
// ELF, not x86-64 or has no symbol table (stripped).
func Open(path string) (*Binary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("open binary: %w", err)
	}
	b, err := openBytes(data)
	if err != nil {
		return nil, fmt.Errorf("open binary %s: %w", path, err)
	}
	b.path = path
	return b, nil
}

// recoverPanics is cleared by the fuzz tests, so that a panic in this
// package's own code shows up as a crash instead of as an error.
var recoverPanics = true

// ErrNoSymbols is returned (wrapped) by Open for a stripped binary.
var ErrNoSymbols = errors.New("no symbol table (stripped binary?)")

func openBytes(data []byte) (b *Binary, err error) {
	defer func() {
		// debug/elf and debug/dwarf can panic on hostile input; turn that
		// into an error rather than crash the tool.
		if !recoverPanics {
			return
		}
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("malformed ELF: %v", r)
		}
	}()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not an ELF file: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("unsupported ELF %v %v: only x86-64 is supported", f.Class, f.Machine)
	}
	b = &Binary{f: f, relocs: map[uint64]dynReloc{}}
	b.buildID = elfx.BuildID(f)
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Addr == 0 {
			continue
		}
		b.secs = append(b.secs, s)
		switch s.Name {
		case ".plt", ".plt.sec", ".plt.got":
			b.plt = append(b.plt, addrRange{s.Addr, s.Addr + s.Size})
		}
	}
	sort.SliceStable(b.secs, func(i, j int) bool { return b.secs[i].Addr < b.secs[j].Addr })
	// Read every section's contents now: Diff prepares both sides
	// concurrently, possibly on one Binary, so the cache is never
	// written after Open.
	b.secData = map[*elf.Section][]byte{}
	for _, s := range b.secs {
		if s.Type == elf.SHT_NOBITS {
			continue
		}
		if d, err := s.Data(); err == nil {
			b.secData[s] = d
		}
	}
	if err := b.readSymbols(); err != nil {
		return nil, err
	}
	b.readRelocs()
	b.dw, b.dwErr = f.DWARF()
	if f.Section(".debug_info") == nil { // stripped: its separate debug file?
		if d, _ := separateDWARF(b.buildID); d != nil {
			b.dw, b.dwErr = d, nil
		}
	}
	return b, nil
}

// fileSymbol is a .symtab entry with the source file a local symbol
// belongs to ("" for a global).
type fileSymbol struct {
	elf.Symbol
	file string
}

// symbolsByFile reads f's .symtab, leaving out the STT_FILE entries and
// giving each local symbol the name of the STT_FILE entry it follows: in
// the ELF gABI order that gcc and ld keep, a unit's locals follow its
// STT_FILE and the globals follow all locals, belonging to no file. The
// diff (readSymbols) and the planner (newSymtab) both tell statics apart
// this way.
func symbolsByFile(f *elf.File) ([]fileSymbol, error) {
	syms, err := elfx.UnitSymbols(f)
	if err != nil {
		return nil, err
	}
	out := make([]fileSymbol, len(syms))
	for i, s := range syms {
		out[i] = fileSymbol{s.Symbol, s.File}
	}
	return out, nil
}

func (b *Binary) readSymbols() error {
	syms, err := symbolsByFile(b.f)
	if err != nil {
		if errors.Is(err, elf.ErrNoSymbols) {
			return ErrNoSymbols
		}
		return fmt.Errorf("read symbols: %w", err)
	}
	byAddr := map[uint64]*symbol{}
	for _, s := range syms {
		typ := elf.ST_TYPE(s.Info)
		bind := elf.ST_BIND(s.Info)
		if s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE || int(s.Section) >= len(b.f.Sections) {
			continue
		}
		if s.Size == 0 || s.Name == "" {
			continue
		}
		sec := b.f.Sections[s.Section]
		sym := &symbol{
			name:  s.Name,
			addr:  s.Value,
			size:  s.Size,
			local: bind == elf.STB_LOCAL,
			sect:  sec.Name,
			bss:   sec.Type == elf.SHT_NOBITS,
		}
		if sym.local {
			sym.file = s.file
		}
		sym.setKeys()
		switch typ {
		case elf.STT_FUNC, elf.STT_GNU_IFUNC:
			if sec.Flags&elf.SHF_EXECINSTR == 0 {
				continue
			}
			sym.fn = true
		case elf.STT_OBJECT:
			sym.ro = sec.Flags&(elf.SHF_WRITE|elf.SHF_EXECINSTR) == 0
		case elf.STT_TLS:
			sym.tls = true
		default:
			continue
		}
		if prev, ok := byAddr[sym.addr]; ok && !sym.tls {
			// An alias: keep one symbol per address, preferring the
			// global name, which is what callers in other files use.
			if prev.local && !sym.local {
				*prev = *sym
			}
			continue
		}
		if !sym.tls {
			byAddr[sym.addr] = sym
		}
		b.syms = append(b.syms, sym)
	}
	sort.SliceStable(b.syms, func(i, j int) bool { return b.syms[i].addr < b.syms[j].addr })
	return nil
}

// readRelocs indexes the dynamic relocations so a GOT slot or a pointer in
// .data can be named by what it will point to rather than by its bytes.
func (b *Binary) readRelocs() {
	dsyms, _ := b.f.DynamicSymbols()
	// A relocation section that cannot be read only leaves its fields
	// unnamed: they compare by their bytes.
	relocs, _ := dynRelocs(b.f)
	for _, r := range relocs {
		dr := dynReloc{typ: r.typ, addend: r.addend}
		if r.sym > 0 && int(r.sym-1) < len(dsyms) {
			dr.sym = dsyms[r.sym-1].Name
		}
		b.relocs[r.off] = dr
	}
	for off := range b.relocs {
		b.relocOffs = append(b.relocOffs, off)
	}
	sort.Slice(b.relocOffs, func(i, j int) bool { return b.relocOffs[i] < b.relocOffs[j] })
}

// BuildID is the hex NT_GNU_BUILD_ID note, "" if the binary has none.
func (b *Binary) BuildID() string { return b.buildID }

// ELF is the parsed file, for the loader.
func (b *Binary) ELF() *elf.File { return b.f }

// Path is the path the binary was opened from.
func (b *Binary) Path() string { return b.path }

// section returns the allocated section containing vaddr.
func (b *Binary) section(addr uint64) *elf.Section {
	i := sort.Search(len(b.secs), func(i int) bool { return b.secs[i].Addr > addr }) - 1
	for ; i >= 0; i-- {
		s := b.secs[i]
		if addr >= s.Addr && addr < s.Addr+s.Size {
			return s
		}
		if i > 0 && b.secs[i-1].Addr+b.secs[i-1].Size <= s.Addr {
			break
		}
	}
	return nil
}

// read returns n bytes at vaddr, zeros for .bss, or nil if the range is not
// inside one section.
func (b *Binary) read(addr, n uint64) []byte {
	s := b.section(addr)
	if s == nil || addr+n > s.Addr+s.Size || addr+n < addr {
		return nil
	}
	if s.Type == elf.SHT_NOBITS {
		return make([]byte, n)
	}
	d, err := b.sectionData(s)
	if err != nil || addr-s.Addr+n > uint64(len(d)) {
		return nil
	}
	return d[addr-s.Addr : addr-s.Addr+n]
}

// sectionData returns an allocated section's contents, read at Open.
func (b *Binary) sectionData(s *elf.Section) ([]byte, error) {
	if d, ok := b.secData[s]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("read section %s: no contents", s.Name)
}

// symbolAt returns the sized symbol containing addr.
func (b *Binary) symbolAt(addr uint64) *symbol {
	i := sort.Search(len(b.syms), func(i int) bool { return b.syms[i].addr > addr }) - 1
	for j := i; j >= 0 && j > i-8; j-- {
		s := b.syms[j]
		if addr >= s.addr && addr < s.addr+s.size {
			return s
		}
	}
	return nil
}

func (b *Binary) inPLT(addr uint64) bool {
	for _, r := range b.plt {
		if addr >= r.lo && addr < r.hi {
			return true
		}
	}
	return false
}

// cloneKey strips the numbers GCC appends to clones and function-local
// statics, which change between builds for no semantic reason:
// "f.constprop.3" -> "f.constprop", "counter.1" -> "counter".
func cloneKey(name string) string {
	parts := strings.Split(name, ".")
	if len(parts) == 1 {
		return name
	}
	out := parts[:1]
	for _, p := range parts[1:] {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

// cloneOrigin is the function a compiler clone was made from, or "" if
// name is not a clone.
func cloneOrigin(name string) string {
	for _, suf := range []string{".constprop", ".isra", ".part", ".cold", ".lto_priv", ".localalias", ".specialization"} {
		if i := strings.Index(name, suf); i > 0 {
			return name[:i]
		}
	}
	return ""
}

func isColdPart(name string) bool {
	return strings.HasSuffix(cloneKey(name), ".cold")
}
