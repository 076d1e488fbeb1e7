package graft

// Pointer users of a sole-home type (issue 12, elfpatch/solehome.go).
//
// When the operator declares that every object of a type lives in one
// transferred global (sole_home_of), the patch lists OLD's functions that
// reach the type through pointers (Transfer.PointerUsers). A frame of one
// may hold a pointer into OLD's object: a thread inside an unchanged
// cmd_login with the session it serves. Those the patch replaces are
// checked like any replaced function; the others are not replaced but
// count for the safety check all the same: apply waits until none of them
// is on a stack, so no thread comes back to an old pointer after the
// object moved or changed layout.

import (
	"fmt"
	"slices"

	"graft/elfpatch"
)

// hasPointerUsers reports whether a transfer of pt lists pointer users.
func hasPointerUsers(pt *Patch) bool {
	for _, t := range pt.Transfers {
		if len(t.PointerUsers) > 0 {
			return true
		}
	}
	return false
}

// pointerUserRanges returns the code of pt's pointer users (and their
// out-of-line parts) in every layer, except the functions the patch
// redirects, whose ranges the jumps' planning adds: the executable's
// copies by symbol, and each image's copy of one an earlier patch
// replaced (a frame in either may hold an old pointer). A static name
// defined in several units takes every copy: waiting for one too many is
// safe, missing one is not.
func pointerUserRanges(pt *Patch, layers []layer) []namedRange {
	redirected := map[string]bool{}
	for _, r := range pt.Image.Redirects {
		redirected[r.Name] = true
	}
	var out []namedRange
	seen := map[Range]bool{}
	add := func(fn string, r Range) {
		if !seen[r] {
			seen[r] = true
			out = append(out, namedRange{fn, r})
		}
	}
	for _, t := range pt.Transfers {
		for _, fn := range t.PointerUsers {
			if redirected[fn] {
				continue
			}
			for _, name := range []string{fn, fn + ".cold"} {
				for _, l := range layers {
					if l.rec != nil {
						for _, f := range l.rec.Functions {
							if f.Name == name {
								add(fn, Range{f.New, f.New + f.NewSize})
							}
						}
						continue
					}
					for _, s := range l.syms.byName[name] {
						if s.Func && s.Size > 0 {
							add(fn, Range{l.base + s.Addr, l.base + s.Addr + s.Size})
						}
					}
				}
			}
		}
	}
	return out
}

// pointerUserAllowed names an --allow-active function that reaches a
// sole-home type through pointers ("" if none): a frame left running in
// the old code would keep its pointer into the old object.
func pointerUserAllowed(t *elfpatch.Transfer, allow []string) string {
	for _, a := range allow {
		if slices.Contains(t.PointerUsers, a) {
			return a
		}
	}
	return ""
}

// endChecked wraps the relocation of pointers found in data (transferred
// objects' pointer members, other globals' pointer fields): one holding
// exactly the end of a transferred object that OLD's next object starts
// at (elfpatch.Transfer.NextAtEnd) may mean either, and moving it to the
// new object's end would be wrong if it meant the other, so the apply
// stops, untouched.
func endChecked(spans []xferSpan, reloc elfpatch.Relocator) elfpatch.Relocator {
	return func(v, pointee uint64) (uint64, bool, error) {
		nv, ok, err := reloc(v, pointee)
		if err != nil || !ok || nv == v {
			return nv, ok, err
		}
		for _, s := range spans {
			if s.t.NextAtEnd != "" && v == s.old+s.t.OldSize {
				return 0, false, fmt.Errorf("holds %#x, both the end of %s and the start of %s: which it means cannot be told, so it cannot be relocated; nothing was changed", v, s.t.Name, s.t.NextAtEnd)
			}
		}
		return nv, ok, err
	}
}
