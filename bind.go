package graft

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"graft/elfpatch"
	"graft/internal/elfx"
	"graft/internal/loader"
	"graft/safepoint"
	"graft/tracer"
	"graft/trampoline"
)

// bind.go plugs the real packages into the controller's interfaces.

func defaultSystem() (*system, error) {
	return &system{
		attach: func(pid int) (proc, error) {
			p, err := tracer.Attach(pid)
			if err != nil {
				return nil, err
			}
			return p, nil
		},
		readMaps:   tracer.ReadMaps,
		modules:    tracer.Modules,
		load:       loadImage,
		unmapImage: func(p proc, base, size uint64) error { return p.Munmap(base, size) },
		findHole: func(maps []tracer.Mapping, exe *tracer.Module, size uint64) (uint64, error) {
			return loader.FindHole(maps, loader.ImageSpan(maps, exe), size)
		},
		newChecker: newChecker,
		plan:       planJump,
		isGo:       func(pid int) bool { return isGoExecutable(tracer.ExePath(pid)) },
		openMem: func(pid int) (memReader, error) {
			f, err := procMem(pid)
			if err != nil {
				return nil, err
			}
			return f, nil
		},
		symbols:   readSymbols,
		readPatch: readPatchFile,
		diff:      diffBinaries,
		now:       time.Now,
		check:     tracer.Check,
		tracedBy:  tracedBy,
		fds:       tracer.MemfdDescriptors,
	}, nil
}

// loadedAdapter keeps loader.Loaded behind loadedImage.
type loadedAdapter struct{ l *loader.Loaded }

func (a loadedAdapter) Base() uint64 { return a.l.Base }
func (a loadedAdapter) Size() uint64 { return a.l.Size }
func (a loadedAdapter) Unload(p proc) error {
	tp, ok := p.(*tracer.Process)
	if !ok {
		return fmt.Errorf("unload image at %#x: not a traced process", a.l.Base)
	}
	return a.l.Unload(tp)
}

func loadImage(ctx context.Context, p proc, pid int, im *elfpatch.Image, exe *tracer.Module, mods []tracer.Module, id string) (loadedImage, error) {
	tp, ok := p.(*tracer.Process)
	if !ok {
		return nil, fmt.Errorf("load image into pid %d: not a traced process", pid)
	}
	res, err := loader.NewResolverFor(pid, mods, tp, exe)
	if err != nil {
		return nil, err
	}
	pl := loadPlanOf(ctx)
	l, err := loader.Load(tp, im, exe, res.Resolve, loader.Options{ID: id, Base: pl.base, KeepBorrowed: pl.keep})
	if err != nil {
		return nil, err
	}
	return loadedAdapter{l}, nil
}

// unwinder adapts safepoint to checker. last holds the stacks of the
// last successful waitSafe, for framesIn in the same pause.
type unwinder struct {
	u    *safepoint.Unwinder
	last map[int][]safepoint.Frame
	// stays are the frames the last successful wait let stay.
	stays []safepoint.Stayed
}

func (w *unwinder) stayed() []safepoint.Stayed { return w.stays }

func newChecker(pid int, mods []tracer.Module, extra []imageModule) (checker, error) {
	if gc, ok, err := newGoChecker(pid, mods); ok {
		return gc, err
	}
	// The images' own mappings (memfds named graft-<id>) show up among
	// the modules too, as files nobody can open: the images below
	// describe them.
	var all []tracer.Module
	for _, md := range mods {
		inImage := false
		for _, m := range extra {
			for _, mp := range md.Mappings {
				inImage = inImage || m.Size > 0 && mp.Start >= m.Base && mp.Start < m.Base+m.Size
			}
		}
		if !inImage {
			all = append(all, md)
		}
	}
	var images []safepoint.Image
	for _, m := range extra {
		if m.Size == 0 {
			continue
		}
		if m.EhFrameSize > 0 {
			// NEW's CFI is mapped with the image: read it from the
			// target, NEW's file is not needed (nor trusted).
			im := safepoint.Image{
				Name: imageName(m), Base: m.Base, Size: m.Size,
				EhFrame: m.EhFrame, EhFrameSize: m.EhFrameSize,
				EhFrameHdr: m.EhFrameHdr, EhFrameHdrSize: m.EhFrameHdrSize,
			}
			for _, f := range m.Funcs {
				if f.Addr >= m.Base {
					im.Symbols = append(im.Symbols, safepoint.Symbol{Name: f.Name, Addr: f.Addr - m.Base, Size: f.Size})
				}
			}
			images = append(images, im)
			continue
		}
		// A patch recorded without its CFI's place (version-1 patch
		// file): the CFI comes from the NEW file. Without the file, a
		// PC inside makes the stack incomplete, which is never safe.
		all = append(all, tracer.Module{
			Path: m.Path, BuildID: m.BuildID, Base: m.Base, Bias: m.Base,
			Mappings: []tracer.Mapping{{Start: m.Base, End: m.Base + m.Size, Perms: "r-xp", Path: m.Path}},
		})
	}
	u, err := safepoint.ForProcessImages(pid, all, images)
	if err != nil {
		return nil, err
	}
	returns := map[uint64]uint64{}
	for _, m := range extra {
		for k, v := range m.Returns {
			returns[k] = v
		}
	}
	if len(returns) > 0 {
		u.MapReturns(returns)
	}
	if f, err := procMem(pid); err == nil {
		// Read the images' CFI now, while the target runs, not in the
		// pause. A failure here shows again, as incomplete stacks.
		if len(images) > 0 {
			u.Preload(f)
		}
		// And work out the unwind rules of the sleeping stacks now.
		u.Warm(pid, f)
		f.Close()
	}
	return &unwinder{u: u}, nil
}

