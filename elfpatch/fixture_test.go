package elfpatch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// fixtureDir holds the C fixtures built by this test binary; TestMain
// removes it.
var fixtureDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "elfpatch-fixtures-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	fixtureMu    sync.Mutex
	fixtureBuilt = map[string]error{}
)

// fixture builds testdata/diff/<name>/<ver>/*.c the way testprocs builds
// its targets (gcc -g -O2, the distribution's default PIE) and returns
// the binary's path.
func fixture(t testing.TB, name, ver string) string {
	t.Helper()
	out := filepath.Join(fixtureDir, name+"-"+ver)
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	err, done := fixtureBuilt[out]
	if !done {
		srcs, _ := filepath.Glob(filepath.Join("testdata", "diff", name, ver, "*.c"))
		sort.Strings(srcs)
		if len(srcs) == 0 {
			err = fmt.Errorf("no sources for fixture %s/%s", name, ver)
		} else {
			args := []string{"-g", "-O2", "-o", out}
			// testdata/diff/<name>/CFLAGS: extra flags for both versions.
			if extra, e := os.ReadFile(filepath.Join("testdata", "diff", name, "CFLAGS")); e == nil {
				args = append(args, strings.Fields(string(extra))...)
			}
			args = append(args, srcs...)
			if b, e := exec.Command("gcc", args...).CombinedOutput(); e != nil {
				err = fmt.Errorf("gcc %v: %v\n%s", args, e, b)
			}
		}
		fixtureBuilt[out] = err
	}
	if err != nil {
		t.Fatalf("build fixture: %v", err)
	}
	return out
}

func openFixture(t testing.TB, name, ver string) *Binary {
	t.Helper()
	b, err := Open(fixture(t, name, ver))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func diffFixture(t testing.TB, name string) *Report {
	t.Helper()
	r, err := Diff(openFixture(t, name, "v1"), openFixture(t, name, "v2"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(fs []Func) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return out
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
