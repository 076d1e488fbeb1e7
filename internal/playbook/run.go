package playbook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"graft"
	"graft/elfpatch"
	"graft/safepoint"
	"graft/tracer"
)

// Outcome is what happened to one target. Every target has exactly one.
type Outcome string

const (
	// Applied: patched by this run, checks passed, still in effect.
	Applied Outcome = "APPLIED"
	// AlreadyApplied: the process already ran the NEW build (patched
	// before, or forked from a patched parent); nothing was done.
	AlreadyApplied Outcome = "ALREADY_APPLIED"
	// SkippedUnhealthy: a check failed before the patch; never patched.
	SkippedUnhealthy Outcome = "SKIPPED_UNHEALTHY"
	// Busy: a thread stayed inside a function the patch replaces until
	// the timeout (Blocker names it); nothing was written.
	Busy Outcome = "BUSY"
	// Failed: the apply failed for another reason (nothing was written),
	// or, with on_failure: stop, a check failed after the patch (then
	// Patched says the patch is still in effect).
	Failed Outcome = "FAILED"
	// FailedRolledBack: this target's own check failed after the patch
	// (or it was patched when the run failed and its own checks were not
	// the cause, see RolledBack), and the patch was reverted.
	FailedRolledBack Outcome = "FAILED_ROLLED_BACK"
	// RolledBack: patched and healthy, reverted because another target
	// failed (on_failure: rollback).
	RolledBack Outcome = "ROLLED_BACK"
	// RollbackFailed: the revert failed; the process may still run the
	// patch (Error says why; graft status -p PID tells).
	RollbackFailed Outcome = "ROLLBACK_FAILED"
	// Gone: the process exited before or while it was handled.
	Gone Outcome = "GONE"
	// NotReached: a later batch was never touched because the run failed.
	NotReached Outcome = "NOT_REACHED"
	// WouldApply: --check only: the patch builds for this target and its
	// baseline checks pass.
	WouldApply Outcome = "WOULD_APPLY"
)

// Outcomes lists every outcome in recap order.
var Outcomes = []Outcome{Applied, AlreadyApplied, WouldApply, SkippedUnhealthy, Busy, Failed, FailedRolledBack, RolledBack, RollbackFailed, Gone, NotReached}

// Exit codes of a run (graft play returns them; 1 is an invalid playbook
// or command line, reported before anything runs).
const (
	ExitOK = 0
	// ExitInvalid: the playbook or the command line is wrong (file:line:col).
	ExitInvalid = 1
	// ExitFailed: a target failed (busy, apply failed, check failed after
	// the patch) and on_failure was carried out: with rollback every
	// process this run patched was reverted successfully.
	ExitFailed = 2
	// ExitRollbackFailed: a revert failed; some process is in a state to
	// look at (ROLLBACK_FAILED in the report).
	ExitRollbackFailed = 3
	// ExitAborted: nothing was touched: the patch could not be opened or
	// built, or no process matched.
	ExitAborted = 4
	// ExitIncomplete: no failure, but some target was skipped as
	// unhealthy, so not every target runs the patch.
	ExitIncomplete = 5
)

// Blocker is the frame that kept a target busy.
type Blocker struct {
	Tid      int    `json:"tid"`
	Function string `json:"function"`
	Stack    string `json:"stack"`
}

// TargetReport is one target's line in the report.
type TargetReport struct {
	Target
	// Batch is the 1-based batch it was in; 0 for a process found by
	// follow.
	Batch    int     `json:"batch"`
	Followed bool    `json:"followed,omitempty"`
	Outcome  Outcome `json:"outcome"`
	// Patched is true when the patch is in effect in the process at the
	// end of the run (APPLIED, ALREADY_APPLIED, or a failure left so).
	Patched   bool          `json:"patched"`
	BuildID   string        `json:"build_id,omitempty"` // what it ran before
	PatchID   string        `json:"patch_id,omitempty"`
	Functions []string      `json:"functions,omitempty"`
	PauseUS   int64         `json:"pause_us,omitempty"`
	Blocker   *Blocker      `json:"blocker,omitempty"`
	Error     string        `json:"error,omitempty"`
	Checks    []CheckResult `json:"checks,omitempty"`
}

