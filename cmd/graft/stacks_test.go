package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// requireRoot is testutil.RequirePtrace under the name apply_test.go
// still calls.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequirePtrace(t)
}

func TestStacksCommand(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sp_stacks"))
	target.WaitLine(t, "ready", 10*time.Second)
	pid := strconv.Itoa(target.Pid)

	stdout, stderr, code := runGraft("stacks", "-p", pid, "--json")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	testutil.RequireReleased(t, target.Pid)
	var out struct {
		Threads []struct {
			Tid    int `json:"tid"`
			Frames []struct {
				PC       string `json:"pc"`
				Function string `json:"function"`
			} `json:"frames"`
			Incomplete string `json:"incomplete"`
		} `json:"threads"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	require.Len(t, out.Threads, 9)
	all := map[string]bool{}
	for _, th := range out.Threads {
		assert.Empty(t, th.Incomplete, "thread %d", th.Tid)
		require.NotEmpty(t, th.Frames)
		for _, f := range th.Frames {
			assert.True(t, strings.HasPrefix(f.PC, "0x"), f.PC)
			all[f.Function] = true
		}
		last := th.Frames[len(th.Frames)-1].Function
		assert.Contains(t, []string{"_start", "__clone3", "clone3"}, last, "outermost frame of thread %d", th.Tid)
	}
	for _, fn := range []string{"main", "block_accept", "block_read", "block_sleep", "block_cond", "spin_leaf", "spin_mid", "recurse", "in_handler", "__restore_rt", "fp_outer"} {
		assert.True(t, all[fn], "no frame in %s", fn)
	}
	assert.Equal(t, target.Pid, out.Threads[0].Tid, "threads sorted, main first")

	stdout, stderr, code = runGraft("stacks", "-p", pid)
	require.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Contains(t, stdout, "thread "+pid+":")
	assert.Regexp(t, `#0 +0x[0-9a-f]+ spin_leaf \(sp_stacks\)`, stdout)
	testutil.RequireReleased(t, target.Pid)
	require.False(t, target.Exited(), "target died")
}

func TestStacksCommandErrors(t *testing.T) {
	_, stderr, code := runGraft("stacks")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "-p PID is required")
	_, stderr, code = runGraft("stacks", "-p", "999999999")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "999999999")
}

// An interrupt (the channel interruptible's context would close) detaches
// stacks as it does inspect: the command says so, the target runs on,
// released.
func TestStacksInterrupted(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sp_stacks"))
	target.WaitLine(t, "ready", 10*time.Second)
	intr := make(chan struct{})
	close(intr)
	_, err := collectStacks(target.Pid, intr)
	require.ErrorIs(t, err, errInterrupted)
	testutil.RequireReleased(t, target.Pid)
	require.False(t, target.Exited(), "target died")
}

func TestPidArgs(t *testing.T) {
	for _, cmd := range []string{"inspect", "stacks"} {
		_, stderr, code := runGraft(cmd, "-p", "1", "extra")
		assert.Equal(t, 2, code, cmd)
		assert.Contains(t, stderr, "unexpected arguments", cmd)
	}
}

// A thread blocked in read() inside patched code unwinds to its end through
// the new code, named, with NEW's binary gone: graft stacks reads the
// patch's CFI from the target, as apply and revert do.
func TestStacksThroughPatchedCode(t *testing.T) {
	testutil.RequirePtrace(t)
	dir := t.TempDir()
	newBin := filepath.Join(dir, "blockread-v2")
	data, err := os.ReadFile(testutil.Build(t, "blockread-v2"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(newBin, data, 0o755))
	patch := filepath.Join(dir, "v1-v2.graft")
	_, stderr, code := runGraft("diff", testutil.Build(t, "blockread-v1"), newBin, "-o", patch)
	require.Equal(t, 0, code, "stderr: %s", stderr)
	require.NoError(t, os.Remove(newBin))

	fifo := filepath.Join(dir, "in")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	w, err := os.OpenFile(fifo, os.O_RDWR, 0) // never blocks on a FIFO
	require.NoError(t, err)
	defer w.Close()
	target := testutil.Start(t, testutil.Build(t, "blockread-v1"), fifo)
	target.WaitLine(t, "ready", 10*time.Second)
	pid := strconv.Itoa(target.Pid)

	// The worker sits in v1's handle, which may finish there; its next
	// call blocks in read() inside v2's handle, in the patch's image.
	_, stderr, code = runGraft("apply", "-p", pid, patch, "--allow-active", "handle")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	fmt.Fprintln(w, "a")
	target.WaitLine(t, "v1 a", 10*time.Second)
	fmt.Fprintln(w, "b")
	target.WaitLine(t, "v2 b", 10*time.Second)

	stdout, stderr, code := runGraft("stacks", "-p", pid, "--json")
	require.Equal(t, 0, code, "stderr: %s", stderr)
	testutil.RequireReleased(t, target.Pid)
	var out struct {
		Threads []struct {
			Frames []struct {
				Function string `json:"function"`
				Module   string `json:"module"`
			} `json:"frames"`
			Incomplete string `json:"incomplete"`
		} `json:"threads"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	var worker []string
	for _, th := range out.Threads {
		assert.Empty(t, th.Incomplete, "no stack is incomplete: %s", stdout)
		for _, f := range th.Frames {
			if strings.Contains(f.Module, "graft image") {
				require.Equal(t, "handle", f.Function, "the frame in the image is named")
				for _, g := range th.Frames {
					worker = append(worker, g.Function)
				}
			}
		}
	}
	require.NotNil(t, worker, "a thread has a frame in the patch's image: %s", stdout)
	assert.Contains(t, worker, "__libc_read", "frames: %v", worker)
	assert.Contains(t, worker, "worker", "the walk goes on into the executable: %v", worker)

	_, stderr, code = runGraft("revert", "-p", pid, "--timeout", "200ms")
	require.NotEqual(t, 0, code, "revert must wait: a thread is in the patched code")
	assert.Contains(t, stderr, "handle")
	testutil.RequireReleased(t, target.Pid)
	require.False(t, target.Exited(), "target died")
}
