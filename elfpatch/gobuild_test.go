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