// Report is the result of a run.
type Report struct {
	Playbook string `json:"playbook"`
	Name     string `json:"name,omitempty"`
	Check    bool   `json:"check"`
	Patch    struct {
		New        string `json:"new,omitempty"`
		File       string `json:"file,omitempty"`
		OldBuildID string `json:"old_build_id,omitempty"`
		NewBuildID string `json:"new_build_id"`
	} `json:"patch"`
	Targets []*TargetReport `json:"targets"`
	// Counts has every outcome (zero included); they add up to Total.
	Counts map[Outcome]int `json:"counts"`
	Total  int             `json:"total"`
	// Batches is how many batches ran.
	Batches int `json:"batches"`
	// Failure is the first failure, which ended the rollout.
	Failure string `json:"failure,omitempty"`
	// Aborted says why nothing was touched.
	Aborted    string `json:"aborted,omitempty"`
	ExitCode   int    `json:"exit_code"`
	DurationMS int64  `json:"duration_ms"`
}

// Actions are the live operations a run uses (the graft package's by
// default), behind an interface so the rollout logic can be tested alone.
type Actions interface {
	Apply(ctx context.Context, pid int, src graft.Source, opts graft.ApplyOptions) (*graft.ApplyResult, error)
	Revert(ctx context.Context, pid int, opts graft.RevertOptions) (*graft.RevertResult, error)
	Status(pid int) (*graft.StatusResult, error)
}

type graftActions struct{}

func (graftActions) Apply(ctx context.Context, pid int, src graft.Source, opts graft.ApplyOptions) (*graft.ApplyResult, error) {
	return graft.Apply(ctx, pid, src, opts)
}
func (graftActions) Revert(ctx context.Context, pid int, opts graft.RevertOptions) (*graft.RevertResult, error) {
	return graft.Revert(ctx, pid, opts)
}
func (graftActions) Status(pid int) (*graft.StatusResult, error) { return graft.Status(pid) }

// Options tune Run.
type Options struct {
	// Check resolves the targets, builds the patch for each and runs the
	// baseline checks; nothing is written to any process.
	Check bool
	// Progress receives one line per event while the run goes on.
	Progress func(line string)
	// Actions default to the graft package.
	Actions Actions
	// Trust is the policy for which patches may go in (graft.Apply's);
	// nil reads the default (/etc/graft). It is checked once, before any
	// process is looked at: a patch.file must be signed by an allowed
	// signer where signers are configured, and patch.new (made on this
	// machine, signed by nobody) goes only where the policy allows it.
	Trust *graft.TrustPolicy
	// FollowPoll is how often follow looks for new processes (default
	// 100ms); FollowSettle how old a new process must be before it is
	// patched, so its dynamic loader is done (default 200ms).
	FollowPoll, FollowSettle time.Duration
}

type runner struct {
	pb   *Playbook
	opts Options
	act  Actions
	rep  *Report
	// src is patch.file's source (patch.new's are made per OLD build).
	src graft.Source

	// newID is NEW's build-id; oldIDs are the builds this run patches from
	// (the patch file's OLD, or what each patched target ran before).
	newID  string
	oldIDs map[string]bool
	// patchFile is the patch file's content (patch.file).
	patchFile *elfpatch.Patch
	newBin    *elfpatch.Binary
	// rules are patch.state's, for the diffs made from patch.new.
	rules map[string]*elfpatch.Rules
	// built holds the patches made from patch.new, by OLD build-id; dir
	// is the run's directory for them, removed at the end.
	built map[string]builtPatch
	dir   string

	known   map[key]Target
	handled map[key]*TargetReport
	// patched are the targets this run patched, in order, with their
	// patch ids.
	patched []*TargetReport
	failed  bool
	// trust is the policy (Options.Trust, or the default).
	trust *graft.TrustPolicy
}

func (r *runner) progress(format string, args ...any) {
	if r.opts.Progress != nil {
		r.opts.Progress(fmt.Sprintf(format, args...))
	}
}

