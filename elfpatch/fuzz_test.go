package elfpatch

import (
	"os"
	"testing"
)

// FuzzOpenDiff feeds arbitrary bytes to the ELF reader and diffs whatever
// it accepts against itself and against a real build. Panics in this
// package are not recovered here, so the fuzzer sees them.
func FuzzOpenDiff(f *testing.F) {
	ref := openFixture(f, "clone", "v1")
	for _, fx := range [][2]string{{"clone", "v1"}, {"moved", "v2"}, {"static", "v1"}} {
		data, err := os.ReadFile(fixture(f, fx[0], fx[1]))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recoverPanics = false
		defer func() { recoverPanics = true }()
		b, err := openBytes(data)
		if err != nil {
			return
		}
		if _, err := Diff(b, b); err != nil {
			t.Logf("diff self: %v", err)
		}
		if _, err := Diff(ref, b); err != nil {
			t.Logf("diff ref: %v", err)
		}
	})
}
