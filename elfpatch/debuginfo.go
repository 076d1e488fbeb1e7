package elfpatch

import (
	"debug/elf"
	"sort"
)

// A production build is often the debug build run through `strip -g`,
// which removes the DWARF and also the STT_FILE symbols that tell which
// source file each static belongs to. The code is the same, so the diff
// must be too: the comparison of code may not depend on either.

// hasFileSymbols reports whether any static symbol of b is qualified by
// its source file.
func (b *Binary) hasFileSymbols() bool {
	for _, s := range b.syms {
		if s.local && s.file != "" {
			return true
		}
	}
	return false
}

// borrowFiles gives the statics of a build without STT_FILE symbols the
// source file that the same static has in the other build, where that is
// unambiguous: one file there defines a static of that name, or several
// do and both tables hold as many (matched in table order). Otherwise it
// keeps no file: it is matched by name, and code referring to it compares
// as changed rather than as the wrong one.
// Once a build has borrowed files, it is left as it is.
//
// It returns the names of statics it could not place (several files define
// one of that name, and the two tables hold different numbers of them):
// new code referring to one could be pointed at the wrong object.
func borrowFiles(old, new *Binary) []string {
	switch {
	case old.hasFileSymbols() && !new.hasFileSymbols():
		return adoptFiles(new, old)
	case new.hasFileSymbols() && !old.hasFileSymbols():
		return adoptFiles(old, new)
	}
	return nil
}

func adoptFiles(dst, src *Binary) (unplaced []string) {
	files := map[string]map[string]bool{}
	for _, s := range src.syms {
		if !s.local || s.file == "" {
			continue
		}
		if files[s.ck] == nil {
			files[s.ck] = map[string]bool{}
		}
		files[s.ck][s.file] = true
	}
	// A name several files use: the linker writes each input file's
	// locals in turn, in link order, and strip keeps that order, so the
	// n-th static of that name in one table is the n-th in the other when
	// both have as many.
	srcOrder, dstOrder := localOrder(src), localOrder(dst)
	byAddr := map[uint64]*symbol{}
	for _, s := range dst.syms {
		byAddr[s.addr] = s
	}
	for _, s := range dst.syms {
		if !s.local || s.file != "" {
			continue
		}
		switch n := len(files[s.ck]); {
		case n == 1:
			for f := range files[s.ck] {
				s.file = f
			}
			s.setKeys()
		case n > 1 && len(srcOrder[s.ck]) == len(dstOrder[s.ck]):
			for i, d := range dstOrder[s.ck] {
				if t := byAddr[d.Value]; t != nil && t.local && t.file == "" {
					t.file = srcOrder[s.ck][i].file
					t.setKeys()
				}
			}
		case n > 1 && !s.fn && !s.ro:
			// Writable data only: code and constants NEW does not
			// place run and read from its own copy, state does not.
			unplaced = append(unplaced, s.name)
		}
	}
	sort.Strings(unplaced)
	return dedup(unplaced)
}

// localOrder lists b's sized local functions and objects by name (gcc's
// numbering dropped), in symbol table order.
func localOrder(b *Binary) map[string][]fileSymbol {
	out := map[string][]fileSymbol{}
	syms, err := symbolsByFile(b.f)
	if err != nil {
		return out
	}
	for _, s := range syms {
		t := elf.ST_TYPE(s.Info)
		if elf.ST_BIND(s.Info) != elf.STB_LOCAL || s.Size == 0 || (t != elf.STT_FUNC && t != elf.STT_OBJECT) {
			continue
		}
		k := cloneKey(s.Name)
		out[k] = append(out[k], s)
	}
	return out
}

// qualifyStatics prepares the DWARF of both builds (at once: it is the
// slow part) and reports whether function-local statics can be named by
// their function on both sides. When one side has no DWARF neither is, so
// that a reference to counter.1 names the same object in both.
func qualifyStatics(old, new *Binary) bool {
	done := make(chan any, 1)
	var ok bool
	go func() {
		defer func() { done <- recover() }()
		ok = old.dwarfIdx() != nil
	}()
	nok := new.dwarfIdx() != nil
	if p := <-done; p != nil {
		panic(p) // re-raised on the caller's goroutine, where Diff recovers it
	}
	return ok && nok
}

// unplacedStatics refuses a diff in which a build without STT_FILE
// symbols has statics borrowFiles could not tell apart: new code naming
// one could be pointed at another file's object of the same name.
func (d *differ) unplacedStatics(names []string) {
	for _, n := range names {
		d.reason(VerdictRefused, n, "", "one build has no STT_FILE symbols (strip -g) and several files define a static %s, a different number in each build: which one new code means cannot be told; diff the unstripped builds", n)
	}
}
