package graft

import (
	"context"
	"errors"
	"fmt"
	"time"

	"graft/elfpatch"
	"graft/safepoint"
	"graft/tracer"
)

// Source names the patch Apply applies: exactly one field is set.
type Source struct {
	// File is a patch written by `graft diff -o`.
	File string
	// NewBinary is a NEW build of the program: the patch is computed on
	// the fly against what the process runs (its executable or, when
	// patches are in effect, the NEW binary of the newest one).
	NewBinary string
	// Signature is File's OpenSSH signature ("" = File + ".sig"), checked
	// when the trust policy configures signers.
	Signature string
	// LocalBuild marks File as a patch graft itself made on this machine
	// from NEW binaries on it (graft play's patch.new): the trust policy
	// treats it as --new, which nobody signed.
	LocalBuild bool
	// data is File's bytes as the trust check read them.
	data []byte
	// GoPIE is, for a Go program running a default (non-PIE) build, NEW
	// built with -buildmode=pie: the code that is loaded, while
	// NewBinary, built the way the program was, is what the diff
	// compares (goapply.go).
	GoPIE string
	// State is, with NewBinary, the operator's state description (the
	// rules graft diff --state takes): how to convert globals whose
	// layout changed, which global holds every object of a type.
	State string
}

// Apply patches the running process pid: it prepares everything while the
// target runs, then stops it once to check that no thread is inside a
// replaced function, write the jumps and record the patch in the target.
// On any error the target is left as it was, and always detached.
func Apply(ctx context.Context, pid int, src Source, opts ApplyOptions) (*ApplyResult, error) {
	sys, err := defaultSystem()
	if err != nil {
		return nil, err
	}
	trust := opts.Trust
	if trust == nil {
		if trust, err = LoadTrustPolicy("", ""); err != nil {
			return nil, err
		}
	}
	signer, err := trust.checkSource(&src, time.Now())
	if err != nil {
		return nil, err
	}
	pt, err := sys.resolve(pid, src)
	if err != nil {
		return nil, err
	}
	pt.Signer = signer
	res, err := sys.apply(ctx, pid, pt, opts)
	if res != nil {
		res.Signer = signer
		res.Unverified = !trust.Enforced() && src.File != ""
	}
	return res, err
}

// Status returns the patches in effect in pid, read from the process
// itself without stopping it.
func Status(pid int) (*StatusResult, error) {
	sys, err := defaultSystem()
	if err != nil {
		return nil, err
	}
	return sys.status(pid)
}

// Unwinder returns an unwinder for pid that knows, besides every mapped
// module, the code of the patches in effect (their CFI read from the
// target, as apply and revert see it), so stacks through patched code are
// complete. It reads the process without stopping it.
func Unwinder(pid int) (*safepoint.Unwinder, error) {
	sys, err := defaultSystem()
	if err != nil {
		return nil, err
	}
	mods, err := sys.modules(pid)
	if err != nil {
		return nil, fmt.Errorf("unwinder for pid %d: %w", pid, err)
	}
	maps, err := sys.readMaps(pid)
	if err != nil {
		return nil, fmt.Errorf("unwinder for pid %d: %w", pid, err)
	}
	mem, err := sys.openMem(pid)
	if err != nil {
		return nil, fmt.Errorf("unwinder for pid %d: %w", pid, err)
	}
	st, err := readState(mem, pid, maps)
	mem.Close()
	if err != nil {
		return nil, fmt.Errorf("unwinder for pid %d: %w", pid, err)
	}
	ck, err := newChecker(pid, mods, loadedModules(st))
	if err != nil {
		return nil, fmt.Errorf("unwinder for pid %d: %w", pid, err)
	}
	u, ok := ck.(*unwinder)
	if !ok {
		return nil, fmt.Errorf("unwinder for pid %d: it runs a Go program: use GoUnwinder", pid)
	}
	return u.u, nil
}

// Revert takes the newest patch (or all of them) out of pid again, behind
// the same safety check as Apply, restoring the original bytes.
func Revert(ctx context.Context, pid int, opts RevertOptions) (*RevertResult, error) {
	sys, err := defaultSystem()
	if err != nil {
		return nil, err
	}
	return sys.revert(ctx, pid, opts)
}

// resolve turns src into a Patch. For --new the OLD side is what pid runs:
// the NEW binary of its newest patch when one is in effect (so the result
// stacks), else its executable.
func (sys *system) resolve(pid int, src Source) (*Patch, error) {
	switch {
	case src.File != "" && src.NewBinary != "":
		return nil, errors.New("apply: give a patch file or a new binary, not both")
	case src.File != "" && src.data != nil:
		return readPatchData(src.File, src.data)
	case src.File != "":
		return sys.readPatch(src.File)
	case src.NewBinary != "":
		if err := sys.checkPid(pid); err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		maps, err := sys.readMaps(pid)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		mem, err := sys.openMem(pid)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		st, err := readState(mem, pid, maps)
		mem.Close()
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		// OLD is the module NEW replaces (the executable, or the
		// library of NEW's SONAME), as the process mapped it.
		mods, err := sys.modules(pid)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		mod, err := moduleForNew(pid, mods, src.NewBinary)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		old, err := tracer.ModuleFile(pid, mod)
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
		}
		top := st.TopFor(mod)
		if top != nil && !isGoExecutable(old) {
			if top.NewPath == "" {
				return nil, fmt.Errorf("apply %s: pid %d runs patch %s, applied from a patch file whose NEW binary (build %s) was not on this machine; a patch on top of it made with --new needs that binary to diff against (a patch file made elsewhere from it, graft diff -o, needs nothing more)", src.NewBinary, pid, top.ID, top.NewBuildID)
			}
			old = top.NewPath
		}
		if isGoExecutable(old) {
			// Always against the executable, whatever is applied:
			// the patch redirects every function NEW changed since
			// the executable's build, over the jumps in place.
			load := src.GoPIE
			if load == "" {
				load = src.NewBinary
			}
			return goPatch(old, src.NewBinary, load)
		}
		var rules map[string]*elfpatch.Rules
		if src.State != "" {
			if rules, err = readStateFile(src.State); err != nil {
				return nil, fmt.Errorf("apply %s: %w", src.NewBinary, err)
			}
		}
		pt, err := sys.diff(old, src.NewBinary, rules)
		if err != nil {
			return nil, err
		}
		// A deploy that replaced the binary in place (the usual way)
		// also replaced the NEW of the patch in effect, recorded by
		// path: the diff then starts from a build the process does not
		// run, and the patch would be refused for a reason nobody sees.
		if top != nil && pt.OldBuildID != top.NewBuildID {
			return nil, fmt.Errorf("apply %s: pid %d runs patch %s, whose NEW binary %s is now build %s, not the build %s it was made from (replaced on disk since?): diff against a copy of that build, or apply a patch file (graft diff -o)", src.NewBinary, pid, top.ID, top.NewPath, pt.OldBuildID, top.NewBuildID)
		}
		return pt, nil
	}
	return nil, errors.New("apply: no patch file and no new binary given")
}