// imageName is how frames in a loaded image show their module.
func imageName(m imageModule) string {
	if m.Path != "" {
		return filepath.Base(m.Path) + " (graft image)"
	}
	id := m.BuildID
	if len(id) > 12 {
		id = id[:12]
	}
	return "graft image " + id
}

func toSafepoint(rs []namedRange) []safepoint.Range {
	out := make([]safepoint.Range, 0, len(rs))
	for _, r := range rs {
		out = append(out, safepoint.Range{Start: r.Start, End: r.End, Name: r.Name})
	}
	return out
}

// stopClock notes when the target was last stopped from running.
type stopClock struct {
	safepoint.Target
	running bool
	last    time.Time
}

func (c *stopClock) Stop() error {
	if c.running {
		c.last = time.Now()
		c.running = false
	}
	return c.Target.Stop()
}

func (c *stopClock) Resume() error {
	c.running = true
	return c.Target.Resume()
}

func (w *unwinder) waitSafe(ctx context.Context, p proc, spec safeSpec, timeout time.Duration) (time.Time, error) {
	w.last = nil
	t, ok := p.(safepoint.Target)
	if !ok {
		return time.Time{}, errors.New("wait for safe point: not a traced process")
	}
	clock := &stopClock{Target: t}
	sp := safepoint.Spec{
		Functions:   toSafepoint(spec.Functions),
		Entries:     toSafepoint(spec.Entries),
		AllowActive: spec.AllowActive,
		Stay:        spec.Stay,
		Progress:    spec.Progress,
		Thread:      spec.Thread,
		SwitchOK:    spec.SwitchOK,
	}
	for i := range sp.Functions {
		sp.Functions[i].Allow = spec.Allow[sp.Functions[i].Name]
	}
	w.stays = nil
	stacks, err := safepoint.WaitSafeStacks(ctx, clock, w.u, sp, timeout)
	if err == nil {
		w.last = stacks
		w.stays = safepoint.Judge(stacks, sp).Stayed
	}
	return clock.last, err
}

func (w *unwinder) framesIn(p proc, rs []Range) ([]bool, error) {
	stacks := w.last
	w.last = nil // valid for one pause only
	if stacks == nil {
		t, ok := p.(safepoint.Target)
		if !ok {
			return nil, errors.New("unwind: not a traced process")
		}
		var err error
		if stacks, err = w.u.StacksOf(t); err != nil {
			return nil, err
		}
	}
	hit := make([]bool, len(rs))
	for _, st := range stacks {
		for _, f := range st {
			pc := f.PC
			if !f.Exact && pc > 0 {
				pc-- // a return address may point just past a call
			}
			for i, r := range rs {
				if r.Contains(pc) || r.Contains(f.PC) {
					hit[i] = true
				}
			}
			if f.Incomplete {
				// Unknown frames beyond: count every range as hit.
				for i := range hit {
					hit[i] = true
				}
			}
		}
	}
	return hit, nil
}

func planJump(code []byte, entry, target uint64) (site, error) {
	s, err := trampoline.Plan(code, entry, target)
	if err != nil {
		return site{}, err
	}
	return site{Addr: s.Addr, Orig: s.Orig, New: s.New}, nil
}

func readPatchFile(path string) (*Patch, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	return readPatchData(path, data)
}

// readPatchData parses a patch file's bytes (read once, so what the trust
// policy checked is what is applied).
func readPatchData(path string, data []byte) (*Patch, error) {
	p, err := elfpatch.ReadPatch(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("read patch %s: %w", path, err)
	}
	pt := fromElfpatch(p)
	// The NEW path in a patch file says where NEW was when the patch was
	// made; record it only if that file is still NEW (stacked patches
	// need its symbols).
	pt.NewPath = absIfBuild(pt.NewPath, pt.NewBuildID)
	return pt, nil
}

