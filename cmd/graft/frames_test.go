package main

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// `graft diff -p PID` says, before anything is written, which frames of
// the running process are inside changed functions: for acceptd v1->v2
// both of the idle main thread's frames (main, accept_conn) stay by
// proof; for v1->v3, whose changes lie ahead of them, both block, each
// with why and the --allow-active value. `apply --json` names the same
// blockers when it gives up, and the text error gives the one flag value
// that lets them all stay.
func TestDiffShowsFramesOfPid(t *testing.T) {
	testutil.RequirePtrace(t)
	v1, v2, v3 := testutil.Build(t, "acceptd-v1"), testutil.Build(t, "acceptd-v2"), testutil.Build(t, "acceptd-v3")
	target, _ := testutil.StartServer(t, "acceptd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	pid := strconv.Itoa(target.Pid)
	// Once listening, main goes on into accept: wait until it is there.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile("/proc/" + pid + "/task/" + pid + "/syscall")
		require.NoError(t, err)
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == "43" {
			break
		}
		require.True(t, time.Now().Before(deadline), "main thread never blocked in accept")
	}
	type frames struct {
		Frames struct {
			Stayed  []frameOut   `json:"stayed"`
			Blocked []blockerOut `json:"blocked"`
			Error   string       `json:"error"`
		} `json:"frames"`
	}

	out, errOut, code := runGraft("diff", "--json", "-p", pid, v1, v2)
	require.Equal(t, 0, code, errOut)
	var f frames
	require.NoError(t, json.Unmarshal([]byte(out), &f))
	require.Empty(t, f.Frames.Error)
	require.Empty(t, f.Frames.Blocked)
	require.Len(t, f.Frames.Stayed, 2, "%s", out)

	out, errOut, code = runGraft("diff", "--json", "-p", pid, v1, v3)
	require.Equal(t, 0, code, errOut)
	f = frames{}
	require.NoError(t, json.Unmarshal([]byte(out), &f))
	require.Empty(t, f.Frames.Stayed)
	require.Len(t, f.Frames.Blocked, 2, "%s", out)
	allow := map[string]bool{}
	for _, b := range f.Frames.Blocked {
		require.Equal(t, target.Pid, b.Tid)
		require.NotEmpty(t, b.Why)
		allow[b.Allow] = true
	}
	require.Equal(t, map[string]bool{"main": true, "accept_conn": true}, allow)

	out, _, code = runGraft("diff", "-p", pid, v1, v3)
	require.Equal(t, 0, code)
	require.Equal(t, 2, strings.Count(out, "BLOCKS: thread "+pid), out)

	// OLD must be what the process runs.
	out, _, code = runGraft("diff", "-p", pid, v2, v3)
	require.Equal(t, 0, code)
	require.Contains(t, out, "could not check: pid "+pid+" runs build")

	out, errOut, code = runGraft("apply", "--json", "-p", pid, "--new", v3, "--timeout", "200ms")
	require.Equal(t, 1, code)
	var ab struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		Blocked []blockerOut `json:"blocked"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ab), out)
	require.Len(t, ab.Blocked, 2)
	require.Contains(t, ab.Error.Message, "--allow-active accept_conn,main lets every one of them finish", errOut)

	_, errOut, code = runGraft("apply", "-p", pid, "--new", v3, "--allow-active", "main,nosuch")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `"nosuch"`)
	require.Contains(t, errOut, "nothing was done")
}
