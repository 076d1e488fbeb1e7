package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft"
	"graft/internal/testutil"
)

// Help goes to stdout, per command, by -h, --help and `graft help CMD`.
func TestHelpPerCommand(t *testing.T) {
	for _, args := range [][]string{{"help", "apply"}, {"apply", "-h"}, {"apply", "--help"}} {
		out, errOut, code := runGraft(args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		require.Empty(t, errOut, "%v: help on stderr", args)
		require.Contains(t, out, "graft apply -p PID (FILE | --new NEWBIN)", args)
		require.Contains(t, out, "--timeout duration", args)
		require.Contains(t, out, "--allow-active", args)
	}
	out, _, code := runGraft("help", "status")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Without -p, lists every process")
	out, _, code = runGraft("--help")
	require.Equal(t, 0, code)
	for _, c := range []string{"apply", "diff", "inspect", "revert", "show", "stacks", "status", "completion"} {
		require.Regexp(t, `\n  `+c+`\s`, out, "command %s listed", c)
	}
	require.Contains(t, out, "Exit status:")
	require.NotContains(t, out, "gendocs", "the docs generator is hidden")
}

// --version names the commit the binary was built from: the go
// command's VCS stamp, or where it cannot stamp (a git worktree, whose
// .git is a file; GOFLAGS=-buildvcs=false) the -X main.commit fallback.
func TestVersionNamesCommit(t *testing.T) {
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	require.NoError(t, err)
	want := "commit " + strings.TrimSpace(string(rev))[:12]
	bin := filepath.Join(t.TempDir(), "g")
	build := func(args ...string) string {
		cmd := exec.Command("go", append(append([]string{"build", "-buildvcs=true", "-o", bin}, args...), ".")...)
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", b)
		out, err := exec.Command(bin, "--version").CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	out := build()
	if strings.Contains(out, "commit unknown") {
		top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
		require.NoError(t, err)
		fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git"))
		require.NoError(t, err)
		require.False(t, fi.IsDir(), "a plain repository must get the go command's stamp: %s", out)
		t.Logf("git worktree: the go command does not stamp it; checking the -X fallback")
		out = build("-ldflags", "-X main.commit="+strings.TrimSpace(string(rev)))
	}
	require.Contains(t, out, want, "graft --version: %s", out)
}

// Shell completion scripts come from the command tree.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runGraft("completion", sh)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "graft", sh)
	}
	// Cobra's completion protocol lists the commands and flags.
	out, _, code := runGraft("__complete", "re")
	require.Equal(t, 0, code)
	require.Contains(t, out, "revert")
	out, _, code = runGraft("__complete", "apply", "--ti")
	require.Equal(t, 0, code)
	require.Contains(t, out, "--timeout")
}

