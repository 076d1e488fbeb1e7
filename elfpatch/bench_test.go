package elfpatch

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// largeBinary builds graft itself: a Go binary of about 6 MB with DWARF,
// the size of a real server.
func largeBinary(b *testing.B) string {
	b.Helper()
	out := filepath.Join(fixtureDir, "graft-large")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "graft/cmd/graft")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, o)
	}
	return out
}

// bareDWARFWalk is the baseline: reading the file and walking every DWARF
// entry once with debug/dwarf, the least any DWARF-based diff must do.
func bareDWARFWalk(b *testing.B, path string) {
	f, err := elf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		b.Fatal(err)
	}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if e == nil {
			break
		}
	}
}

// BenchmarkDiffLarge opens two copies of a ~6 MB Go binary with DWARF and
// diffs them (every function decoded and normalised on both sides, the
// DWARF indexed). It reports the ratio to two bare DWARF walks measured in
// the same run.
func BenchmarkDiffLarge(b *testing.B) {
	path := largeBinary(b)
	st, _ := os.Stat(path)
	b.SetBytes(st.Size())
	start := time.Now()
	const walks = 3
	for i := 0; i < walks; i++ {
		bareDWARFWalk(b, path)
		bareDWARFWalk(b, path)
	}
	base := time.Since(start) / walks
	b.ResetTimer()
	for b.Loop() {
		old, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		new, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		r, err := Diff(old, new)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Changed) != 0 {
			b.Fatalf("self-diff found changes: %v", names(r.Changed))
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(base), "x-bare-dwarf-walk")
	b.ReportMetric(float64(per.Milliseconds()), "ms/diff")
}
