package elfx

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"regexp"
	"testing"

	"graft/internal/testutil"
)

func note(name string, typ uint32, desc []byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, uint32(len(name)+1))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestNoteBuildID(t *testing.T) {
	le := binary.LittleEndian
	id := []byte{0xde, 0xad, 0xbe, 0xef, 0x01}
	for _, c := range []struct {
		name  string
		notes []byte
		want  string
	}{
		{"alone", note("GNU", 3, id), "deadbeef01"},
		{"after another note", append(note("GNU", 1, []byte{0, 0, 0, 0, 3, 0, 0, 0}), note("GNU", 3, id)...), "deadbeef01"},
		{"other owner", note("Go", 3, id), ""},
		{"other type", note("GNU", 4, id), ""},
		{"truncated", note("GNU", 3, id)[:18], ""},
		{"unpadded last", note("GNU", 3, id)[:21], "deadbeef01"},
		{"empty", nil, ""},
	} {
		if got := NoteBuildID(c.notes, le); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// A gcc-built sample target: the build-id must be the one readelf shows.
func TestBuildIDMatchesReadelf(t *testing.T) {
	readelf, err := exec.LookPath("readelf")
	if err != nil {
		t.Skip("readelf (binutils) not installed: nothing to compare with")
	}
	bin := testutil.Build(t, "ftpd-v7")
	out, err := exec.Command(readelf, "-n", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Build ID: ([0-9a-f]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("readelf -n %s shows no build-id:\n%s", bin, out)
	}
	got, err := FileBuildID(bin)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(m[1]) {
		t.Fatalf("FileBuildID = %q, readelf says %q", got, m[1])
	}
}

func TestOpenMalformed(t *testing.T) {
	p := t.TempDir() + "/bad"
	b := make([]byte, 64)
	copy(b, elf.ELFMAG)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); err == nil {
		t.Fatal("Open of a header with no class: no error")
	}
}

func FuzzNoteBuildID(f *testing.F) {
	f.Add(note("GNU", 3, []byte{1, 2, 3, 4}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		NoteBuildID(b, binary.LittleEndian)
	})
}
