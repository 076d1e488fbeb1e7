package safepoint

import (
	"errors"
	"fmt"
	"strings"
)

// Range is [Start, End) in runtime addresses.
type Range struct {
	Start, End uint64
	Name       string
	// Allow is the name the operator gives to let a frame here stay
	// (a clone's base name); "" means Name.
	Allow string
}

func (r Range) contains(a uint64) bool { return a >= r.Start && a < r.End }

// Spec says what a patch needs to be safe.
type Spec struct {
	// Thread, when set, may block a whole thread whatever its frames
	// (a reason; "" lets the frames decide): a thread being started,
	// whose start routine's argument no frame holds yet.
	Thread func(stack []Frame) string
	// SwitchOK, when set, is asked about a frame Stay would switch (its
	// index in the thread's stack): a reason blocks it instead.
	SwitchOK func(stack []Frame, i int) string
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
	// Stay, when set, decides whether a frame inside one of Functions may
	// stay anyway, because it was proven to finish as the other version
	// would, or the operator allowed it by a name only the caller can
	// resolve (a function inside an image): resume is the frame's resume
	// address (its PC), exact whether that is where the thread runs
	// rather than a return address. nil: every such frame blocks.
	Stay func(fn string, resume uint64, exact bool) StayVerdict
	// Progress, if set, is called about once a second while WaitSafe
	// waits (progress.go), on WaitSafe's goroutine.
	Progress func(Waiting)
}

// StayVerdict is Spec.Stay's answer for one frame.
type StayVerdict struct {
	OK      bool   // the frame may stay
	Allowed bool   // by the operator's name, not by proof
	Why     string // the proof, the name, or why not
	// Allow is the operator's name that would let the frame stay, when
	// the Range has none; Function names the frame's function where the
	// Range's name is coarser (a whole image).
	Allow    string
	Function string
	// Switch, when OK, says the frame does not stay in its code but
	// goes on in the other version's once its call returns (a frame
	// switch the caller performs in the pause); the value is the
	// caller's plan, handed back in Stayed.
	Switch any
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
	// Why is why the frame could not be proven to stay (Spec.Stay's
	// reason), Allow the --allow-active value that would let it.
	Why   string
	Allow string
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
		if e.Why != "" {
			what += ", not proven to finish safely in its code: " + e.Why
		}
		if e.Allow != "" {
			what += "; --allow-active " + e.Allow + " lets it finish there"
		}
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
// returns just past its end. Judge names every offender.
func Check(stacks map[int][]Frame, s Spec) error {
	j := Judge(stacks, s)
	if len(j.Blockers) == 0 {
		return nil
	}
	return j.Blockers[0]
}
