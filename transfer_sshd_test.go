package graft

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
)

// sshLoad runs clients against sshd until stopped: each connects, logs
// in, asks STATS and quits, every line counted. It returns the
// connections made, the lines sent and the successful logins.
func sshLoad(t *testing.T, port, workers int) func() (conns, lines, logins int) {
	var nc, nl, nlog atomic.Int64
	var mu sync.Mutex
	var failed error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				err := func() error {
					c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					r := bufio.NewReader(c)
					if _, err := r.ReadString('\n'); err != nil {
						return fmt.Errorf("banner: %w", err)
					}
					nc.Add(1)
					ask := func(line, want string) error {
						if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
							return err
						}
						nl.Add(1)
						got, err := r.ReadString('\n')
						if err != nil {
							return fmt.Errorf("%s: %w", line, err)
						}
						if !strings.HasPrefix(got, want) {
							return fmt.Errorf("%s: got %q, want %q...", line, got, want)
						}
						return nil
					}
					if err := ask("LOGIN alice wonderland", "OK welcome alice"); err != nil {
						return err
					}
					nlog.Add(1)
					if err := ask("WHOAMI", "OK alice"); err != nil {
						return err
					}
					if err := ask("STATS", "OK connections="); err != nil {
						return err
					}
					return ask("QUIT", "OK bye")
				}()
				if err != nil {
					mu.Lock()
					failed = fmt.Errorf("client %d, round %d: %w", w, k, err)
					mu.Unlock()
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return func() (int, int, int) {
		close(stop)
		wg.Wait()
		require.NoError(t, failed)
		return int(nc.Load()), int(nl.Load()), int(nlog.Load())
	}
}

var sshStat = regexp.MustCompile(`(\w+)=(\d+)`)

func sshStats(t *testing.T, line string) map[string]int {
	t.Helper()
	require.True(t, strings.HasPrefix(line, "OK connections="), line)
	out := map[string]int{}
	for _, m := range sshStat.FindAllStringSubmatch(line, -1) {
		out[m[1]], _ = strconv.Atoi(m[2])
	}
	return out
}

// sshdV6Patch is sshd v5 -> v6 made with the operator's state
// description: every struct session lives in sessions.
func sshdV6Patch(t *testing.T) Source {
	t.Helper()
	old, err := elfpatch.Open(testutil.Build(t, "sshd-v5"))
	require.NoError(t, err)
	nb, err := elfpatch.Open(testutil.Build(t, "sshd-v6"))
	require.NoError(t, err)
	rules, err := elfpatch.ReadStateRules(strings.NewReader(`globals:
  - name: sessions
    rules:
      sole_home_of: ["struct session"]
`))
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb, elfpatch.WithRules(rules))
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "sshd-v6.patch")
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return Source{File: file}
}

