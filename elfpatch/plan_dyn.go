package elfpatch

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"
)

// dynRela is one dynamic relocation.
type dynRela struct {
	off    uint64
	typ    elf.R_X86_64
	sym    uint32
	addend int64
}

// dynRelocs reads every SHT_RELA section that the dynamic linker would
// process (.rela.dyn, .rela.plt). A section it cannot read is skipped and
// its error returned with what the others hold: the planner refuses to go
// on without every relocation, the diff names what it can.
func dynRelocs(f *elf.File) ([]dynRela, error) {
	var out []dynRela
	var first error
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := s.Data()
		if err != nil {
			if first == nil {
				first = fmt.Errorf("read %s: %w", s.Name, err)
			}
			continue
		}
		for i := 0; i+24 <= len(data); i += 24 {
			info := binary.LittleEndian.Uint64(data[i+8:])
			out = append(out, dynRela{
				off:    binary.LittleEndian.Uint64(data[i:]),
				typ:    elf.R_X86_64(info & 0xffffffff),
				sym:    uint32(info >> 32),
				addend: int64(binary.LittleEndian.Uint64(data[i+16:])),
			})
		}
	}
	return out, first
}

// dynamic turns NEW's dynamic relocations into Imports, Relatives and
// Abs64 fixups.
func (p *planner) dynamic() error {
	relocs, err := dynRelocs(p.new)
	if err != nil {
		return fmt.Errorf("prepare the new code: %w", err)
	}
	dsyms, err := p.new.DynamicSymbols()
	if err != nil && len(relocs) > 0 {
		return fmt.Errorf("prepare the new code: read new .dynsym: %w", err)
	}
	dsym := func(r dynRela) (elf.Symbol, error) {
		if r.sym == 0 || int(r.sym) > len(dsyms) {
			return elf.Symbol{}, fmt.Errorf("prepare the new code: relocation %v at new 0x%x: bad symbol index %d", r.typ, r.off, r.sym)
		}
		return dsyms[r.sym-1], nil
	}
	// COPY destinations first: refTarget needs them to explain a new
	// reference to library data.
	for _, r := range relocs {
		if r.typ == elf.R_X86_64_COPY {
			s, err := dsym(r)
			if err != nil {
				return err
			}
			p.copied[r.off] = s.Name
		}
	}
	for _, r := range relocs {
		switch r.typ {
		case elf.R_X86_64_NONE, elf.R_X86_64_COPY:
			// COPY: NEW's instance is never used; code that runs in NEW
			// is pointed at OLD's instance, which the libraries use.
		case elf.R_X86_64_RELATIVE:
			if err := p.pointer(r.off, uint64(r.addend), ""); err != nil {
				return err
			}
		case elf.R_X86_64_GLOB_DAT, elf.R_X86_64_JMP_SLOT, elf.R_X86_64_64:
			s, err := dsym(r)
			if err != nil {
				return err
			}
			addend := r.addend
			if r.typ != elf.R_X86_64_64 {
				addend = 0 // GLOB_DAT and JUMP_SLOT are S, not S+A
			}
			if s.Section == elf.SHN_UNDEF {
				p.im.Imports = append(p.im.Imports, Import{
					Off:     r.off,
					Symbol:  s.Name,
					Version: s.Version,
					Addend:  addend,
					Weak:    elf.ST_BIND(s.Info) == elf.STB_WEAK,
					Call:    r.typ == elf.R_X86_64_JMP_SLOT,
				})
				continue
			}
			// A GOT slot or pointer to a symbol NEW defines itself (an
			// exported global, a COPY-relocated libc object): point it at
			// OLD's instance when there is one.
			if err := p.pointer(r.off, s.Value+uint64(addend), s.Name); err != nil {
				return err
			}
		case elf.R_X86_64_DTPMOD64, elf.R_X86_64_DTPOFF64:
			// General-dynamic TLS of a shared library (its own
			// variables): checkTLS has made sure each of NEW's
			// thread-local variables sits at OLD's offset in a block of
			// OLD's size, so NEW's code may use OLD's block: the module
			// ID is OLD's (read from the target by the loader) and the
			// offset is NEW's own, a constant.
			var s elf.Symbol
			if r.sym != 0 {
				var err error
				if s, err = dsym(r); err != nil {
					return err
				}
				if s.Section == elf.SHN_UNDEF {
					return &PlanError{Addr: r.off, Symbol: s.Name, Reason: fmt.Sprintf("thread-local relocation %v against another module's variable: unsupported", r.typ)}
				}
			}
			if r.typ == elf.R_X86_64_DTPMOD64 {
				p.im.Imports = append(p.im.Imports, Import{Off: r.off, TLSModule: true})
				continue
			}
			b, err := p.bytesAt(r.off, 8)
			if err != nil {
				return &PlanError{Addr: r.off, Symbol: s.Name, Reason: fmt.Sprintf("thread-local offset: %v", err)}
			}
			binary.LittleEndian.PutUint64(b, s.Value+uint64(r.addend))
		case elf.R_X86_64_TPOFF64, elf.R_X86_64_TLSDESC, elf.R_X86_64_TPOFF32:
			name := ""
			if s, err := dsym(r); err == nil {
				name = s.Name
			}
			return &PlanError{Addr: r.off, Symbol: name, Reason: fmt.Sprintf("thread-local relocation %v: unsupported (the target's TLS blocks are already allocated)", r.typ)}
		case elf.R_X86_64_IRELATIVE:
			return &PlanError{Addr: r.off, Reason: "R_X86_64_IRELATIVE (an IFUNC defined in the executable): unsupported"}
		default:
			return &PlanError{Addr: r.off, Reason: fmt.Sprintf("dynamic relocation %v: unsupported", r.typ)}
		}
	}
	return nil
}

