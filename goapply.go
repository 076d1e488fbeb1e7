package graft

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"graft/elfpatch"
	"graft/internal/goruntime"
	"graft/internal/loader"
	"graft/safepoint"
	"graft/tracer"
)

// Go targets (issue 11, the live half).
//
// A Go patch is an ordinary image (NEW, a PIE, mapped near the executable
// by the loader) plus one thing C patches lack: NEW's moduledata, built
// into the image (loader.BuildGoImage), which the pause links into the
// runtime's module list so that the runtime knows the new code (stack
// growth, GC stack scans, preemption, tracebacks all find functions
// through that list only). Linking is two aligned 8-byte stores while every
// thread is stopped: OLD's last module's next, then runtime.lastmoduledatap.
// The module is never unlinked and the image never unmapped, not even by
// revert (which restores the entry bytes): a goroutine or a closure may
// still hold NEW's code, and the runtime has no way to forget a module.
// The record keeps reverted Go images (State.Retained) so nothing takes
// them for orphans.
//
// Order in the pause: every goroutine checked (goChecker, over
// safepoint.GoUnwinder), the record written, the module linked, the jumps
// written. A graft killed in between leaves at worst a recorded patch
// whose module is linked and whose jumps are not all in: revert finishes
// it, and the image stays.
//
// Stacking: a Go patch is always made against the running executable
// (NEW against /proc/PID/exe) and redirects every function NEW changed
// since that build, over whatever jump is there; so it needs no symbols of
// earlier images, and reverting it puts the previous patch's jumps back.

// goInfo is what a Go patch needs besides its image.
type goInfo struct {
	// Module is the image offset of the moduledata to link.
	Module uint64
	// LastModuledatap is OLD's runtime.lastmoduledatap (link-time) and
	// NextOff the offset of moduledata.next in OLD's runtime.
	LastModuledatap uint64
	NextOff         int
}

// isGoExecutable reports whether the ELF file at path is a Go program.
func isGoExecutable(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return goruntime.IsGo(f)
}

// goPatch makes the patch from OLD (the running executable at oldPath) to
// NEW: diffed is NEW built the way OLD was (what the diff compares), load
// NEW built with -buildmode=pie (what is mapped); the same file when OLD is
// itself a PIE. The plan is elfpatch.PlanGo's.
func goPatch(oldPath, diffedPath, loadPath string) (pt *Patch, err error) {
	defer func() {
		if r := recover(); r != nil {
			pt, err = nil, fmt.Errorf("make Go patch from %s: malformed ELF: %v", loadPath, r)
		}
	}()
	fail := func(err error) error { return fmt.Errorf("make Go patch %s -> %s: %w", oldPath, loadPath, err) }
	old, err := elfpatch.Open(oldPath)
	if err != nil {
		return nil, fail(err)
	}
	diffed, err := elfpatch.Open(diffedPath)
	if err != nil {
		return nil, fail(err)
	}
	load := diffed
	if loadPath != diffedPath {
		if load, err = elfpatch.Open(loadPath); err != nil {
			return nil, fail(err)
		}
	}
	if old.ELF().Type == elf.ET_DYN && diffed != load {
		return nil, fail(errors.New("OLD is a PIE: give NEW built with -buildmode=pie alone (no separate build to diff)"))
	}
	if old.ELF().Type != elf.ET_DYN && diffed == load && load.ELF().Type == elf.ET_DYN {
		return nil, fail(errors.New("OLD is a default (non-PIE) Go build: give NEW built the same way to diff (--new) and NEW built with -buildmode=pie to load (--go-pie)"))
	}
	plan, err := elfpatch.PlanGo(old, diffed, load)
	if err != nil {
		return nil, fail(err)
	}
	oldL, err := goruntime.ReadLayout(old.ELF())
	if err != nil {
		return nil, fail(fmt.Errorf("OLD: %w", err))
	}
	newL, err := goruntime.ReadLayout(load.ELF())
	if err != nil {
		return nil, fail(fmt.Errorf("NEW: %w", err))
	}
	if oldL.ModuleSize != newL.ModuleSize || oldL.Module["next"] != newL.Module["next"] {
		return nil, fail(errors.New("OLD's and NEW's runtime.moduledata differ: not the same Go toolchain"))
	}
	gi, err := loader.BuildGoImage(load.ELF(), newL, goFuncs(plan))
	if err != nil {
		return nil, fail(err)
	}
	pt = &Patch{
		OldBuildID: plan.OldBuildID,
		NewBuildID: plan.LoadBuildID,
		NewPath:    loadPath,
		Image:      gi.Image,
		Go: &goInfo{
			Module:          gi.Module,
			LastModuledatap: oldL.LastModuledatap,
			NextOff:         oldL.Module["next"],
		},
	}
	if pt.OldBuildID == "" || pt.NewBuildID == "" {
		return nil, fail(errors.New("OLD or NEW has no GNU build-id note"))
	}
	pt.ID = patchID(pt.OldBuildID, pt.NewBuildID)
	return pt, nil
}

// goFuncs turns PlanGo's plan into the loader's per-function view.
func goFuncs(p *elfpatch.GoPlan) []loader.GoFunc {
	var out []loader.GoFunc
	idx := map[string]int{}
	for _, f := range p.Funcs {
		idx[f.Name] = len(out)
		out = append(out, loader.GoFunc{Name: f.Name, Old: f.OldEntry, OldSize: f.OldSize, New: f.NewEntry, NewSize: f.NewSize})
	}
	for _, r := range p.Redirects {
		if i, ok := idx[r.Func]; ok {
			out[i].Refs = append(out[i].Refs, loader.GoRef{Off: r.Field, PCNext: r.End, Old: r.Target, Symbol: r.What})
		}
	}
	for _, r := range p.Kept {
		if i, ok := idx[r.Func]; ok {
			out[i].Refs = append(out[i].Refs, loader.GoRef{Off: r.Field, PCNext: r.End, Keep: true, Symbol: r.What, New: r.Target})
		}
	}
	return out
}