// sshd v5 -> v6 (struct session gains a member; sessions[64] grows and
// moves into the image) applied live and reverted, while clients run:
// main, housekeeping_thread and every open session's thread never leave
// their stacks, so their frames are switched to the new code (and back);
// every counter keeps its value, every open session keeps its slot, and
// WHOAMI counts commands from the patch on.
func TestTransferSSHDLiveSwitchesFrames(t *testing.T) {
	requirePtrace(t)
	patch := sshdV6Patch(t)
	target, port := testutil.StartServer(t, "sshd-v5", "-u", sshUsers(t), "-t", "4")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	ctx := context.Background()

	lines := 0 // lines the probe sessions sent
	cmd := func(c *sshClient, s string) string { lines++; return c.cmd(s) }
	alice, bob, anon := sshDial(t, port), sshDial(t, port), sshDial(t, port)
	require.Equal(t, "OK welcome alice", cmd(alice, "LOGIN alice wonderland"))
	require.Equal(t, "OK welcome bob", cmd(bob, "LOGIN bob hunter2"))
	require.Equal(t, "OK alice", cmd(alice, "WHOAMI"))
	require.Equal(t, "ERR not logged in", cmd(anon, "WHOAMI"))
	idle := sshDial(t, port) // left idle: the housekeeper must expire it
	before := cmd(alice, "SESSIONS")
	require.Equal(t, "OK 4 1:alice 2:bob 3:- 4:-", before)
	idleSince := time.Now()

	load := sshLoad(t, port, 3)
	time.Sleep(300 * time.Millisecond)
	res, err := Apply(ctx, target.Pid, patch, ApplyOptions{Timeout: 10 * time.Second})
	require.NoError(t, err)
	require.Len(t, res.Transfers, 1)
	require.Equal(t, "sessions", res.Transfers[0].Name)
	require.Equal(t, [2]uint64{7680, 8192}, [2]uint64{res.Transfers[0].OldSize, res.Transfers[0].NewSize})
	switched := map[string]int{}
	for _, s := range res.Switched {
		switched[s.Function]++
	}
	t.Logf("pause %d µs (transfer %d µs); switched %v", res.PauseUS, res.TransferUS, switched)
	require.Equal(t, 1, switched["main"], "the accept loop")
	require.Equal(t, 1, switched["housekeeping_thread"])
	require.GreaterOrEqual(t, switched["session_thread"], 4, "every open session's thread")
	time.Sleep(300 * time.Millisecond)
	conns, loadLines, logins := load()
	t.Logf("%d connections, %d lines, %d logins from the load around the apply", conns, loadLines, logins)
	require.Greater(t, conns, 5)

	// The sessions opened before the patch go on in the new code, in
	// their moved slots.
	require.Equal(t, "OK alice commands=1", cmd(alice, "WHOAMI"), "counted from the patch on")
	require.Equal(t, "OK bob commands=1", cmd(bob, "WHOAMI"))
	require.Equal(t, "OK welcome bob", cmd(anon, "LOGIN bob hunter2"))
	require.Equal(t, "OK bob commands=2", cmd(anon, "WHOAMI"))
	require.Equal(t, "OK a  b", cmd(alice, "ECHO a  b"))
	require.Equal(t, "OK alice commands=3", cmd(alice, "WHOAMI"))
	after := cmd(alice, "SESSIONS")
	require.Equal(t, strings.Replace(before, "3:-", "3:bob", 1), after, "the same sessions, ids and users (anon logged in as bob since)")
	fresh := sshDial(t, port)
	require.Equal(t, "OK welcome alice", cmd(fresh, "LOGIN alice wonderland"))
	require.Equal(t, "OK alice commands=2", cmd(fresh, "WHOAMI"))

	// The housekeeper, switched, walks the moved table with the new
	// stride: the idle session is expired on time.
	// The others are kept active meanwhile (time() has whole seconds:
	// a session quiet for 3.1 s may count as 4).
	var bye string
	for bye == "" {
		require.Less(t, time.Since(idleSince), 10*time.Second, "the idle session was not expired")
		for _, c := range []*sshClient{alice, bob, anon, fresh} {
			require.True(t, strings.HasPrefix(cmd(c, "UPTIME"), "OK "))
		}
		idle.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		l, err := idle.r.ReadString('\n')
		if err == nil {
			bye = strings.TrimSpace(l)
		}
	}
	require.Equal(t, "BYE idle timeout", bye)

	st := sshStats(t, cmd(alice, "STATS"))
	require.Equal(t, 5+conns, st["connections"], "every connection counted: %v", st)
	require.Equal(t, lines+loadLines, st["commands"], "every command counted: %v", st)
	require.Equal(t, 4+logins, st["logins"], "every login counted: %v", st)
	require.Equal(t, 1, st["expired"])

	status, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, status.Patches, 1)
	require.Equal(t, "sessions", status.Patches[0].Transfers[0].Name)

	// Revert under load: the frames go back to the old code, the table
	// back to the old layout.
	for _, c := range []*sshClient{alice, bob, anon, fresh} {
		require.True(t, strings.HasPrefix(cmd(c, "UPTIME"), "OK "))
	}
	load = sshLoad(t, port, 3)
	time.Sleep(300 * time.Millisecond)
	rv, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 10 * time.Second})
	require.NoError(t, err)
	t.Logf("revert: pause %d µs, %d switched back, %d unswitched, pending %v", rv.PauseUS, len(rv.SwitchedBack), rv.Unswitched, rv.Pending)
	time.Sleep(300 * time.Millisecond)
	conns2, loadLines2, logins2 := load()
	require.Equal(t, "OK alice", cmd(alice, "WHOAMI"))
	require.Equal(t, "OK bob", cmd(anon, "WHOAMI"))
	require.Equal(t, "OK alice", cmd(fresh, "WHOAMI"))
	st = sshStats(t, cmd(bob, "STATS"))
	require.Equal(t, 5+conns+conns2, st["connections"], "%v", st)
	require.Equal(t, lines+loadLines+loadLines2, st["commands"], "%v", st)
	require.Equal(t, 4+logins+logins2, st["logins"], "%v", st)
	require.Equal(t, text, exeText(t, target.Pid))

	// Once every switched-back frame has passed, the image goes.
	for _, c := range []*sshClient{alice, bob, anon, fresh} {
		require.Equal(t, "OK", strings.Fields(cmd(c, "UPTIME"))[0])
	}
	sshDial(t, port).cmd("QUIT")
	time.Sleep(300 * time.Millisecond)
	if len(rv.Pending) > 0 {
		rv2, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
		require.NoError(t, err)
		require.Equal(t, rv.Pending, rv2.Reaped)
	}
	require.Empty(t, graftMappings(t, target.Pid))
	require.False(t, target.Exited())
}