// pointer plans an absolute 64-bit pointer at NEW's off whose value is
// NEW's address target.
//
// A pointer to something OLD also has (an unchanged function, a global)
// becomes an Abs64 fixup to OLD's instance rather than a Relative into
// NEW: a table of function pointers in NEW's .data.rel.ro must hold the
// same addresses as OLD's code compares against and stores, and a pointer
// to a global must reach the one copy the process uses. A pointer to a
// changed function lands on OLD's entry, whose trampoline leads to NEW.
func (p *planner) pointer(off, target uint64, name string) error {
	relative := func() error {
		p.im.Relatives = append(p.im.Relatives, Relative{Off: off, Addend: target})
		return nil
	}
	if p.dead(off) {
		// The field lies in NEW's copy of an object OLD also has; nothing
		// reads it (all code that runs in NEW uses OLD's copy), so the
		// plain relocation keeps it consistent without constraining it.
		return relative()
	}
	fail := func(sym, reason string) error {
		return &PlanError{Addr: off, Symbol: sym, Reason: reason}
	}
	sec := p.section(target)
	if sec == nil {
		if s := p.writableEnd(target); s != nil {
			return p.dataPointer(off, s, target)
		}
		return relative() // e.g. one past the end of the image (_end)
	}
	if sec.Flags&elf.SHF_EXECINSTR != 0 {
		s := p.funcAt(target)
		if s == nil {
			return relative() // PLT entries and the like stay in NEW
		}
		o := matchOld(p.oldSyms, p.newSyms, s)
		if o == nil {
			// NEW-only function reachable through a pointer: it may run.
			p.addRun(s)
			return relative()
		}
		if target != s.value {
			return relative()
		}
		if reason := p.resizedUnchanged(s, o); reason != "" {
			return fail(s.label(), reason)
		}
		return p.addFixup(Fixup{Off: off, Kind: FixupAbs64, Target: o.value, Symbol: s.label()})
	}
	if p.readOnly(target) {
		return relative()
	}
	if end, start := p.coincide(target); end != nil {
		// A pointer has no instruction to tell its use by.
		return &PlanError{Addr: off, Symbol: end.label() + " / " + start.label(), Reason: ambiguous(end, start, p, "a pointer in the new build's data holds that address, and nothing tells which it means")}
	}
	s := p.dataAt(target)
	if s == nil {
		return relative()
	}
	return p.dataPointer(off, s, target)
}

