package graft

import (
	"debug/elf"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"graft/internal/elfx"
)

// symbol is one named object or function of an ELF file at its link-time
// address.
type symbol struct {
	Name string
	Addr uint64
	Size uint64
	Func bool
	// File is a static's compile unit (base name of the STT_FILE entry
	// before it), "" for a global.
	File string
}

// symbols is an ELF file's symbol table, for mapping an address in one
// build to the same-named symbol in another (stacked patches).
type symbols struct {
	byAddr []symbol
	byName map[string][]symbol
}

// readSymbols reads the function and object symbols of the ELF file at path
// and checks its build-id when want is not empty.
func readSymbols(path, wantBuildID string) (s *symbols, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("read symbols of %s: malformed ELF: %v", path, r)
		}
	}()
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read symbols of %s: %w", path, err)
	}
	defer f.Close()
	if wantBuildID != "" {
		got := elfx.BuildID(f)
		if got != wantBuildID {
			return nil, fmt.Errorf("read symbols of %s: build-id %s, want %s", path, got, wantBuildID)
		}
	}
	syms, err := elfx.UnitSymbols(f)
	if err != nil {
		return nil, fmt.Errorf("read symbols of %s: %w", path, err)
	}
	var list []symbol
	for _, e := range syms {
		t := elf.ST_TYPE(e.Info)
		if t != elf.STT_FUNC && t != elf.STT_OBJECT && t != elf.STT_GNU_IFUNC {
			continue
		}
		if e.Section == elf.SHN_UNDEF || e.Value == 0 || e.Name == "" {
			continue
		}
		sym := symbol{Name: e.Name, Addr: e.Value, Size: e.Size, Func: t != elf.STT_OBJECT}
		if elf.ST_BIND(e.Info) == elf.STB_LOCAL && e.File != "" {
			// A static's unit by its base name, as elfpatch records it.
			sym.File = filepath.Base(e.File)
		}
		list = append(list, sym)
	}
	return newSymbols(list), nil
}

// newSymbols indexes a list of symbols. A versioned name
// ("stdout@GLIBC_2.2.5") is found by its bare name too.
func newSymbols(list []symbol) *symbols {
	s := &symbols{byName: map[string][]symbol{}}
	for _, sym := range list {
		s.byAddr = append(s.byAddr, sym)
		s.byName[sym.Name] = append(s.byName[sym.Name], sym)
		if i := strings.IndexByte(sym.Name, '@'); i > 0 {
			s.byName[sym.Name[:i]] = append(s.byName[sym.Name[:i]], sym)
		}
	}
	sort.Slice(s.byAddr, func(i, j int) bool { return s.byAddr[i].Addr < s.byAddr[j].Addr })
	return s
}

// recordSymbols are the symbols a patch record says live in its image, at
// link-time addresses (relative to the record's Base).
func recordSymbols(r *PatchRecord) *symbols {
	list := make([]symbol, 0, len(r.Symbols))
	for _, e := range r.Symbols {
		if e.Addr < r.Base {
			continue
		}
		list = append(list, symbol{Name: e.Name, Addr: e.Addr - r.Base, Size: e.Size, Func: !e.Data, File: e.File})
	}
	return newSymbols(list)
}

// lookup returns the one symbol called name in unit file (a static), or
// the one global called name (file ""), falling back to the only symbol of
// that name; aliases at one address count once.
func (s *symbols) lookup(name, file string) (symbol, bool) {
	pick := func(keep func(symbol) bool) (symbol, bool) {
		var got symbol
		n := 0
		for _, c := range s.byName[name] {
			if !keep(c) || (n > 0 && c.Addr == got.Addr) {
				continue
			}
			got, n = c, n+1
		}
		return got, n == 1
	}
	if file != "" {
		if v, ok := pick(func(c symbol) bool { return c.File == file }); ok {
			return v, true
		}
	} else if v, ok := pick(func(c symbol) bool { return c.File == "" }); ok {
		return v, true
	}
	return pick(func(symbol) bool { return true })
}

// containing returns the symbol whose [Addr, Addr+Size) holds addr (a
// zero-size symbol only at its own address).
func (s *symbols) containing(addr uint64) (symbol, bool) {
	i := sort.Search(len(s.byAddr), func(i int) bool { return s.byAddr[i].Addr > addr }) - 1
	for ; i >= 0; i-- {
		e := s.byAddr[i]
		if addr == e.Addr || addr < e.Addr+e.Size {
			return e, true
		}
		if addr-e.Addr > 1<<24 {
			break
		}
	}
	return symbol{}, false
}

// unique returns the only symbol called name; statics defined in several
// compile units are ambiguous by name alone.
func (s *symbols) unique(name string) (symbol, bool) {
	v := s.byName[name]
	if len(v) == 0 {
		return symbol{}, false
	}
	for _, c := range v[1:] {
		if c.Addr != v[0].Addr {
			return symbol{}, false
		}
	}
	return v[0], true
}

// room returns how many bytes from addr on no other symbol starts
// (^0 if none follows).
func (s *symbols) room(addr uint64) uint64 {
	i := sort.Search(len(s.byAddr), func(i int) bool { return s.byAddr[i].Addr > addr })
	if i == len(s.byAddr) {
		return ^uint64(0)
	}
	return s.byAddr[i].Addr - addr
}
