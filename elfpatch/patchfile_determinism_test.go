package elfpatch

import (
	"bytes"
	"testing"

	"graft/internal/testutil"
)

// TestPatchFileDeterministic: FORMAT.md promises that the same OLD and NEW
// give byte-identical patch files. Build the patch from freshly opened
// binaries several times (map iteration order differs from run to run, so
// anything that depends on it shows up) and compare the files.
func TestPatchFileDeterministic(t *testing.T) {
	open := func(path string) *Binary {
		b, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct{ name, old, new string }{
		{"newglobal", fixture(t, "newglobal", "v1"), fixture(t, "newglobal", "v2")},
		{"body", fixture(t, "body", "v1"), fixture(t, "body", "v2")},
		{"sshd v1->v2", testutil.Build(t, "sshd-v1"), testutil.Build(t, "sshd-v2")},
		{"ftpd v4->v5", testutil.Build(t, "ftpd-v4"), testutil.Build(t, "ftpd-v5")},
	} {
		var first []byte
		for i := 0; i < 4; i++ {
			p, err := BuildPatch(open(c.old), open(c.new))
			if err != nil {
				t.Fatalf("%s: build patch: %v", c.name, err)
			}
			if len(p.Image.Redirects) == 0 {
				t.Fatalf("%s: the patch redirects nothing", c.name)
			}
			b := encode(t, p)
			if i == 0 {
				first = b
				continue
			}
			if !bytes.Equal(first, b) {
				t.Fatalf("%s: build %d wrote a different patch file (%d bytes, first %d)", c.name, i+1, len(b), len(first))
			}
		}
	}
}
