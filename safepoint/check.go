package safepoint

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Range is [Start, End) in runtime addresses.
type Range struct {
	Start, End uint64
	Name       string
}

func (r Range) contains(a uint64) bool { return a >= r.Start && a < r.End }

// Spec says what a patch needs to be safe.
type Spec struct {
	// Functions are the bodies of the functions being replaced: no PC and
	// no return address may lie inside one, unless its Name is in
	// AllowActive.
	Functions []Range
	// Entries are the bytes the trampolines overwrite: no PC and no return
	// address may ever lie inside them, whatever AllowActive says, because
	// a thread resuming there would execute half an old instruction and
	// half a jump.
	Entries []Range
	// AllowActive names functions whose running frames may finish in the
	// old code (an accept loop, main): new calls go to the new code.
	AllowActive []string
	// Progress, if set, is called about once a second while WaitSafe
	// waits (progress.go), on WaitSafe's goroutine.
	Progress func(Waiting)
}

// ErrActive is what every *ActiveError matches with errors.Is.
var ErrActive = errors.New("patched code is active")

// ActiveError says why a stack is not safe: a frame inside a function being
// replaced, inside the bytes a trampoline overwrites, or a stack that could
// not be unwound to its end.
type ActiveError struct {
	Tid      int
	Function string // the function being replaced (or the frame's function)
	Frame    int    // index of the offending frame in Stack
	PC       uint64 // that frame's PC
	Entry    bool   // the frame lies inside bytes a trampoline overwrites
	// Incomplete: the stack could not be unwound to its end, so it cannot
	// be shown free of the functions being replaced.
	Incomplete bool
	Reason     string
	Stack      []Frame
}

func (e *ActiveError) Error() string {
	var what string
	switch {
	case e.Incomplete:
		what = fmt.Sprintf("thread %d: stack could not be unwound to its end (%s), so it may hold %s",
			e.Tid, e.Reason, orAny(e.Function))
	case e.Entry:
		what = fmt.Sprintf("thread %d has pc/return address %#x (frame #%d) inside the entry bytes of %s that the jump overwrites",
			e.Tid, e.PC, e.Frame, e.Function)
	default:
		what = fmt.Sprintf("thread %d is inside %s (frame #%d, pc %#x)", e.Tid, e.Function, e.Frame, e.PC)
	}
	return what + "; stack: " + FormatStack(e.Stack)
}

func orAny(f string) string {
	if f == "" {
		return "a function being replaced"
	}
	return f
}

// Is makes errors.Is(err, ErrActive) true.
func (e *ActiveError) Is(target error) bool { return target == ErrActive }

// FormatStack renders a stack on one line, innermost first:
// "f+0x12 <- main+0x40 <- __libc_start_call_main+0x7a ...".
func FormatStack(st []Frame) string {
	parts := make([]string, 0, len(st))
	for _, f := range st {
		s := f.Function
		if s == "" {
			s = fmt.Sprintf("%#x", f.PC)
		}
		if f.Incomplete {
			s += " <- ?? (" + f.Reason + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " <- ")
}

// Check decides whether a patch described by s may go in while the threads
// have the given stacks. It returns nil when safe, otherwise an
// *ActiveError for the first offending thread (lowest TID, innermost
// frame). A frame is inside a range when its PC is, or, for a return
// address, PC-1 is: a call that is the last instruction of a function
// returns just past its end.
func Check(stacks map[int][]Frame, s Spec) error {
	if len(s.Functions) == 0 && len(s.Entries) == 0 {
		return nil // nothing is replaced: no stack can be in the way
	}
	allowed := map[string]bool{}
	for _, n := range s.AllowActive {
		allowed[n] = true
	}
	tids := make([]int, 0, len(stacks))
	for tid := range stacks {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	for _, tid := range tids {
		st := stacks[tid]
		for i, f := range st {
			addrs := []uint64{f.PC}
			if !f.Exact && f.PC != 0 {
				addrs = append(addrs, f.PC-1)
			}
			for _, e := range s.Entries {
				// Only the PC itself: a return address one past the end
				// of the entry bytes resumes after them, which is fine.
				if e.contains(f.PC) {
					return &ActiveError{Tid: tid, Function: e.Name, Frame: i, PC: f.PC, Entry: true, Stack: st}
				}
			}
			for _, r := range s.Functions {
				if allowed[r.Name] {
					continue
				}
				for _, a := range addrs {
					if r.contains(a) {
						return &ActiveError{Tid: tid, Function: r.Name, Frame: i, PC: f.PC, Stack: st}
					}
				}
			}
		}
	}
	// Incomplete stacks second, so that a thread definitely inside a
	// replaced function is what the error names when there is one.
	for _, tid := range tids {
		st := stacks[tid]
		if len(st) == 0 {
			return &ActiveError{Tid: tid, Incomplete: true, Reason: "no frames", Stack: st}
		}
		if last := st[len(st)-1]; last.Incomplete {
			return &ActiveError{Tid: tid, Function: "", Frame: len(st) - 1, PC: last.PC,
				Incomplete: true, Reason: last.Reason, Stack: st}
		}
	}
	return nil
}
