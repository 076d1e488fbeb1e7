package loader

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"

	"graft/elfpatch"
	"graft/internal/goruntime"
)

// A Go patch's image (GoImage) is NEW, a Go PIE, mapped whole except its
// writable data: text, read-only data with the pclntab and go:func.*
// (which describe NEW's code to the runtime), and the RELRO data (type
// descriptors, itabs and static headers, read-only once relocated). NEW's
// .go.module/.noptrdata/.data/.bss/.noptrbss stay reserved but PROT_NONE:
// NEW's runtime is never initialised, and a reference the plan missed
// faults there instead of splitting state silently. One extra page after
// the image holds the moduledata graft registers for NEW: NEW's own
// runtime.firstmoduledata, relocated with the image, with bad set (the
// runtime keeps it out of GC roots, typelinks and itabs), next cleared, and
// inittasks, typemap and textsectmap emptied (they point into the
// unmapped data).

// GoFunc is one function of a Go patch: OLD's entry gets a jump to NEW's.
type GoFunc struct {
	Name         string
	Old, OldSize uint64 // OLD link-time entry and size
	New, NewSize uint64 // NEW link-time entry and size
	// Refs are every rel32 or RIP-relative field of NEW's function that
	// reaches outside it.
	Refs []GoRef
}

// GoRef is one PC-relative field of a changed function.
type GoRef struct {
	// Off is NEW's vaddr of the 4-byte field, PCNext of the end of its
	// instruction.
	Off, PCNext uint64
	// Keep leaves the field reaching into NEW's image (NEW's own code of
	// a changed function, a string literal, a constant); otherwise it is
	// rewritten to reach Old (OLD's link-time address of the same
	// symbol, plus the same offset).
	Keep   bool
	Old    uint64
	Symbol string
	// New is the field's target in NEW (a kept reference must reach
	// NEW's mapped image; 0: not checked).
	New uint64
}

// GoImage is a Go patch's image and where its moduledata lies in it.
type GoImage struct {
	Image *elfpatch.Image
	// Module is the image offset of the moduledata to register.
	Module uint64
	// Low is NEW's vaddr at image offset 0.
	Low uint64
}