// Run carries out pb on this host and reports what happened to every
// target. It always returns a report; Report.ExitCode says how it went.
func Run(ctx context.Context, pb *Playbook, opts Options) *Report {
	start := time.Now()
	r := &runner{pb: pb, opts: opts, act: opts.Actions, rep: &Report{Playbook: pb.File, Name: pb.Name, Check: opts.Check},
		oldIDs: map[string]bool{}, built: map[string]builtPatch{}, known: map[key]Target{}, handled: map[key]*TargetReport{}}
	if r.act == nil {
		r.act = graftActions{}
	}
	if r.opts.FollowPoll <= 0 {
		r.opts.FollowPoll = 100 * time.Millisecond
	}
	if r.opts.FollowSettle <= 0 {
		r.opts.FollowSettle = 200 * time.Millisecond
	}
	r.run(ctx)
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
	r.finish()
	r.rep.DurationMS = time.Since(start).Milliseconds()
	return r.rep
}

func (r *runner) abort(format string, args ...any) {
	r.rep.Aborted = fmt.Sprintf(format, args...)
	r.progress("aborted, nothing touched: %s", r.rep.Aborted)
}

func (r *runner) run(ctx context.Context) {
	r.trust = r.opts.Trust
	if r.trust == nil {
		tp, err := graft.LoadTrustPolicy("", "")
		if err != nil {
			r.abort("%v", err)
			return
		}
		r.trust = tp
	}
	if err := r.openPatch(); err != nil {
		r.abort("%v", err)
		return
	}
	res, err := Resolve(r.pb.Targets)
	if err != nil {
		r.abort("%v", err)
		return
	}
	for _, e := range res.Empty {
		r.progress("note: %s", e)
	}
	if len(res.Targets) == 0 {
		r.abort("no process matched the targets:\n  %s", strings.Join(res.Empty, "\n  "))
		return
	}
	for _, t := range res.Targets {
		r.known[t.key()] = t
	}
	r.progress("%d target(s): %s", len(res.Targets), pidList(res.Targets))
	if r.opts.Check {
		r.checkRun(ctx, res.Targets)
		return
	}
	r.rollout(ctx, res)
	if !r.failed && r.pb.Rollout.Follow > 0 {
		r.follow(ctx)
	}
}

func pidList(ts []Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, fmt.Sprint(t.Pid))
	}
	return strings.Join(s, " ")
}

// openPatch reads what the run needs of the patch before any process is
// looked at: a missing or broken file stops here.
func (r *runner) openPatch() error {
	ps := r.pb.Patch
	r.rep.Patch.New, r.rep.Patch.File = ps.New, ps.File
	if ps.New != "" {
		b, err := elfpatch.Open(ps.New)
		if err != nil {
			return fmt.Errorf("%s: patch.new: %w", ps.Pos, err)
		}
		if b.BuildID() == "" {
			return fmt.Errorf("%s: patch.new: %s has no GNU build-id note, so a patched process could not be told from an unpatched one (link with -Wl,--build-id)", ps.Pos, ps.New)
		}
		if err := r.trust.CheckNew(ps.New); err != nil {
			return fmt.Errorf("%s: patch.new: %w", ps.Pos, err)
		}
		r.newBin, r.newID = b, b.BuildID()
		if ps.State != "" {
			f, err := os.Open(ps.State)
			if err != nil {
				return fmt.Errorf("%s: patch.state: %w", ps.Pos, err)
			}
			r.rules, err = elfpatch.ReadStateRules(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: patch.state %s: %w", ps.Pos, ps.State, err)
			}
		}
	} else {
		who, err := r.trust.CheckFile(ps.File, "")
		if err != nil {
			return fmt.Errorf("%s: patch.file: %w", ps.Pos, err)
		}
		if who != nil {
			r.progress("patch %s signed by %s (%s key %s)", ps.File, who.Principal, who.KeyType, who.Fingerprint)
		}
		f, err := os.Open(ps.File)
		if err != nil {
			return fmt.Errorf("%s: patch.file: %w", ps.Pos, err)
		}
		p, err := elfpatch.ReadPatch(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: patch.file %s: %w", ps.Pos, ps.File, err)
		}
		if p.Report != nil && p.Report.Verdict == elfpatch.VerdictRefused {
			return fmt.Errorf("%s: patch.file %s: the diff refused this patch (graft show %s says why); it cannot be applied live", ps.Pos, ps.File, ps.File)
		}
		r.patchFile, r.newID = p, p.NewBuildID
		r.oldIDs[p.OldBuildID] = true
		r.rep.Patch.OldBuildID = p.OldBuildID
		r.src = graft.Source{File: ps.File}
	}
	r.rep.Patch.NewBuildID = r.newID
	return nil
}

