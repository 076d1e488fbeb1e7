package graft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"syscall"
	"time"

	"graft/elfpatch"
	"graft/tracer"
)

// A fake process for the controller's logic: an address space of regions,
// stop/resume bookkeeping and a log of every write, so tests can check
// what was written, where and whether the target was stopped at the time.

type region struct {
	start uint64
	data  []byte
	path  string
	perms string
}

type fakeWrite struct {
	addr    uint64
	data    []byte
	stopped bool
	stop    int // which stop it happened in
}

type fakeProc struct {
	regions  []*region
	stopped  bool
	closed   int
	stops    int
	writes   []fakeWrite
	failAt   map[uint64]error // WriteAt at this address fails
	nextAnon uint64
	fds      map[uint64]string
	nextFd   uint64
}

func newFakeProc() *fakeProc {
	return &fakeProc{nextAnon: 0x555555654000, fds: map[uint64]string{}, nextFd: 3, failAt: map[uint64]error{}}
}

func (f *fakeProc) region(addr uint64, n int) (*region, error) {
	for _, r := range f.regions {
		if addr >= r.start && addr+uint64(n) <= r.start+uint64(len(r.data)) {
			return r, nil
		}
	}
	return nil, fmt.Errorf("fault at %#x+%d", addr, n)
}

func (f *fakeProc) ReadAt(b []byte, addr int64) (int, error) {
	r, err := f.region(uint64(addr), len(b))
	if err != nil {
		return 0, err
	}
	return copy(b, r.data[uint64(addr)-r.start:]), nil
}

func (f *fakeProc) WriteAt(b []byte, addr int64) (int, error) {
	if err := f.failAt[uint64(addr)]; err != nil {
		return 0, err
	}
	r, err := f.region(uint64(addr), len(b))
	if err != nil {
		return 0, err
	}
	f.writes = append(f.writes, fakeWrite{uint64(addr), append([]byte(nil), b...), f.stopped, f.stops})
	return copy(r.data[uint64(addr)-r.start:], b), nil
}

// Stop and Resume are idempotent, like tracer's.
func (f *fakeProc) Stop() error {
	if f.stopped {
		return nil
	}
	f.stopped = true
	f.stops++
	return nil
}

func (f *fakeProc) Resume() error {
	f.stopped = false
	return nil
}

func (f *fakeProc) Close() error { f.closed++; f.stopped = false; return nil }

func (f *fakeProc) Mmap(addr, length uint64, prot, flags int, fd int64, off uint64) (uint64, error) {
	if !f.stopped {
		return 0, errors.New("mmap: not stopped")
	}
	length = (length + 4095) &^ 4095
	if addr == 0 {
		addr = f.nextAnon
		f.nextAnon += length + 4096
	}
	path := ""
	if fd >= 0 {
		path = "/memfd:" + f.fds[uint64(fd)] + " (deleted)"
	}
	f.regions = append(f.regions, &region{start: addr, data: make([]byte, length), path: path, perms: "r--p"})
	return addr, nil
}

