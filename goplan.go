package graft

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"sort"
	"strings"

	"graft/internal/loader"
	"graft/internal/x86dec"
)

// The reference plan of a Go patch: for every changed function, every
// rel32 or RIP-relative field that leaves it, and whether it keeps reaching
// into NEW's mapped image or is pointed at OLD's twin of the same thing,
// found by identity (symbol name, or for a type descriptor its DWARF
// name). It is the live half's own minimal planner; the offline Go diff
// (elfpatch go*.go) supersedes it where it is merged.

// goSym is one symbol of a Go binary.
type goSym struct {
	Name       string
	Addr, Size uint64
}

type goBin struct {
	f      *elf.File
	syms   []goSym // sorted by address, sized ones only
	byName map[string]goSym
	// types and etypes bound the type descriptors; typeOff maps a
	// descriptor's offset from types to its DWARF name and back.
	types, etypes uint64
	typeName      map[uint64]string
	typeOff       map[string]uint64
	rodata        [2]uint64
}

func openGoBin(f *elf.File) (*goBin, error) {
	all, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("symbol table: %w", err)
	}
	b := &goBin{f: f, byName: map[string]goSym{}}
	for _, s := range all {
		if s.Name == "" || s.Section == elf.SHN_UNDEF {
			continue
		}
		g := goSym{s.Name, s.Value, s.Size}
		switch s.Name {
		case "runtime.types":
			b.types = s.Value
		case "runtime.etypes":
			b.etypes = s.Value
		case "runtime.rodata":
			b.rodata[0] = s.Value
		case "runtime.erodata":
			b.rodata[1] = s.Value
		}
		if _, dup := b.byName[s.Name]; dup {
			b.byName[s.Name] = goSym{} // ambiguous: never matched by name
		} else {
			b.byName[s.Name] = g
		}
		if s.Size > 0 {
			b.syms = append(b.syms, g)
		}
	}
	sort.Slice(b.syms, func(i, j int) bool { return b.syms[i].Addr < b.syms[j].Addr })
	if err := b.readTypes(); err != nil {
		return nil, err
	}
	return b, nil
}

// readTypes maps DWARF type names to their runtime descriptors' offsets
// (DW_AT_go_runtime_type, attribute 0x2904, is the offset from types).
func (b *goBin) readTypes() error {
	d, err := b.f.DWARF()
	if err != nil {
		return fmt.Errorf("DWARF: %w", err)
	}
	b.typeName, b.typeOff = map[uint64]string{}, map[string]uint64{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return fmt.Errorf("DWARF: %w", err)
		}
		if e == nil {
			return nil
		}
		if e.Tag == dwarf.TagCompileUnit {
			continue
		}
		for _, fld := range e.Field {
			if fld.Attr != 0x2904 {
				continue
			}
			off, ok := fld.Val.(uint64)
			if !ok {
				if v, ok2 := fld.Val.(int64); ok2 {
					off, ok = uint64(v), true
				}
			}
			name, _ := e.Val(dwarf.AttrName).(string)
			if ok && name != "" {
				if prev, dup := b.typeOff[name]; dup && prev != off {
					b.typeOff[name] = ^uint64(0) // ambiguous
				} else {
					b.typeOff[name] = off
				}
				b.typeName[off] = name
			}
		}
		if e.Children && e.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
		}
	}
}

func (b *goBin) containing(a uint64) (goSym, bool) {
	i := sort.Search(len(b.syms), func(i int) bool { return b.syms[i].Addr > a }) - 1
	if i >= 0 && a < b.syms[i].Addr+b.syms[i].Size {
		return b.syms[i], true
	}
	return goSym{}, false
}

func (b *goBin) code(s goSym) ([]byte, error) {
	buf := make([]byte, s.Size)
	for _, p := range b.f.Progs {
		if p.Type == elf.PT_LOAD && s.Addr >= p.Vaddr && s.Addr+s.Size <= p.Vaddr+p.Filesz {
			_, err := p.ReadAt(buf, int64(s.Addr-p.Vaddr))
			return buf, err
		}
	}
	return nil, fmt.Errorf("%s is not in the file", s.Name)
}