// With --json, errors are JSON on stdout, with a stable code and the exit
// status, for usage errors and failures alike.
func TestJSONErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code string
		exit int
	}{
		{[]string{"apply", "--json", "x.patch"}, "usage", 2},
		{[]string{"apply", "-p", "1", "--timeout", "5", "x", "--json"}, "usage", 2},
		{[]string{"status", "-p", "999999999", "--json"}, "no_such_process", 1},
		{[]string{"revert", "-p", "999999999", "--json"}, "no_such_process", 1},
		{[]string{"show", "/nonexistent/p.patch", "--json"}, "failed", 1},
		{[]string{"--json", "nosuchcommand"}, "usage", 2},
	} {
		out, errOut, exit := runGraft(c.args...)
		require.Equal(t, c.exit, exit, "%v: %s %s", c.args, out, errOut)
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
				Exit    int    `json:"exit"`
			} `json:"error"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &e), "%v: stdout is not JSON: %q", c.args, out)
		require.Equal(t, c.code, e.Error.Code, "%v: %s", c.args, out)
		require.Equal(t, c.exit, e.Error.Exit)
		require.NotEmpty(t, e.Error.Message)
	}
}

// Flags are checked before anything is touched: a wrong --timeout on a
// real process exits 2 and leaves no trace in it.
func TestFlagsValidatedFirst(t *testing.T) {
	requireRoot(t)
	target := testutil.Start(t, testutil.Build(t, "sigload-v1"))
	target.WaitLine(t, "ready", 10*time.Second)
	pid := strconv.Itoa(target.Pid)
	for _, c := range []struct{ timeout, want string }{
		{"5", `"5" has no unit: write e.g. 5s or 5ms`},
		{"0", "the timeout must be more than 0"},
		{"-2s", "the timeout must be more than 0"},
		{"soon", "is not a duration"},
	} {
		_, errOut, code := runGraft("apply", "-p", pid, "--new", testutil.Build(t, "sigload-v2"), "--timeout", c.timeout)
		require.Equal(t, 2, code, errOut)
		require.Contains(t, errOut, c.want)
		require.Empty(t, graftMaps(t, target.Pid))
		tp, err := testutil.TracerPid(target.Pid)
		require.NoError(t, err)
		require.Zero(t, tp)
	}
}

// The exit status of a failure that leaves the target needing attention
// is 3, whatever else the error wraps.
func TestExitStatusNeedsAttention(t *testing.T) {
	err := fmt.Errorf("revert patch x in pid 1: %w", errors.Join(errors.New("unmap code at 0x1000: EPERM"), graft.ErrNeedsAttention))
	require.Equal(t, 3, classify(err).exit)
	require.Equal(t, "needs_attention", classify(err).code)
	require.Equal(t, 1, classify(fmt.Errorf("x: %w", graft.ErrNothingApplied)).exit)
	require.Equal(t, 2, classify(usagef("bad")).exit)
}

// While apply waits for a safe point it says on stderr, once a second,
// which thread, function and frame block and how long is left; at the
// timeout it fails with exit status 1 and leaves the process as it was.
func TestApplyProgressWhileWaiting(t *testing.T) {
	requireRoot(t)
	target, _ := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	defer testutil.RequireReleased(t, target.Pid)
	start := time.Now()
	out, errOut, code := runGraft("apply", "-p", strconv.Itoa(target.Pid), "--new", testutil.Build(t, "ftpd-v8"), "--timeout", "3500ms", "--json")
	took := time.Since(start)
	require.Equal(t, 1, code, "%s %s", out, errOut)
	lines := strings.Count(errOut, "waiting for a safe point")
	require.GreaterOrEqual(t, lines, 2, "progress once a second over 3.5s: %s", errOut)
	require.LessOrEqual(t, lines, 4, "%s", errOut)
	require.Regexp(t, `thread \d+ is inside accept_loop \(frame #\d+, pc 0x[0-9a-f]+\); giving up in [0-9.]+m?s \(--timeout\)`, errOut)
	require.Contains(t, out, `"code": "not_safe"`)
	require.Less(t, took, 20*time.Second)
	require.Empty(t, graftMaps(t, target.Pid))
}

// status without -p lists a patched process (its record and image) and
// not an unpatched one, stopping neither. (Left descriptors in the host
// list: TestKilledApplyAndRevertLeaveNothingAfterRevertAll.)
func TestHostStatus(t *testing.T) {
	requireRoot(t)
	a := testutil.Start(t, testutil.Build(t, "sigload-v1"))
	a.WaitLine(t, "ready", 10*time.Second)
	b := testutil.Start(t, testutil.Build(t, "sigload-v1"))
	b.WaitLine(t, "ready", 10*time.Second)
	file := filepath.Join(t.TempDir(), "p.patch")
	_, errOut, code := runGraft("diff", testutil.Build(t, "sigload-v1"), testutil.Build(t, "sigload-v2"), "-o", file)
	require.Equal(t, 0, code, errOut)
	_, errOut, code = runGraft("apply", "-p", strconv.Itoa(a.Pid), file)
	require.Equal(t, 0, code, errOut)
	defer runGraft("revert", "-p", strconv.Itoa(a.Pid), "--all")

	out, errOut, code := runGraft("status", "--json")
	require.Equal(t, 0, code, errOut)
	var hs struct {
		Processes []struct {
			Pid    int    `json:"pid"`
			Comm   string `json:"comm"`
			Record bool   `json:"record"`
			Images int    `json:"images"`
		} `json:"processes"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &hs), out)
	var seenA, seenB bool
	for _, p := range hs.Processes {
		if p.Pid == a.Pid {
			seenA = true
			require.True(t, p.Record)
			require.Equal(t, 1, p.Images)
			require.Equal(t, "sigload-v1", p.Comm)
		}
		seenB = seenB || p.Pid == b.Pid
	}
	require.True(t, seenA, "patched pid %d not listed: %s", a.Pid, out)
	require.False(t, seenB, "unpatched pid %d listed", b.Pid)
	text, _, code := runGraft("status")
	require.Equal(t, 0, code)
	require.Regexp(t, fmt.Sprintf(`\n%d\s+sigload-v1\s+yes\s+1`, a.Pid), text)
	for _, pid := range []int{a.Pid, b.Pid} {
		tp, err := testutil.TracerPid(pid)
		require.NoError(t, err)
		require.Zero(t, tp)
	}
}

// A command whose logic returns its own exit status (the shape other
// commands are written in) exits with it and nothing more is printed.
func TestExitWith(t *testing.T) {
	require.NoError(t, exitWith(0))
	e := classify(exitWith(3))
	require.Equal(t, 3, e.exit)
	require.Empty(t, e.message)
}