// linkGoModule links the moduledata at md into the runtime's module list of
// a stopped target: OLD's last module's next, then lastmoduledatap. It
// returns the function that takes it out again (before a rollback unmaps
// the image; never after the jumps are in).
func linkGoModule(p proc, g *goInfo, bias, md uint64) (unlink func() error, err error) {
	lmp := bias + g.LastModuledatap
	var b [8]byte
	if _, err := p.ReadAt(b[:], int64(lmp)); err != nil {
		return nil, fmt.Errorf("read runtime.lastmoduledatap at %#x: %w", lmp, err)
	}
	last := binary.LittleEndian.Uint64(b[:])
	// lastmoduledatap's module is the end of the chain, unless a graft
	// was killed between the two stores of an earlier link: then the
	// chain goes on into that graft's module, whose image the record
	// keeps; append after the true end.
	var nextAt uint64
	for hops := 0; ; hops++ {
		if hops == 1024 {
			return nil, fmt.Errorf("the Go runtime's module list from %#x does not end (damaged?)", last)
		}
		nextAt = last + uint64(g.NextOff)
		if _, err := p.ReadAt(b[:], int64(nextAt)); err != nil {
			return nil, fmt.Errorf("read the next of module %#x at %#x: %w", last, nextAt, err)
		}
		n := binary.LittleEndian.Uint64(b[:])
		if n == 0 {
			break
		}
		last = n
	}
	put := func(addr, v uint64) error {
		binary.LittleEndian.PutUint64(b[:], v)
		_, err := p.WriteAt(b[:], int64(addr))
		return err
	}
	if err := put(nextAt, md); err != nil {
		return nil, fmt.Errorf("link Go module: write next at %#x: %w", nextAt, err)
	}
	if err := put(lmp, md); err != nil {
		return nil, errors.Join(fmt.Errorf("link Go module: write runtime.lastmoduledatap at %#x: %w", lmp, err), put(nextAt, 0))
	}
	return func() error {
		return errors.Join(put(lmp, last), put(nextAt, 0))
	}, nil
}

// goChecker decides activeness in a Go process over every goroutine.
type goChecker struct {
	g *safepoint.GoUnwinder
}

// newGoChecker returns a goroutine-aware checker when pid runs a Go
// program (ok false otherwise).
func newGoChecker(pid int, mods []tracer.Module) (c checker, ok bool, err error) {
	exe := mainModule(mods)
	if exe == nil {
		return nil, false, nil
	}
	path := tracer.ExePath(pid)
	f, err := elf.Open(path)
	if err != nil {
		return nil, false, nil // the CFI checker says what is wrong
	}
	defer f.Close()
	if !goruntime.IsGo(f) {
		return nil, false, nil
	}
	l, err := goruntime.ReadLayout(f)
	if err != nil {
		return nil, true, fmt.Errorf("pid %d runs a Go program: %w", pid, err)
	}
	g := safepoint.NewGoUnwinder(l, exe.Bias)
	if mem, err := tracer.OpenMem(pid); err == nil {
		g.Preload(mem) // a failure shows again in the pause
		mem.Close()
	}
	return &goChecker{g: g}, true, nil
}

func (c *goChecker) waitSafe(ctx context.Context, p proc, spec safeSpec, timeout time.Duration) (time.Time, error) {
	t, ok := p.(safepoint.Target)
	if !ok {
		return time.Time{}, errors.New("wait for safe point: not a traced process")
	}
	clock := &stopClock{Target: t}
	_, err := safepoint.WaitSafeGo(ctx, clock, c.g, safepoint.Spec{
		Functions:   toSafepoint(spec.Functions),
		Entries:     toSafepoint(spec.Entries),
		AllowActive: spec.AllowActive,
	}, timeout)
	return clock.last, err
}

// framesIn says every range is in use: a Go image is never unloaded (its
// module stays registered with the runtime).
func (c *goChecker) framesIn(p proc, rs []Range) ([]bool, error) {
	out := make([]bool, len(rs))
	for i := range out {
		out[i] = true
	}
	return out, nil
}

// GoUnwinder returns a goroutine-aware unwinder for pid when it runs a Go
// program (ok false otherwise), its module list read while it runs.
func GoUnwinder(pid int) (g *safepoint.GoUnwinder, ok bool, err error) {
	mods, err := tracer.Modules(pid)
	if err != nil {
		return nil, false, fmt.Errorf("unwinder for pid %d: %w", pid, err)
	}
	c, ok, err := newGoChecker(pid, mods)
	if !ok || err != nil {
		return nil, ok, err
	}
	return c.(*goChecker).g, true, nil
}

// ErrGoNeedsNew refuses a patch without a Go module record (a patch file)
// for a Go program: its code would be unknown to the runtime, which throws
// at the first stack growth through it.
var ErrGoNeedsNew = errors.New("pid runs a Go program, and a patch file carries no module record for the Go runtime: apply with --new NEW (and --go-pie NEWPIE for a default build)")

// goPatchFits refuses a non-Go patch for a Go program and a Go patch for
// anything else.
func goPatchFits(isGo bool, pt *Patch) error {
	switch {
	case isGo && pt.Go == nil:
		return ErrGoNeedsNew
	case !isGo && pt.Go != nil:
		return errors.New("a Go patch for a process that does not run a Go program")
	}
	return nil
}
