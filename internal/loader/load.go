package loader

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"graft/elfpatch"
	"graft/tracer"
)

// Process is what Load needs of a traced process; *tracer.Process has it.
// Syscall requires the process stopped; memory reads and writes do not.
type Process interface {
	Pid() int
	Stopped() bool
	Stop() error
	Resume() error
	ReadAt(b []byte, addr int64) (int, error)
	WriteAt(b []byte, addr int64) (int, error)
	Syscall(nr uint64, args ...uint64) (uint64, error)
}

// Region is one mapping Load created: [Addr, Addr+Size) with protection
// Prot (PROT_READ 1 | PROT_WRITE 2 | PROT_EXEC 4; 0 between segments).
type Region struct {
	Addr, Size uint64
	Prot       int
}

// Loaded is an image mapped into a process.
type Loaded struct {
	// Base is where NEW's link-time address 0 is: NEW's vaddr v runs at
	// Base+v.
	Base uint64
	// Size is the length of the whole mapping at Base.
	Size uint64
	// Name is the memfd's name as /proc/PID/maps shows it
	// ("/memfd:graft-<id> (deleted)"), "" for anonymous mappings.
	Name    string
	Regions []Region
	// Pauses are how long Load (and Unload) held a borrowed thread (or,
	// for a process that cannot lend one, the whole process) stopped,
	// one entry per stop, for reports; empty when the caller had it
	// stopped or a thread borrowed already.
	Pauses []time.Duration
	// heldSince: when borrow borrowed the thread it must give back.
	heldSince time.Time
	// unloaded makes Unload safe to call twice.
	unloaded bool
}

// Options tune Load.
type Options struct {
	// ID names the mapping "graft-<ID>" in /proc/PID/maps.
	ID string
	// NoMemfd loads into anonymous mappings even when memfd_create works.
	NoMemfd bool
	// Base, if set, is where the image must go (picked by FindHole
	// earlier, so that jumps could be planned before loading); if the
	// range was taken meanwhile, Load fails and maps nothing.
	Base uint64
	// KeepBorrowed: the thread Load borrows (after linking, see
	// tracer's Borrow) stays borrowed when Load succeeds, for the
	// caller's next system calls and pause; the caller returns it.
	KeepBorrowed bool
}

