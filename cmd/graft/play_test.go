package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// A playbook with mistakes runs nothing: exit 1, every mistake at
// file:line:col on stderr.
func TestPlayInvalidPlaybook(t *testing.T) {
	pb := writeFile(t, "pb.yaml", "patch: {new: /x}\ntargets:\n  - pid: abc\nrollout: {batches: [0], speed: 3}\n")
	var out, errb bytes.Buffer
	code := run(&out, &errb, []string{"play", pb})
	require.Equal(t, 1, code)
	require.Contains(t, errb.String(), "3 error(s) in the playbook, nothing was run")
	require.Contains(t, errb.String(), pb+`:3:10: pid must be a whole number, not "abc"`)
	require.Contains(t, errb.String(), pb+`:4:21: rollout.batches: "0" is not`)
	require.Contains(t, errb.String(), pb+`:4:25: rollout: unknown key "speed"`)
	require.Empty(t, out.String())

	code = run(&out, &errb, []string{"play"})
	require.Equal(t, 1, code, "usage error")
}

// No process matched: exit 4, nothing touched, the report says why.
func TestPlayNothingMatchedJSON(t *testing.T) {
	pb := writeFile(t, "pb.yaml", fmt.Sprintf("patch: {new: %s}\ntargets: [{pid: 999999999}]\n", testutil.Build(t, "sshd-v2")))
	var out, errb bytes.Buffer
	code := run(&out, &errb, []string{"play", "--json", pb})
	require.Equal(t, 4, code, errb.String())
	var rep struct {
		Aborted  string         `json:"aborted"`
		ExitCode int            `json:"exit_code"`
		Total    int            `json:"total"`
		Targets  []any          `json:"targets"`
		Counts   map[string]int `json:"counts"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.Equal(t, 4, rep.ExitCode)
	require.Contains(t, rep.Aborted, "pid: 999999999 matched no process")
	require.Equal(t, 0, rep.Total)
	require.NotNil(t, rep.Targets)
	require.Contains(t, rep.Counts, "APPLIED")
}

// A real run from the command line: progress as it goes, then a recap
// whose counts add up; --json carries the same outcome.
func TestPlayCommandRecapAndJSON(t *testing.T) {
	requireRoot(t)
	target, port := testutil.StartServer(t, "sshd-v1")
	pb := writeFile(t, "pb.yaml", fmt.Sprintf(`name: login fix
patch: {new: %s}
targets: [{pid: %d}]
checks:
  - name: answers
    tcp: {send: "VERSION\n", expect: "^OK SSH"}
`, testutil.Build(t, "sshd-v2"), target.Pid))
	var out, errb bytes.Buffer
	code := run(&out, &errb, []string{"play", "--check", pb})
	require.Equal(t, 0, code, out.String()+errb.String())
	require.Contains(t, out.String(), "PLAY login fix (check: nothing is written)")
	require.Contains(t, out.String(), "would_apply=1")
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "sec"), "--check patched")

	out.Reset()
	code = run(&out, &errb, []string{"play", pb})
	require.Equal(t, 0, code, out.String()+errb.String())
	text := out.String()
	require.Contains(t, text, fmt.Sprintf("pid %d: baseline passed (1 check(s))", target.Pid))
	require.Contains(t, text, fmt.Sprintf("pid %d: APPLIED patch", target.Pid))
	require.Contains(t, text, "RECAP 1 target(s)")
	require.Regexp(t, `applied=1 already_applied=0 skipped_unhealthy=0 busy=0 failed=0 failed_rolled_back=0 rolled_back=0 rollback_failed=0 gone=0 not_reached=0 \(total 1\)`, text)
	require.Contains(t, text, "exit 0")
	require.Equal(t, "FAIL login incorrect", sshdLogin(t, port, "alice", "sec"))

	out.Reset()
	errb.Reset()
	code = run(&out, &errb, []string{"play", pb, "--json"})
	require.Equal(t, 0, code)
	var rep struct {
		Targets []struct {
			Pid     int    `json:"pid"`
			Outcome string `json:"outcome"`
			Patched bool   `json:"patched"`
		} `json:"targets"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.Len(t, rep.Targets, 1)
	require.Equal(t, "ALREADY_APPLIED", rep.Targets[0].Outcome)
	require.True(t, rep.Targets[0].Patched)
	require.True(t, strings.Contains(errb.String(), "ALREADY_APPLIED"), "progress goes to stderr with --json: %s", errb.String())
}
