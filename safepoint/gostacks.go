package safepoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"graft/internal/goruntime"
	"graft/tracer"
)

// Go processes: every goroutine is a stack.
//
// In a Go process the code graft replaces runs on goroutine stacks, and a
// goroutine that is not running has no thread at all: its frames exist
// only in its stack memory and its saved registers (g.sched). So for a Go
// target the stacks to check are the goroutines', read from runtime.allgs
// and unwound with the pclntab (internal/goruntime), plus every thread's
// PC. A thread's own stack (g0, the signal stack, C code under cgo) runs
// runtime or C code, which a Go patch never replaces; it is shown, not
// demanded complete (g0 stacks end in runtime.mcall or runtime.mstart,
// where there is no CFI terminator).

// Stack is one stack of a stopped process: a thread's or a goroutine's.
type Stack struct {
	// Kind is "thread" or "goroutine"; ID the thread id or goroutine id.
	Kind string
	ID   int64
	// Status is the goroutine's status as a SIGQUIT dump says it
	// ("running", "waiting", ...); for a goroutine running on a thread,
	// Tid is that thread.
	Status string
	Tid    int
	Frames []Frame
	// Informational marks a stack that need not be complete (a Go
	// thread's system stack): its frames are checked, its end is not.
	Informational bool
}

// GoUnwinder unwinds the goroutines (and threads) of one Go process.
type GoUnwinder struct {
	Mods *goruntime.Modules
}

// NewGoUnwinder reads the runtime layout of the executable at exe (loaded
// with bias) for the process.
func NewGoUnwinder(l *goruntime.Layout, bias uint64) *GoUnwinder {
	return &GoUnwinder{Mods: goruntime.NewModules(l, bias)}
}

// Preload reads the module list and pclntabs while the target runs (the
// pclntab of a module never changes), so the pause re-reads only the
// chain.
func (g *GoUnwinder) Preload(mem Memory) error { return g.Mods.Refresh(mem) }

func goFrames(fs []goruntime.Frame, incomplete string) []Frame {
	out := make([]Frame, 0, len(fs)+1)
	for _, f := range fs {
		name := f.Func
		if f.Inlined {
			name += "(...)" // inlined, as the runtime's tracebacks mark it
		}
		if f.File != "" {
			name = fmt.Sprintf("%s (%s:%d)", name, f.File, f.Line)
		}
		out = append(out, Frame{PC: f.PC, CFA: f.SP, Function: name, Exact: f.Exact})
	}
	if incomplete != "" {
		if len(out) == 0 {
			out = append(out, Frame{})
		}
		out[len(out)-1].Incomplete = true
		out[len(out)-1].Reason = incomplete
	}
	return out
}

// StacksOf returns every goroutine's stack and every thread's, of a
// stopped target.
func (g *GoUnwinder) StacksOf(t Target) ([]Stack, error) {
	if err := g.Mods.Refresh(t); err != nil {
		return nil, fmt.Errorf("read Go modules: %w", err)
	}
	regs := map[int]goruntime.ThreadRegs{}
	var out []Stack
	for _, tid := range t.Threads() {
		r, err := t.Regs(tid)
		if err != nil {
			if errors.Is(err, tracer.ErrNoThread) {
				continue
			}
			return nil, fmt.Errorf("registers of thread %d: %w", tid, err)
		}
		regs[tid] = goruntime.ThreadRegs{PC: r.PC(), SP: r.SP()}
		fs, why := g.Mods.Unwind(t, r.PC(), r.SP(), true, 0)
		st := Stack{Kind: "thread", ID: int64(tid), Tid: tid, Informational: true}
		if len(fs) == 0 {
			st.Frames = []Frame{{PC: r.PC(), Exact: true, Reason: why}}
		} else {
			st.Frames = goFrames(fs, "")
			if why != "" {
				st.Frames[len(st.Frames)-1].Reason = why
			}
		}
		out = append(out, st)
	}
	gs, err := g.Mods.L.Goroutines(t, g.Mods.Bias)
	if err != nil {
		return nil, err
	}
	for _, s := range g.Mods.GoroutineStacks(t, gs, regs) {
		gr := s.G
		st := Stack{Kind: "goroutine", ID: gr.ID, Status: g.Mods.L.StatusName(gr.Status), Frames: goFrames(s.Frames, s.Incomplete)}
		if gr.Status == g.Mods.L.Status["running"] {
			st.Tid = gr.Tid
		}
		out = append(out, st)
	}
	return out, nil
}

// StackActiveError says which stack (goroutine or thread) blocks a patch.
type StackActiveError struct {
	Kind   string
	ID     int64
	Status string
	Err    *ActiveError
}

