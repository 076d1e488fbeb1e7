package graft

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBuildIDMismatch is the sentinel of BuildIDMismatchError.
var ErrBuildIDMismatch = errors.New("patch built for another build")

// BuildIDMismatchError refuses a patch whose OLD is not what runs in the
// target (the executable's build-id, or for a stacked patch the NEW
// build-id of the newest patch in effect). Nothing was touched.
type BuildIDMismatchError struct {
	Pid     int
	PatchID string
	// Patch is the patch's OLD build-id; Want is what it must be.
	Patch, Want string
	// OnTopOf names the newest patch in effect ("" if none).
	OnTopOf string
}

func (e *BuildIDMismatchError) Error() string {
	if e.OnTopOf != "" {
		return fmt.Sprintf("patch %s applies to build %s, but pid %d runs patch %s whose new build is %s", e.PatchID, e.Patch, e.Pid, e.OnTopOf, e.Want)
	}
	return fmt.Sprintf("patch %s applies to build %s, but pid %d runs build %s", e.PatchID, e.Patch, e.Pid, e.Want)
}

func (e *BuildIDMismatchError) Is(target error) bool { return target == ErrBuildIDMismatch }

// ErrRefused is the sentinel of RefusedError.
var ErrRefused = errors.New("patch cannot be applied live")

// RefusedError is a patch the diff judged unsafe to apply live (a global
// whose type layout changed, a changed signature, ...). Nothing was touched.
type RefusedError struct {
	PatchID string
	Reasons []string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("patch %s refused: %s", e.PatchID, strings.Join(e.Reasons, "; "))
}

func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// ErrNothingApplied means revert found no patch in the process.
var ErrNothingApplied = errors.New("no patch applied")

// ErrAlreadyApplied refuses a patch whose NEW build is what the process
// already runs (the same patch applied twice). Nothing was touched.
var ErrAlreadyApplied = errors.New("patch already in effect")