// BuildGoImage builds the image of a Go patch from NEW (a PIE), NEW's
// runtime layout and the changed functions.
func BuildGoImage(f *elf.File, l *goruntime.Layout, funcs []GoFunc) (*GoImage, error) {
	if f.Type != elf.ET_DYN {
		return nil, errors.New("build Go image: NEW is not position-independent: build NEW with -buildmode=pie (go build -buildmode=pie)")
	}
	var loads []*elf.Prog
	var relro *elf.Prog
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			loads = append(loads, p)
		case elf.PT_GNU_RELRO:
			relro = p
		}
	}
	if len(loads) == 0 {
		return nil, errors.New("build Go image: NEW has no loadable segment")
	}
	low := loads[0].Vaddr &^ (pageSize - 1)
	var maxEnd uint64
	for _, p := range loads {
		maxEnd = max(maxEnd, p.Vaddr+p.Memsz)
	}
	md := l.FirstModuledata
	modOff := (maxEnd+pageSize-1)&^(pageSize-1) - low
	im := &elfpatch.Image{Size: modOff + pageSize}
	type span struct{ lo, hi uint64 }
	var mapped []span
	for _, p := range loads {
		inRelro := relro != nil && p.Vaddr >= relro.Vaddr && p.Vaddr+p.Filesz <= relro.Vaddr+relro.Memsz
		if p.Flags&elf.PF_W != 0 && !inRelro {
			if md >= p.Vaddr && md < p.Vaddr+p.Memsz {
				continue // the data segment: stays unmapped
			}
			return nil, fmt.Errorf("build Go image: NEW has a second writable segment at %#x; unexpected layout", p.Vaddr)
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return nil, fmt.Errorf("build Go image: read segment at %#x: %w", p.Vaddr, err)
		}
		prot := 0
		if p.Flags&elf.PF_R != 0 {
			prot |= 1
		}
		if p.Flags&elf.PF_W != 0 {
			prot |= 2
		}
		if p.Flags&elf.PF_X != 0 {
			prot |= 4
		}
		im.Segments = append(im.Segments, elfpatch.Segment{Vaddr: p.Vaddr - low, Memsz: p.Memsz, Prot: prot, Data: data})
		mapped = append(mapped, span{p.Vaddr, p.Vaddr + p.Memsz})
		if inRelro {
			im.RelroStart, im.RelroEnd = relro.Vaddr-low, relro.Vaddr+relro.Memsz-low
		}
	}
	if md == 0 || l.ModuleSize == 0 {
		return nil, errors.New("build Go image: NEW has no runtime.firstmoduledata")
	}
	mdBytes := make([]byte, l.ModuleSize)
	if err := readVaddr(f, md, mdBytes); err != nil {
		return nil, fmt.Errorf("build Go image: read NEW's runtime.firstmoduledata: %w", err)
	}
	o := l.Module
	// Fields to clear: their pointers lead into NEW's unmapped data or
	// into runtime state NEW never initialised.
	clear := map[uint64]bool{}
	zero := func(name string, words int) {
		for i := 0; i < words; i++ {
			off := o[name] + 8*i
			binary.LittleEndian.PutUint64(mdBytes[off:], 0)
			clear[uint64(off)] = true
		}
	}
	zero("inittasks", 3)
	zero("textsectmap", 3)
	zero("typemap", 1)
	zero("next", 1)
	mdBytes[o["bad"]] = 1

	rels, err := relatives(f)
	if err != nil {
		return nil, fmt.Errorf("build Go image: %w", err)
	}
	for _, r := range rels {
		switch {
		case r.Off >= md && r.Off+8 <= md+uint64(l.ModuleSize):
			if !clear[r.Off-md] {
				im.Relatives = append(im.Relatives, elfpatch.Relative{Off: modOff + r.Off - md, Addend: r.Addend - low})
			}
		default:
			for _, s := range mapped {
				if r.Off >= s.lo && r.Off+8 <= s.hi {
					im.Relatives = append(im.Relatives, elfpatch.Relative{Off: r.Off - low, Addend: r.Addend - low})
					break
				}
			}
		}
	}
	im.Segments = append(im.Segments, elfpatch.Segment{Vaddr: modOff, Memsz: uint64(l.ModuleSize), Prot: 3, Data: mdBytes})

	inMapped := func(a uint64) bool {
		for _, s := range mapped {
			if a >= s.lo && a < s.hi {
				return true
			}
		}
		return false
	}
	for _, fn := range funcs {
		if !inMapped(fn.New) {
			return nil, fmt.Errorf("build Go image: %s at %#x is outside NEW's mapped code", fn.Name, fn.New)
		}
		if fn.Old != 0 { // an added function gets no jump
			im.Redirects = append(im.Redirects, elfpatch.Redirect{Name: fn.Name, Old: fn.Old, OldSize: fn.OldSize, New: fn.New - low, NewSize: fn.NewSize})
		}
		im.Runs = append(im.Runs, elfpatch.RunFunc{Name: fn.Name, New: fn.New - low, Size: fn.NewSize})
		for _, r := range fn.Refs {
			if r.Keep {
				if r.New != 0 && !inMapped(r.New) {
					return nil, fmt.Errorf("build Go image: %s keeps a reference at %#x to %s (%#x), which lies in NEW's writable data: it is never mapped (NEW's runtime is not initialised); the plan must point it at OLD", fn.Name, r.Off, r.Symbol, r.New)
				}
				continue
			}
			im.Fixups = append(im.Fixups, elfpatch.Fixup{Off: r.Off - low, Kind: elfpatch.FixupPC32, PCNext: r.PCNext - low, Target: r.Old, Symbol: r.Symbol, Name: r.Symbol, SymAddr: r.Old})
		}
	}
	if err := im.Check(); err != nil {
		return nil, fmt.Errorf("build Go image: %w", err)
	}
	return &GoImage{Image: im, Module: modOff, Low: low}, nil
}

type relative struct{ Off, Addend uint64 }

// relatives reads NEW's R_X86_64_RELATIVE relocations.
func relatives(f *elf.File) ([]relative, error) {
	var out []relative
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA {
			continue
		}
		b, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.Name, err)
		}
		for i := 0; i+24 <= len(b); i += 24 {
			info := binary.LittleEndian.Uint64(b[i+8:])
			if elf.R_X86_64(info&0xffffffff) != elf.R_X86_64_RELATIVE {
				continue
			}
			out = append(out, relative{binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+16:])})
		}
	}
	return out, nil
}

// readVaddr reads len(b) bytes at NEW's vaddr a from the file.
func readVaddr(f *elf.File, a uint64, b []byte) error {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && a >= p.Vaddr && a+uint64(len(b)) <= p.Vaddr+p.Filesz {
			_, err := p.ReadAt(b, int64(a-p.Vaddr))
			return err
		}
	}
	return fmt.Errorf("%#x (%d bytes) is not in the file's segments", a, len(b))
}