func (e *StackActiveError) Error() string {
	who := fmt.Sprintf("%s %d", e.Kind, e.ID)
	if e.Status != "" {
		who += " [" + e.Status + "]"
	}
	a := e.Err
	var what string
	switch {
	case a.Incomplete:
		what = fmt.Sprintf("%s: stack could not be unwound to its end (%s), so it may hold %s", who, a.Reason, orAny(a.Function))
	case a.Entry:
		what = fmt.Sprintf("%s resumes at %#x (frame #%d) inside the entry bytes of %s that the jump overwrites", who, a.PC, a.Frame, a.Function)
	default:
		what = fmt.Sprintf("%s is inside %s (frame #%d, pc %#x)", who, a.Function, a.Frame, a.PC)
	}
	return what + "; stack: " + FormatStack(a.Stack)
}

// Is makes errors.Is(err, ErrActive) true.
func (e *StackActiveError) Is(target error) bool { return target == ErrActive }

// Unwrap gives the underlying *ActiveError.
func (e *StackActiveError) Unwrap() error { return e.Err }

// CheckStacks is Check over goroutine and thread stacks: the first stack
// in the way is named by kind and id. An informational stack's end is not
// checked.
func CheckStacks(stacks []Stack, s Spec) error {
	m := map[int][]Frame{}
	for i, st := range stacks {
		fs := st.Frames
		if st.Informational && len(fs) > 0 && fs[len(fs)-1].Incomplete {
			fs = append([]Frame(nil), fs...)
			fs[len(fs)-1].Incomplete = false
		}
		m[i] = fs
	}
	err := Check(m, s)
	var ae *ActiveError
	if errors.As(err, &ae) {
		st := stacks[ae.Tid]
		return &StackActiveError{Kind: st.Kind, ID: st.ID, Status: st.Status, Err: ae}
	}
	return err
}

// WaitSafeGo is WaitSafeStacks for a Go process: stop, unwind every
// goroutine and thread, check, and back off while any is in the way.
func WaitSafeGo(ctx context.Context, t Target, g *GoUnwinder, s Spec, timeout time.Duration) ([]Stack, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		if err := t.Stop(); err != nil {
			return nil, fmt.Errorf("wait for safe point: stop: %w", err)
		}
		stacks, err := g.StacksOf(t)
		if err != nil {
			return nil, fmt.Errorf("wait for safe point: %w", err)
		}
		cerr := CheckStacks(stacks, s)
		if cerr == nil {
			return stacks, nil
		}
		now := time.Now()
		if err := ctx.Err(); err != nil {
			return stacks, fmt.Errorf("wait for safe point: %w after %d checks in %v: %w", err, attempt, now.Sub(start).Round(time.Millisecond), cerr)
		}
		if !now.Before(deadline) {
			return stacks, fmt.Errorf("wait for safe point: timed out after %d checks in %v: %w", attempt, now.Sub(start).Round(time.Millisecond), cerr)
		}
		if err := t.Resume(); err != nil {
			return nil, fmt.Errorf("wait for safe point: resume: %w", err)
		}
		wait := min(backoff, deadline.Sub(now))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		timer.Stop()
		backoff = min(2*backoff, maxBackoff)
	}
}

// FormatGoStacks renders stacks the way a SIGQUIT dump does:
//
//	goroutine 7 [waiting]:
//	main.handleCount (/src/main.go:53)
//	    pc=0x628088
func FormatGoStacks(stacks []Stack) string {
	var b strings.Builder
	sorted := append([]Stack(nil), stacks...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].Kind != sorted[j].Kind {
			return sorted[i].Kind == "goroutine"
		}
		return sorted[i].ID < sorted[j].ID
	})
	for _, st := range sorted {
		fmt.Fprintf(&b, "%s %d", st.Kind, st.ID)
		if st.Status != "" {
			fmt.Fprintf(&b, " [%s]", st.Status)
		}
		if st.Kind == "goroutine" && st.Tid != 0 {
			fmt.Fprintf(&b, " on thread %d", st.Tid)
		}
		b.WriteString(":\n")
		for _, f := range st.Frames {
			if f.Function != "" {
				fmt.Fprintf(&b, "  %#x %s\n", f.PC, f.Function)
			} else {
				fmt.Fprintf(&b, "  %#x ?\n", f.PC)
			}
			if f.Incomplete {
				fmt.Fprintf(&b, "  (stack incomplete: %s)\n", f.Reason)
			} else if f.Reason != "" && st.Informational {
				fmt.Fprintf(&b, "  (%s)\n", f.Reason)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