// current is the build a process runs now: the NEW build of its newest
// patch, else its executable's (read from memory). top is that patch.
func (r *runner) current(pid int) (build string, top *graft.PatchStatus, err error) {
	st, err := r.act.Status(pid)
	if err != nil {
		return "", nil, err
	}
	exe, err := tracer.ExeBuildID(pid)
	if err != nil {
		return "", nil, err
	}
	// Patches of a shared library count for a run that patches it;
	// a run that patches the executable looks at the executable's.
	lib, isLib := r.library(pid, st, exe)
	for i := len(st.Patches) - 1; i >= 0; i-- {
		p := &st.Patches[i]
		ofLib := p.Module != "" && p.Module != exe
		if isLib && ofLib && p.Module == lib || !isLib && !ofLib {
			// Superseded patches stay listed below; the newest is in
			// effect.
			return p.NewBuildID, p, nil
		}
	}
	if isLib {
		return lib, nil, nil
	}
	return exe, nil, nil
}

// library says, for a run whose patch file patches a shared library, the
// mapped build-id of that library in pid: the library mapped with the
// patch's OLD build-id, or the one whose patch in effect brought the
// patch's OLD build (stacking) or its NEW one (already patched). ok is
// false for a run that
// patches executables (exe is pid's executable's build-id).
func (r *runner) library(pid int, st *graft.StatusResult, exe string) (string, bool) {
	if r.patchFile == nil || r.patchFile.OldBuildID == exe {
		return "", false
	}
	mods, err := tracer.Modules(pid)
	if err != nil {
		return "", false
	}
	for _, m := range mods {
		if !m.Main && m.BuildID != "" && m.BuildID == r.patchFile.OldBuildID {
			return m.BuildID, true
		}
	}
	for i := range st.Patches {
		p := &st.Patches[i]
		if p.Module == "" || p.Module == exe {
			continue
		}
		// Stacked on a patch of the library, or already applied.
		if p.NewBuildID == r.patchFile.OldBuildID || p.NewBuildID == r.patchFile.NewBuildID {
			return p.Module, true
		}
	}
	return "", false
}

func (r *runner) entry(t Target, batch int) *TargetReport {
	tr := &TargetReport{Target: t, Batch: batch}
	r.handled[t.key()] = tr
	r.rep.Targets = append(r.rep.Targets, tr)
	return tr
}

func (r *runner) checksFor(phase string) []Check {
	var out []Check
	for _, c := range r.pb.Checks {
		if c.When == "always" || c.When == phase {
			out = append(out, c)
		}
	}
	return out
}

// healthy runs the checks of a phase on tr; false at the first failure.
func (r *runner) healthy(ctx context.Context, tr *TargetReport, phase string) (bool, string) {
	for _, c := range r.checksFor(phase) {
		pid := tr.Pid
		res := runCheck(ctx, c, func() map[string]string { return targetVars(r.pb, pid) }, phase)
		tr.Checks = append(tr.Checks, res)
		if !res.OK {
			why := fmt.Sprintf("check %q failed %s the patch after %d attempt(s): %s", c.Name, phase, res.Attempts, res.Detail)
			if phase == "before" && c.When == "always" {
				why += " (a check that holds only once patched needs when: after)"
			}
			return false, why
		}
	}
	return true, ""
}

// checkRun is --check: per target, the patch is built (or its build-id
// matched) and the baseline checks run; nothing is written anywhere.
func (r *runner) checkRun(ctx context.Context, targets []Target) {
	plan := r.batchPlan(len(targets))
	for i, t := range targets {
		tr := r.entry(t, plan[i])
		if !alive(t) {
			tr.Outcome = Gone
			continue
		}
		build, top, err := r.current(t.Pid)
		if err != nil {
			r.settleError(tr, err)
			continue
		}
		tr.BuildID = build
		if build == r.newID {
			tr.Outcome, tr.Patched = AlreadyApplied, true
			r.progress("pid %d: already runs build %s", t.Pid, build)
			continue
		}
		if err := r.fits(t.Pid, build, top); err != nil {
			tr.Outcome, tr.Error = Failed, err.Error()
			r.progress("pid %d: FAILED: %s", t.Pid, err)
			continue
		}
		if ok, why := r.healthy(ctx, tr, "before"); !ok {
			tr.Outcome, tr.Error = SkippedUnhealthy, why
			r.progress("pid %d: SKIPPED_UNHEALTHY: %s", t.Pid, why)
			continue
		}
		tr.Outcome = WouldApply
		r.progress("pid %d (batch %d): would apply", t.Pid, plan[i])
	}
}

