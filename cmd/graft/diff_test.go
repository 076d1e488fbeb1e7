package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
)

// buildPair compiles one of elfpatch's C fixture pairs with gcc -g -O2.
func buildPair(t *testing.T, name string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	var out [2]string
	for i, v := range []string{"v1", "v2"} {
		srcs, _ := filepath.Glob(filepath.Join("..", "..", "elfpatch", "testdata", "diff", name, v, "*.c"))
		require.NotEmpty(t, srcs)
		out[i] = filepath.Join(dir, name+"-"+v)
		args := append([]string{"-g", "-O2", "-o", out[i]}, srcs...)
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, b)
		}
	}
	return out[0], out[1]
}

func runGraft(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(&o, &e, args)
	return o.String(), e.String(), code
}

func TestDiffCommandText(t *testing.T) {
	old, new := buildPair(t, "string")
	out, errOut, code := runGraft("diff", old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "verdict: auto")
	assert.Contains(t, out, "changed functions (1):")
	assert.Regexp(t, `\n  banner\s+main.c:2\s+old 0x[0-9a-f]+\+\d+\s+new 0x[0-9a-f]+\+\d+\s+patchable`, out)
	assert.NotContains(t, out, "added functions")
}

func TestDiffCommandJSONAndPatchFile(t *testing.T) {
	old, new := buildPair(t, "newglobal")
	patch := filepath.Join(t.TempDir(), "p.graft")
	// Flags after the positional arguments work too.
	out, errOut, code := runGraft("diff", old, new, "--json", "-o", patch)
	require.Equal(t, 0, code, errOut)
	var r struct {
		Changed []struct {
			Name    string `json:"name"`
			OldAddr string `json:"old_addr"`
		} `json:"changed"`
		Globals []struct {
			Name    string   `json:"name"`
			Changes []string `json:"changes"`
		} `json:"globals"`
		Verdict string `json:"verdict"`
		Reasons []struct {
			Verdict string `json:"verdict"`
			Symbol  string `json:"symbol"`
		} `json:"reasons"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.Len(t, r.Changed, 1)
	assert.Equal(t, "handle", r.Changed[0].Name)
	assert.Regexp(t, `^0x[0-9a-f]+$`, r.Changed[0].OldAddr, "addresses in --json are hex strings")
	assert.Equal(t, "auto", r.Verdict)
	require.Len(t, r.Globals, 1)
	assert.Equal(t, "bytes_served", r.Globals[0].Name)

	// show reads back what diff wrote.
	out, errOut, code = runGraft("show", patch)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "verdict: auto")
	assert.Contains(t, out, "bytes_served")
	assert.Regexp(t, `\n  handle: old 0x[0-9a-f]+ -> new 0x[0-9a-f]+`, out)
	var v showOutput
	out, errOut, code = runGraft("show", "--json", patch)
	require.Equal(t, 0, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, elfpatch.PatchVersion, v.Version)
	assert.NotEmpty(t, v.OldBuildID)
	assert.Equal(t, "auto", string(v.Report.Verdict))
	assert.NotEmpty(t, v.Image.Segments)
	require.Len(t, v.Image.Redirects, 1)
}

// TestDiffCommandTransformer: a global whose layout changed gets a
// generated transformer; the patch carries it and a state description
// with nothing to resolve is written next to it.
func TestDiffCommandTransformer(t *testing.T) {
	old, new := buildPair(t, "globaltype")
	patch := filepath.Join(t.TempDir(), "p.patch")
	out, errOut, code := runGraft("diff", old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "verdict: transformer")
	assert.Contains(t, out, "g_stats")
	out, errOut, code = runGraft("diff", "-o", patch, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "verdict: transformer")
	assert.Contains(t, out, "state description written to "+patch+".state.yaml (nothing to resolve)")
	assert.FileExists(t, patch)
	desc, err := os.ReadFile(patch + ".state.yaml")
	require.NoError(t, err)
	assert.Contains(t, string(desc), "name: g_stats")
	assert.NotContains(t, string(desc), "todo:")
}

func TestDiffCommandRefusedWritesNothing(t *testing.T) {
	old, new := buildPair(t, "unpatchable")
	patch := filepath.Join(t.TempDir(), "p.graft")
	out, errOut, code := runGraft("diff", "-o", patch, old, new)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "verdict: refused")
	assert.Contains(t, errOut, "no patch written")
	assert.NoFileExists(t, patch)

	_, errOut, code = runGraft("diff", "--force", "-o", patch, old, new)
	assert.Equal(t, 0, code, errOut)
	assert.FileExists(t, patch)
}

func TestDiffShowErrors(t *testing.T) {
	_, errOut, code := runGraft("diff", "only-one")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "need the OLD and NEW binaries")

	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, []byte("not a patch at all, long enough for a header......"), 0o644))
	_, errOut, code = runGraft("show", junk)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "bad magic")

	_, errOut, code = runGraft("diff", junk, junk)
	assert.Equal(t, 1, code)
	assert.True(t, strings.Contains(errOut, "not an ELF file"), errOut)
}

// TestDiffPatchAppliesLive is the patch file's end-to-end check: graft
// diff writes a patch for sshd v2 -> v3 (ECHO returns its whole text),
// graft show reads it, and graft apply applies it, from the file alone, to
// a running sshd v2, whose already-open session then echoes the new way.
func TestDiffPatchAppliesLive(t *testing.T) {
	old := testutil.Build(t, "sshd-v2")
	new := testutil.Build(t, "sshd-v3")
	patch := filepath.Join(t.TempDir(), "sshd-v2-v3.graft")
	out, errOut, code := runGraft("diff", "-o", patch, old, new)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "cmd_echo")
	out, errOut, code = runGraft("show", patch)
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `\n  cmd_echo: old 0x[0-9a-f]+ -> new 0x[0-9a-f]+`, out)

	p, port := testutil.StartServer(t, "sshd-v2")
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(line string) string {
		t.Helper()
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		if line != "" {
			_, err := c.Write([]byte(line + "\n"))
			require.NoError(t, err)
		}
		reply, err := r.ReadString('\n')
		require.NoError(t, err)
		return strings.TrimRight(reply, "\r\n")
	}
	assert.Contains(t, say(""), "SSH-2.0") // banner
	assert.Equal(t, "OK welcome alice", say("LOGIN alice secret"))
	assert.Equal(t, "OK hello", say("ECHO hello big world"))

	out, errOut, code = runGraft("apply", "-p", strconv.Itoa(p.Pid), patch)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	testutil.RequireReleased(t, p.Pid)

	assert.Equal(t, "OK hello big world", say("ECHO hello big world"), "the open session runs the new cmd_echo")
	assert.False(t, p.Exited())
}
