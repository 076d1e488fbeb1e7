// Package elfx is the one safe layer over debug/elf that the rest of
// graft shares: opening a file whose malformed contents make debug/elf
// panic (an error instead), and the GNU build-id, read from a file's note
// sections or from note bytes found anywhere (a PT_NOTE segment in target
// memory). It touches no process.
package elfx

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// ntGNUBuildID is the note type of a GNU build-id (NT_GNU_BUILD_ID).
const ntGNUBuildID = 3

// NoteBuildID returns, in hex, the GNU build-id among the ELF notes in b
// (the contents of a note section or PT_NOTE segment), "" if there is
// none or the notes are malformed before it.
func NoteBuildID(b []byte, bo binary.ByteOrder) string {
	align := func(n uint32) uint64 { return (uint64(n) + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		b = b[12:]
		name, desc := align(namesz), uint64(descsz)
		if name > uint64(len(b)) || name+desc > uint64(len(b)) {
			return ""
		}
		if typ == ntGNUBuildID && string(bytes.TrimRight(b[:namesz], "\x00")) == "GNU" {
			return hex.EncodeToString(b[name : name+desc])
		}
		if name+align(descsz) >= uint64(len(b)) {
			return ""
		}
		b = b[name+align(descsz):]
	}
	return ""
}

// BuildID returns, in hex, f's GNU build-id from its note sections, ""
// if it has none.
func BuildID(f *elf.File) (id string) {
	defer func() {
		if recover() != nil {
			id = ""
		}
	}()
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		d, err := s.Data()
		if err != nil {
			continue
		}
		if id := NoteBuildID(d, f.ByteOrder); id != "" {
			return id
		}
	}
	return ""
}

// Open opens the ELF file at path; contents that make debug/elf panic
// are an error naming the file, like any other malformed file.
func Open(path string) (f *elf.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("%s: malformed ELF: %v", path, r)
		}
	}()
	return elf.Open(path)
}

// FileBuildID returns the GNU build-id of the ELF file at path ("" if it
// has none).
func FileBuildID(path string) (string, error) {
	f, err := Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return BuildID(f), nil
}

// Symbol is an entry of .symtab with the compile unit it belongs to.
type Symbol struct {
	elf.Symbol
	// File is, for a local symbol (a static), the name of the STT_FILE
	// entry it follows; "" for a global.
	File string
}

// UnitSymbols reads f's .symtab, leaving out the STT_FILE entries and
// giving each local symbol the name of the STT_FILE entry it follows: in
// the gABI's order the locals of one unit follow their STT_FILE and the
// globals follow all locals, belonging to no file. This is how a static
// is told from a same-named static of another unit.
func UnitSymbols(f *elf.File) (out []Symbol, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("malformed ELF: %v", r)
		}
	}()
	syms, err := f.Symbols()
	if err != nil {
		return nil, err
	}
	out = make([]Symbol, 0, len(syms))
	file := ""
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FILE {
			file = s.Name
			continue
		}
		if elf.ST_BIND(s.Info) != elf.STB_LOCAL {
			file = "" // globals follow all locals; they need no file
		}
		out = append(out, Symbol{s, file})
	}
	return out, nil
}
