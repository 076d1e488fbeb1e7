package graft

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// greet connects to acceptd, reads its greeting, has one line echoed and
// returns the greeting.
func greet(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	g, err := r.ReadString('\n')
	require.NoError(t, err)
	_, err = c.Write([]byte("ping\n"))
	require.NoError(t, err)
	e, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "echo ping\n", e)
	return strings.TrimSpace(g)
}

// waitIdleIn waits until acceptd's main thread blocks in accept again
// (after serving a connection it loops back into accept_conn): its
// current system call is accept (43) or accept4 (288).
func waitIdleIn(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, pid))
		require.NoError(t, err)
		if f := strings.Fields(string(b)); len(f) > 0 && (f[0] == "43" || f[0] == "288") {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("main thread of %d not blocked in accept", pid)
}

// The release pair: acceptd v1 -> v2 changes main (a version
// banner before the accept loop) and the accept wrapper (a counter before
// the blocking accept), as real releases do. main and accept_conn are on
// the idle server's main thread the whole time. A plain apply goes
// through (both frames proven to finish as v2 would), new connections get
// v2's greeting, and a plain revert later goes through while the main
// thread waits inside v2's accept_conn (that frame proven to finish as v1
// would): the jumps go at once, new connections get v1's greeting, the
// image stays mapped and shows pending in status until the next graft
// invocation finds it free and unmaps it.
func TestAcceptdNeverLeavingFrames(t *testing.T) {
	requirePtrace(t)
	v2 := testutil.Build(t, "acceptd-v2")
	target, port := testutil.StartServer(t, "acceptd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	// A client connected and silent: its worker waits in read inside
	// serve, which v2 changes only before the read (the greeting).
	open, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	require.NoError(t, err)
	defer open.Close()
	open.SetDeadline(time.Now().Add(20 * time.Second))
	openR := bufio.NewReader(open)
	g, err := openR.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "acceptd 1 hello\n", g)
	waitIdleIn(t, target.Pid)
	ctx := context.Background()

	// The dry run shows what will stay, and writes nothing.
	dry, err := Apply(ctx, target.Pid, Source{NewBinary: v2}, ApplyOptions{DryRun: true, Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Len(t, dry.Stayed, 3, "dry run names the frames it lets stay: %+v", dry.Stayed)
	require.Empty(t, graftMappings(t, target.Pid), "a dry run maps nothing")

	res, err := Apply(ctx, target.Pid, Source{NewBinary: v2}, ApplyOptions{Timeout: 3 * time.Second})
	require.NoError(t, err, "a plain apply on the idle server")
	got := map[string]StayedFrame{}
	for _, f := range res.Stayed {
		got[f.Function] = f
	}
	for _, fn := range []string{"main", "accept_conn", "serve"} {
		f, ok := got[fn]
		require.True(t, ok, "frame of %s let stay: %+v", fn, res.Stayed)
		require.False(t, f.Allowed, "%s stays by proof, not by flag", fn)
		require.Contains(t, f.Why, "proven")
		if fn == "serve" {
			require.NotEqual(t, target.Pid, f.Tid, "serve runs in a worker thread")
		} else {
			require.Equal(t, target.Pid, f.Tid)
		}
	}
	// The worker finishes its connection in the old code, as v2 would.
	_, err = open.Write([]byte("still here\n"))
	require.NoError(t, err)
	e, err := openR.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "echo still here\n", e)
	// The first connection is accepted by the old frame; the next ones
	// by v2's accept_conn, which counts them.
	require.True(t, strings.HasPrefix(greet(t, port), "acceptd 2.0 hello"))
	require.True(t, strings.HasPrefix(greet(t, port), "acceptd 2.0 hello, connection "))
	waitIdleIn(t, target.Pid)

	// The main thread now waits in v2's accept_conn, in the image.
	rv, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err, "a plain revert with the main thread inside the new accept wrapper")
	require.Equal(t, []string{res.PatchID}, rv.Reverted)
	require.Equal(t, []string{res.PatchID}, rv.Pending, "the image stays mapped for the frame in it")
	require.Len(t, rv.Stayed, 1)
	require.Equal(t, "accept_conn", rv.Stayed[0].Function)
	require.Contains(t, rv.Stayed[0].Why, "accept_conn+0x")
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Empty(t, st.Patches)
	require.Len(t, st.Pending, 1)
	require.Equal(t, res.PatchID, st.Pending[0].ID)
	images, _ := graftMapped(t, target.Pid)
	require.Positive(t, images, "pending image still mapped")
	// Not an orphan: revert --all leaves it alone while the frame is in
	// it, and says why.
	_, err = Revert(ctx, target.Pid, RevertOptions{All: true, Timeout: time.Second})
	require.ErrorIs(t, err, ErrPending)
	again, _ := graftMapped(t, target.Pid)
	require.Equal(t, images, again, "revert --all kept the pending image")

	// New calls take the old code at once; this connection also lets
	// the waiting frame leave the image.
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	waitIdleIn(t, target.Pid)

	// A dry run writes nothing, not even the clean-up of the free image.
	_, err = Apply(ctx, target.Pid, Source{NewBinary: v2}, ApplyOptions{DryRun: true, Timeout: 3 * time.Second})
	require.NoError(t, err)
	st, err = Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Pending, 1, "dry run left the pending image alone")

	// The next invocation finds the image free and unmaps it, and the
	// record, now empty, with it.
	rv2, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{res.PatchID}, rv2.Reaped)
	require.Empty(t, graftMappings(t, target.Pid), "nothing of graft left")
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	require.False(t, target.Exited())
}