// batchPlan numbers n targets by batch, as a run would if nothing changed.
func (r *runner) batchPlan(n int) []int {
	out := make([]int, 0, n)
	for b := 0; len(out) < n; b++ {
		size := r.batch(b).Size(n)
		for i := 0; i < size && len(out) < n; i++ {
			out = append(out, b+1)
		}
	}
	return out
}

func (r *runner) batch(i int) Batch {
	bs := r.pb.Rollout.Batches
	if len(bs) == 0 {
		return Batch{Percent: 100}
	}
	return bs[min(i, len(bs)-1)]
}

// builtPatch is the patch from one OLD build to NEW, made once.
type builtPatch struct {
	path string // the patch file written to the run's directory
	err  error
}

// fits says, without touching the process, whether the patch applies to
// what pid runs: for a patch file its OLD build-id; for a NEW binary the
// patch is built against the process's executable (or the NEW of its
// newest patch), once per build.
func (r *runner) fits(pid int, build string, top *graft.PatchStatus) error {
	if r.patchFile != nil {
		if build != r.patchFile.OldBuildID {
			return fmt.Errorf("the patch applies to build %s, and pid %d runs build %s", r.patchFile.OldBuildID, pid, build)
		}
		return nil
	}
	_, err := r.sourceFor(pid, build, top)
	return err
}

// sourceFor is what to apply to pid, which runs build (top: its newest
// patch). patch.new is diffed once per OLD build, not once per process:
// the patch is written to a file in the run's directory and every process
// of that build gets the same file.
func (r *runner) sourceFor(pid int, build string, top *graft.PatchStatus) (graft.Source, error) {
	if r.patchFile != nil {
		return r.src, nil
	}
	if b, ok := r.built[build]; ok {
		return graft.Source{File: b.path, LocalBuild: true}, b.err
	}
	b := r.build(pid, build, top)
	r.built[build] = b
	if b.err == nil {
		r.progress("patch from build %s to %s made (%s)", build, r.newID, filepath.Base(b.path))
	}
	return graft.Source{File: b.path, LocalBuild: true}, b.err
}

func (r *runner) build(pid int, build string, top *graft.PatchStatus) builtPatch {
	oldPath := tracer.ExePath(pid)
	if top != nil {
		if top.NewPath == "" {
			return builtPatch{err: fmt.Errorf("pid %d runs patch %s from a patch file whose NEW binary is not on this machine: a diff against it needs that binary (or use patch.file)", pid, top.ID)}
		}
		oldPath = top.NewPath
	}
	old, err := elfpatch.Open(oldPath)
	if err != nil {
		return builtPatch{err: fmt.Errorf("patch from build %s: %w", build, err)}
	}
	// A deploy that replaced the NEW of the patch in effect on disk would
	// make the diff start from a build the process does not run.
	if old.BuildID() != build {
		return builtPatch{err: fmt.Errorf("pid %d runs build %s, but %s is now build %s (replaced on disk since?): use a patch file made from the right build (patch.file)", pid, build, oldPath, old.BuildID())}
	}
	p, err := elfpatch.BuildPatch(old, r.newBin, elfpatch.WithRules(r.rules))
	if err != nil {
		return builtPatch{err: fmt.Errorf("patch from build %s to %s: %w", build, r.newID, err)}
	}
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "play-"); err != nil {
			return builtPatch{err: fmt.Errorf("directory for the patch: %w", err)}
		}
	}
	path := filepath.Join(r.dir, build+".patch")
	f, err := os.Create(path)
	if err == nil {
		_, err = p.WriteTo(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return builtPatch{err: fmt.Errorf("write the patch from build %s: %w", build, err)}
	}
	return builtPatch{path: path}
}

