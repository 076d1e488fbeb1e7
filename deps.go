package graft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"graft/elfpatch"
	"graft/safepoint"
	"graft/tracer"
)

// The controller reaches the live process and the other packages through
// these small interfaces, so its logic (what to write where, in what order,
// how to roll back) is tested against a fake process as well as real ones.
// bind.go plugs in tracer, loader, safepoint and trampoline.

// proc is a traced process (tracer.Process).
type proc interface {
	// Stop stops every thread; Resume lets them all go again.
	Stop() error
	Resume() error
	ReadAt(b []byte, addr int64) (int, error)
	WriteAt(b []byte, addr int64) (int, error)
	// Mmap, Munmap and Syscall run on a borrowed thread and need the
	// process stopped (see stopped).
	Mmap(addr, length uint64, prot, flags int, fd int64, off uint64) (uint64, error)
	Munmap(addr, length uint64) error
	Syscall(nr uint64, args ...uint64) (uint64, error)
	// Close detaches; safe to call twice.
	Close() error
}

// loadedImage is NEW's image mapped and relocated in the target.
type loadedImage interface {
	Base() uint64
	Size() uint64
	// Unload unmaps it.
	Unload(p proc) error
}

// safeSpec says what no thread may be running for a patch to go in.
type safeSpec struct {
	// Functions: no PC or return address inside (unless the function's
	// name is in AllowActive).
	Functions []namedRange
	// Entries: no PC or return address inside, whatever AllowActive says
	// (the bytes a jump overwrites).
	Entries     []namedRange
	AllowActive []string
	// Allow maps a function's name to the name the operator gives for
	// it (a clone's base name); Stay decides whether a frame inside
	// Functions may stay anyway (frames.go). Both may be nil.
	Allow map[string]string
	Stay  func(fn string, resume uint64, exact bool) safepoint.StayVerdict
	// Progress: see ApplyOptions.Progress.
	Progress func(safepoint.Waiting)
	// Thread and SwitchOK: see safepoint.Spec.
	Thread   func([]safepoint.Frame) string
	SwitchOK func([]safepoint.Frame, int) string
}

type namedRange struct {
	Name string
	Range
}

// checker decides activeness. waitSafe is called with the target stopped
// and returns nil with it still stopped once no thread is inside spec; it
// may resume and stop the target again while it waits, up to timeout. It
// returns when the stop that ended safe began (zero: the caller's own
// stop), so the pause reported is the one that wrote the jumps, not the
// wait before it.
type checker interface {
	waitSafe(ctx context.Context, p proc, spec safeSpec, timeout time.Duration) (time.Time, error)
	// framesIn reports, for each of rs, whether any thread (target
	// stopped) has its PC or a return address inside. Called in the
	// pause a successful waitSafe ended in, it reuses the stacks that
	// waitSafe checked instead of unwinding again.
	framesIn(p proc, rs []Range) ([]bool, error)
}

// site is one planned jump (trampoline.Site).
type site struct {
	Addr uint64
	Orig []byte
	New  []byte
}

// imageModule is a mapped image the unwinder must know about besides the
// files in /proc/PID/maps.
type imageModule struct {
	Path    string // NEW binary on disk, for its CFI ("" if unknown)
	BuildID string // NEW's, so a file replaced on disk is not trusted
	Base    uint64
	Size    uint64
	// EhFrame* locate NEW's CFI inside the image (link-time); when set,
	// the CFI is read from the target and Path is not opened.
	EhFrame, EhFrameSize       uint64
	EhFrameHdr, EhFrameHdrSize uint64
	// Funcs name the image's functions (absolute addresses).
	Funcs []SymRecord
	// Returns are the switch code's addresses a switched frame may still
	// return to, each with the return address it replaced.
	Returns map[uint64]uint64
}

// system is the set of live operations the controller uses.
type system struct {
	attach   func(pid int) (proc, error)
	readMaps func(pid int) ([]tracer.Mapping, error)
	modules  func(pid int) ([]tracer.Module, error)
	// load maps and links im against the running executable exe.
	load func(ctx context.Context, p proc, pid int, im *elfpatch.Image, exe *tracer.Module, mods []tracer.Module, id string) (loadedImage, error)
	// findHole picks where an image of size bytes would go (dry run).
	findHole func(maps []tracer.Mapping, exe *tracer.Module, size uint64) (uint64, error)
	// unmapImage takes out an image recorded by an earlier invocation.
	unmapImage func(p proc, base, size uint64) error
	// newChecker builds the unwinder for pid while it runs.
	newChecker func(pid int, mods []tracer.Module, extra []imageModule) (checker, error)
	// plan encodes the jump from entry to target over code (the
	// function's original bytes at entry).
	plan func(code []byte, entry, target uint64) (site, error)
	// isGo reports whether pid runs a Go program (nil: never).
	isGo func(pid int) bool
	// openMem reads the target's memory without attaching (/proc/PID/mem).
	openMem func(pid int) (memReader, error)
	// symbols reads the symbol table of an ELF file with the given
	// build-id ("" skips the check).
	symbols func(path, buildID string) (*symbols, error)
	// readPatch reads a patch file; diff computes the patch from OLD to
	// NEW binaries.
	readPatch func(path string) (*Patch, error)
	diff      func(oldPath, newPath string, rules map[string]*elfpatch.Rules) (*Patch, error)
	now       func() time.Time
	// check says, before anything reads /proc/PID/maps or mem, why pid
	// cannot be patched (no such process, a kernel thread, a zombie, no
	// ptrace access), so the error names the cause instead of what the
	// first read happened to get. nil: no check (fakes).
	check func(pid int) error
	// tracedBy returns the tracer of pid and its name (0: none), for
	// status to tell an apply in progress from a killed one.
	tracedBy func(pid int) (int, string)
	// fds lists pid's open memfds (leftovers.go); nil: none (fakes).
	fds func(pid int) ([]tracer.Memfd, error)
}

// checkPid runs sys.check if there is one.
func (sys *system) checkPid(pid int) error {
	if sys.check == nil {
		return nil
	}
	return sys.check(pid)
}

type memReader interface {
	io.ReaderAt
	io.Closer
}

// stopped runs fn (remote system calls) with the target stopped, in a short
// stop of its own outside the patching pause.
func stopped(p proc, fn func() error) error {
	if err := p.Stop(); err != nil {
		return fmt.Errorf("stop threads: %w", err)
	}
	err := fn()
	if rerr := p.Resume(); rerr != nil {
		err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
	}
	return err
}

// boundStops bounds each stop by the operator's timeout. A thread that
// cannot stop (uninterruptible sleep: a vfork parent, I/O on a dead NFS
// server) holds every thread already stopped until the stop gives up; by
// default that is tracer.DefaultStopTimeout (10 s), far longer than the
// disruption a --timeout of 100ms asks for. The stop then fails naming the
// thread (tracer.ErrStopTimeout), the process is resumed and nothing is
// changed.
func boundStops(p proc, d time.Duration) {
	s, ok := p.(interface{ SetStopTimeout(time.Duration) })
	if ok && d > 0 && d < tracer.DefaultStopTimeout {
		s.SetStopTimeout(d)
	}
}
