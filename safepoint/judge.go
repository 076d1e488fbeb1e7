package safepoint

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Stayed is a frame inside a function being replaced that was let stay:
// proven to finish as the other version would (Why says so), or allowed
// by name (Allowed).
type Stayed struct {
	Tid      int    `json:"tid"`
	Frame    int    `json:"frame"`
	Function string `json:"function"`
	PC       uint64 `json:"pc"`
	Allowed  bool   `json:"allowed,omitempty"`
	Why      string `json:"why"`
	// Switch is the caller's switch plan (StayVerdict.Switch), CFA the
	// frame's canonical frame address.
	Switch any    `json:"-"`
	CFA    uint64 `json:"-"`
}

// Judgement is every frame's verdict: the frames that block (every thread
// and frame, innermost first per thread, threads by TID; incomplete
// stacks after the frames definitely inside) and the frames let stay.
type Judgement struct {
	Blockers []*ActiveError
	Stayed   []Stayed
}

// Judge looks at every frame of every thread against s, as Check does,
// and names every blocker instead of the first.
func Judge(stacks map[int][]Frame, s Spec) Judgement {
	var j Judgement
	if len(s.Functions) == 0 && len(s.Entries) == 0 {
		return j // nothing is replaced: no stack can be in the way
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
		if s.Thread != nil {
			if why := s.Thread(st); why != "" {
				f := Frame{}
				if len(st) > 0 {
					f = st[0]
				}
				j.Blockers = append(j.Blockers, &ActiveError{Tid: tid, Function: f.Function, Frame: 0, PC: f.PC, Stack: st, Why: why})
				continue
			}
		}
	frames:
		for i, f := range st {
			addrs := []uint64{f.PC}
			if !f.Exact && f.PC != 0 {
				addrs = append(addrs, f.PC-1)
			}
			for _, e := range s.Entries {
				// Only the PC itself: a return address one past the end
				// of the entry bytes resumes after them, which is fine.
				if e.contains(f.PC) {
					j.Blockers = append(j.Blockers, &ActiveError{Tid: tid, Function: e.Name, Frame: i, PC: f.PC, Entry: true, Stack: st})
					continue frames
				}
			}
			for _, r := range s.Functions {
				in := false
				for _, a := range addrs {
					in = in || r.contains(a)
				}
				if !in {
					continue
				}
				allow := r.Allow
				if allowed[r.Name] || (allow != "" && allowed[allow]) {
					by := allow
					if by == "" {
						by = r.Name
					}
					j.Stayed = append(j.Stayed, Stayed{Tid: tid, Frame: i, Function: r.Name, PC: f.PC, Allowed: true,
						Why: "allowed by --allow-active " + by})
					continue frames
				}
				why, fn := "", r.Name
				if s.Stay != nil {
					v := s.Stay(r.Name, f.PC, f.Exact)
					if v.OK && v.Switch != nil && s.SwitchOK != nil {
						if why := s.SwitchOK(st, i); why != "" {
							v = StayVerdict{Why: why, Function: v.Function}
						}
					}
					if v.Function != "" {
						fn = v.Function
					}
					if v.OK {
						j.Stayed = append(j.Stayed, Stayed{Tid: tid, Frame: i, Function: fn, PC: f.PC, Allowed: v.Allowed, Why: v.Why, Switch: v.Switch, CFA: f.CFA})
						continue frames
					}
					why = v.Why
					if allow == "" {
						allow = v.Allow
					}
				}
				j.Blockers = append(j.Blockers, &ActiveError{Tid: tid, Function: fn, Frame: i, PC: f.PC, Stack: st, Why: why, Allow: allow})
				continue frames
			}
		}
	}
	// Incomplete stacks second, so that the threads definitely inside a
	// replaced function come first.
	for _, tid := range tids {
		st := stacks[tid]
		if len(st) == 0 {
			j.Blockers = append(j.Blockers, &ActiveError{Tid: tid, Incomplete: true, Reason: "no frames", Stack: st})
			continue
		}
		if last := st[len(st)-1]; last.Incomplete {
			j.Blockers = append(j.Blockers, &ActiveError{Tid: tid, Function: "", Frame: len(st) - 1, PC: last.PC,
				Incomplete: true, Reason: last.Reason, Stack: st})
		}
	}
	return j
}

// BlockedError names every frame that kept a patch out, in one error.
// errors.As finds the first as an *ActiveError; errors.Is matches
// ErrActive.
type BlockedError struct {
	Blockers []*ActiveError
	// Stayed are the frames the same check let stay.
	Stayed []Stayed
}

func (e *BlockedError) Error() string {
	if len(e.Blockers) == 1 {
		return e.Blockers[0].Error()
	}
	parts := make([]string, len(e.Blockers))
	for i, b := range e.Blockers {
		parts[i] = fmt.Sprintf("\n  (%d) %s", i+1, b.Error())
	}
	msg := fmt.Sprintf("%d frames block:%s", len(e.Blockers), strings.Join(parts, ""))
	var names []string
	for _, b := range e.Blockers {
		if b.Allow != "" && !slices.Contains(names, b.Allow) {
			names = append(names, b.Allow)
		}
	}
	if len(names) > 1 {
		msg += "\n  --allow-active " + strings.Join(names, ",") + " lets every one of them finish in the old code"
	}
	return msg
}

func (e *BlockedError) Unwrap() []error {
	out := make([]error, len(e.Blockers))
	for i, b := range e.Blockers {
		out[i] = b
	}
	return out
}

// StayedIn returns the frames let stay in the check err reports.
func StayedIn(err error) []Stayed {
	var be *BlockedError
	if errors.As(err, &be) {
		return be.Stayed
	}
	return nil
}

// Blockers returns every blocking frame err names (nil if none).
func Blockers(err error) []*ActiveError {
	var be *BlockedError
	if errors.As(err, &be) {
		return be.Blockers
	}
	var ae *ActiveError
	if errors.As(err, &ae) {
		return []*ActiveError{ae}
	}
	return nil
}
