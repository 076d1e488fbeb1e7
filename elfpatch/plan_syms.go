package elfpatch

import (
	"debug/elf"
	"path"
	"sort"
	"strings"
)

// symKey identifies a symbol across two builds: its name without a symbol
// version suffix, plus, for a local (static) symbol, the compile unit it
// belongs to. Two statics called "seen" in main.c and other.c are different
// keys; "stdout@GLIBC_2.2.5" and "stdout@@GLIBC_2.2.5" are the same one.
type symKey struct {
	name string
	cu   string
}

// psym is one defined symbol of the plan's symbol tables.
type psym struct {
	key   symKey
	name  string // as in the table, for messages
	value uint64
	size  uint64
	typ   elf.SymType
	local bool
	sect  elf.SectionIndex
}

func (s *psym) contains(addr uint64) bool {
	if s.size == 0 {
		return addr == s.value
	}
	return addr >= s.value && addr < s.value+s.size
}

// label names a symbol for messages: statics carry their compile unit.
func (s *psym) label() string {
	if s.key.cu != "" {
		return s.key.cu + ":" + s.name
	}
	return s.name
}

// symtab is the defined symbols of one build, sorted by address, with an
// index by key.
type symtab struct {
	syms  []*psym // sorted by value, then size descending
	byKey map[symKey][]*psym
	// localsByName lets a static be matched when its compile unit was
	// renamed between builds, or one build has no STT_FILE symbols
	// (strip -g removes them), but its name is unique on both sides;
	// localsUnnumbered the same without gcc's numbering.
	localsByName     map[string][]*psym
	localsUnnumbered map[numKey][]*psym
	// units: some static is qualified by its STT_FILE.
	units bool
	// byUnnumbered indexes symbols by unit, type and name without gcc's
	// numbering (cloneKey), for clones and statics renumbered between
	// builds.
	byUnnumbered map[numKey][]*psym
}

type numKey struct {
	name, cu string
	typ      elf.SymType
}

// stripVersion drops "@VER" / "@@VER" from a symbol name.
func stripVersion(name string) string {
	if i := strings.IndexByte(name, '@'); i > 0 {
		return name[:i]
	}
	return name
}

// newSymtab reads .symtab. Local symbols follow the STT_FILE entry of their
// compile unit (the ELF gABI order that gcc and ld keep); globals follow
// all locals and belong to no unit. The unit is the file's base name:
// OLD may be built from ftpd/v1/ftpd.c and NEW from ftpd/v2/ftpd.c.
func newSymtab(f *elf.File) (*symtab, error) {
	raw, err := symbolsByFile(f)
	if err != nil {
		return nil, err
	}
	t := &symtab{byKey: map[symKey][]*psym{}, localsByName: map[string][]*psym{}, localsUnnumbered: map[numKey][]*psym{}, byUnnumbered: map[numKey][]*psym{}}
	for _, s := range raw {
		typ := elf.ST_TYPE(s.Info)
		bind := elf.ST_BIND(s.Info)
		if s.Section == elf.SHN_UNDEF || s.Section == elf.SHN_ABS || s.Section >= elf.SHN_LORESERVE && s.Section != elf.SHN_COMMON {
			continue
		}
		if typ == elf.STT_SECTION || s.Name == "" {
			continue
		}
		ps := &psym{
			name:  s.Name,
			value: s.Value,
			size:  s.Size,
			typ:   typ,
			local: bind == elf.STB_LOCAL,
			sect:  s.Section,
		}
		ps.key.name = stripVersion(s.Name)
		if ps.local && s.file != "" {
			ps.key.cu = path.Base(s.file)
			t.units = true
		}
		if ps.local {
			t.localsByName[ps.key.name] = append(t.localsByName[ps.key.name], ps)
			lk := numKey{name: cloneKey(ps.key.name), typ: typ}
			t.localsUnnumbered[lk] = append(t.localsUnnumbered[lk], ps)
		}
		t.byKey[ps.key] = append(t.byKey[ps.key], ps)
		nk := numKey{cloneKey(ps.key.name), ps.key.cu, typ}
		t.byUnnumbered[nk] = append(t.byUnnumbered[nk], ps)
		t.syms = append(t.syms, ps)
	}
	sort.SliceStable(t.syms, func(i, j int) bool {
		a, b := t.syms[i], t.syms[j]
		if a.value != b.value {
			return a.value < b.value
		}
		return a.size > b.size
	})
	return t, nil
}