// v1 -> v3 changes what lies ahead of the waiting frames: accept_conn
// checks the peer after accept returns, main logs each connection after
// accept_conn returns. Both frames block; the error names both, why, and
// the --allow-active value for each, and nothing is written. The names the
// error gives let them stay; a name the patch lacks is refused up front.
func TestAcceptdChangeAheadRefused(t *testing.T) {
	requirePtrace(t)
	v3 := testutil.Build(t, "acceptd-v3")
	target, port := testutil.StartServer(t, "acceptd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	waitIdleIn(t, target.Pid)
	ctx := context.Background()

	_, err := Apply(ctx, target.Pid, Source{NewBinary: v3}, ApplyOptions{Timeout: 300 * time.Millisecond})
	require.Error(t, err)
	bs := Blockers(err)
	require.Len(t, bs, 2, "every blocker named: %v", err)
	byFn := map[string]Blocker{}
	for _, b := range bs {
		byFn[b.Function] = b
		require.Equal(t, target.Pid, b.Tid)
		require.NotEmpty(t, b.Why)
	}
	require.Equal(t, "accept_conn", byFn["accept_conn"].Allow)
	require.Equal(t, "main", byFn["main"].Allow)
	require.Contains(t, byFn["accept_conn"].Why, "changed")
	require.Contains(t, err.Error(), "--allow-active accept_conn")
	require.Contains(t, err.Error(), "--allow-active main")
	require.Empty(t, graftMappings(t, target.Pid), "a refused apply leaves nothing")

	_, err = Apply(ctx, target.Pid, Source{NewBinary: v3}, ApplyOptions{AllowActive: []string{"main", "nosuch"}})
	require.True(t, errors.Is(err, ErrUnknownAllow), "unknown name refused: %v", err)
	require.Contains(t, err.Error(), "nosuch")
	require.Empty(t, graftMappings(t, target.Pid))

	res, err := Apply(ctx, target.Pid, Source{NewBinary: v3}, ApplyOptions{AllowActive: []string{"main", "accept_conn"}, Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Len(t, res.Stayed, 2)
	for _, f := range res.Stayed {
		require.True(t, f.Allowed, "%+v", f)
	}
	// serve is started through a pointer to its old entry, which
	// jumps to v3's: even the connection the old frame accepts gets it.
	require.Equal(t, "acceptd 3 hello", greet(t, port))
	require.Equal(t, "acceptd 3 hello", greet(t, port))
	_, err = Revert(ctx, target.Pid, RevertOptions{All: true, Timeout: 300 * time.Millisecond})
	// The main thread waits in v3's accept_conn, whose check after
	// accept differs from v1: not proven, so the revert waits, names
	// it, and changes nothing.
	require.Error(t, err)
	rb := Blockers(err)
	require.Len(t, rb, 1, "%v", err)
	require.Equal(t, "accept_conn", rb[0].Allow)
	require.Contains(t, rb[0].Why, "accept_conn+0x")
	st, serr := Status(target.Pid)
	require.NoError(t, serr)
	require.Len(t, st.Patches, 1, "revert refused: patch still in")
	require.Equal(t, "acceptd 3 hello", greet(t, port))
	waitIdleIn(t, target.Pid)

	// The operator's name lets that frame finish in the new code.
	_, err = Revert(ctx, target.Pid, RevertOptions{AllowActive: []string{"nosuch"}})
	require.ErrorIs(t, err, ErrUnknownAllow)
	rv, err := Revert(ctx, target.Pid, RevertOptions{AllowActive: []string{"accept_conn"}, Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Len(t, rv.Stayed, 1)
	require.True(t, rv.Stayed[0].Allowed)
	require.Equal(t, []string{res.PatchID}, rv.Pending)
	require.Equal(t, "acceptd 1 hello", greet(t, port))
}

// Releases follow each other: v1 -> v2 lets main's frame stay in v1's
// code, then v2 -> v4 (a new version string: main and serve change again)
// is stacked on it. main's frame is still in v1's copy, which the v2->v4
// analysis never saw; the v1->v2 patch recorded which of v1's return
// addresses it proved equivalent to v2's, so the frame is judged at its v2
// equivalent and stays without a flag. Both revert plainly afterwards.
func TestAcceptdStackedReleasesCarryTheProof(t *testing.T) {
	requirePtrace(t)
	v2, v4 := testutil.Build(t, "acceptd-v2"), testutil.Build(t, "acceptd-v4")
	target, port := testutil.StartServer(t, "acceptd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	waitIdleIn(t, target.Pid)
	ctx := context.Background()

	r12, err := Apply(ctx, target.Pid, Source{NewBinary: v2}, ApplyOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Len(t, r12.Stayed, 2)
	require.True(t, strings.HasPrefix(greet(t, port), "acceptd 2.0 hello"))
	waitIdleIn(t, target.Pid)

	r24, err := Apply(ctx, target.Pid, Source{NewBinary: v4}, ApplyOptions{Timeout: 3 * time.Second})
	require.NoError(t, err, "main's v1 frame judged at its v2 equivalent")
	require.Equal(t, r12.PatchID, r24.OnTopOf)
	require.Len(t, r24.Stayed, 1, "%+v", r24.Stayed)
	require.Equal(t, "main", r24.Stayed[0].Function)
	require.False(t, r24.Stayed[0].Allowed)
	require.Contains(t, r24.Stayed[0].Why, "earlier patch proved this frame equivalent")
	require.True(t, strings.HasPrefix(greet(t, port), "acceptd 2.1 hello, connection "))
	waitIdleIn(t, target.Pid)

	_, err = Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	rv, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{r12.PatchID}, rv.Pending, "main thread waits in v2's accept_conn")
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	require.False(t, target.Exited())
}

// The same release applied again while its earlier image is still pending
// gets an id of its own; each image goes once no thread is in it, and a
// pending image is never taken for another.
func TestAcceptdReapplyWhilePending(t *testing.T) {
	requirePtrace(t)
	v2 := testutil.Build(t, "acceptd-v2")
	target, port := testutil.StartServer(t, "acceptd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	waitIdleIn(t, target.Pid)
	ctx := context.Background()
	opts := ApplyOptions{Timeout: 3 * time.Second}

	a1, err := Apply(ctx, target.Pid, Source{NewBinary: v2}, opts)
	require.NoError(t, err)
	greet(t, port)
	waitIdleIn(t, target.Pid)
	rv, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{a1.PatchID}, rv.Pending)

	// Applied again: the main thread still waits in a1's pending image
	// (not a function being replaced: no blocker), main's frame stays.
	a2, err := Apply(ctx, target.Pid, Source{NewBinary: v2}, opts)
	require.NoError(t, err)
	require.NotEqual(t, a1.PatchID, a2.PatchID)
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.Len(t, st.Pending, 1)
	require.Equal(t, a1.PatchID, st.Pending[0].ID)

	// A connection moves the thread from a1's image into a2's; the next
	// revert unmaps a1's and leaves a2's pending.
	require.True(t, strings.HasPrefix(greet(t, port), "acceptd 2.0 hello"))
	waitIdleIn(t, target.Pid)
	rv, err = Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{a1.PatchID}, rv.Reaped)
	require.Equal(t, []string{a2.PatchID}, rv.Pending)
	require.Equal(t, "acceptd 1 hello", greet(t, port))
	waitIdleIn(t, target.Pid)
	rv, err = Revert(ctx, target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{a2.PatchID}, rv.Reaped)
	require.Empty(t, graftMappings(t, target.Pid))
}

// A compiler clone on the stack: acceptd v5's accept wrapper runs as
// accept_conn.constprop.0, and v6 changes it ahead of the waiting frame.
// The blocker names the clone and gives the base name the diff prints
// ("clone of accept_conn") as the flag's value, which lets it stay.
func TestAcceptdCloneBlockerNamesBaseName(t *testing.T) {
	requirePtrace(t)
	v6 := testutil.Build(t, "acceptd-v6")
	target, port := testutil.StartServer(t, "acceptd-v5")
	defer testutil.RequireReleased(t, target.Pid)
	require.Equal(t, "acceptd 5 hello", greet(t, port))
	waitIdleIn(t, target.Pid)
	ctx := context.Background()

	_, err := Apply(ctx, target.Pid, Source{NewBinary: v6}, ApplyOptions{Timeout: 200 * time.Millisecond})
	bs := Blockers(err)
	require.Len(t, bs, 1, "%v", err)
	require.True(t, strings.HasPrefix(bs[0].Function, "accept_conn.constprop."), bs[0].Function)
	require.Equal(t, "accept_conn", bs[0].Allow)
	require.Contains(t, err.Error(), "--allow-active accept_conn lets it finish there")

	res, err := Apply(ctx, target.Pid, Source{NewBinary: v6}, ApplyOptions{AllowActive: []string{"accept_conn"}, Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Len(t, res.Stayed, 1)
	require.True(t, res.Stayed[0].Allowed)
	require.Equal(t, "acceptd 6 hello", greet(t, port))
}
