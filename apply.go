package graft

import (
	"context"
	"errors"
	"fmt"
	"graft/internal/record"
	"slices"
	"sort"
	"time"

	"graft/elfpatch"
	"graft/safepoint"
	"graft/tracer"
)

// Patch is what the controller needs of a patch, whichever way it was made
// (a patch file from `graft diff -o`, or a diff on the fly).
type Patch struct {
	ID         string
	OldBuildID string
	NewBuildID string
	// NewPath is the NEW binary, when it is on this machine: recorded in
	// the target so a later `--new` apply can diff against it. Unwinding
	// and stacking use the image's self-description instead (record), and
	// fall back to this file only for a version-1 patch file.
	NewPath string
	Image   *elfpatch.Image
	// Refused holds the diff's reasons when it judged the patch unsafe
	// to apply live; such a patch is never applied.
	Refused []string
	// Warnings are the diff's limits (types not compared, for instance),
	// passed on to whoever applies the patch.
	Warnings []string
	// TypesUnchecked: the diff could not compare types (no DWARF on one
	// side); apply refuses it unless ApplyOptions.AllowUncheckedTypes.
	TypesUnchecked bool
	// Pad is, by function name, how many bytes of alignment padding after
	// OLD's function the jump may take (functions shorter than the jump).
	Pad map[string]uint64
	// Parts are, by function name, its out-of-line parts (foo.cold), which
	// get no jump but count as the function for the safety check.
	Parts map[string][]string
	// Signer is who signed the patch file, when the trust policy checked
	// it (recorded in the target).
	Signer *Signer
	// Go is set for a patch of a Go program (goapply.go): the module
	// record to link in the pause.
	Go *goInfo
	// Transfers convert the globals whose layout changed, in the pause
	// (transfer.go); PtrSites are OLD's pointer fields that may point
	// into them.
	Transfers []elfpatch.Transfer
	PtrSites  []elfpatch.PtrSite
	// Resume is, by function name, where a frame may stay (frames.go);
	// Origins a clone's base name, which --allow-active also takes.
	Resume  map[string]*elfpatch.Resume
	Origins map[string]string
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// Timeout bounds the wait for a safe point (default 5s).
	Timeout time.Duration
	// AllowActive names functions that may stay on a stack: their running
	// frames finish in the old code, new calls take the new code.
	AllowActive []string
	// DryRun prepares and checks (including the safe point) and writes
	// nothing into the target.
	DryRun bool
	// Trust is the policy for which patches may go in; nil reads the
	// default (/etc/graft).
	Trust *TrustPolicy
	// Once (with DryRun) checks the stacks in one stop and does not wait
	// for a safe point: `graft diff -p` shows what is on them right now.
	Once bool
	// Progress, if set, is called about once a second while the apply
	// waits for a safe point: what blocks and how long is left.
	Progress func(safepoint.Waiting)
	// AllowUncheckedTypes lets in a patch whose diff could not compare
	// type layouts and signatures (a build without debug info): the
	// operator vouches that none changed.
	AllowUncheckedTypes bool
}

