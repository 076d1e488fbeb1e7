package tracer

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"testing"
)

func TestParseMaps(t *testing.T) {
	in := "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234                       /usr/bin/my prog (deleted)\n" +
		"7ffd1b5fe000-7ffd1b600000 r-xp 00000000 00:00 0                          [vdso]\n" +
		"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n"
	ms, err := parseMaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d mappings", len(ms))
	}
	m := ms[0]
	if m.Start != 0x55d0c0a00000 || m.End != 0x55d0c0a01000 || m.Perms != "r--p" || m.Inode != 1234 ||
		m.Dev != "08:01" || m.Path != "/usr/bin/my prog (deleted)" {
		t.Errorf("%+v", m)
	}
	if !ms[1].Executable() || ms[1].Writable() || ms[1].Path != "[vdso]" {
		t.Errorf("%+v", ms[1])
	}
	if ms[2].Path != "" || !ms[2].Writable() {
		t.Errorf("%+v", ms[2])
	}
	for _, bad := range []string{"zz-10 r-xp 0 0 0", "10-20 r-x 0 00:00 0", "10 r-xp 0 00:00 0"} {
		if _, err := parseMaps([]byte(bad + "\n")); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte("55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234   /bin/x\n"))
	f.Add([]byte("1-2 rwxp 3 4 5\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseMaps(b) // must not panic
	})
}

// note builds one ELF note.
func note(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	nb := append([]byte(name), 0)
	binary.Write(&b, binary.LittleEndian, [3]uint32{uint32(len(nb)), uint32(len(desc)), typ})
	b.Write(nb)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(desc)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

func TestFindBuildID(t *testing.T) {
	notes := append(note("GNU", 1, []byte{1, 2, 3, 4}), note("GNU", 3, []byte{0xde, 0xad, 0xbe, 0xef, 0x01})...)
	if id := findBuildID(bytes.NewReader(notes), binary.LittleEndian, uint64(len(notes))); id != "deadbeef01" {
		t.Errorf("build ID %q", id)
	}
	if id := findBuildID(bytes.NewReader(notes[:20]), binary.LittleEndian, 20); id != "" {
		t.Errorf("truncated notes gave %q", id)
	}
}

func FuzzFindBuildID(f *testing.F) {
	f.Add(note("GNU", 3, []byte{1, 2, 3}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		findBuildID(bytes.NewReader(b), binary.LittleEndian, uint64(len(b)))
	})
}

// FuzzElfInfo: a malformed ELF file yields an error, never a panic.
func FuzzElfInfo(f *testing.F) {
	f.Add([]byte(elf.ELFMAG))
	f.Fuzz(func(t *testing.T, b []byte) {
		elfInfo(bytes.NewReader(b), Mapping{Start: 0x1000})
	})
}
