package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

func statdCmd(t *testing.T, port int, lines ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for _, l := range lines {
		_, err := fmt.Fprintf(c, "%s\n", l)
		require.NoError(t, err)
		got, err := r.ReadString('\n')
		require.NoError(t, err)
		out = append(out, strings.TrimSpace(got))
	}
	return out
}

// The operator's path through the commands (statd v2 -> v3, a member whose
// meaning changed and a renamed enumerator): diff -o writes the patch and
// a state description with TODOs; apply refuses; the operator fills the
// rules; diff --state builds a complete patch (the rules kept in the new
// description); dry run, apply and status show the transfer and that the
// patch is irreversible; revert refuses and leaves it in effect.
func TestStateDescriptionCommands(t *testing.T) {
	testutil.RequirePtrace(t)
	old, new := testutil.Build(t, "statd-v2"), testutil.Build(t, "statd-v3")
	dir := t.TempDir()
	patch := filepath.Join(dir, "v2-v3.patch")
	desc := patch + ".state.yaml"

	out, errOut, code := runGraft("diff", "-o", patch, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "state description written to "+desc+": 3 TODO(s)")
	text, err := os.ReadFile(desc)
	require.NoError(t, err)
	assert.Contains(t, string(text), "todo:")
	assert.Contains(t, string(text), "MODE_DRAIN")
	assert.Contains(t, string(text), "started_ms: new member")

	target, port := testutil.StartServer(t, "statd-v2")
	defer testutil.RequireReleased(t, target.Pid)
	require.Equal(t, []string{"OK", "OK"}, statdCmd(t, port, "MODE drain", "REQ 1"))
	pid := strconv.Itoa(target.Pid)
	_, errOut, code = runGraft("apply", "-p", pid, patch)
	require.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "unresolved TODOs")
	assert.Contains(t, errOut, "MODE_DRAIN")

	filled := strings.Replace(string(text), "    rules: {}\n", `    rules:
      from: {started_ms: started}
      scale: {started_ms: 1000}
      enum: {mode: {MODE_DRAIN: MODE_CLOSING}}
`, 1)
	require.NotEqual(t, string(text), filled, "the generated description has an empty rules block to fill")
	require.NoError(t, os.WriteFile(desc, []byte(filled), 0o644))
	out, errOut, code = runGraft("diff", "-o", patch, "--state", desc, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "(nothing to resolve)")
	text, err = os.ReadFile(desc)
	require.NoError(t, err)
	assert.NotContains(t, string(text), "todo:")
	assert.Contains(t, string(text), "MODE_DRAIN: MODE_CLOSING", "the rules are kept")
	assert.Contains(t, string(text), "times 1000")

	// A misspelt rule is an error, not silently ignored.
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("globals:\n  - name: stats\n    rules:\n      form: {a: b}\n"), 0o644))
	_, errOut, code = runGraft("diff", "--state", bad, old, new)
	require.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "form")

	out, errOut, code = runGraft("apply", "-p", pid, "--dry-run", patch)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "transferred stats (struct statd_stats)")
	assert.Contains(t, out, "IRREVERSIBLE")

	out, errOut, code = runGraft("apply", "-p", pid, patch)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "transferred stats")
	s := statdCmd(t, port, "STATS")[0]
	assert.Contains(t, s, "mode=closing")
	assert.Contains(t, s, "requests=1")

	out, errOut, code = runGraft("status", "-p", pid)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "transferred stats (struct statd_stats): 136 -> 136 bytes, in place")
	assert.Contains(t, out, "IRREVERSIBLE")

	_, errOut, code = runGraft("revert", "-p", pid)
	require.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "irreversible")
	out, _, _ = runGraft("status", "-p", pid)
	assert.Contains(t, out, "1 patch(es)")
}

// The same pair through a C transformer: diff -o writes the generated
// types next to the patch; the operator's C file, named in the state
// description, is compiled into the patch and run in the pause after the
// generated mapping.
func TestCTransformerCommands(t *testing.T) {
	testutil.RequirePtrace(t)
	old, new := testutil.Build(t, "statd-v2"), testutil.Build(t, "statd-v3")
	dir := t.TempDir()
	patch := filepath.Join(dir, "v2-v3.patch")
	_, errOut, code := runGraft("diff", "-o", patch, old, new)
	require.Equal(t, 0, code, errOut)
	hdr, err := os.ReadFile(patch + ".stats.xf_types.h")
	require.NoError(t, err)
	assert.Contains(t, string(hdr), "int64_t started;")
	assert.Contains(t, string(hdr), "int64_t started_ms;")
	assert.Contains(t, string(hdr), "#define MODE_DRAIN__old (3)")
	assert.Contains(t, string(hdr), "void xf_stats(const xf_stats_old_t *in, xf_stats_new_t *out);")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "convert.c"), []byte(`#include "xf_types.h"
void xf_stats(const xf_stats_old_t *in, xf_stats_new_t *out)
{
	out->started_ms = in->started * 1000 + 7;
	if (in->mode == MODE_DRAIN__old)
		out->mode = MODE_CLOSING;
	out->io.dropped = 42;
}
`), 0o644))
	desc := filepath.Join(dir, "state.yaml")
	require.NoError(t, os.WriteFile(desc, []byte("globals:\n  - name: stats\n    rules:\n      c: convert.c\n"), 0o644))
	out, errOut, code := runGraft("diff", "-o", patch, "--state", desc, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "left to the C transformer")

	// A C file that does not compile is a TODO, named.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.c"), []byte("void xf_stats(void) { nope; }\n"), 0o644))
	badDesc := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(badDesc, []byte("globals:\n  - name: stats\n    rules:\n      c: bad.c\n"), 0o644))
	out, _, _ = runGraft("diff", "--state", badDesc, old, new)
	assert.Contains(t, out, "TODO C transformer for stats: compile")

	target, port := testutil.StartServer(t, "statd-v2")
	defer testutil.RequireReleased(t, target.Pid)
	require.Equal(t, []string{"OK", "OK"}, statdCmd(t, port, "MODE drain", "REQ 1"))
	pid := strconv.Itoa(target.Pid)
	out, errOut, code = runGraft("apply", "-p", pid, patch)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "IRREVERSIBLE")
	s := statdCmd(t, port, "STATS")[0]
	assert.Contains(t, s, "mode=closing")
	assert.Contains(t, s, "requests=1")
	assert.Contains(t, s, "io=1/0/42", "the C function ran")
	m := regexp.MustCompile(`uptime=(-?\d+)ms`).FindStringSubmatch(s)
	require.NotNil(t, m, s)
	up, _ := strconv.Atoi(m[1])
	assert.True(t, up >= -7 && up < 600_000, "started_ms from started*1000: %s", s)
}