// ApplyResult says what Apply did.
type ApplyResult struct {
	PatchID   string   `json:"patch_id"`
	Functions []string `json:"functions"`
	// PauseUS is the time from stopping the first thread to resuming the
	// last, for the pause that wrote the jumps (or checked, in a dry run).
	PauseUS int64        `json:"pause_us"`
	DryRun  bool         `json:"dry_run,omitempty"`
	Base    uint64       `json:"base"`
	Size    uint64       `json:"size"`
	Sites   []SiteRecord `json:"sites"`
	// OnTopOf is the patch this one was stacked on ("" if none).
	OnTopOf string `json:"on_top_of,omitempty"`
	// Unloaded lists earlier patches whose code this one superseded and
	// that were unmapped.
	Unloaded []string `json:"unloaded,omitempty"`
	// Signer is who signed the patch (nil: not checked).
	Signer *Signer `json:"signer,omitempty"`
	// Unverified: a patch file applied with no signers configured.
	Unverified bool `json:"unverified,omitempty"`
	// Warnings are the diff's limits (Patch.Warnings).
	Warnings []string `json:"warnings,omitempty"`
	// Transfers are the globals whose contents were converted (in a dry
	// run: checked); Irreversible says why revert will refuse.
	Transfers    []TransferResult `json:"transfers,omitempty"`
	Irreversible string           `json:"irreversible,omitempty"`
	// TransferUS is the part of the pause spent converting state.
	TransferUS int64 `json:"transfer_us,omitempty"`
	// Stayed are the frames inside replaced functions let stay, and why.
	Stayed []StayedFrame `json:"stayed,omitempty"`
	// Switched are the frames carried into the new code (switchframes.go).
	Switched []SwitchRecord `json:"switched,omitempty"`
	// Held is, per thread of the target, how long it was held stopped
	// and why (hold.go).
	Held []ThreadHold `json:"held,omitempty"`
}

// ErrTypesUnchecked is why a patch made from a build without debug info
// is refused unless the operator accepts it (ApplyOptions.AllowUncheckedTypes).
var ErrTypesUnchecked = errors.New("the diff could not compare type layouts and function signatures (one of the builds has no debug info), so a struct that changed layout, which would corrupt the process's state, would go unnoticed: make the patch from builds with debug info (or install NEW's debug file under /usr/lib/debug/.build-id/), or, if you know no layout or signature changed, apply with --allow-unchecked-types")

const defaultTimeout = 5 * time.Second

// version is one copy of a function that a redirect must cover: the entry
// in the executable, or the function's entry in an earlier patch's image.
type version struct {
	redir int // index into the image's Redirects
	name  string
	entry uint64
	size  uint64
}

// prepared is an apply worked out down to the bytes, before the pause.
type prepared struct {
	patch     *Patch
	state     *State
	exeBias   uint64
	image     *elfpatch.Image
	refs      []string // ids of earlier images the new code points into
	versions  []version
	funcNames []string
	// parts are the out-of-line parts (foo.cold) of the functions being
	// replaced: a thread there is inside the function.
	parts []namedRange
	// module is the patched module (the executable or a library).
	module *tracer.Module
	// allowNames are the operator's --allow-active names.
	allowNames []string
	// switches is the image's room for frame switches (nil: none).
	switches *switchArea
	// xfer locates the transferred globals in the process.
	xfer *xferLocs
}