func diffBinaries(oldPath, newPath string, rules map[string]*elfpatch.Rules) (*Patch, error) {
	old, err := elfpatch.Open(oldPath)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	nb, err := elfpatch.Open(newPath)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	p, err := elfpatch.BuildPatch(old, nb, elfpatch.AllowRefused(), elfpatch.WithRules(rules))
	var perr *elfpatch.PlanError
	if errors.As(err, &perr) {
		// The diff found nothing it refuses but the new code cannot be
		// pointed at the running state (a global whose layout changed
		// needs a transformer): a refusal, before anything is touched.
		return nil, &RefusedError{PatchID: patchID(old.BuildID(), nb.BuildID()), Reasons: []string{perr.Error()}}
	}
	if err != nil {
		return nil, err
	}
	if p.Image == nil || len(p.Image.Segments) == 0 {
		if err := planImage(p, old, nb); err != nil {
			return nil, err
		}
	}
	pt := fromElfpatch(p)
	pt.NewPath = absIfBuild(newPath, pt.NewBuildID)
	return pt, nil
}

// absIfBuild returns path made absolute if it holds the build buildID, ""
// otherwise: the record keeps only a path a later invocation, from any
// directory, can open to find NEW's symbols.
func absIfBuild(path, buildID string) string {
	if path == "" {
		return ""
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	if id, err := fileBuildID(abs); err != nil || id != buildID {
		return ""
	}
	return abs
}

// planImage fills the image of a patch whose builder left it empty
// (BuildPatch before it calls PlanImage itself).
func planImage(p *elfpatch.Patch, old, nb *elfpatch.Binary) error {
	if p.Report == nil || p.Report.Verdict == elfpatch.VerdictRefused {
		return nil // refused: apply says why and never needs the image
	}
	im, err := elfpatch.PlanImage(old, nb, p.Report)
	if err != nil {
		return err
	}
	p.Image = im
	return nil
}

// patchID names a patch by the builds it goes between: short, stable across
// invocations and machines, the same for a patch file and an on-the-fly
// diff of the same pair.
func patchID(oldBuildID, newBuildID string) string {
	sum := sha256.Sum256([]byte(oldBuildID + "\x00" + newBuildID))
	return fmt.Sprintf("%x", sum[:6])
}

// fromElfpatch is the controller's view of a patch: an id derived from what
// it binds (OLD, NEW), the refusal reasons, and each changed function's
// padding (a function shorter than the jump may take it into the
// alignment bytes after it).
func fromElfpatch(p *elfpatch.Patch) *Patch {
	pt := &Patch{
		OldBuildID: p.OldBuildID,
		NewBuildID: p.NewBuildID,
		NewPath:    p.NewPath,
		Image:      p.Image,
	}
	pt.ID = patchID(p.OldBuildID, p.NewBuildID)
	if r := p.Report; r != nil {
		pt.Warnings = r.Warnings
		pt.TypesUnchecked = r.TypesUnchecked
		pt.Transfers, pt.PtrSites = r.Transfers, r.PtrSites
		if r.Verdict != elfpatch.VerdictAuto {
			for _, why := range r.Reasons {
				if why.Verdict == elfpatch.VerdictAuto || why.Verdict == elfpatch.VerdictTransformer && hasTransfer(r, why.Symbol) {
					continue
				}
				msg := why.Symbol + ": " + why.Message
				if why.Verdict == elfpatch.VerdictTransformer {
					msg += " (needs a state transformer, which graft does not run)"
				}
				pt.Refused = append(pt.Refused, msg)
			}
			if len(pt.Refused) == 0 && r.Verdict == elfpatch.VerdictRefused {
				pt.Refused = []string{"diff verdict " + string(r.Verdict)}
			}
		}
		for _, f := range r.Changed {
			if f.Resume != nil {
				if pt.Resume == nil {
					pt.Resume = map[string]*elfpatch.Resume{}
				}
				pt.Resume[f.Name] = f.Resume
			}
			if f.Origin != "" {
				if pt.Origins == nil {
					pt.Origins = map[string]string{}
				}
				pt.Origins[f.Name] = f.Origin
			}
			if len(f.Parts) > 0 {
				if pt.Parts == nil {
					pt.Parts = map[string][]string{}
				}
				pt.Parts[f.Name] = f.Parts
			}
			if f.Pad > 0 {
				if pt.Pad == nil {
					pt.Pad = map[string]uint64{}
				}
				pt.Pad[f.Name] = f.Pad
			}
		}
	}
	return pt
}

func fileBuildID(path string) (string, error) {
	id, err := elfx.FileBuildID(path)
	if err != nil {
		return "", fmt.Errorf("read build-id of %s: %w", path, err)
	}
	return id, nil
}

// tracedBy reads TracerPid from /proc/PID/status (0: not traced), and the
// tracer's command name.
func tracedBy(pid int) (int, string) {
	tp := tracer.TracerPid(pid)
	if tp == 0 {
		return 0, ""
	}
	return tp, tracer.Comm(tp)
}
