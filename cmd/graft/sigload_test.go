package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// Apply/revert cycles while the target takes a steady stream of queued
// real-time signals from another process (sigqueue, four signal numbers,
// each signal carrying its sequence number). Every apply and revert must
// succeed, and the target must have received every signal sent exactly
// once with its own value: the count and the sum of the values match.
func TestApplyRevertUnderRealtimeSignals(t *testing.T) {
	requireRoot(t)
	target := testutil.Start(t, testutil.Build(t, "sigload-v1"))
	target.WaitLine(t, "ready", 10*time.Second)
	defer testutil.RequireReleased(t, target.Pid)
	pid := strconv.Itoa(target.Pid)
	file := filepath.Join(t.TempDir(), "sigload.patch")
	_, errOut, code := runGraft("diff", testutil.Build(t, "sigload-v1"), testutil.Build(t, "sigload-v2"), "-o", file)
	require.Equal(t, 0, code, errOut)

	const rate = 3000
	sender := testutil.Start(t, testutil.Build(t, "sigsender"), pid, strconv.Itoa(rate))
	sender.WaitLine(t, "sending", 10*time.Second)
	start := time.Now()
	applied, reverted := 0, 0
	for time.Since(start) < 4*time.Second || applied < 20 {
		out, errOut, code := runGraft("apply", "-p", pid, file, "--json")
		require.Equal(t, 0, code, "apply %d under signals: %s", applied+1, errOut)
		require.Contains(t, out, `"answer"`)
		applied++
		if applied == 1 {
			// The new code runs: answer(x) is x+2 in v2 (workers pass 0, 10).
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, syscall.Kill(target.Pid, syscall.SIGUSR1))
			l := target.WaitLine(t, "count ", 5*time.Second)
			var n, s, answer int64
			_, err := fmt.Sscanf(l, "count %d sum %d answer %d", &n, &s, &answer)
			require.NoError(t, err, l)
			require.Contains(t, []int64{2, 12}, answer, "patched answer: %s", l)
		}
		_, errOut, code = runGraft("revert", "-p", pid)
		require.Equal(t, 0, code, "revert %d under signals: %s", reverted+1, errOut)
		reverted++
		require.Empty(t, graftMaps(t, target.Pid), "after revert %d", reverted)
	}
	require.NoError(t, syscall.Kill(sender.Pid, syscall.SIGTERM))
	line := sender.WaitLine(t, "sent ", 10*time.Second)
	var sent, sum, again int64
	var secs float64
	_, err := fmt.Sscanf(line, "sent %d sum %d again %d seconds %f", &sent, &sum, &again, &secs)
	require.NoError(t, err, line)
	achieved := float64(sent) / secs
	t.Logf("%d apply/revert cycles; %d signals in %.2fs = %.0f/s (queue full %d times)", applied, sent, secs, achieved, again)
	require.GreaterOrEqual(t, achieved, 1500.0, "the sender did not reach the rate under test")

	// Every signal arrives, once, with its value. The last ones may still
	// be on their way: ask until the count stops short of nothing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		require.NoError(t, syscall.Kill(target.Pid, syscall.SIGUSR1))
		var n, s, answer int64
		l := target.WaitLine(t, "count ", 5*time.Second)
		_, err := fmt.Sscanf(l, "count %d sum %d answer %d", &n, &s, &answer)
		require.NoError(t, err, l)
		if n == sent || time.Now().After(deadline) {
			require.Equal(t, sent, n, "signals received vs sent")
			require.Equal(t, sum, s, "sum of the values the signals carried: a signal lost its siginfo or came twice")
			break
		}
		require.Less(t, n, sent, "more signals received than sent")
		time.Sleep(50 * time.Millisecond)
	}
}
