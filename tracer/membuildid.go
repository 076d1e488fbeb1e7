package tracer

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"graft/internal/elfx"
)

// ExeBuildID returns the GNU build-id of the executable pid runs, read from
// the process's memory (its ELF header, program headers and PT_NOTE as
// mapped), not from a file: a path may since hold another build, and a
// deleted file has no path at all. It neither attaches nor stops the
// process. "" with a nil error means the executable has no build-id note.
func ExeBuildID(pid int) (string, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", &ProcessExitedError{Pid: pid}
		}
		return "", fmt.Errorf("executable of pid %d: %w", pid, err)
	}
	maps, err := ReadMaps(pid)
	if err != nil {
		return "", err
	}
	var first *Mapping
	for i, m := range maps {
		if m.Path == exe && m.Offset == 0 && (first == nil || m.Start < first.Start) {
			first = &maps[i]
		}
	}
	if first == nil {
		return "", fmt.Errorf("executable %s of pid %d: no mapping of its ELF header", strings.TrimSuffix(exe, " (deleted)"), pid)
	}
	return buildIDInMemory(pid, first.Start)
}

// buildIDInMemory reads the ELF image whose header is mapped at base.
func buildIDInMemory(pid int, base uint64) (string, error) {
	read := func(addr uint64, n uint64) ([]byte, error) {
		if n == 0 || n > 1<<16 {
			return nil, fmt.Errorf("pid %d: implausible ELF size %d at %#x", pid, n, addr)
		}
		b := make([]byte, n)
		got, err := vmRead(pid, b, int64(addr))
		if got != int(n) {
			if processGone(pid) {
				return nil, &ProcessExitedError{Pid: pid}
			}
			if err == nil {
				err = errors.New("short read")
			}
			return nil, fmt.Errorf("read memory of pid %d at %#x: %w", pid, addr, err)
		}
		return b, nil
	}
	eh, err := read(base, 64)
	if err != nil {
		return "", err
	}
	if string(eh[:4]) != elf.ELFMAG || elf.Class(eh[elf.EI_CLASS]) != elf.ELFCLASS64 || elf.Data(eh[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return "", fmt.Errorf("pid %d: no 64-bit little-endian ELF header at %#x", pid, base)
	}
	le := binary.LittleEndian
	phoff, phentsize, phnum := le.Uint64(eh[32:]), uint64(le.Uint16(eh[54:])), uint64(le.Uint16(eh[56:]))
	if phentsize < 56 || phnum == 0 {
		return "", fmt.Errorf("pid %d: ELF at %#x has no program headers", pid, base)
	}
	ph, err := read(base+phoff, phentsize*phnum)
	if err != nil {
		return "", err
	}
	type phdr struct{ typ, vaddr, filesz, off uint64 }
	var phs []phdr
	lowest := ^uint64(0)
	for i := uint64(0); i < phnum; i++ {
		p := ph[i*phentsize:]
		h := phdr{typ: uint64(le.Uint32(p[0:])), off: le.Uint64(p[8:]), vaddr: le.Uint64(p[16:]), filesz: le.Uint64(p[32:])}
		if elf.ProgType(h.typ) == elf.PT_LOAD && h.off == 0 {
			lowest = min(lowest, h.vaddr)
		}
		phs = append(phs, h)
	}
	if lowest == ^uint64(0) {
		return "", fmt.Errorf("pid %d: ELF at %#x has no segment mapping its header", pid, base)
	}
	bias := base - (lowest &^ 0xfff)
	for _, h := range phs {
		if elf.ProgType(h.typ) != elf.PT_NOTE {
			continue
		}
		notes, err := read(h.vaddr+bias, h.filesz)
		if err != nil {
			return "", err
		}
		if id := elfx.NoteBuildID(notes, le); id != "" {
			return id, nil
		}
	}
	return "", nil
}