// LoadError says which step of loading failed in which process.
type LoadError struct {
	Pid  int
	Step string
	Err  error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("load image into pid %d: %s: %v", e.Pid, e.Step, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// Load maps im into the process running OLD (its main module old), with
// imports resolved by resolve, and returns where it went. The process may
// be running or stopped; Load stops it only around its system calls and
// leaves it as it found it. On error nothing it mapped stays behind.
func Load(p Process, im *elfpatch.Image, old *tracer.Module, resolve func(elfpatch.Import) (uint64, error), opt Options) (*Loaded, error) {
	pid := p.Pid()
	fail := func(step string, err error) error { return &LoadError{Pid: pid, Step: step, Err: err} }
	if im.Size == 0 || len(im.Segments) == 0 {
		return nil, fail("check image", errors.New("empty image"))
	}
	maps, err := tracer.ReadMaps(pid)
	if err != nil {
		return nil, fail("read maps", err)
	}
	base := opt.Base
	if base == 0 {
		if base, err = FindHole(maps, ImageSpan(maps, old), im.Size); err != nil {
			return nil, fail("place image", err)
		}
	}
	// Everything that can fail without touching the target comes first.
	segs, err := im.Link(base, old.Bias, resolve)
	if err != nil {
		return nil, fail("link", err)
	}
	regions, err := layout(im, base)
	if err != nil {
		return nil, fail("lay out", err)
	}
	l := &Loaded{Base: base, Size: im.Size, Regions: regions}
	// From here on one thread is borrowed (borrow.go) for every system
	// call and for the copy into the memfd, the others running on.
	if err := l.borrow(p); err != nil {
		return nil, fail("borrow a thread", err)
	}
	if err := l.mapInto(p, im, segs, opt, fail); err != nil {
		return nil, errors.Join(err, l.giveBack(p))
	}
	if opt.KeepBorrowed {
		l.heldSince = time.Time{} // the caller's now
	} else if err := l.giveBack(p); err != nil {
		return nil, l.undo(p, -1, fail("return the borrowed thread", err))
	}
	// Read the image back from the target: what runs is what was linked.
	for i, s := range im.Segments {
		got := make([]byte, len(segs[i]))
		if _, err := p.ReadAt(got, int64(base+s.Vaddr)); err != nil {
			return nil, l.undo(p, -1, fail("verify", err))
		}
		if !bytes.Equal(got, segs[i]) {
			return nil, l.undo(p, -1, fail("verify", fmt.Errorf("segment at %#x reads back different bytes", base+s.Vaddr)))
		}
	}
	return l, nil
}

// mapInto maps the linked segments at l.Base (the target stopped or a
// thread borrowed, see borrow).
func (l *Loaded) mapInto(p Process, im *elfpatch.Image, segs [][]byte, opt Options, fail func(string, error) error) error {
	pid, base := p.Pid(), l.Base
	name := "graft"
	if opt.ID != "" {
		name += "-" + opt.ID
	}
	memfd := int64(-1)
	err := l.paused(p, func() error {
		got, err := p.Syscall(unix.SYS_MMAP, base, im.Size, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err != nil {
			return fail(fmt.Sprintf("reserve %#x bytes at %#x", im.Size, base), explain(err))
		}
		if got != base {
			// A kernel older than 4.17 takes MAP_FIXED_NOREPLACE as a hint.
			p.Syscall(unix.SYS_MUNMAP, got, im.Size)
			return fail("reserve", fmt.Errorf("kernel placed the mapping at %#x instead of %#x", got, base))
		}
		if opt.NoMemfd {
			return nil
		}
		if _, err := p.WriteAt(append([]byte(name), 0), int64(base)); err != nil {
			return l.undo(p, memfd, fail("write memfd name", err))
		}
		fd, err := tracer.CreateMemfd(p, base, im.Size)
		if err != nil {
			return nil // refused (seccomp, old kernel), or not sized: anonymous mappings
		}
		memfd = int64(fd)
		// The reservation becomes the memfd's (no access yet): a graft
		// killed before the next stop leaves a mapping /proc/PID/maps
		// names, which status lists and revert --all unmaps, not an
		// anonymous one nobody can tell from the program's own.
		if _, err := p.Syscall(unix.SYS_MMAP, base, im.Size, unix.PROT_NONE,
			unix.MAP_PRIVATE|unix.MAP_FIXED, fd, 0); err != nil {
			p.Syscall(unix.SYS_CLOSE, fd)
			memfd = -1
		}
		return nil
	})
	if err != nil {
		return err
	}
	if memfd >= 0 {
		if err := fillMemfd(pid, memfd, im, segs); err != nil {
			// Cannot reach the memfd from here (a different mount of
			// /proc?): drop it and use anonymous mappings.
			err = l.paused(p, func() error {
				_, err := p.Syscall(unix.SYS_CLOSE, uint64(memfd))
				return err
			})
			memfd = -1
			if err != nil {
				return l.undo(p, -1, fail("close memfd", err))
			}
		}
	}
	err = l.paused(p, func() error {
		if memfd >= 0 {
			l.Name = "/memfd:" + name
			return l.mapMemfd(p, memfd, fail)
		}
		return l.mapAnon(p, fail)
	})
	if err != nil {
		return err
	}
	if memfd < 0 {
		// /proc/PID/mem writes through page protections into private
		// mappings (the kernel copies the page), so the text never has
		// to be mapped writable.
		for i, s := range im.Segments {
			if _, err := p.WriteAt(segs[i], int64(base+s.Vaddr)); err != nil {
				return l.undo(p, -1, fail(fmt.Sprintf("write segment at %#x", base+s.Vaddr), err))
			}
		}
	}
	return nil
}

// layout turns the segments into page-aligned regions relative to base,
// merging protections where two segments share a page, with PROT_NONE
// regions between them.
func layout(im *elfpatch.Image, base uint64) ([]Region, error) {
	npages := im.Size / pageSize
	prot := make([]int, npages)
	for _, s := range im.Segments {
		start, end := s.Pages()
		if end > im.Size || start >= end {
			return nil, fmt.Errorf("segment at %#x (%#x bytes) outside the image of %#x bytes", s.Vaddr, s.Memsz, im.Size)
		}
		for pg := start / pageSize; pg < end/pageSize; pg++ {
			prot[pg] |= s.Prot
		}
	}
	// RELRO: like ld.so, write-protect the pages wholly inside it once
	// relocated (the start is rounded down, the end too: ld pads RELRO to
	// end on a page boundary, and a partial last page stays writable).
	if im.RelroEnd > im.RelroStart {
		lo, hi := im.RelroStart&^(pageSize-1), im.RelroEnd&^(pageSize-1)
		for pg := lo / pageSize; pg < hi/pageSize && pg < npages; pg++ {
			prot[pg] &^= unix.PROT_WRITE
		}
	}
	var out []Region
	for pg := uint64(0); pg < npages; {
		q := pg
		for q < npages && prot[q] == prot[pg] {
			q++
		}
		out = append(out, Region{Addr: base + pg*pageSize, Size: (q - pg) * pageSize, Prot: prot[pg]})
		pg = q
	}
	return out, nil
}

// fillMemfd writes the linked segments into the target's memfd through
// /proc/PID/fd, while the target runs.
func fillMemfd(pid int, fd int64, im *elfpatch.Image, segs [][]byte) (err error) {
	f, err := tracer.OpenFD(pid, int(fd), os.O_RDWR)
	if err != nil {
		return err
	}
	defer func() {
		// A write path: a failing close is a failed load, not noise.
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", f.Name(), cerr)
		}
	}()
	for i, s := range im.Segments {
		if _, err := f.WriteAt(segs[i], int64(s.Vaddr)); err != nil {
			return err
		}
	}
	return nil
}

// mapMemfd replaces the reservation with private mappings of the memfd,
// each with its final protection, and closes the descriptor.
// Precondition: stopped.
func (l *Loaded) mapMemfd(p Process, fd int64, fail func(string, error) error) error {
	for _, r := range l.Regions {
		_, err := p.Syscall(unix.SYS_MMAP, r.Addr, r.Size, uint64(r.Prot),
			unix.MAP_PRIVATE|unix.MAP_FIXED, uint64(fd), r.Addr-l.Base)
		if err != nil {
			return l.undo(p, fd, fail(fmt.Sprintf("map memfd at %#x (prot %d)", r.Addr, r.Prot), explain(err)))
		}
	}
	if _, err := p.Syscall(unix.SYS_CLOSE, uint64(fd)); err != nil {
		return l.undo(p, fd, fail("close memfd", err)) // undo tries once more
	}
	return nil
}

// mapAnon replaces the reservation with anonymous private mappings with
// their final protection. Precondition: stopped.
func (l *Loaded) mapAnon(p Process, fail func(string, error) error) error {
	for _, r := range l.Regions {
		_, err := p.Syscall(unix.SYS_MMAP, r.Addr, r.Size, uint64(r.Prot),
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0)
		if err != nil {
			return l.undo(p, -1, fail(fmt.Sprintf("map %#x (prot %d)", r.Addr, r.Prot), explain(err)))
		}
	}
	return nil
}

// undo unmaps the whole range and closes fd (if >= 0) in the target,
// and returns cause (with any cleanup failure attached).
func (l *Loaded) undo(p Process, fd int64, cause error) error {
	err := l.paused(p, func() error {
		var errs []error
		if fd >= 0 {
			if _, err := p.Syscall(unix.SYS_CLOSE, uint64(fd)); err != nil {
				errs = append(errs, fmt.Errorf("close memfd %d: %w", fd, err))
			}
		}
		if _, err := p.Syscall(unix.SYS_MUNMAP, l.Base, l.Size); err != nil {
			errs = append(errs, fmt.Errorf("munmap %#x: %w", l.Base, err))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("%w (and cleaning up failed, the target may keep a mapping at %#x: %v)", cause, l.Base, err)
	}
	return cause
}

// Unload unmaps the image. The caller must have removed every jump into
// it and made sure no thread runs in it or returns into it.
//
// Unload is safe to call twice: the second call does nothing (the range
// may belong to someone else by then).
func (l *Loaded) Unload(p Process) error {
	if l.unloaded {
		return nil
	}
	err := l.paused(p, func() error {
		_, err := p.Syscall(unix.SYS_MUNMAP, l.Base, l.Size)
		return err
	})
	if err != nil {
		return &LoadError{Pid: p.Pid(), Step: fmt.Sprintf("unmap %#x (%#x bytes)", l.Base, l.Size), Err: err}
	}
	l.unloaded = true
	return nil
}

// borrower is a process that can lend one thread for system calls while
// its other threads run (*tracer.Process; see tracer/borrow.go).
type borrower interface {
	Lent() int
	Borrow(tid int) (int, error)
	Return() error
}

// borrow borrows a thread for the system calls that follow, unless the
// process is stopped or a thread is borrowed already (by the caller, who
// then keeps it: giveBack leaves it alone).
func (l *Loaded) borrow(p Process) error {
	b, ok := p.(borrower)
	if !ok || p.Stopped() || b.Lent() != 0 {
		return nil
	}
	l.heldSince = time.Now()
	if _, err := b.Borrow(0); err != nil {
		l.heldSince = time.Time{}
		return err
	}
	return nil
}

// giveBack returns the thread borrow borrowed.
func (l *Loaded) giveBack(p Process) error {
	if l.heldSince.IsZero() {
		return nil
	}
	err := p.(borrower).Return()
	l.Pauses = append(l.Pauses, time.Since(l.heldSince))
	l.heldSince = time.Time{}
	return err
}

// paused runs fn with the process stopped or a thread borrowed: it
// borrows one (or, for a process that cannot lend one, stops every
// thread) first unless the caller already did, and gives it back
// afterwards in that case only.
func (l *Loaded) paused(p Process, fn func() error) error {
	if p.Stopped() {
		return fn()
	}
	if b, ok := p.(borrower); ok {
		if b.Lent() != 0 {
			return fn()
		}
		if err := l.borrow(p); err != nil {
			return &LoadError{Pid: p.Pid(), Step: "borrow a thread", Err: err}
		}
		ferr := fn()
		if err := l.giveBack(p); err != nil {
			return errors.Join(ferr, &LoadError{Pid: p.Pid(), Step: "return the borrowed thread", Err: err})
		}
		return ferr
	}
	start := time.Now()
	if err := p.Stop(); err != nil {
		return &LoadError{Pid: p.Pid(), Step: "stop", Err: err}
	}
	ferr := fn()
	err := p.Resume()
	l.Pauses = append(l.Pauses, time.Since(start))
	if err != nil {
		return errors.Join(ferr, &LoadError{Pid: p.Pid(), Step: "resume", Err: err})
	}
	return ferr
}

// explain adds what an EPERM or EACCES from mmap usually means.
func explain(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EPERM, syscall.EACCES:
			return fmt.Errorf("%w (the target refuses the mapping: a seccomp filter, MemoryDenyWriteExecute or an LSM policy)", err)
		case syscall.EEXIST:
			return fmt.Errorf("%w (the range was taken after /proc/PID/maps was read)", err)
		}
	}
	return err
}
