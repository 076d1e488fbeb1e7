package elfpatch

import (
	"bytes"
	"debug/elf"
	"testing"

	"graft/internal/testutil"
)

// TestImageDescribesItself: a patch's image says where NEW's CFI is inside
// its segments, which data objects exist only in NEW (they live in the
// image), and which OLD symbol every fixup lands in, and a patch file
// keeps all of it. sshd v4->v5 adds the static failed_logins.
func TestImageDescribesItself(t *testing.T) {
	oldPath, newPath := testutil.Build(t, "sshd-v4"), testutil.Build(t, "sshd-v5")
	old, err := Open(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := Open(newPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := BuildPatch(old, nb)
	if err != nil {
		t.Fatal(err)
	}
	im := p.Image
	nf, err := elf.Open(newPath)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	for _, c := range []struct {
		name       string
		addr, size uint64
	}{{".eh_frame", im.EhFrame, im.EhFrameSize}, {".eh_frame_hdr", im.EhFrameHdr, im.EhFrameHdrSize}} {
		s := nf.Section(c.name)
		if s == nil || c.addr != s.Addr || c.size != s.Size {
			t.Fatalf("%s: image says [%#x,+%#x), NEW has %+v", c.name, c.addr, c.size, s)
		}
		want, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		if got := imageBytes(im, c.addr, c.size); !bytes.Equal(got, want) {
			t.Errorf("%s: the image's segments do not hold NEW's bytes there", c.name)
		}
	}

	found := false
	for _, o := range im.Objects {
		if o.Name == "failed_logins" {
			found = o.File == "sshd.c" && o.Size == 8
		}
		if o.Name == "sessions" || o.Name == "stats" {
			t.Errorf("%s is OLD's, not an image object", o.Name)
		}
	}
	if !found {
		t.Errorf("failed_logins (static of sshd.c, 8 bytes) not among the image objects %+v", im.Objects)
	}

	oldSyms, err := newSymtab(old.ELF())
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Fixups) == 0 {
		t.Fatal("no fixups")
	}
	for _, f := range im.Fixups {
		if f.Name == "" || f.Target < f.SymAddr {
			t.Errorf("fixup %+v: OLD symbol not named", f)
			continue
		}
		s := oldSyms.lookupKey(symKey{f.Name, f.File})
		if s == nil || s.value != f.SymAddr || f.Target > s.value+s.size {
			t.Errorf("fixup %+v: OLD's %s:%s is %+v", f, f.File, f.Name, s)
		}
	}

	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := ReadPatch(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if q.Version != PatchVersion || q.Image.EhFrame != im.EhFrame || q.Image.EhFrameHdrSize != im.EhFrameHdrSize ||
		len(q.Image.Objects) != len(im.Objects) || q.Image.Fixups[0] != im.Fixups[0] {
		t.Errorf("patch file lost the self-description: version %d, %+v", q.Version, q.Image.Objects)
	}
}

// imageBytes reads [addr, addr+n) from the image's segments.
func imageBytes(im *Image, addr, n uint64) []byte {
	for _, s := range im.Segments {
		if addr >= s.Vaddr && addr+n <= s.Vaddr+uint64(len(s.Data)) {
			return s.Data[addr-s.Vaddr : addr-s.Vaddr+n]
		}
	}
	return nil
}
