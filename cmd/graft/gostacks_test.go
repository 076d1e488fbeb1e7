package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// TestGoCommands drives a Go program through the CLI: `graft stacks` lists
// its goroutines (goroutine 1 in main.main, complete stacks ending in
// goexit) and its threads; `graft apply --new --go-pie` patches it
// (goserver v2 -> v3), `graft status` shows the patch, `graft revert`
// takes it out; the server answers with each version's semantics.
func TestGoCommands(t *testing.T) {
	testutil.RequirePtrace(t)
	target, port := testutil.StartServer(t, "goserver-v2")
	pid := strconv.Itoa(target.Pid)

	stdout, stderr, code := runGraft("stacks", "-p", pid, "--json")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	testutil.RequireReleased(t, target.Pid)
	var out struct {
		Goroutines []struct {
			ID     int64  `json:"id"`
			Status string `json:"status"`
			Frames []struct {
				Function string `json:"function"`
			} `json:"frames"`
			Incomplete string `json:"incomplete"`
		} `json:"goroutines"`
		Threads []struct {
			Tid int `json:"tid"`
		} `json:"threads"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	require.NotEmpty(t, out.Goroutines)
	require.NotEmpty(t, out.Threads)
	sawMain := false
	for _, g := range out.Goroutines {
		if g.Status == "running" {
			continue
		}
		assert.Empty(t, g.Incomplete, "goroutine %d", g.ID)
		require.NotEmpty(t, g.Frames)
		assert.True(t, strings.HasPrefix(g.Frames[len(g.Frames)-1].Function, "runtime.goexit "), "goroutine %d ends in %s", g.ID, g.Frames[len(g.Frames)-1].Function)
		for _, f := range g.Frames {
			if g.ID == 1 && strings.HasPrefix(f.Function, "main.main ") {
				sawMain = true
			}
		}
	}
	assert.True(t, sawMain, "goroutine 1 shows no main.main")

	text, stderr, code := runGraft("stacks", "-p", pid)
	require.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Regexp(t, `(?m)^goroutine 1 \[waiting\]:$`, text)

	get := func() string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/count", port))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	assert.Equal(t, "0\n", get()) // v2: the value before the increment

	_, stderr, code = runGraft("apply", "-p", pid, "--new", testutil.Build(t, "goserver-v3-pie"))
	require.NotEqual(t, 0, code, "a PIE alone for a default-build Go program must be refused")
	assert.Contains(t, stderr, "--go-pie")

	stdout, stderr, code = runGraft("apply", "-p", pid, "--new", testutil.Build(t, "goserver-v3"),
		"--go-pie", testutil.Build(t, "goserver-v3-pie"), "--timeout", "10s")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Contains(t, stdout, "main.handleCount")
	testutil.RequireReleased(t, target.Pid)
	assert.Equal(t, "2\n", get()) // v3: the value after the increment

	stdout, stderr, code = runGraft("status", "-p", pid)
	require.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Contains(t, stdout, "main.handleCount")

	_, stderr, code = runGraft("revert", "-p", pid, "--timeout", "10s")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	testutil.RequireReleased(t, target.Pid)
	assert.Equal(t, "2\n", get()) // v2 again
	stdout, stderr, code = runGraft("status", "-p", pid)
	require.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Contains(t, stdout, "stays mapped, its module registered")
	time.Sleep(10 * time.Millisecond)
	assert.NotContains(t, target.Stderr(), "fatal error")
}