func (sys *system) apply(ctx context.Context, pid int, pt *Patch, opts ApplyOptions) (res *ApplyResult, err error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if pt.Image == nil {
		return nil, fmt.Errorf("apply patch %s to pid %d: patch has no image", pt.ID, pid)
	}
	if pt.TypesUnchecked && !opts.AllowUncheckedTypes {
		return nil, &RefusedError{PatchID: pt.ID, Reasons: []string{ErrTypesUnchecked.Error()}}
	}

	// Everything up to the attach reads files and /proc only.
	if err := sys.checkPid(pid); err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	if err := goPatchFits(sys.isGo != nil && sys.isGo(pid), pt); err != nil {
		return nil, fmt.Errorf("apply patch %s to pid %d: %w", pt.ID, pid, err)
	}
	maps, err := sys.readMaps(pid)
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	mem, err := sys.openMem(pid)
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	st, err := readState(mem, pid, maps)
	mem.Close()
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	mods, err := sys.modules(pid)
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	exe := patchedModule(mods, st, pt.OldBuildID)
	if exe == nil {
		return nil, fmt.Errorf("apply patch %s: no main executable among the modules of pid %d", pt.ID, pid)
	}
	pr, err := prepare(pid, pt, st, exe, sys.symbols)
	if err != nil {
		return nil, err
	}
	if len(pt.Transfers) > 0 {
		// Room for the frame switches (switchframes.go): one per
		// thread, and some for threads started meanwhile.
		n := 16
		if tids, err := tracer.Tasks(pid); err == nil {
			n += 2 * len(tids)
		}
		pr.image, pr.switches = withSwitchArea(pr.image, pt, n)
		if pr.switches != nil && tracer.ShadowStack(pid) {
			return nil, fmt.Errorf("apply patch %s to pid %d: the process runs with a CET shadow stack, and the patch converts %s, which switches waiting frames to the new code by rewriting their return addresses: the shadow stack would reject them; nothing was done", pt.ID, pid, transferNames(pt.Transfers))
		}
	}
	allowed, err := resolveAllow(pt, opts.AllowActive)
	if err != nil {
		return nil, err
	}
	xfClean, err := prepareTransfers(pid, pt, st, allowed)
	defer xfClean()
	if err != nil {
		return nil, err
	}

	p, err := sys.attach(pid)
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	boundStops(p, opts.Timeout)
	defer func() {
		if cerr := p.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("apply patch %s: detach from pid %d: %w", pt.ID, pid, cerr)
		}
		if res != nil {
			res.Held = holdsOf(p)
		}
	}()
	// The record was read before attaching; another graft may have
	// changed it in between. Attached, nobody else can.
	if err := sys.sameState(pid, p, st); err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	if !opts.DryRun { // a dry run writes nothing, pending images stay
		if _, err := sys.reapPendingCtx(ctx, pid, p, st, mods, false); err != nil {
			return nil, fmt.Errorf("apply patch %s: unmap a pending image: %w", pt.ID, err)
		}
	}
	return sys.applyAttached(ctx, pid, p, pr, maps, exe, mods, opts)
}

// ErrRecordChanged means another graft changed the target between this
// one's first look and its attach; nothing was done.
var ErrRecordChanged = errors.New("graft record changed meanwhile (another graft at work?); nothing was done, try again")

// sameState re-reads the record through the attached p and checks it is
// the one st was read from.
func (sys *system) sameState(pid int, p proc, st *State) error {
	maps, err := sys.readMaps(pid)
	if err != nil {
		return err
	}
	now, err := readState(p, pid, maps)
	if err != nil {
		return err
	}
	if now.Addr != st.Addr || now.Generation != st.Generation {
		return fmt.Errorf("pid %d: %w", pid, ErrRecordChanged)
	}
	return nil
}

