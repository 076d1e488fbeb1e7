// Package symtab maps addresses of an ELF file to function symbols. It reads
// .symtab when present and falls back to .dynsym, so stripped shared
// libraries such as libc still name their exported functions.
package symtab

import (
	"debug/elf"
	"fmt"
	"sort"
)

// Func is one function symbol at its link-time address.
type Func struct {
	Name  string
	Addr  uint64
	Size  uint64
	Local bool // STB_LOCAL: a static function
}

// Table is the function symbols of one ELF file, sorted by address.
type Table struct {
	funcs []Func
}

// Open reads the function symbols of the ELF file at path.
func Open(path string) (*Table, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open symbols: %w", err)
	}
	defer f.Close()
	return FromELF(f)
}

// FromELF reads the function symbols of an open ELF file.
func FromELF(f *elf.File) (t *Table, err error) {
	defer func() {
		// debug/elf can panic on hostile input; a symbol table is never
		// worth crashing a tool that holds someone's process.
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("read symbols: malformed ELF: %v", r)
		}
	}()
	t = &Table{}
	seen := map[uint64]bool{}
	add := func(syms []elf.Symbol) {
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) != elf.STT_FUNC && elf.ST_TYPE(s.Info) != elf.STT_GNU_IFUNC {
				continue
			}
			if s.Value == 0 || s.Section == elf.SHN_UNDEF {
				continue
			}
			if seen[s.Value] {
				continue // aliases: keep the first (symtab before dynsym)
			}
			seen[s.Value] = true
			t.funcs = append(t.funcs, Func{
				Name:  s.Name,
				Addr:  s.Value,
				Size:  s.Size,
				Local: elf.ST_BIND(s.Info) == elf.STB_LOCAL,
			})
		}
	}
	if syms, err := f.Symbols(); err == nil {
		add(syms)
	}
	if syms, err := f.DynamicSymbols(); err == nil {
		add(syms)
	}
	sort.Slice(t.funcs, func(i, j int) bool { return t.funcs[i].Addr < t.funcs[j].Addr })
	return t, nil
}

// Funcs returns all function symbols sorted by address.
func (t *Table) Funcs() []Func { return t.funcs }

// Lookup returns the function containing the link-time address addr. A
// symbol of size 0 matches only its own address.
func (t *Table) Lookup(addr uint64) (Func, bool) {
	i := sort.Search(len(t.funcs), func(i int) bool { return t.funcs[i].Addr > addr }) - 1
	for ; i >= 0; i-- {
		f := t.funcs[i]
		if addr == f.Addr || addr < f.Addr+f.Size {
			return f, true
		}
		// An earlier, larger symbol may still cover addr (nested aliases
		// are rare; stop once we are far below).
		if f.Size == 0 || addr-f.Addr > 1<<20 {
			break
		}
	}
	return Func{}, false
}

// Find returns the functions with the given name (statics may repeat).
func (t *Table) Find(name string) []Func {
	var out []Func
	for _, f := range t.funcs {
		if f.Name == name {
			out = append(out, f)
		}
	}
	return out
}
