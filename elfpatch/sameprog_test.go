package elfpatch

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

func openTestproc(t *testing.T, target string) *Binary {
	t.Helper()
	b, err := Open(testutil.Build(t, target))
	require.NoError(t, err)
	return b
}

// identityReason returns the refusal that says NEW is another program.
func identityReason(r *Report) *Reason {
	for i := range r.Reasons {
		if r.Reasons[i].Verdict == VerdictRefused && strings.Contains(r.Reasons[i].Message, "is not a build of OLD's program") {
			return &r.Reasons[i]
		}
	}
	return nil
}

// TestSameProgramC: another C program as NEW is refused with the figures;
// a real next version is not.
func TestSameProgramC(t *testing.T) {
	r, err := Diff(openTestproc(t, "sshd-v1"), openTestproc(t, "ftpd-v2"))
	require.NoError(t, err)
	require.Equal(t, VerdictRefused, r.Verdict)
	rs := identityReason(r)
	require.NotNil(t, rs, "%+v", r.Reasons)
	require.Contains(t, rs.Message, "11 of OLD's 14 functions are not in NEW (78%)")

	r, err = Diff(openTestproc(t, "sshd-v1"), openTestproc(t, "sshd-v2"))
	require.NoError(t, err)
	require.Nil(t, identityReason(r), "%+v", r.Reasons)
	require.Equal(t, VerdictAuto, r.Verdict)
}

// TestSameProgramGo: a Go program is identified by its main module. The
// same sources under another module path are another program, and so is
// a C program given for a Go one.
func TestSameProgramGo(t *testing.T) {
	v1 := openTestproc(t, "goserver-v1")

	r, err := Diff(v1, openTestproc(t, "goserver-v2"))
	require.NoError(t, err)
	require.Nil(t, identityReason(r), "%+v", r.Reasons)

	// goserver v1 built as module "otherserver": same code, other program.
	src := filepath.Join(testutil.TestprocsDir(), "goserver", "v1")
	dir := t.TempDir()
	code, err := os.ReadFile(filepath.Join(src, "main.go"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), code, 0o644))
	mod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	require.NoError(t, err)
	require.Contains(t, string(mod), "module goserver\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(strings.Replace(string(mod), "module goserver\n", "module otherserver\n", 1)), 0o644))
	bin := filepath.Join(dir, "otherserver")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	other, err := Open(bin)
	require.NoError(t, err)

	r, err = Diff(v1, other)
	require.NoError(t, err)
	require.Equal(t, VerdictRefused, r.Verdict)
	rs := identityReason(r)
	require.NotNil(t, rs, "%+v", r.Reasons)
	require.Contains(t, rs.Message, `OLD's main module is "goserver", NEW's is "otherserver"`)

	r, err = Diff(v1, openTestproc(t, "sshd-v1"))
	require.NoError(t, err)
	rs = identityReason(r)
	require.NotNil(t, rs, "%+v", r.Reasons)
	require.Contains(t, rs.Message, "OLD is a Go program, NEW is not a Go program")
}
