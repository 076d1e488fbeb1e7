package elfpatch

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"graft/internal/testutil"
)

// buildGoserver builds testprocs/goserver/vN with extra environment into
// a temporary directory.
func buildGoserver(t *testing.T, v string, env ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "gs")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(testutil.TestprocsDir(), "goserver", v)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", env, err, b)
	}
	return out
}

// TestGoBuildInfo reads what `go version -m` prints.
func TestGoBuildInfo(t *testing.T) {
	b := openBuild(t, "goserver-v2")
	g := b.GoBuildInfo()
	if g == nil || !strings.HasPrefix(g.GoVersion, "go1.") || g.Path != "goserver" || g.Settings["GOARCH"] != "amd64" {
		t.Fatalf("build info %+v", g)
	}
	pie := openBuild(t, "goserver-v2-pie")
	if m := pie.GoBuildInfo().Settings["-buildmode"]; m != "pie" {
		t.Errorf("PIE build mode %q", m)
	}
	if err := CheckGoBuilds(b, pie); err != nil {
		t.Errorf("default and PIE builds of one toolchain refused: %v", err)
	}
	c := openBuild(t, "ftpd-v1")
	if c.IsGo() {
		t.Errorf("ftpd-v1 read as Go")
	}
	if err := CheckGoBuilds(b, c); !errors.Is(err, ErrGoBuildMismatch) {
		t.Errorf("Go against C: %v", err)
	}
}

// TestGoBuildMismatch: NEW built with another GOAMD64 or without cgo is
// refused with the setting named, by CheckGoBuilds, Diff's verdict and
// PlanGo.
func TestGoBuildMismatch(t *testing.T) {
	old := openBuild(t, "goserver-v2")
	for _, c := range []struct{ env, want string }{
		{"GOAMD64=v3", `GOAMD64: OLD "v1", NEW "v3"`},
		{"CGO_ENABLED=0", `CGO_ENABLED: OLD "1", NEW "0"`},
	} {
		t.Run(c.env, func(t *testing.T) {
			new, err := Open(buildGoserver(t, "v3", c.env))
			if err != nil {
				t.Fatal(err)
			}
			err = CheckGoBuilds(old, new)
			if !errors.Is(err, ErrGoBuildMismatch) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CheckGoBuilds: %v, want %s", err, c.want)
			}
			r, err := Diff(old, new)
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != VerdictRefused {
				t.Errorf("diff verdict %s, want refused", r.Verdict)
			}
			if _, err := PlanGo(old, new, new); !errors.Is(err, ErrGoBuildMismatch) {
				t.Errorf("PlanGo: %v", err)
			}
		})
	}
}

// buildFixture builds elfpatch/testdata/godiff/<dir> (extra go build
// arguments in args) into a temporary directory.
func buildFixture(t *testing.T, dir string, args ...string) *Binary {
	t.Helper()
	out := filepath.Join(t.TempDir(), "shapes")
	cmd := exec.Command("go", append(append([]string{"build"}, args...), "-o", out, ".")...)
	cmd.Dir = filepath.Join("testdata", "godiff", dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, b)
	}
	b, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoRefusals: a changed signature, and a type newly converted to an
// interface (new type descriptor, new itab), are refused by the diff
// and by PlanGo, naming the function, the type and the itab.
func TestGoRefusals(t *testing.T) {
	base, basePIE := buildFixture(t, "base"), buildFixture(t, "base", "-buildmode=pie")
	for _, c := range []struct {
		dir  string
		want []string // refused symbols
	}{
		{"sig", []string{"main.describe"}},
		{"newtype", []string{"type main.rect", "go:itab.main.rect,main.shape"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			new, newPIE := buildFixture(t, c.dir), buildFixture(t, c.dir, "-buildmode=pie")
			r, err := Diff(base, new)
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != VerdictRefused {
				t.Errorf("verdict %s, want refused", r.Verdict)
			}
			refused := map[string]bool{}
			for _, rs := range r.Reasons {
				if rs.Verdict == VerdictRefused {
					refused[rs.Symbol] = true
				}
			}
			for _, w := range c.want {
				if !refused[w] {
					t.Errorf("diff does not refuse %s: %+v", w, r.Reasons)
				}
			}
			for _, old := range []*Binary{base, basePIE} {
				diffed := new
				if old == basePIE {
					diffed = newPIE
				}
				p, err := PlanGo(old, diffed, newPIE)
				if !errors.Is(err, ErrGoPlanRefused) || p == nil {
					t.Fatalf("PlanGo: %v, want a refusal", err)
				}
				got := map[string]bool{}
				for _, rs := range p.Refusals {
					got[rs.Symbol] = true
				}
				for _, w := range c.want {
					if !got[w] {
						t.Errorf("plan does not refuse %s: %+v", w, p.Refusals)
					}
				}
			}
		})
	}
}

// TestGoStaticStringHeader: a constant folded into a static string that
// the code reaches through a header in read-only data (an interface made
// of a constant) changes, same length, same addresses; the diff reports
// exactly the function using it, in both build modes (graft at 0a5791e
// missed it and reported internal/cpu.doinit instead).
func TestGoStaticStringHeader(t *testing.T) {
	for _, mode := range [][]string{nil, {"-buildmode=pie"}} {
		old, new := buildFixture(t, "banner1", mode...), buildFixture(t, "banner2", mode...)
		r, err := Diff(old, new)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(r.Changed); len(got) != 1 || got[0] != "main.banner" || len(r.Added)+len(r.Removed)+len(r.Globals) != 0 {
			t.Errorf("%v: changed %v, added %v, removed %v, globals %d; want exactly [main.banner]", mode, got, names(r.Added), names(r.Removed), len(r.Globals))
		}
	}
}

// TestGoClosureRenumbered: a function literal added before another shifts
// the compiler's numbering; the old literal pairs with its OLD self by
// code (unchanged), the new one is added, and the plan points the new
// code's reference to the old literal at OLD's copy of it, not at
// OLD's function of the same number.
func TestGoClosureRenumbered(t *testing.T) {
	for _, mode := range [][]string{nil, {"-buildmode=pie"}} {
		old, new := buildFixture(t, "closure1", mode...), buildFixture(t, "closure2", mode...)
		r, err := Diff(old, new)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(r.Changed); strings.Join(got, ",") != "main.run" || strings.Join(names(r.Added), ",") != "main.run.func1" || len(r.Removed) != 0 {
			t.Fatalf("%v: changed %v, added %v, removed %v; want [main.run], [main.run.func1], []", mode, got, names(r.Added), names(r.Removed))
		}
		load := new
		if mode == nil {
			load = buildFixture(t, "closure2", "-buildmode=pie")
		}
		p, err := PlanGo(old, new, load)
		if err != nil {
			t.Fatalf("PlanGo: %v", err)
		}
		var oldFunc1 *symbol
		for _, s := range old.syms {
			if s.name == "main.run.func1" {
				oldFunc1 = s
			}
		}
		found := false
		for _, rd := range p.Redirects {
			if rd.What == "main.run.func2" {
				found = true
				if rd.Target != oldFunc1.addr {
					t.Errorf("%v: main.run.func2 redirected to %#x, want OLD's main.run.func1 %#x", mode, rd.Target, oldFunc1.addr)
				}
			}
		}
		kept := false
		for _, k := range p.Kept {
			kept = kept || k.What == "main.run.func1"
		}
		if !found || !kept {
			t.Errorf("%v: redirect of main.run.func2 %v, main.run.func1 kept %v; redirects %+v kept %+v", mode, found, kept, p.Redirects, p.Kept)
		}
	}
}