// settleError files an error from looking at a target: gone, or failed.
func (r *runner) settleError(tr *TargetReport, err error) {
	var pe *tracer.ProcessExitedError
	if errors.As(err, &pe) || !alive(tr.Target) {
		tr.Outcome = Gone
		r.progress("pid %d: GONE", tr.Pid)
		return
	}
	tr.Outcome, tr.Error = Failed, err.Error()
	r.progress("pid %d: FAILED: %v", tr.Pid, err)
}

// rollout runs the batches, resolving the targets again before each.
func (r *runner) rollout(ctx context.Context, first *Resolution) {
	res := first
	for b := 0; ; b++ {
		if b > 0 {
			var err error
			if res, err = Resolve(r.pb.Targets); err != nil {
				r.fail(ctx, nil, fmt.Sprintf("resolving the targets again: %v", err))
				return
			}
		}
		now := map[key]bool{}
		for _, t := range res.Targets {
			now[t.key()] = true
			if _, ok := r.known[t.key()]; !ok {
				r.known[t.key()] = t
				r.progress("new target: pid %d (%s)", t.Pid, t.Via)
			}
		}
		var pending []Target
		for k, t := range r.known {
			if _, done := r.handled[k]; done {
				continue
			}
			if !now[k] {
				r.entry(t, b+1).Outcome = Gone
				r.progress("pid %d: GONE before its batch", t.Pid)
				continue
			}
			pending = append(pending, t)
		}
		if len(pending) == 0 {
			return
		}
		sort.Slice(pending, func(i, j int) bool { return pending[i].Pid < pending[j].Pid })
		size := r.batch(b).Size(len(r.known))
		batch := pending[:min(size, len(pending))]
		r.rep.Batches++
		r.progress("batch %d (%s of %d): pid %s", b+1, r.batch(b), len(r.known), pidList(batch))
		if !r.runBatch(ctx, batch, b+1, false) {
			return
		}
		if r.pb.Rollout.Pause > 0 && len(pending) > len(batch) {
			r.progress("pause %v", r.pb.Rollout.Pause)
			select {
			case <-ctx.Done():
				r.fail(ctx, nil, "interrupted")
				return
			case <-time.After(r.pb.Rollout.Pause):
			}
		}
	}
}

// runBatch patches batch one target at a time, then runs the checks on
// every target it patched. false: the run failed (on_failure done).
func (r *runner) runBatch(ctx context.Context, batch []Target, n int, followed bool) bool {
	var applied []*TargetReport
	for i, t := range batch {
		if ctx.Err() != nil {
			for _, rest := range batch[i:] {
				r.entry(rest, n).Outcome = NotReached
			}
			r.fail(ctx, nil, "interrupted")
			return false
		}
		tr := r.entry(t, n)
		tr.Followed = followed
		ok := r.applyOne(ctx, tr)
		if tr.Outcome == Applied {
			applied = append(applied, tr)
		}
		if !ok {
			for _, rest := range batch[i+1:] {
				r.entry(rest, n).Outcome = NotReached
			}
			r.fail(ctx, tr, tr.Error)
			return false
		}
	}
	for _, tr := range applied {
		if !alive(tr.Target) {
			tr.Outcome, tr.Patched, tr.Error = Gone, false, "exited after the patch"
			r.progress("pid %d: exited after the patch", tr.Pid)
			r.fail(ctx, tr, fmt.Sprintf("pid %d exited after the patch", tr.Pid))
			return false
		}
		if ok, why := r.healthy(ctx, tr, "after"); !ok {
			tr.Error = why
			r.progress("pid %d: %s", tr.Pid, why)
			r.fail(ctx, tr, fmt.Sprintf("pid %d: %s", tr.Pid, why))
			return false
		}
		r.progress("pid %d: checks after the patch passed", tr.Pid)
	}
	return true
}

