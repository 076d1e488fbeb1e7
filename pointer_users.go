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
// out-of-line parts) in the module at bias, except the functions the
// patch redirects, whose ranges the jumps' planning adds. A static name
// defined in several units takes every copy: waiting for one too many is
// safe, missing one is not.
func pointerUserRanges(pt *Patch, syms *symbols, bias uint64) []namedRange {
	redirected := map[string]bool{}
	for _, r := range pt.Image.Redirects {
		redirected[r.Name] = true
	}
	var out []namedRange
	seen := map[Range]bool{}
	for _, t := range pt.Transfers {
		for _, fn := range t.PointerUsers {
			if redirected[fn] {
				continue
			}
			for _, name := range []string{fn, fn + ".cold"} {
				for _, s := range syms.byName[name] {
					r := Range{bias + s.Addr, bias + s.Addr + s.Size}
					if !s.Func || s.Size == 0 || seen[r] {
						continue
					}
					seen[r] = true
					out = append(out, namedRange{fn, r})
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
