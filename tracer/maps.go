package tracer

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"graft/internal/elfx"
)

// ReadMaps parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &ProcessExitedError{Pid: pid}
		}
		return nil, fmt.Errorf("read maps of pid %d: %w", pid, err)
	}
	return parseMaps(b)
}

func parseMaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, fmt.Errorf("parse maps line %d %q: %w", n, line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// parseMapsLine parses "start-end perms offset dev inode   path"; the path
// may contain spaces and is everything after the inode.
func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	rest := line
	field := func() string {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			f := rest
			rest = ""
			return f
		}
		f := rest[:i]
		rest = rest[i:]
		return f
	}
	rng, perms, off, dev, ino := field(), field(), field(), field(), field()
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return m, errors.New("bad address range")
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, err
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, err
	}
	if m.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return m, err
	}
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, err
	}
	if len(perms) != 4 {
		return m, errors.New("bad permissions")
	}
	m.Perms, m.Dev = perms, dev
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}

// Modules lists the ELF files mapped into pid (the executable, shared
// libraries, the vDSO), each with its load bias and build ID. Mapped files
// that are not ELF (locale archives, fonts, shared memory) are left out.
func Modules(pid int) ([]Module, error) {
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	var mods []Module
	index := map[string]int{}
	for _, m := range maps {
		if !strings.HasPrefix(m.Path, "/") && m.Path != "[vdso]" {
			continue
		}
		i, ok := index[m.Path]
		if !ok {
			i = len(mods)
			index[m.Path] = i
			mods = append(mods, Module{Path: m.Path, Base: m.Start, Main: m.Path == exe})
		}
		mod := &mods[i]
		mod.Mappings = append(mod.Mappings, m)
		if m.Start < mod.Base {
			mod.Base = m.Start
		}
	}
	out := mods[:0]
	for _, mod := range mods {
		if describeModule(pid, &mod) {
			out = append(out, mod)
		}
	}
	return out, nil
}

// describeModule fills in Bias and BuildID from the module's ELF file and
// reports whether it is an ELF file at all.
func describeModule(pid int, mod *Module) bool {
	r, closer, err := openModule(pid, mod)
	if err != nil {
		// Unreadable (permissions, vanished): keep it, with the bias a
		// PIE or shared library has when its first segment starts at file
		// offset 0, which is the common layout.
		lo := lowest(mod.Mappings)
		mod.Bias = lo.Start - lo.Offset
		return mod.Main || strings.Contains(mod.Path, ".so")
	}
	defer closer()
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return false
	}
	bias, id, err := elfInfo(r, lowest(mod.Mappings))
	if err != nil {
		lo := lowest(mod.Mappings)
		mod.Bias = lo.Start - lo.Offset
		return true
	}
	mod.Bias, mod.BuildID = bias, id
	return true
}

func lowest(ms []Mapping) Mapping {
	lo := ms[0]
	for _, m := range ms[1:] {
		if m.Start < lo.Start {
			lo = m
		}
	}
	return lo
}

// openModule opens a module's bytes: the vDSO from memory, files through
// /proc/PID/root (the target's own mount namespace and chroot), or through
// /proc/PID/map_files when the path is gone (deleted, replaced).
func openModule(pid int, mod *Module) (io.ReaderAt, func(), error) {
	if mod.Path == "[vdso]" {
		m := mod.Mappings[0]
		if m.End-m.Start > 1<<20 {
			return nil, nil, errors.New("vdso too large")
		}
		b := make([]byte, m.End-m.Start)
		if _, err := vmRead(pid, b, int64(m.Start)); err != nil {
			return nil, nil, err
		}
		return bytes.NewReader(b), func() {}, nil
	}
	lo := lowest(mod.Mappings)
	paths := ModulePaths(pid, mod)
	if strings.HasSuffix(mod.Path, " (deleted)") {
		paths[0], paths[1] = paths[1], paths[0]
	}
	var first error
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		// Make sure it is the mapped file, not a newer one at the same
		// path (an upgrade replaced it on disk).
		if fi, err := f.Stat(); err == nil && lo.Inode != 0 && sameInode(fi, lo.Inode) {
			return f, func() { f.Close() }, nil
		}
		f.Close()
	}
	if first == nil {
		first = errors.New("mapped file not found")
	}
	return nil, nil, fmt.Errorf("open module %s of pid %d: %w", mod.Path, pid, first)
}

// elfInfo computes the load bias of an ELF file from the lowest mapping of
// it (runtime address = ELF vaddr + bias) and reads its GNU build ID.
// debug/elf may panic on hostile input; a tool holding someone's process
// must not.
func elfInfo(r io.ReaderAt, lo Mapping) (bias uint64, buildID string, err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("malformed ELF: %v", x)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return 0, "", err
	}
	found := false
	for _, pr := range f.Progs {
		if pr.Type != elf.PT_LOAD {
			continue
		}
		// The kernel maps a PT_LOAD from its page-aligned offset, so the
		// mapping at file offset lo.Offset starts at link-time address
		// p_vaddr - (p_offset - lo.Offset).
		if lo.Offset >= pr.Off&^0xfff && lo.Offset < pr.Off+pr.Filesz {
			bias = lo.Start - (pr.Vaddr + lo.Offset - pr.Off)
			found = true
			break
		}
	}
	if !found {
		return 0, "", fmt.Errorf("no PT_LOAD covers file offset %#x", lo.Offset)
	}
	return bias, buildIDOf(f), nil
}

// buildIDOf returns the hex NT_GNU_BUILD_ID, from the PT_NOTE segments or,
// failing that, the note sections.
func buildIDOf(f *elf.File) string {
	for _, pr := range f.Progs {
		if pr.Type != elf.PT_NOTE {
			continue
		}
		if id := findBuildID(pr.Open(), f.ByteOrder, pr.Filesz); id != "" {
			return id
		}
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		if id := findBuildID(s.Open(), f.ByteOrder, s.Size); id != "" {
			return id
		}
	}
	return ""
}

func findBuildID(r io.Reader, bo binary.ByteOrder, size uint64) string {
	if size > 1<<20 {
		return ""
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return ""
	}
	return elfx.NoteBuildID(b, bo)
}

// ModuleFile returns a path that opens the very file mod was mapped from:
// the running executable's /proc/PID/exe, else the library's path inside
// the target's root when it still holds the mapped inode, else
// /proc/PID/map_files (which reaches a file deleted or replaced on disk
// since, as a package upgrade leaves it). Reading it needs no stop.
func ModuleFile(pid int, mod *Module) (string, error) {
	if mod.Main {
		return ExePath(pid), nil
	}
	if len(mod.Mappings) == 0 || !strings.HasPrefix(mod.Path, "/") {
		return "", fmt.Errorf("module %s of pid %d has no mapped file", mod.Path, pid)
	}
	lo := lowest(mod.Mappings)
	paths := ModulePaths(pid, mod)
	var first error
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		if lo.Inode == 0 || sameInode(fi, lo.Inode) {
			return p, nil
		}
	}
	if first == nil {
		first = errors.New("the file at its path is not the mapped one, and map_files does not reach it")
	}
	return "", fmt.Errorf("open module %s of pid %d: %w", mod.Path, pid, first)
}