// dataPointer plans a pointer at off to NEW's writable object s (target
// inside it or one past its end).
func (p *planner) dataPointer(off uint64, s *psym, target uint64) error {
	to, shared, reason := p.oldObject(s, target)
	switch {
	case reason != "":
		return &PlanError{Addr: off, Symbol: s.label(), Reason: reason}
	case !shared:
		p.im.Relatives = append(p.im.Relatives, Relative{Off: off, Addend: target})
		return nil
	}
	return p.addFixup(Fixup{Off: off, Kind: FixupAbs64, Target: to, Symbol: s.label()})
}

// dead reports whether NEW's off lies in a writable object that OLD also
// has: NEW's copy of it is never used.
func (p *planner) dead(off uint64) bool {
	if p.readOnly(off) {
		return false
	}
	for _, s := range p.newSyms.containing(off) {
		if s.size > 0 && !isFuncSym(s) && matchOld(p.oldSyms, p.newSyms, s) != nil && !p.moved(s) {
			return true
		}
	}
	return false
}

// DynamicImports lists f's fields that the dynamic linker fills with the
// address of a symbol from another module (GLOB_DAT, JUMP_SLOT and
// R_X86_64_64 relocations against undefined symbols), and the fields it
// fills with f's own TLS module ID (DTPMOD64 against f's own variables,
// TLSModule set), sorted by address.
// The loader reads OLD's slots in the target to learn which
// implementation the dynamic linker picked (an IFUNC's, for one).
func DynamicImports(f *elf.File) (imps []Import, err error) {
	defer func() {
		if r := recover(); r != nil {
			imps, err = nil, fmt.Errorf("read dynamic imports: malformed ELF: %v", r)
		}
	}()
	relocs, err := dynRelocs(f)
	if err != nil {
		return nil, fmt.Errorf("read dynamic imports: %w", err)
	}
	dsyms, _ := f.DynamicSymbols()
	for _, r := range relocs {
		switch r.typ {
		case elf.R_X86_64_GLOB_DAT, elf.R_X86_64_JMP_SLOT, elf.R_X86_64_64:
		case elf.R_X86_64_DTPMOD64:
			if r.sym == 0 || (int(r.sym) <= len(dsyms) && dsyms[r.sym-1].Section != elf.SHN_UNDEF) {
				imps = append(imps, Import{Off: r.off, TLSModule: true})
			}
			continue
		default:
			continue
		}
		if r.sym == 0 || int(r.sym) > len(dsyms) {
			continue
		}
		s := dsyms[r.sym-1]
		if s.Section != elf.SHN_UNDEF {
			continue
		}
		imp := Import{
			Off: r.off, Symbol: s.Name, Version: s.Version,
			Weak: elf.ST_BIND(s.Info) == elf.STB_WEAK,
			Call: r.typ == elf.R_X86_64_JMP_SLOT,
		}
		if r.typ == elf.R_X86_64_64 {
			imp.Addend = r.addend
		}
		imps = append(imps, imp)
	}
	sort.Slice(imps, func(i, j int) bool { return imps[i].Off < imps[j].Off })
	return imps, nil
}

// IndirectSlots maps, for a shared library, the address of each GNU
// indirect function's resolver to a field the dynamic linker filled with
// that resolver's choice (an R_X86_64_IRELATIVE relocation, which glibc
// uses for its own internal calls to memset, strlen and friends). Reading
// the field in a running process tells which implementation the library
// picked, without calling the resolver.
func IndirectSlots(f *elf.File) (slots map[uint64]uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			slots, err = nil, fmt.Errorf("read indirect slots: malformed ELF: %v", r)
		}
	}()
	relocs, err := dynRelocs(f)
	if err != nil {
		return nil, fmt.Errorf("read indirect slots: %w", err)
	}
	slots = map[uint64]uint64{}
	for _, r := range relocs {
		if r.typ == elf.R_X86_64_IRELATIVE {
			if _, dup := slots[uint64(r.addend)]; !dup {
				slots[uint64(r.addend)] = r.off
			}
		}
	}
	return slots, nil
}
