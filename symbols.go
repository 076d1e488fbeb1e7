package graft

import (
	"debug/elf"
	"fmt"
	"sort"
)

// symbol is one named object or function of an ELF file at its link-time
// address.
type symbol struct {
	Name string
	Addr uint64
	Size uint64
	Func bool
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
		got := elfBuildID(f)
		if got != wantBuildID {
			return nil, fmt.Errorf("read symbols of %s: build-id %s, want %s", path, got, wantBuildID)
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("read symbols of %s: %w", path, err)
	}
	s = &symbols{byName: map[string][]symbol{}}
	for _, e := range syms {
		t := elf.ST_TYPE(e.Info)
		if t != elf.STT_FUNC && t != elf.STT_OBJECT && t != elf.STT_GNU_IFUNC {
			continue
		}
		if e.Section == elf.SHN_UNDEF || e.Value == 0 || e.Name == "" {
			continue
		}
		sym := symbol{Name: e.Name, Addr: e.Value, Size: e.Size, Func: t != elf.STT_OBJECT}
		s.byAddr = append(s.byAddr, sym)
		s.byName[e.Name] = append(s.byName[e.Name], sym)
	}
	sort.Slice(s.byAddr, func(i, j int) bool { return s.byAddr[i].Addr < s.byAddr[j].Addr })
	return s, nil
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
	if v := s.byName[name]; len(v) == 1 {
		return v[0], true
	}
	return symbol{}, false
}

// elfBuildID returns the hex GNU build-id note of f, "" if none.
func elfBuildID(f *elf.File) string {
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_NOTE {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		if id := parseBuildIDNote(data); id != "" {
			return id
		}
	}
	return ""
}

func parseBuildIDNote(b []byte) string {
	for len(b) >= 12 {
		le := func(o int) uint32 { return uint32(b[o]) | uint32(b[o+1])<<8 | uint32(b[o+2])<<16 | uint32(b[o+3])<<24 }
		namesz, descsz, typ := le(0), le(4), le(8)
		nameEnd := 12 + int(align4(namesz))
		descEnd := nameEnd + int(align4(descsz))
		if namesz > 1<<16 || descsz > 1<<16 || descEnd > len(b) {
			return ""
		}
		if typ == 3 && namesz == 4 && string(b[12:15]) == "GNU" {
			return fmt.Sprintf("%x", b[nameEnd:nameEnd+int(descsz)])
		}
		b = b[descEnd:]
	}
	return ""
}

func align4(n uint32) uint32 { return (n + 3) &^ 3 }
