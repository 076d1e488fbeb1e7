package elfpatch

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
// unambiguous (one file there defines a static of that name). A static
// whose name several files use keeps no file: it is matched by name, and
// code referring to it compares as changed rather than as the wrong one.
// Once a build has borrowed files, it is left as it is.
func borrowFiles(old, new *Binary) {
	switch {
	case old.hasFileSymbols() && !new.hasFileSymbols():
		adoptFiles(new, old)
	case new.hasFileSymbols() && !old.hasFileSymbols():
		adoptFiles(old, new)
	}
}

func adoptFiles(dst, src *Binary) {
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
	for _, s := range dst.syms {
		if !s.local || len(files[s.ck]) != 1 {
			continue
		}
		for f := range files[s.ck] {
			s.file = f
		}
		s.setKeys()
	}
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