// keptInNew reports whether a reference to the NEW symbol s may stay on
// NEW's copy: read-only data that carries no identity (string bytes,
// constants).
func keptInNew(name string) bool {
	return strings.HasPrefix(name, "go:string.") || strings.HasPrefix(name, "$f64.") ||
		strings.HasPrefix(name, "$f32.") || strings.HasPrefix(name, "$i64.") ||
		strings.HasPrefix(name, "$i128.")
}

// planGoRefs plans every reference of the changed functions names (NEW
// and OLD must both define each).
func planGoRefs(oldf, newf *elf.File, names []string) ([]loader.GoFunc, error) {
	ob, err := openGoBin(oldf)
	if err != nil {
		return nil, fmt.Errorf("OLD: %w", err)
	}
	nb, err := openGoBin(newf)
	if err != nil {
		return nil, fmt.Errorf("NEW: %w", err)
	}
	changed := map[string]bool{}
	for _, n := range names {
		changed[n] = true
	}
	var out []loader.GoFunc
	for _, name := range names {
		ns, ok := nb.byName[name]
		if !ok || ns.Size == 0 {
			return nil, fmt.Errorf("%s: not a function of NEW", name)
		}
		os, ok := ob.byName[name]
		if !ok || os.Size == 0 {
			return nil, fmt.Errorf("%s: not in OLD (an added function has nothing to replace)", name)
		}
		code, err := nb.code(ns)
		if err != nil {
			return nil, err
		}
		fn := loader.GoFunc{Name: name, Old: os.Addr, OldSize: os.Size, New: ns.Addr, NewSize: ns.Size}
		for off := 0; off < len(code); {
			in, err := x86dec.Decode(code[off:], ns.Addr+uint64(off))
			if err != nil {
				return nil, fmt.Errorf("%s+%#x: %w", name, off, err)
			}
			pc := ns.Addr + uint64(off)
			next := pc + uint64(in.Len)
			if in.RelSize == 4 && (in.Target < ns.Addr || in.Target >= ns.Addr+ns.Size) {
				ref := loader.GoRef{Off: pc + uint64(in.RelOff), PCNext: next}
				old, sym, keep, err := goTarget(ob, nb, changed, in.Target)
				if err != nil {
					return nil, fmt.Errorf("%s+%#x (%s): %w", name, off, in.Inst.String(), err)
				}
				ref.Keep, ref.Old, ref.Symbol = keep, old, sym
				fn.Refs = append(fn.Refs, ref)
			} else if in.RelSize != 0 && in.RelSize != 4 && (in.Target < ns.Addr || in.Target >= ns.Addr+ns.Size) {
				return nil, fmt.Errorf("%s+%#x: a %d-byte PC-relative field leaves the function", name, off, in.RelSize)
			}
			off += in.Len
		}
		out = append(out, fn)
	}
	return out, nil
}

// goTarget classifies one reference target of NEW's code.
func goTarget(ob, nb *goBin, changed map[string]bool, t uint64) (old uint64, sym string, keep bool, err error) {
	if nb.types != 0 && t >= nb.types && t < nb.etypes {
		// A type descriptor: OLD's by DWARF name (the runtime compares
		// types by address).
		off := t - nb.types
		name, ok := nb.typeName[off]
		if !ok {
			return 0, "", false, fmt.Errorf("type descriptor at types+%#x has no DWARF name: cannot find OLD's twin", off)
		}
		oo, ok := ob.typeOff[name]
		if !ok || oo == ^uint64(0) {
			return 0, "", false, fmt.Errorf("type %s is new or ambiguous in OLD: new types are refused for now", name)
		}
		return ob.types + oo, "type:" + name, false, nil
	}
	s, ok := nb.containing(t)
	if !ok {
		if t >= nb.rodata[0] && t < nb.rodata[1] {
			return 0, "rodata", true, nil // an anonymous literal
		}
		return 0, "", false, fmt.Errorf("reference to NEW %#x lies in no symbol", t)
	}
	if changed[s.Name] || keptInNew(s.Name) {
		return 0, s.Name, true, nil
	}
	os, ok := ob.byName[s.Name]
	if !ok || (os.Size == 0 && os.Addr == 0) {
		return 0, "", false, fmt.Errorf("%s has no twin in OLD (a new function, global or cache is refused for now)", s.Name)
	}
	if os.Size != s.Size {
		return 0, "", false, fmt.Errorf("%s has size %d in OLD and %d in NEW", s.Name, os.Size, s.Size)
	}
	return os.Addr + (t - s.Addr), s.Name, false, nil
}