// lookupKey returns the unique symbol with key k, preferring a sized one
// when aliases share the key (e.g. a symbol and its versioned twin).
func (t *symtab) lookupKey(k symKey) *psym {
	c := t.byKey[k]
	if len(c) == 0 {
		return nil
	}
	best := c[0]
	for _, s := range c[1:] {
		if s.value != best.value {
			// Two different definitions with one key (a name reused by
			// two statics in one unit cannot happen in C; two units with
			// the same base name can). Ambiguous: no match.
			return nil
		}
		if s.size > best.size {
			best = s
		}
	}
	return best
}

// containing returns the symbols whose extent covers addr, best first:
// sized data and functions before size-0 markers, globals before locals.
func (t *symtab) containing(addr uint64) []*psym {
	var out []*psym
	i := sort.Search(len(t.syms), func(i int) bool { return t.syms[i].value > addr })
	for j := i - 1; j >= 0; j-- {
		s := t.syms[j]
		if s.contains(addr) {
			out = append(out, s)
		}
		// Symbols more than 16 MiB below addr cannot cover it in any
		// binary this tool patches; stop scanning.
		if addr-s.value > 16<<20 {
			break
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if (x.size > 0) != (y.size > 0) {
			return x.size > 0
		}
		rank := func(s *psym) int {
			switch s.typ {
			case elf.STT_FUNC, elf.STT_GNU_IFUNC, elf.STT_OBJECT, elf.STT_TLS:
				return 0
			}
			return 1
		}
		if rank(x) != rank(y) {
			return rank(x) < rank(y)
		}
		return !x.local && y.local
	})
	return out
}

// matchOld finds OLD's counterpart of NEW's symbol s: same name and unit;
// failing that, the only symbol on each side with the same name once
// compiler numbering is dropped ("calls.0" vs "calls.1", a clone
// "f.constprop.0" vs "f.constprop.1"), in the same unit; failing that, for
// a static whose unit was renamed, the only static of that name on both
// sides.
func matchOld(old, new *symtab, s *psym) *psym {
	// (Same binding: without STT_FILE symbols a static's key is that of
	// a global of the same name, such as crt's weak data_start.)
	if o := old.lookupKey(s.key); o != nil && o.local == s.local {
		return o
	}
	if n := cloneKey(s.key.name); n != s.key.name {
		nk := numKey{n, s.key.cu, s.typ}
		if no, nn := old.byUnnumbered[nk], new.byUnnumbered[nk]; len(no) == 1 && len(nn) == 1 {
			return no[0]
		}
	}
	if s.local {
		if len(new.localsByName[s.key.name]) == 1 && len(old.localsByName[s.key.name]) == 1 {
			o := old.localsByName[s.key.name][0]
			if o.typ == s.typ {
				return o
			}
		}
		// One side without units (strip -g): a static unique on both
		// sides once gcc's numbering is dropped (counter.1, counter.2).
		// Several of that name (a static helper in two files): the n-th
		// in one table is the n-th in the other, as the diff matches
		// them (borrowFiles); it refuses when the counts differ.
		if !old.units || !new.units {
			lk := numKey{name: cloneKey(s.key.name), typ: s.typ}
			if no, nn := old.localsUnnumbered[lk], new.localsUnnumbered[lk]; len(no) == len(nn) {
				for i, n := range nn {
					if n == s {
						return no[i]
					}
				}
			}
		}
	}
	return nil
}

// coldParent returns the name of the function a compiler-split part
// belongs to ("work" for "work.cold" and "work.cold.1"), or "".
func coldParent(name string) string {
	if i := strings.Index(name, ".cold"); i > 0 {
		return name[:i]
	}
	return ""
}