func (f *fakeProc) Munmap(addr, length uint64) error {
	if !f.stopped {
		return errors.New("munmap: not stopped")
	}
	for i, r := range f.regions {
		if r.start == addr {
			f.regions = append(f.regions[:i], f.regions[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("munmap %#x: not mapped", addr)
}

func (f *fakeProc) Syscall(nr uint64, args ...uint64) (uint64, error) {
	if !f.stopped {
		return 0, errors.New("syscall: not stopped")
	}
	switch nr {
	case 319: // memfd_create
		name := make([]byte, 32)
		if _, err := f.ReadAt(name, int64(args[0])); err != nil {
			return 0, err
		}
		n := 0
		for n < len(name) && name[n] != 0 {
			n++
		}
		fd := f.nextFd
		f.nextFd++
		f.fds[fd] = string(name[:n])
		return fd, nil
	case syscall.SYS_FTRUNCATE:
		return 0, nil
	case syscall.SYS_CLOSE:
		delete(f.fds, args[0])
		return 0, nil
	}
	return 0, fmt.Errorf("syscall %d not faked", nr)
}

func (f *fakeProc) maps() []tracer.Mapping {
	var out []tracer.Mapping
	for _, r := range f.regions {
		out = append(out, tracer.Mapping{Start: r.start, End: r.start + uint64(len(r.data)), Perms: r.perms, Path: r.path})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// mapped reports whether addr is inside any region.
func (f *fakeProc) mapped(addr uint64) bool {
	_, err := f.region(addr, 1)
	return err == nil
}

type nopCloser struct{ *fakeProc }

func (nopCloser) Close() error { return nil }

type fakeImage struct {
	base, size uint64
}

func (i *fakeImage) Base() uint64 { return i.base }
func (i *fakeImage) Size() uint64 { return i.size }
func (i *fakeImage) Unload(p proc) error {
	return stopped(p, func() error { return p.Munmap(i.base, i.size) })
}

type fakeChecker struct {
	waitErr  error
	hit      []bool
	specs    []safeSpec
	stopped  []bool
	fp       *fakeProc
	extra    []imageModule
	framesIn func(rs []Range) []bool
}

func (c *fakeChecker) waitSafe(ctx context.Context, p proc, spec safeSpec, timeout time.Duration) (time.Time, error) {
	c.specs = append(c.specs, spec)
	c.stopped = append(c.stopped, c.fp.stopped)
	return time.Time{}, c.waitErr
}

func (c *fakeChecker) framesInRanges(rs []Range) []bool {
	if c.framesIn != nil {
		return c.framesIn(rs)
	}
	return make([]bool, len(rs))
}

// fakeEnv is a fake target: an executable region at exeBase with some
// functions, plus the system that drives the controller against it.
type fakeEnv struct {
	fp       *fakeProc
	ck       *fakeChecker
	attached int
	loaded   []*fakeImage
	exeBase  uint64
	buildID  string
	syms     map[string]*symbols
	sys      *system
}

const fakeExe = "/bin/fakeprog"

func newFakeEnv() *fakeEnv {
	e := &fakeEnv{fp: newFakeProc(), exeBase: 0x555555554000, buildID: "b1", syms: map[string]*symbols{}}
	e.ck = &fakeChecker{fp: e.fp}
	text := make([]byte, 0x4000)
	for i := range text {
		text[i] = 0x90 // nop: every byte an instruction boundary
	}
	e.fp.regions = append(e.fp.regions, &region{start: e.exeBase, data: text, path: fakeExe, perms: "r-xp"})
	e.sys = &system{
		attach: func(pid int) (proc, error) {
			e.attached++
			return e.fp, nil
		},
		readMaps: func(pid int) ([]tracer.Mapping, error) { return e.fp.maps(), nil },
		modules: func(pid int) ([]tracer.Module, error) {
			return []tracer.Module{{Path: fakeExe, Base: e.exeBase, Bias: e.exeBase, BuildID: e.buildID, Main: true}}, nil
		},
		load: func(ctx context.Context, p proc, pid int, im *elfpatch.Image, exe *tracer.Module, mods []tracer.Module, id string) (loadedImage, error) {
			oldBias := exe.Bias
			var base uint64
			err := stopped(p, func() (err error) {
				base, err = p.Mmap(0, im.Size, 5, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS, -1, 0)
				return err
			})
			if err != nil {
				return nil, err
			}
			for _, s := range im.Segments {
				if _, err := p.WriteAt(s.Data, int64(base+s.Vaddr)); err != nil {
					return nil, err
				}
			}
			// Record the linked fixups so tests can check stacking.
			for _, fx := range im.Fixups {
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], oldBias+fx.Target)
				if _, err := p.WriteAt(b[:], int64(base+fx.Off)); err != nil {
					return nil, err
				}
			}
			img := &fakeImage{base: base, size: (im.Size + 4095) &^ 4095}
			e.loaded = append(e.loaded, img)
			return img, nil
		},
		unmapImage: func(p proc, base, size uint64) error { return p.Munmap(base, size) },
		findHole: func(maps []tracer.Mapping, exe *tracer.Module, size uint64) (uint64, error) {
			return e.fp.nextAnon, nil
		},
		newChecker: func(pid int, mods []tracer.Module, extra []imageModule) (checker, error) {
			e.ck.extra = extra
			return fakeCheckerAdapter{e.ck}, nil
		},
		plan: func(code []byte, entry, target uint64) (site, error) {
			rel := int64(target) - int64(entry+5)
			if rel != int64(int32(rel)) {
				return site{}, errors.New("out of rel32 reach")
			}
			nb := []byte{0xe9, 0, 0, 0, 0}
			binary.LittleEndian.PutUint32(nb[1:], uint32(int32(rel)))
			return site{Addr: entry, Orig: append([]byte(nil), code[:5]...), New: nb}, nil
		},
		openMem: func(pid int) (memReader, error) { return nopCloser{e.fp}, nil },
		symbols: func(path, buildID string) (*symbols, error) {
			s, ok := e.syms[path]
			if !ok {
				return nil, fmt.Errorf("no symbols for %s", path)
			}
			return s, nil
		},
		now: func() time.Time { return time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC) },
	}
	return e
}

type fakeCheckerAdapter struct{ c *fakeChecker }

func (a fakeCheckerAdapter) waitSafe(ctx context.Context, p proc, spec safeSpec, timeout time.Duration) (time.Time, error) {
	return a.c.waitSafe(ctx, p, spec, timeout)
}

func (a fakeCheckerAdapter) framesIn(p proc, rs []Range) ([]bool, error) {
	return a.c.framesInRanges(rs), nil
}

// text returns a copy of the executable's bytes.
func (e *fakeEnv) text() []byte {
	r, _ := e.fp.region(e.exeBase, 1)
	return append([]byte(nil), r.data...)
}

// fakePatch redirects the named functions (link-time addresses in the fake
// executable, 0x100 bytes each) to new versions at 0x1000+0x100*i in a
// 0x3000-byte image.
func fakePatch(id, oldID, newID string, funcs map[string]uint64) *Patch {
	im := &elfpatch.Image{Size: 0x3000}
	im.Segments = []elfpatch.Segment{{Vaddr: 0, Memsz: 0x1000, Prot: 1, Data: []byte("rodata")}, {Vaddr: 0x1000, Memsz: 0x1000, Prot: 5, Data: []byte{0xc3}}}
	names := make([]string, 0, len(funcs))
	for n := range funcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		im.Redirects = append(im.Redirects, elfpatch.Redirect{Name: n, Old: funcs[n], OldSize: 0x100, New: 0x1000 + 0x100*uint64(i), NewSize: 0x80})
	}
	return &Patch{ID: id, OldBuildID: oldID, NewBuildID: newID, NewPath: "/bin/" + newID, Image: im}
}