// applyOne takes one target through baseline checks and the apply. false
// means a failure that ends the rollout (busy, failed).
func (r *runner) applyOne(ctx context.Context, tr *TargetReport) bool {
	pid := tr.Pid
	if !alive(tr.Target) {
		tr.Outcome = Gone
		r.progress("pid %d: GONE", pid)
		return true
	}
	build, top, err := r.current(pid)
	if err != nil {
		r.settleError(tr, err)
		return tr.Outcome == Gone
	}
	tr.BuildID = build
	if build == r.newID {
		tr.Outcome, tr.Patched = AlreadyApplied, true
		r.progress("pid %d: ALREADY_APPLIED (runs build %s)", pid, build)
		// Patched by an earlier run: its executable's build is an OLD
		// one all the same, for follow.
		if id, err := tracer.ExeBuildID(pid); err == nil && id != r.newID && r.patchFile == nil {
			r.oldIDs[id] = true
		}
		return true
	}
	if ok, why := r.healthy(ctx, tr, "before"); !ok {
		tr.Outcome, tr.Error = SkippedUnhealthy, why
		r.progress("pid %d: SKIPPED_UNHEALTHY: %s", pid, why)
		return true
	}
	if n := len(r.checksFor("before")); n > 0 {
		r.progress("pid %d: baseline passed (%d check(s))", pid, n)
	}
	src, err := r.sourceFor(pid, build, top)
	if err != nil {
		tr.Outcome, tr.Error = Failed, err.Error()
		r.progress("pid %d: FAILED: %v", pid, err)
		return false
	}
	res, err := r.act.Apply(ctx, pid, src, graft.ApplyOptions{Timeout: r.pb.Patch.Timeout, AllowActive: r.pb.Patch.AllowActive, Trust: r.trust, AllowUncheckedTypes: r.pb.Patch.AllowUncheckedTypes})
	var ae *safepoint.ActiveError
	var pe *tracer.ProcessExitedError
	switch {
	case err == nil:
		tr.Outcome, tr.Patched = Applied, true
		tr.PatchID, tr.Functions, tr.PauseUS = res.PatchID, res.Functions, res.PauseUS
		r.patched = append(r.patched, tr)
		if r.patchFile == nil {
			r.oldIDs[build] = true
		}
		r.progress("pid %d: APPLIED patch %s (%s), pause %d µs", pid, res.PatchID, strings.Join(res.Functions, ", "), res.PauseUS)
		return true
	case errors.Is(err, graft.ErrAlreadyApplied):
		tr.Outcome, tr.Patched = AlreadyApplied, true
		r.progress("pid %d: ALREADY_APPLIED", pid)
		return true
	case errors.As(err, &ae):
		tr.Outcome, tr.Error = Busy, err.Error()
		tr.Blocker = &Blocker{Tid: ae.Tid, Function: ae.Function, Stack: safepoint.FormatStack(ae.Stack)}
		r.progress("pid %d: BUSY: thread %d in %s", pid, ae.Tid, ae.Function)
		return false
	case errors.As(err, &pe) || !alive(tr.Target):
		tr.Outcome, tr.Error = Gone, err.Error()
		r.progress("pid %d: GONE during the apply", pid)
		return true
	default:
		tr.Outcome, tr.Error = Failed, err.Error()
		r.progress("pid %d: FAILED: %v", pid, err)
		return false
	}
}

// fail ends the rollout: every target not handled yet is NOT_REACHED and,
// with on_failure: rollback, every process this run patched is reverted.
// culprit is the target whose failure it is (nil: an interrupt).
func (r *runner) fail(ctx context.Context, culprit *TargetReport, why string) {
	r.failed = true
	if r.rep.Failure == "" {
		r.rep.Failure = why
	}
	for k, t := range r.known {
		if _, done := r.handled[k]; !done {
			r.entry(t, 0).Outcome = NotReached
		}
	}
	if r.pb.Rollout.OnFailure != "rollback" {
		if culprit != nil && culprit.Outcome == Applied {
			culprit.Outcome = Failed
		}
		r.progress("on_failure: stop: %d process(es) stay patched", len(r.patched))
		return
	}
	// Reverts must run even when the failure was an interrupt.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	r.progress("on_failure: rollback of %d process(es) this run patched", len(r.patched))
	ids := map[string]bool{}
	for i := len(r.patched) - 1; i >= 0; i-- {
		tr := r.patched[i]
		ids[tr.PatchID] = true
		outcome := RolledBack
		if tr == culprit {
			outcome = FailedRolledBack
		}
		r.revert(rctx, tr, outcome)
	}
	r.revertInherited(rctx, ids)
}

