package playbook

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// kvAsk sends one line to a libkv server and returns its reply.
func kvAsk(t *testing.T, port int, line string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	l, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, line)
	return strings.TrimSpace(l)
}

// A library fix rolled out by build-id: every process mapping libkv v1
// (kvd and kvstat, two programs) gets the v1->v2 patch file, a process
// that does not map it is not a target, and a second run finds both
// already patched.
func TestPlayLibraryByBuildID(t *testing.T) {
	testutil.RequirePtrace(t)
	v1, v2 := testutil.Build(t, "libkv-v1"), testutil.Build(t, "libkv-v2")
	b, err := elfpatchOpen(v1)
	require.NoError(t, err)
	libID := b.BuildID()
	require.NotEmpty(t, libID)
	testutil.Build(t, "kvd")
	testutil.Build(t, "kvstat")

	libdir := t.TempDir()
	data, err := os.ReadFile(v1)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(libdir, "libkv.so.1"), data, 0o755))
	t.Setenv("LD_LIBRARY_PATH", libdir)
	kvd, kport := testutil.StartServer(t, "kvd")
	kvs, sport := testutil.StartServer(t, "kvstat")
	other, _ := testutil.StartServer(t, "sshd-v1")
	for _, port := range []int{kport, sport} {
		require.Equal(t, "libkv 1", kvAsk(t, port, "VERSION"))
	}
	require.Equal(t, "YES", kvAsk(t, sport, "CHECK a b"))

	patch := filepath.Join(t.TempDir(), "kv12.graft")
	writePatch(t, v1, v2, patch)
	pb := writePlaybook(t, fmt.Sprintf(`name: libkv 1 to 2
patch: {file: %s}
targets:
  - build_id: %s
rollout:
  batches: [1, "100%%"]
checks:
  - name: answers with libkv 2
    when: after
    tcp: {send: "VERSION\n", expect: "^libkv 2$"}
    period: 100ms
`, patch, libID))
	var prog lines
	rep := Run(context.Background(), pb, Options{Progress: prog.add})
	t.Log(prog.String())
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure+rep.Aborted)
	requireCountsAddUp(t, rep)
	require.Equal(t, 2, rep.Counts[Applied])
	got := byPid(rep)
	require.Contains(t, got, kvd.Pid)
	require.Contains(t, got, kvs.Pid)
	require.NotContains(t, got, other.Pid, "sshd maps no libkv: not a target")
	require.Empty(t, patches(t, other.Pid))
	require.Equal(t, "NO", kvAsk(t, sport, "CHECK a b"), "kvstat runs v2's kv_check_key")
	require.Equal(t, "libkv 2", kvAsk(t, kport, "VERSION"))
	for _, pid := range []int{kvd.Pid, kvs.Pid} {
		require.Equal(t, []string{"kv_check_key", "kv_version"}, got[pid].Functions)
		testutil.RequireReleased(t, pid)
	}

	rep = Run(context.Background(), pb, Options{})
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure+rep.Aborted)
	require.Equal(t, 2, rep.Counts[AlreadyApplied], "both already run v2 of the library")
	requireCountsAddUp(t, rep)
}