// A revert right after the apply, before the waiting calls returned:
// their return addresses are put back (unswitched) and the threads go on
// in the old code, with the old table, as if nothing had happened.
func TestTransferSSHDRevertBeforeSwitchesFire(t *testing.T) {
	requirePtrace(t)
	patch := sshdV6Patch(t)
	target, port := testutil.StartServer(t, "sshd-v5", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	ctx := context.Background()
	alice, bob := sshDial(t, port), sshDial(t, port)
	require.Equal(t, "OK welcome alice", alice.cmd("LOGIN alice wonderland"))
	require.Equal(t, "OK welcome bob", bob.cmd("LOGIN bob hunter2"))

	res, err := Apply(ctx, target.Pid, patch, ApplyOptions{})
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(res.Switched), 3, "main and both session threads")
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Equal(t, len(res.Switched), st.Patches[0].Switched)
	require.GreaterOrEqual(t, st.Patches[0].SwitchWaiting, 3, "accept and both reads have not returned")
	rv, err := Revert(ctx, target.Pid, RevertOptions{})
	require.NoError(t, err)
	t.Logf("unswitched %d, switched back %d, pending %v", rv.Unswitched, len(rv.SwitchedBack), rv.Pending)
	require.GreaterOrEqual(t, rv.Unswitched, 3, "main (accept) and the session threads (read) had not returned")

	require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
	require.Equal(t, "OK bob", bob.cmd("WHOAMI"))
	require.Equal(t, "OK 2 1:alice 2:bob", alice.cmd("SESSIONS"))
	c := sshDial(t, port)
	require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))
	require.Equal(t, "OK 3 1:alice 2:bob 3:alice", c.cmd("SESSIONS"))
	require.Equal(t, text, exeText(t, target.Pid))
	if len(rv.Pending) > 0 {
		time.Sleep(300 * time.Millisecond) // the housekeeper's switch back fires
		rv2, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
		require.NoError(t, err)
		require.Equal(t, rv.Pending, rv2.Reaped)
	}
	require.Empty(t, graftMappings(t, target.Pid))
}

// On top of another patch: sshd v4 -> v5 (a new global, failed_logins,
// in its image; cmd_login and cmd_stats replaced), then v5 -> v6 with
// its frame switches. session_thread, main and housekeeping_thread run
// from the executable (v5 did not change them), sessions is the
// executable's, failed_logins the first image's; every count survives
// both patches and both reverts.
func TestTransferSSHDOnTopOfPatch(t *testing.T) {
	requirePtrace(t)
	patch := sshdV6Patch(t)
	target, port := testutil.StartServer(t, "sshd-v4", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	ctx := context.Background()
	alice := sshDial(t, port)
	require.Equal(t, "OK welcome alice", alice.cmd("LOGIN alice wonderland"))
	_, err := Apply(ctx, target.Pid, newBin(t, "sshd-v5"), ApplyOptions{})
	require.NoError(t, err)
	bad := sshDial(t, port)
	require.Equal(t, "FAIL login incorrect", bad.cmd("LOGIN alice nope"))
	require.Equal(t, "FAIL login incorrect", bad.cmd("LOGIN bob nope"))
	require.Equal(t, 2, sshStats(t, alice.cmd("STATS"))["failed"])

	load := sshLoad(t, port, 2)
	time.Sleep(200 * time.Millisecond)
	res, err := Apply(ctx, target.Pid, patch, ApplyOptions{Timeout: 10 * time.Second})
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond)
	conns, loadLines, logins := load()
	require.NotEmpty(t, res.OnTopOf)
	fns := map[string]int{}
	for _, s := range res.Switched {
		fns[s.Function]++
	}
	t.Logf("pause %d µs, switched %v, %d connections around it", res.PauseUS, fns, conns)
	require.Equal(t, 1, fns["main"])
	require.Equal(t, 1, fns["housekeeping_thread"])
	require.GreaterOrEqual(t, fns["session_thread"], 2)

	require.Equal(t, "OK alice commands=1", alice.cmd("WHOAMI"))
	require.Equal(t, "OK welcome bob", bad.cmd("LOGIN bob hunter2"))
	require.Equal(t, "OK bob commands=2", bad.cmd("WHOAMI"))
	st := sshStats(t, alice.cmd("STATS"))
	require.Equal(t, 2, st["failed"], "failed_logins (the first image's) kept: %v", st)
	require.Equal(t, 2+logins, st["logins"], "%v", st)
	require.Equal(t, 2+conns, st["connections"], "%v", st)
	require.Equal(t, 8+loadLines, st["commands"], "%v", st)

	// Both out, newest first: v5's behaviour, then v4's.
	_, err = Revert(ctx, target.Pid, RevertOptions{Timeout: 10 * time.Second})
	require.NoError(t, err)
	require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
	st = sshStats(t, alice.cmd("STATS"))
	require.Equal(t, 2, st["failed"])
	require.Equal(t, 2+conns, st["connections"])
	time.Sleep(300 * time.Millisecond) // switched-back frames pass
	_, err = Revert(ctx, target.Pid, RevertOptions{Timeout: 10 * time.Second})
	require.NoError(t, err)
	require.NotContains(t, alice.cmd("STATS"), "failed=")
	require.Equal(t, "OK bob", bad.cmd("WHOAMI"))
	require.Equal(t, text, exeText(t, target.Pid))
	sshDial(t, port).cmd("QUIT")
	time.Sleep(300 * time.Millisecond)
	if st, err := Status(target.Pid); err == nil && len(st.Pending) > 0 {
		_, err := Revert(ctx, target.Pid, RevertOptions{Timeout: 3 * time.Second})
		require.NoError(t, err)
	}
	require.Empty(t, graftMappings(t, target.Pid))
}