func (r *runner) revert(ctx context.Context, tr *TargetReport, outcome Outcome) {
	if !alive(tr.Target) {
		tr.Outcome, tr.Patched = Gone, false
		if tr.Error == "" {
			tr.Error = "exited after the patch, before the rollback"
		}
		return
	}
	_, err := r.act.Revert(ctx, tr.Pid, graft.RevertOptions{ID: tr.PatchID, Timeout: r.pb.Patch.Timeout})
	if err != nil {
		tr.Outcome = RollbackFailed
		tr.Error = strings.TrimPrefix(tr.Error+"; ", "; ") + "rollback: " + err.Error()
		r.progress("pid %d: ROLLBACK_FAILED: %v (graft status -p %d shows what is in effect)", tr.Pid, err, tr.Pid)
		return
	}
	tr.Outcome, tr.Patched = outcome, false
	r.progress("pid %d: reverted patch %s", tr.Pid, tr.PatchID)
}

// revertInherited reverts the patch in forked children that inherited it
// from a process this run patched (they forked after the patch): the run
// put the patch there as surely as in their parent.
func (r *runner) revertInherited(ctx context.Context, ids map[string]bool) {
	res, err := Resolve(r.pb.Targets)
	if err != nil {
		return
	}
	for _, t := range res.Targets {
		if tr := r.handled[t.key()]; tr != nil && tr.PatchID != "" {
			continue
		}
		st, err := r.act.Status(t.Pid)
		if err != nil || len(st.Patches) == 0 {
			continue
		}
		top := st.Patches[len(st.Patches)-1]
		if !ids[top.ID] {
			continue
		}
		tr := r.handled[t.key()]
		if tr == nil {
			tr = r.entry(t, 0)
		}
		tr.PatchID = top.ID
		if tr.Error == "" {
			tr.Error = "inherited the patch by fork from a patched process"
		}
		r.revert(ctx, tr, RolledBack)
	}
}

// follow keeps resolving for pb.Rollout.Follow and patches processes of an
// OLD build (one this run patched from) that appeared meanwhile.
func (r *runner) follow(ctx context.Context) {
	deadline := time.Now().Add(r.pb.Rollout.Follow)
	r.progress("follow: watching for new processes of build %s for %v", strings.Join(keys(r.oldIDs), ", "), r.pb.Rollout.Follow)
	firstSeen := map[key]time.Time{}
	ignored := map[key]bool{}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			r.progress("follow: interrupted")
			return
		case <-time.After(r.opts.FollowPoll):
		}
		res, err := Resolve(r.pb.Targets)
		if err != nil {
			r.progress("follow: %v", err)
			continue
		}
		for _, t := range res.Targets {
			k := t.key()
			if _, done := r.handled[k]; done || ignored[k] {
				continue
			}
			if _, seen := firstSeen[k]; !seen {
				firstSeen[k] = time.Now()
			}
			if time.Since(firstSeen[k]) < r.opts.FollowSettle {
				continue
			}
			build, _, err := r.current(t.Pid)
			if err != nil || !r.oldIDs[build] {
				// Not of the OLD build (already patched by fork,
				// another version): not a target of follow.
				ignored[k] = true
				continue
			}
			r.known[k] = t
			r.progress("follow: new process %d (%s) runs the old build", t.Pid, t.Via)
			if !r.runBatch(ctx, []Target{t}, 0, true) {
				return
			}
		}
	}
	r.progress("follow: done")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// finish counts the outcomes and decides the exit code.
func (r *runner) finish() {
	rep := r.rep
	rep.Counts = map[Outcome]int{}
	for _, o := range Outcomes {
		rep.Counts[o] = 0
	}
	sort.SliceStable(rep.Targets, func(i, j int) bool { return rep.Targets[i].Pid < rep.Targets[j].Pid })
	for _, tr := range rep.Targets {
		rep.Counts[tr.Outcome]++
	}
	rep.Total = len(rep.Targets)
	if rep.Targets == nil {
		rep.Targets = []*TargetReport{}
	}
	switch {
	case rep.Aborted != "":
		rep.ExitCode = ExitAborted
	case rep.Counts[RollbackFailed] > 0:
		rep.ExitCode = ExitRollbackFailed
	case r.failed || rep.Counts[Failed] > 0 || rep.Counts[Busy] > 0:
		rep.ExitCode = ExitFailed
	case rep.Counts[SkippedUnhealthy] > 0:
		rep.ExitCode = ExitIncomplete
	default:
		rep.ExitCode = ExitOK
	}
}