// prepare checks that pt belongs on top of what pid runs and works out
// which copies of which functions it redirects. Nothing is touched.
func prepare(pid int, pt *Patch, st *State, exe *tracer.Module, readSyms func(path, buildID string) (*symbols, error)) (*prepared, error) {
	pr := &prepared{patch: pt, state: st, exeBias: exe.Bias, image: pt.Image, module: exe}
	top := st.TopFor(exe)
	want, onTop := exe.BuildID, ""
	// A Go patch is always made against the executable (goapply.go):
	// it redirects the executable's entries, over earlier jumps.
	if top != nil && pt.Go == nil {
		want, onTop = top.NewBuildID, top.ID
	}
	if pt.OldBuildID != want && pt.NewBuildID == want && top != nil {
		return nil, fmt.Errorf("apply patch %s to pid %d: %w: it applies to build %s, and the process already runs its new build %s, from patch %s (graft status -p %d)", pt.ID, pid, ErrAlreadyApplied, pt.OldBuildID, want, onTop, pid)
	}
	if pt.Go != nil && top != nil && top.NewBuildID == pt.NewBuildID {
		return nil, fmt.Errorf("apply patch %s to pid %d: %w: the process already runs build %s, from patch %s (graft status -p %d)", pt.ID, pid, ErrAlreadyApplied, pt.NewBuildID, top.ID, pid)
	}
	if pt.OldBuildID != want {
		return nil, &BuildIDMismatchError{Pid: pid, PatchID: pt.ID, Patch: pt.OldBuildID, Want: want, OnTopOf: onTop}
	}
	if len(pt.Refused) > 0 {
		return nil, &RefusedError{PatchID: pt.ID, Reasons: pt.Refused}
	}
	// The same pair of builds may come back (v1->v2, v2->v1, v1->v2):
	// ids stay unique in the record.
	if idTaken(st, pt.ID) {
		base := pt.ID
		for n := 2; idTaken(st, pt.ID); n++ {
			pt.ID = fmt.Sprintf("%s-%d", base, n)
		}
	}
	if len(pt.Image.Redirects) == 0 {
		return nil, fmt.Errorf("apply patch %s to pid %d: the patch redirects no function", pt.ID, pid)
	}
	for _, r := range pt.Image.Redirects {
		pr.funcNames = append(pr.funcNames, r.Name)
	}
	if top == nil || pt.Go != nil {
		pr.xfer = plainXferLocs(pt, exe.Bias)
		for i, r := range pt.Image.Redirects {
			pr.versions = append(pr.versions, version{redir: i, name: r.Name, entry: exe.Bias + r.Old, size: r.OldSize + pt.Pad[r.Name]})
		}
		if len(pt.Parts) > 0 || hasPointerUsers(pt) {
			path, err := tracer.ModuleFile(pid, exe)
			if err != nil {
				return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
			}
			exeSyms, err := readSyms(path, exe.BuildID)
			if err != nil {
				return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
			}
			pr.parts = partRanges(pt, []layer{{syms: exeSyms, base: exe.Bias}})
			pr.parts = append(pr.parts, pointerUserRanges(pt, []layer{{syms: exeSyms, base: exe.Bias}})...)
		}
		return pr, nil
	}
	return prepareStacked(pid, pr, exe, readSyms)
}

func mainModule(mods []tracer.Module) *tracer.Module {
	for i := range mods {
		if mods[i].Main {
			return &mods[i]
		}
	}
	return nil
}

// originalCode reads the function bytes at [entry, entry+size) as they
// were before any patch: current memory with every recorded site's first
// original bytes laid back over it. It also returns the current bytes.
func originalCode(p proc, st *State, entry, size uint64) (orig, cur []byte, err error) {
	if size == 0 || size > 1<<20 {
		return nil, nil, fmt.Errorf("read function at %#x: implausible size %d", entry, size)
	}
	cur = make([]byte, size)
	if _, err := p.ReadAt(cur, int64(entry)); err != nil {
		return nil, nil, fmt.Errorf("read function at %#x: %w", entry, err)
	}
	orig = slices.Clone(cur)
	// Newest first, so the oldest record's bytes are laid last and win.
	for i := len(st.Patches) - 1; i >= 0; i-- {
		for _, s := range st.Patches[i].Sites {
			if s.Addr >= entry && s.Addr+uint64(len(s.Orig)) <= entry+size {
				copy(orig[s.Addr-entry:], s.Orig)
			}
		}
	}
	return orig, cur, nil
}

// applyAttached applies a prepared patch to an attached target: the
// writes are worked out while it runs, then one pause (pause.go) makes
// them, and after it superseded images are unmapped.
func (sys *system) applyAttached(ctx context.Context, pid int, p proc, pr *prepared, maps []tracer.Mapping, exe *tracer.Module, mods []tracer.Module, opts ApplyOptions) (*ApplyResult, error) {
	pt, st := pr.patch, pr.state
	fail := func(err error) error { return fmt.Errorf("apply patch %s to pid %d: %w", pt.ID, pid, err) }

	// Undo list: on any failure before the jumps are in, take out what
	// was put in, newest first, so the target is as before.
	var undo undoList
	rollback := func(err error) error {
		if uerr := undo.run(); uerr != nil {
			return needsAttention(pid, fmt.Errorf("%w (and undoing it failed, the process may hold unused memory of graft's: %w)", err, uerr))
		}
		return err
	}

	if err := ctx.Err(); err != nil {
		return nil, fail(err)
	}
	// Where the image will go: the jumps, the unwinder and the records
	// are worked out for it before anything is loaded (hold.go).
	size := pr.image.Size
	base, err := sys.findHole(maps, exe, size)
	if err != nil {
		return nil, fail(err)
	}

	// Precompute every byte to write.
	pr.allowNames = opts.AllowActive
	sites, spec, err := sys.planJumps(p, pr, base)
	if err != nil {
		return nil, rollback(fail(err))
	}
	spec.Progress = opts.Progress
	rec := newPatchRecord(pr, exe, base)
	cands := unloadCandidates(st, pr, exe)

	ck, err := sys.newChecker(pid, mods, append(loadedModules(st), recordModule(&rec)))
	if err != nil {
		return nil, rollback(fail(fmt.Errorf("build unwinder: %w", err)))
	}

	stateAddr := st.Addr
	if err := ctx.Err(); err != nil {
		return nil, rollback(fail(err))
	}

	res := &ApplyResult{PatchID: pt.ID, Functions: pr.funcNames, DryRun: opts.DryRun, Base: base, Size: size, Sites: sites, Warnings: pt.Warnings}
	if top := st.TopFor(exe); top != nil {
		res.OnTopOf = top.ID
	}

	// The record as it will be written, with and without unloading the
	// candidates, and as it was (to put back if a jump cannot be written).
	rec.Applied = sys.now().UTC()
	var before []byte
	if !opts.DryRun {
		b, err := encodeState(&State{Patches: st.Patches, Retained: st.Retained, Pending: st.Pending}, st.Generation+2)
		if err != nil {
			return nil, rollback(fail(err))
		}
		before = b
	}
	var outcomes [2]outcome
	for k, un := range [][]int{nil, removable(st, cands, make([]bool, len(cands)))} {
		o, err := sys.outcome(st, rec, sites, un)
		if err != nil {
			return nil, rollback(fail(err))
		}
		outcomes[k] = o
	}

	// The image and the record go in on one borrowed thread, held on
	// into the pause; graft gets ready for it (hold.go: forPause).
	defer forPause()()
	if !opts.DryRun {
		_, a, u, err := sys.loadForPause(ctx, p, pid, pr, exe, mods, base, stateAddr)
		if err != nil {
			return nil, fail(err)
		}
		stateAddr = a
		undo = append(undo, u...)
	}

	// The pause.
	ps, err := stopAll(p, &res.PauseUS)
	if err != nil {
		return nil, rollback(fail(err))
	}
	wait := opts.Timeout
	if opts.Once && opts.DryRun {
		wait = 0
	}
	if err := ps.waitSafe(ctx, ck, spec, wait); err != nil {
		return nil, rollback(fail(err))
	}
	res.Stayed = lastStayed(ck)
	if opts.DryRun {
		// The transformers run too, writing nothing: a value that does
		// not fit its new type shows now.
		xrecs, _, xerr := runTransfers(p, pt, pr.xfer, base, true)
		if err := ps.end(false); err != nil || xerr != nil {
			if err != nil {
				err = fmt.Errorf("resume: %w", err)
			}
			return nil, fail(errors.Join(xerr, err))
		}
		res.Transfers, res.Irreversible = transferResults(xrecs), (&PatchRecord{Transfers: xrecs}).Irreversible()
		for _, f := range switchedFrames(ck) {
			sf := f.Switch.(*switchFrame)
			res.Switched = append(res.Switched, SwitchRecord{Tid: f.Tid, Function: sf.fn, Orig: f.PC, To: base + sf.plan.To})
		}
		return res, nil
	}

	unload, err := sys.applyInPause(ps, ck, pr, &rec, sites, cands, outcomes, before, stateAddr, res)
	if err != nil {
		return nil, rollback(fail(err))
	}
	if err := ps.end(len(unload) > 0); err != nil {
		// The patch is in and recorded; the threads may be left
		// stopped only if the process is going away.
		return res, fail(fmt.Errorf("resume after patching: %w", err))
	}

	// After the pause: no thread is in a superseded image and no jump
	// leads there any more.
	if len(unload) == 0 {
		return res, nil
	}
	err = withThread(p, func() error {
		var errs []error
		for _, i := range unload {
			if err := sys.unmapImage(p, st.Patches[i].Base, st.Patches[i].Size); err != nil {
				errs = append(errs, fmt.Errorf("unmap superseded patch %s at %#x: %w", st.Patches[i].ID, st.Patches[i].Base, err))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return res, fail(err)
	}
	return res, nil
}

// applyInPause makes the apply's writes in a pause at a safe point, in
// their order: converted state, the record, the Go module link, the
// jumps. Each pushes its undo; on failure the pause is aborted (undone
// and resumed). It returns the superseded patches to unmap after it.
func (sys *system) applyInPause(ps *pause, ck checker, pr *prepared, rec *PatchRecord, sites []SiteRecord, cands []int, outcomes [2]outcome, before []byte, stateAddr uint64, res *ApplyResult) ([]int, error) {
	p, pt, st := ps.p, pr.patch, pr.state
	// Superseded images with no frame inside go: the jumps that would
	// have gone into them are dropped and they are marked unloaded. Which
	// outcome applies is known only in the pause; both are encoded now.
	var unload []int
	if len(cands) > 0 {
		rs := make([]Range, 0, len(cands))
		for _, i := range cands {
			rs = append(rs, Range{st.Patches[i].Base, st.Patches[i].Base + st.Patches[i].Size})
		}
		hit, err := ck.framesIn(p, rs)
		if err == nil {
			unload = removable(st, cands, hit)
		}
	}
	out := outcomes[0]
	if len(unload) > 0 {
		out = outcomes[1]
		if !slices.Equal(unload, out.unload) {
			// Only some candidates are free: encode that (in the
			// pause; cannot happen while a single patch qualifies).
			o, err := sys.outcome(st, *rec, sites, unload)
			if err != nil {
				return nil, ps.abort(err)
			}
			out = o
		}
	}
	// State transfer: converted now, after every thread stopped and
	// before the record and any jump; the record then holds the result.
	if len(pt.Transfers) > 0 {
		tx := time.Now()
		xrecs, commit, err := runTransfers(p, pt, pr.xfer, res.Base, false)
		if err == nil {
			rec.Transfers = xrecs
			out, err = sys.outcome(st, *rec, sites, out.unload)
		}
		var xundo func() error
		if err == nil {
			xundo, err = commit()
		}
		res.TransferUS = time.Since(tx).Microseconds()
		if err != nil {
			return nil, ps.abort(err)
		}
		ps.did(xundo)
		res.Transfers, res.Irreversible = transferResults(xrecs), rec.Irreversible()
		// The frames that wait in replaced functions go on in the new
		// code, with the new objects.
		recs, err := doSwitches(p, pr.switches, res.Base, switchedFrames(ck), pt, xrecs)
		if err == nil && len(recs) > 0 {
			rec.Switches = recs
			out, err = sys.outcome(st, *rec, sites, out.unload)
		}
		if err != nil {
			return nil, ps.abort(err)
		}
		res.Switched = recs
	}
	sites, buf := out.sites, out.buf
	res.Sites = sites
	for _, i := range out.unload {
		res.Unloaded = append(res.Unloaded, st.Patches[i].ID)
	}

	// The record first, then the jumps: a graft killed in between (only
	// SIGKILL can do that) leaves a record naming every jump with its
	// original bytes, so status shows it and revert cleans it up, and
	// never a jump nobody knows about.
	if err := record.Write(p, stateAddr, buf); err != nil {
		return nil, ps.abort(fmt.Errorf("write graft record at %#x: %w", stateAddr, err))
	}
	ps.did(func() error {
		if err := record.Write(p, stateAddr, before); err != nil {
			return fmt.Errorf("put back graft record at %#x: %w", stateAddr, err)
		}
		return nil
	})
	if len(rec.Switches) > 0 {
		undo, err := pointReturns(p, rec.Switches)
		if err != nil {
			return nil, ps.abort(err)
		}
		ps.did(undo)
	}
	if pt.Go != nil {
		unlink, err := linkGoModule(p, pt.Go, pr.exeBias, rec.GoModule)
		if err != nil {
			return nil, ps.abort(err)
		}
		ps.did(unlink)
	}
	if err := putSites(p, sites, true); err != nil {
		return nil, ps.abort(err)
	}
	return unload, nil
}

// planJumps works out, for the image at base, every jump to write (with
// the bytes it replaces) and what the safe point must check.
func (sys *system) planJumps(p proc, pr *prepared, base uint64) ([]SiteRecord, safeSpec, error) {
	var sites []SiteRecord
	var spec safeSpec
	if err := pr.frameSpec(&spec, pr.exeBias); err != nil {
		return nil, spec, err
	}
	spec.Functions = append(spec.Functions, pr.parts...)
	for _, v := range pr.versions {
		r := pr.image.Redirects[v.redir]
		target := base + r.New
		orig, cur, err := originalCode(p, pr.state, v.entry, v.size)
		if err != nil {
			return nil, spec, fmt.Errorf("plan jump for %s: %w", v.name, err)
		}
		s, err := sys.plan(orig, v.entry, target)
		if err != nil {
			return nil, spec, fmt.Errorf("plan jump for %s at %#x: %w", v.name, v.entry, err)
		}
		off := s.Addr - v.entry
		if s.Addr < v.entry || off+uint64(len(s.New)) > v.size {
			return nil, spec, fmt.Errorf("plan jump for %s: site %#x+%d outside the function", v.name, s.Addr, len(s.New))
		}
		sites = append(sites, SiteRecord{
			Func:   v.name,
			Addr:   s.Addr,
			Orig:   slices.Clone(cur[off : off+uint64(len(s.New))]),
			New:    slices.Clone(s.New),
			Target: target,
		})
		spec.Functions = append(spec.Functions, namedRange{v.name, Range{v.entry, v.entry + v.size}})
		spec.Entries = append(spec.Entries, namedRange{v.name, Range{s.Addr, s.Addr + uint64(len(s.New))}})
	}
	if err := checkOverlap(sites); err != nil {
		return nil, spec, err
	}
	return sites, spec, nil
}

// newPatchRecord is the record of the patch as applied with its image at
// base (the jumps and the transfers are added later).
func newPatchRecord(pr *prepared, exe *tracer.Module, base uint64) PatchRecord {
	pt, st, im := pr.patch, pr.state, pr.image
	rec := PatchRecord{
		ID:         pt.ID,
		OldBuildID: pt.OldBuildID,
		NewBuildID: pt.NewBuildID,
		NewPath:    pt.NewPath,
		Base:       base,
		Size:       im.Size,
		Refs:       pr.refs,
		Symbols:    imageSymbols(im, base),
		Signer:     pt.Signer,
		Module:     exe.BuildID,
		ModulePath: exe.Path,
		StayAt:     stayAt(pt, base),
		Carry:      carryOf(pr, base),
	}
	if pr.switches != nil {
		rec.SwitchArea, rec.Back = pr.switches, backPlans(pr)
	}
	if pt.Go != nil {
		rec.GoModule = base + pt.Go.Module
	}
	rec.EhFrame, rec.EhFrameSize = im.EhFrame, im.EhFrameSize
	rec.EhFrameHdr, rec.EhFrameHdrSize = im.EhFrameHdr, im.EhFrameHdrSize
	for _, seg := range im.Segments {
		if seg.Prot&4 != 0 {
			rec.Exec = append(rec.Exec, Range{base + seg.Vaddr, base + seg.Vaddr + seg.Memsz})
		}
	}
	for _, r := range im.Redirects {
		fr := FuncRecord{Name: r.Name, New: base + r.New, NewSize: r.NewSize}
		for _, v := range pr.versions {
			if v.name == r.Name && !inAnyImage(st, v.entry) {
				fr.Entry = v.entry
			}
		}
		rec.Functions = append(rec.Functions, fr)
	}
	return rec
}

// unloadCandidates are the patches whose image may become unused: every
// function it redirected is redirected again here, and the new code does
// not point into it. Whether a frame is still inside is decided in the
// pause. Only the patch directly below qualifies: reverting this patch
// later must also revert the unloaded one (its code is gone), and that is
// only the stack's order when nothing lies between.
func unloadCandidates(st *State, pr *prepared, exe *tracer.Module) []int {
	redirected := map[string]bool{}
	for _, n := range pr.funcNames {
		redirected[n] = true
	}
	var cands []int
	for i := range st.Patches {
		r := &st.Patches[i]
		if i != len(st.Patches)-1 || r.Unloaded || !r.inModule(exe) || slices.Contains(pr.refs, r.ID) || holdsState(r) {
			continue
		}
		all := true
		for _, f := range r.Functions {
			all = all && redirected[f.Name]
		}
		if all {
			cands = append(cands, i)
		}
	}
	return cands
}

// loadedModules are the images of st still mapped, for the unwinder.
func loadedModules(st *State) []imageModule {
	var out []imageModule
	for i := range st.Patches {
		if r := &st.Patches[i]; !r.Unloaded {
			out = append(out, recordModule(r))
		}
	}
	for i := range st.Pending {
		out = append(out, recordModule(&st.Pending[i]))
	}
	return out
}

// recordModule is the unwinder's view of a patch's image: its CFI from
// the recorded .eh_frame in target memory (or from NEW's file, for a patch
// recorded without it), names from the recorded symbols.
func recordModule(r *PatchRecord) imageModule {
	m := imageModule{
		Path: r.NewPath, BuildID: r.NewBuildID, Base: r.Base, Size: r.Size,
		EhFrame: r.EhFrame, EhFrameSize: r.EhFrameSize,
		EhFrameHdr: r.EhFrameHdr, EhFrameHdrSize: r.EhFrameHdrSize,
	}
	for _, s := range r.Symbols {
		if !s.Data {
			m.Funcs = append(m.Funcs, s)
		}
	}
	for _, sw := range r.Switches {
		if m.Returns == nil {
			m.Returns = map[uint64]uint64{}
		}
		m.Returns[sw.Stub] = sw.Orig
	}
	if len(m.Funcs) == 0 {
		for _, f := range r.Functions {
			m.Funcs = append(m.Funcs, SymRecord{Name: f.Name, Addr: f.New, Size: f.NewSize})
		}
	}
	return m
}

// imageSymbols lists the NEW symbols living in the image mapped at base:
// the functions that run from it and the objects only NEW has.
func imageSymbols(im *elfpatch.Image, base uint64) []SymRecord {
	var out []SymRecord
	for _, f := range im.Runs {
		out = append(out, SymRecord{Name: f.Name, File: f.File, Addr: base + f.New, Size: f.Size})
	}
	for _, o := range im.Objects {
		out = append(out, SymRecord{Name: o.Name, File: o.File, Addr: base + o.New, Size: o.Size, Data: true})
	}
	return out
}

func checkOverlap(sites []SiteRecord) error {
	s := slices.Clone(sites)
	sort.Slice(s, func(i, j int) bool { return s[i].Addr < s[j].Addr })
	for i := 1; i < len(s); i++ {
		if s[i-1].Addr+uint64(len(s[i-1].New)) > s[i].Addr {
			return fmt.Errorf("jumps for %s at %#x and %s at %#x overlap", s[i-1].Func, s[i-1].Addr, s[i].Func, s[i].Addr)
		}
	}
	return nil
}

// withCause makes a failure that happened because ctx ended (SIGINT or
// SIGTERM to graft) match context.Canceled with errors.Is.
func withCause(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", err, cerr)
	}
	return err
}
