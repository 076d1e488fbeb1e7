package graft

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/safepoint"
	"graft/tracer"
)

// Integration tests: real targets from testprocs, real clients, graft's
// exported API. Each test ends with testutil.RequireReleased.

// sshClient is one connection to testprocs/sshd (line protocol).
type sshClient struct {
	t      *testing.T
	conn   net.Conn
	r      *bufio.Reader
	banner string
}

func sshDial(t *testing.T, port int) *sshClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &sshClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.banner = c.line()
	return c
}

func (c *sshClient) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	require.NoError(c.t, err, "read from sshd")
	return strings.TrimRight(l, "\r\n")
}

func (c *sshClient) cmd(s string) string {
	c.t.Helper()
	_, err := fmt.Fprintf(c.conn, "%s\n", s)
	require.NoError(c.t, err)
	return c.line()
}

func sshUsers(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(p, []byte("alice:wonderland\nbob:hunter2\n"), 0o644))
	return p
}

// exeText returns the bytes of the target's executable (r-xp) mapping of
// its main program, read through /proc/PID/mem.
func exeText(t *testing.T, pid int) []byte {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	require.NoError(t, err)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(t, err)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	require.NoError(t, err)
	defer mem.Close()
	var out []byte
	for _, l := range strings.Split(string(maps), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || f[5] != exe || !strings.Contains(f[1], "x") {
			continue
		}
		var lo, hi uint64
		_, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi)
		require.NoError(t, err)
		b := make([]byte, hi-lo)
		_, err = mem.ReadAt(b, int64(lo))
		require.NoError(t, err)
		out = append(out, b...)
	}
	require.NotEmpty(t, out, "no executable mapping of %s in pid %d", exe, pid)
	return out
}

// graftMappings lists the lines of /proc/PID/maps graft put there.
func graftMappings(t *testing.T, pid int) []string {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "/memfd:graft") {
			out = append(out, l)
		}
	}
	return out
}

func newBin(t *testing.T, target string) Source {
	return Source{NewBinary: testutil.Build(t, target)}
}

// sshPair is one documented sshd version pair: a command whose reply
// differs, and how (testprocs/sshd/VERSIONS.md).
type sshPair struct {
	from, to int
	funcs    []string
	// probe runs on a logged-in connection and returns what differs.
	probe    func(c *sshClient) string
	old, new func(t *testing.T, got string)
}

func equals(want string) func(t *testing.T, got string) {
	return func(t *testing.T, got string) { t.Helper(); require.Equal(t, want, got) }
}

var sshPairs = []sshPair{
	{from: 1, to: 2, funcs: []string{"cmd_login"},
		// On a connection of its own (c may be logged in already): a
		// prefix of bob's password.
		probe: func(c *sshClient) string {
			port := c.conn.RemoteAddr().(*net.TCPAddr).Port
			return sshDial(c.t, port).cmd("LOGIN bob hunt")
		},
		old: equals("OK welcome bob"), new: equals("FAIL login incorrect")},
	{from: 2, to: 3, funcs: []string{"cmd_echo"},
		probe: func(c *sshClient) string { return c.cmd("ECHO a b c") },
		old:   equals("OK a"), new: equals("OK a b c")},
	{from: 3, to: 4, funcs: []string{"cmd_version", "send_banner"},
		probe: func(c *sshClient) string { return c.cmd("VERSION") },
		old:   equals("OK SSH-2.0-graftssh_1.0"), new: equals("OK SSH-2.0-graftssh_1.1")},
	{from: 4, to: 5, funcs: []string{"cmd_login", "cmd_stats"},
		probe: func(c *sshClient) string { return c.cmd("STATS") },
		old: func(t *testing.T, got string) {
			t.Helper()
			require.True(t, strings.HasPrefix(got, "OK connections="), got)
			require.NotContains(t, got, "failed=")
		},
		new: func(t *testing.T, got string) {
			t.Helper()
			require.True(t, strings.HasPrefix(got, "OK connections="), got)
			require.Contains(t, got, "failed=")
		}},
}

// statsField returns a counter of sshd's STATS reply: state that must
// survive patching.
func statsField(t *testing.T, stats, name string) int {
	t.Helper()
	for _, f := range strings.Fields(stats) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no %s= in %q", name, stats)
	return 0
}

func TestApplySSHDPairs(t *testing.T) {
	requirePtrace(t)
	for _, pr := range sshPairs {
		t.Run(fmt.Sprintf("v%d-v%d", pr.from, pr.to), func(t *testing.T) {
			target, port := testutil.StartServer(t, fmt.Sprintf("sshd-v%d", pr.from), "-u", sshUsers(t))
			defer testutil.RequireReleased(t, target.Pid)
			text := exeText(t, target.Pid)

			// State before the patch: alice logged in on an open
			// connection, another connection open and not logged in.
			alice := sshDial(t, port)
			require.Equal(t, "OK welcome alice", alice.cmd("LOGIN alice wonderland"))
			idle := sshDial(t, port)
			pr.old(t, pr.probe(alice))
			before := alice.cmd("STATS")

			res, err := Apply(context.Background(), target.Pid, newBin(t, fmt.Sprintf("sshd-v%d", pr.to)), ApplyOptions{})
			require.NoError(t, err)
			require.ElementsMatch(t, pr.funcs, res.Functions)
			require.Greater(t, res.PauseUS, int64(0))
			testutil.RequireReleased(t, target.Pid)

			// New behaviour: on a new connection, on the connection that
			// was open and idle, and on the logged-in one.
			fresh := sshDial(t, port)
			require.Equal(t, "OK welcome alice", fresh.cmd("LOGIN alice wonderland"))
			pr.new(t, pr.probe(fresh))
			require.Equal(t, "OK welcome bob", idle.cmd("LOGIN bob hunter2"))
			pr.new(t, pr.probe(idle))
			pr.new(t, pr.probe(alice))
			// State kept: alice still logged in, counters went on.
			require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
			after := alice.cmd("STATS")
			require.Greater(t, statsField(t, after, "connections"), statsField(t, before, "connections"))
			require.GreaterOrEqual(t, statsField(t, after, "logins"), statsField(t, before, "logins")+2)

			st, err := Status(target.Pid)
			require.NoError(t, err)
			require.Len(t, st.Patches, 1)
			require.Equal(t, res.PatchID, st.Patches[0].ID)
			require.ElementsMatch(t, pr.funcs, st.Patches[0].Functions)
			require.True(t, st.Patches[0].Intact)
			require.Empty(t, st.Orphans, "the loaded image is recorded")

			rr, err := Revert(context.Background(), target.Pid, RevertOptions{})
			require.NoError(t, err)
			require.Equal(t, []string{res.PatchID}, rr.Reverted)
			pr.old(t, pr.probe(alice))
			require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
			require.GreaterOrEqual(t, statsField(t, alice.cmd("STATS"), "logins"), statsField(t, after, "logins"))
			again := sshDial(t, port)
			require.Equal(t, "OK welcome alice", again.cmd("LOGIN alice wonderland"))
			pr.old(t, pr.probe(again))

			require.Equal(t, text, exeText(t, target.Pid), "text byte-identical after revert")
			require.Empty(t, graftMappings(t, target.Pid), "nothing of graft left in the target")
			require.False(t, target.Exited())
		})
	}
}

// The bypass fix of v1->v2 is the one probe that needs no login: check it
// the way an attacker would, on a connection opened before the patch.
func TestApplySSHDOpenConnectionUnauthenticated(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v1", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	open := sshDial(t, port)
	_, err := Apply(context.Background(), target.Pid, newBin(t, "sshd-v2"), ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, "FAIL login incorrect", open.cmd("LOGIN alice wonder"))
	require.Equal(t, "FAIL login incorrect", open.cmd("LOGIN alice "))
	require.Equal(t, "OK welcome alice", open.cmd("LOGIN alice wonderland"))
}

func TestStackedSSHD(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v1", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	alice := sshDial(t, port)
	require.Equal(t, "OK welcome alice", alice.cmd("LOGIN alice wonderland"))

	var ids []string
	for _, pr := range sshPairs {
		res, err := Apply(context.Background(), target.Pid, newBin(t, fmt.Sprintf("sshd-v%d", pr.to)), ApplyOptions{})
		require.NoError(t, err, "v%d -> v%d on top of %v", pr.from, pr.to, ids)
		if len(ids) > 0 {
			require.Equal(t, ids[len(ids)-1], res.OnTopOf)
		}
		ids = append(ids, res.PatchID)
		testutil.RequireReleased(t, target.Pid)
		// Every change so far is in effect at once.
		c := sshDial(t, port)
		require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))
		for _, done := range sshPairs[:len(ids)] {
			done.new(t, done.probe(c))
		}
		require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
	}
	// v1 -> v2 fixed cmd_login, v4 -> v5 changed it again: the v1 entry
	// jumps straight to v5's cmd_login.
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, len(sshPairs))
	top := st.Patches[len(st.Patches)-1]
	redirected := 0
	for _, r := range top.Redirects {
		if r.Name == "cmd_login" {
			redirected++
			found := false
			for _, s := range top.Sites {
				if s.Func == "cmd_login" && s.Target == r.New {
					found = true
				}
			}
			require.True(t, found, "a cmd_login jump goes straight to v5's version")
		}
	}
	require.Equal(t, 1, redirected, "the top patch (v4 -> v5) redirects cmd_login once: %+v", top.Redirects)

	// A patch from v5 to v6 changes a struct's layout: refused, untouched.
	patched := exeText(t, target.Pid)
	_, err = Apply(context.Background(), target.Pid, newBin(t, "sshd-v6"), ApplyOptions{})
	require.ErrorIs(t, err, ErrRefused)
	require.Contains(t, err.Error(), "struct session")
	require.Equal(t, patched, exeText(t, target.Pid))

	// Take them off one at a time, newest first; behaviour steps back.
	for i := len(sshPairs) - 1; i >= 0; i-- {
		rr, err := Revert(context.Background(), target.Pid, RevertOptions{})
		require.NoError(t, err)
		require.Equal(t, []string{ids[i]}, rr.Reverted)
		c := sshDial(t, port)
		require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))
		sshPairs[i].old(t, sshPairs[i].probe(c))
		for _, done := range sshPairs[:i] {
			done.new(t, done.probe(c))
		}
	}
	require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

func TestRefusedLeavesTargetUntouched(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v5", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)

	// A global whose type layout changed.
	_, err := Apply(context.Background(), target.Pid, newBin(t, "sshd-v6"), ApplyOptions{})
	require.ErrorIs(t, err, ErrRefused)
	require.Contains(t, err.Error(), "layout")

	// A patch file made for another build.
	old, err := elfpatch.Open(testutil.Build(t, "sshd-v2"))
	require.NoError(t, err)
	nb, err := elfpatch.Open(testutil.Build(t, "sshd-v3"))
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "v2-v3.patch")
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{})
	require.ErrorIs(t, err, ErrBuildIDMismatch)

	require.Equal(t, text, exeText(t, target.Pid))
	// (The server maps thread stacks of its own meanwhile; graft nothing.)
	require.Empty(t, graftMappings(t, target.Pid))
	tp, err := testutil.TracerPid(target.Pid)
	require.NoError(t, err)
	require.Zero(t, tp, "left untraced")
	c := sshDial(t, port)
	require.Equal(t, "OK bye", c.cmd("QUIT"))
}

// ftpd forks a session process per client: a patch to the listener reaches
// every session forked after it.
func TestApplyFTPDGreeting(t *testing.T) {
	requirePtrace(t)
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello\n"), 0o644))
	target, port := testutil.StartServer(t, "ftpd-v1", "-d", root)
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)

	greet := func() (string, *textproto.Conn) {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		tp := textproto.NewConn(conn)
		code, msg, err := tp.ReadResponse(220)
		require.NoError(t, err)
		return fmt.Sprintf("%d %s", code, msg), tp
	}
	g, open := greet()
	require.Equal(t, "220 (graftftpd 1.0)", g)

	res, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v2"), ApplyOptions{})
	require.NoError(t, err)
	require.Contains(t, res.Functions, "session_main")
	testutil.RequireReleased(t, target.Pid)

	g, c := greet()
	require.Equal(t, "220 (graftftpd 1.1)", g)
	// The session forked before the patch is a process of its own, with
	// the old code: it keeps working.
	for _, tp := range []*textproto.Conn{open, c} {
		require.NoError(t, tp.PrintfLine("USER anonymous"))
		code, _, err := tp.ReadResponse(331)
		require.NoError(t, err, "code %d", code)
	}

	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	g, _ = greet()
	require.Equal(t, "220 (graftftpd 1.0)", g)
	require.Equal(t, text, exeText(t, target.Pid))
}

// A changed function that never leaves the stack (the accept loop) makes
// apply wait, time out and leave the target as it was, naming the function;
// --allow-active lets it in.
func TestActiveFunctionNeedsAllowActive(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)

	_, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v8"), ApplyOptions{Timeout: 300 * time.Millisecond})
	require.ErrorIs(t, err, safepoint.ErrActive)
	require.Contains(t, err.Error(), "accept_loop")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
	testutil.RequireReleased(t, target.Pid)

	res, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v8"), ApplyOptions{AllowActive: []string{"accept_loop"}})
	require.NoError(t, err)
	require.Contains(t, res.Functions, "accept_loop")
	testutil.RequireReleased(t, target.Pid)
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err, "the old accept loop keeps serving")
	conn.Close()
}

// Cancelling (what SIGINT/SIGTERM do to graft) while apply waits for a safe
// point leaves the target as it was and detached.
func TestCancelledApplyLeavesTargetAsBefore(t *testing.T) {
	requirePtrace(t)
	target, _ := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := Apply(ctx, target.Pid, newBin(t, "ftpd-v8"), ApplyOptions{Timeout: time.Minute})
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 30*time.Second, "cancel ended the wait")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// The target dying mid-apply is an error, not a hang.
func TestTargetExitsMidApply(t *testing.T) {
	requirePtrace(t)
	target, _ := testutil.StartServer(t, "ftpd-v7", "-d", t.TempDir())
	time.AfterFunc(300*time.Millisecond, func() { target.Cmd.Process.Kill() })
	_, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v8"), ApplyOptions{Timeout: time.Minute})
	t.Log(err)
	require.ErrorIs(t, err, tracer.ErrProcessExited, "the error says the target exited")
	require.False(t, errors.Is(err, context.Canceled))
}

// graftMapped sums the bytes of graft's mappings in pid: loaded images and
// the record.
func graftMapped(t *testing.T, pid int) (images, record uint64) {
	t.Helper()
	for _, l := range graftMappings(t, pid) {
		var lo, hi uint64
		_, err := fmt.Sscanf(strings.Fields(l)[0], "%x-%x", &lo, &hi)
		require.NoError(t, err)
		if strings.Contains(l, stateMapPrefix) {
			record += hi - lo
		} else {
			images += hi - lo
		}
	}
	return images, record
}

// Fifty patches stacked on one process (v2->v3, v3->v2, ... of cmd_echo):
// each supersedes the one below, whose code is unmapped, so the memory
// graft maps stays bounded; behaviour follows every step; one revert takes
// the whole chain of unloaded patches out.
func TestManyStackedPatchesStayBounded(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	c := sshDial(t, port)
	require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))
	v2, v3 := newBin(t, "sshd-v2"), newBin(t, "sshd-v3")

	var firstImages, maxImages uint64
	var pauses []time.Duration
	const n = 50
	for i := range n {
		src, want := v3, "OK a b c"
		if i%2 == 1 {
			src, want = v2, "OK a"
		}
		res, err := Apply(context.Background(), target.Pid, src, ApplyOptions{})
		require.NoError(t, err, "patch %d", i+1)
		if i > 0 {
			require.Len(t, res.Unloaded, 1, "patch %d supersedes the one below", i+1)
		}
		require.Equal(t, want, c.cmd("ECHO a b c"), "after patch %d", i+1)
		pauses = append(pauses, time.Duration(res.PauseUS)*time.Microsecond)
		images, _ := graftMapped(t, target.Pid)
		if i == 0 {
			firstImages = images
		}
		maxImages = max(maxImages, images)
	}
	require.Positive(t, firstImages, "the first patch's image is mapped as /memfd:graft-*")
	images, record := graftMapped(t, target.Pid)
	t.Logf("after %d stacked patches: %d bytes of images (one patch: %d; most at any time: %d), record mapping %d bytes; pause of the first patch %v, median of the rest %v",
		n, images, firstImages, maxImages, record, pauses[0], median(pauses[1:]))
	require.Equal(t, firstImages, images, "one image mapped, as after the first patch")
	require.Equal(t, firstImages, maxImages)
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, n)
	hdr := make([]byte, stateHeaderSize)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", target.Pid))
	require.NoError(t, err)
	_, err = mem.ReadAt(hdr, int64(st.Record))
	mem.Close()
	require.NoError(t, err)
	t.Logf("record body after %d patches: %d bytes", n, binary.LittleEndian.Uint64(hdr[24:]))
	for _, p := range st.Patches[:n-1] {
		require.True(t, p.Unloaded)
	}

	rr, err := Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Len(t, rr.Reverted, n)
	require.Equal(t, "OK a", c.cmd("ECHO a b c"))
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// ftpSession is one logged-in FTP control connection.
type ftpSession struct {
	t      *testing.T
	tp     *textproto.Conn
	greet  string
	port   int
	closer func()
}

func ftpLogin(t *testing.T, port int) *ftpSession {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	s := &ftpSession{t: t, tp: textproto.NewConn(conn), port: port}
	code, msg, err := s.tp.ReadResponse(220)
	require.NoError(t, err)
	s.greet = fmt.Sprintf("%d %s", code, msg)
	require.Equal(t, "331 Please specify the password.", s.cmd("USER anonymous"))
	require.Equal(t, "230 Login successful.", s.cmd("PASS guest@"))
	return s
}

// cmd sends a command and returns the reply "CODE MSG" (lines of a
// multi-line reply joined with \n).
func (s *ftpSession) cmd(line string) string {
	s.t.Helper()
	require.NoError(s.t, s.tp.PrintfLine("%s", line))
	code, msg, err := s.tp.ReadResponse(0)
	if err != nil && code == 0 {
		s.t.Fatalf("%s: %v", line, err)
	}
	return fmt.Sprintf("%d %s", code, msg)
}

// retrPrelim returns the preliminary (150) reply of RETR name over PASV.
func (s *ftpSession) retrPrelim(name string) string {
	s.t.Helper()
	pasv := s.cmd("PASV")
	i, j := strings.IndexByte(pasv, '('), strings.IndexByte(pasv, ')')
	require.True(s.t, i > 0 && j > i, pasv)
	var h [6]int
	_, err := fmt.Sscanf(pasv[i+1:j], "%d,%d,%d,%d,%d,%d", &h[0], &h[1], &h[2], &h[3], &h[4], &h[5])
	require.NoError(s.t, err)
	data, err := net.DialTimeout("tcp", fmt.Sprintf("%d.%d.%d.%d:%d", h[0], h[1], h[2], h[3], h[4]*256+h[5]), 5*time.Second)
	require.NoError(s.t, err)
	defer data.Close()
	prelim := s.cmd("RETR " + name)
	io.Copy(io.Discard, data)
	data.Close()
	_, _, err = s.tp.ReadResponse(226)
	require.NoError(s.t, err)
	return prelim
}

// ftpTree makes ROOT (hello.txt, sub/) with secret.txt beside it.
func ftpTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello world\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret\n"), 0o644))
	return root
}

type ftpPair struct {
	from, to int
	probe    func(s *ftpSession) string
	old, new func(t *testing.T, got string)
}

func contains(want string) func(t *testing.T, got string) {
	return func(t *testing.T, got string) { t.Helper(); require.Contains(t, got, want) }
}

func lacks(want string) func(t *testing.T, got string) {
	return func(t *testing.T, got string) { t.Helper(); require.NotContains(t, got, want) }
}

// The auto pairs of testprocs/ftpd/VERSIONS.md (v6->v7 is a layout change,
// v7->v8 changes the accept loop: tested on their own).
var ftpPairs = []ftpPair{
	{1, 2, func(s *ftpSession) string { return s.greet },
		equals("220 (graftftpd 1.0)"), equals("220 (graftftpd 1.1)")},
	{2, 3, func(s *ftpSession) string { return s.cmd("SIZE sub") },
		func(t *testing.T, got string) { t.Helper(); require.True(t, strings.HasPrefix(got, "213 "), got) },
		equals("550 Could not get file size.")},
	{3, 4, func(s *ftpSession) string { return s.cmd("SIZE ../secret.txt") },
		equals("213 7"), equals("550 Could not get file size.")},
	{4, 5, func(s *ftpSession) string { s.cmd("TYPE I"); return s.retrPrelim("hello.txt") },
		equals("150 Opening BINARY mode data connection."),
		equals("150 Opening BINARY mode data connection for hello.txt.")},
	{5, 6, func(s *ftpSession) string { return s.cmd("STAT") },
		lacks("Files sent in this session"), contains("Files sent in this session: 0")},
}

// ftpd forks a session process per client: a patch to the listener reaches
// every session forked after it; sessions forked before keep the old code
// (they are processes of their own), and keep working.
func TestApplyFTPDPairs(t *testing.T) {
	requirePtrace(t)
	for _, pr := range ftpPairs {
		t.Run(fmt.Sprintf("v%d-v%d", pr.from, pr.to), func(t *testing.T) {
			target, port := testutil.StartServer(t, fmt.Sprintf("ftpd-v%d", pr.from), "-d", ftpTree(t))
			defer testutil.RequireReleased(t, target.Pid)
			text := exeText(t, target.Pid)
			open := ftpLogin(t, port)
			pr.old(t, pr.probe(open))

			res, err := Apply(context.Background(), target.Pid, newBin(t, fmt.Sprintf("ftpd-v%d", pr.to)), ApplyOptions{})
			require.NoError(t, err)
			testutil.RequireReleased(t, target.Pid)
			pr.new(t, pr.probe(ftpLogin(t, port)))
			pr.old(t, pr.probe(open))

			st, err := Status(target.Pid)
			require.NoError(t, err)
			require.Len(t, st.Patches, 1)
			require.ElementsMatch(t, res.Functions, st.Patches[0].Functions)

			_, err = Revert(context.Background(), target.Pid, RevertOptions{})
			require.NoError(t, err)
			pr.old(t, pr.probe(ftpLogin(t, port)))
			require.Equal(t, "221 Goodbye.", open.cmd("QUIT"))
			require.Equal(t, text, exeText(t, target.Pid))
			require.Empty(t, graftMappings(t, target.Pid))
		})
	}
}

// A dry run stops the target to check, and writes nothing.
func TestDryRunTouchesNothing(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v1", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	res, err := Apply(context.Background(), target.Pid, newBin(t, "sshd-v2"), ApplyOptions{DryRun: true})
	require.NoError(t, err)
	require.True(t, res.DryRun)
	require.Equal(t, []string{"cmd_login"}, res.Functions)
	require.Len(t, res.Sites, 1)
	require.Greater(t, res.PauseUS, int64(0), "the check stopped the target")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Empty(t, st.Patches)
	require.Equal(t, "OK welcome bob", sshDial(t, port).cmd("LOGIN bob hunt"), "still v1")
}

// ftpd v1 -> v6 stacked on one listener: every documented change is in
// effect at once for new sessions; revert --all takes all of them out.
func TestStackedFTPD(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v1", "-d", ftpTree(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	for k, pr := range ftpPairs {
		res, err := Apply(context.Background(), target.Pid, newBin(t, fmt.Sprintf("ftpd-v%d", pr.to)), ApplyOptions{})
		require.NoError(t, err, "v%d -> v%d", pr.from, pr.to)
		require.Equal(t, k > 0, res.OnTopOf != "")
		for _, done := range ftpPairs[:k+1] {
			done.new(t, done.probe(ftpLogin(t, port)))
		}
		for _, todo := range ftpPairs[k+1:] {
			todo.old(t, todo.probe(ftpLogin(t, port)))
		}
	}
	rr, err := Revert(context.Background(), target.Pid, RevertOptions{All: true})
	require.NoError(t, err)
	require.Len(t, rr.Reverted, len(ftpPairs))
	for _, pr := range ftpPairs {
		pr.old(t, pr.probe(ftpLogin(t, port)))
	}
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// hammer logs conns clients in to sshd and has each send ECHO a b c in a
// loop; the returned function stops them and returns how many replies came
// from a v2 (first word only) and a v3 (whole text) cmd_echo, failing the
// test on any other reply or a broken connection.
func hammer(t *testing.T, port, conns int) func() [2]int {
	t.Helper()
	stop := make(chan struct{})
	type result struct {
		n   [2]int
		err error
	}
	results := make(chan result, conns)
	for range conns {
		c := sshDial(t, port)
		require.Equal(t, "OK welcome alice", c.cmd("LOGIN alice wonderland"))
		go func() {
			var r result
			defer func() { results <- r }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, r.err = fmt.Fprintf(c.conn, "ECHO a b c\n"); r.err != nil {
					return
				}
				c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				l, err := c.r.ReadString('\n')
				switch {
				case err != nil:
					r.err = err
					return
				case l == "OK a\n":
					r.n[0]++
				case l == "OK a b c\n":
					r.n[1]++
				default:
					r.err = fmt.Errorf("reply %q", l)
					return
				}
			}
		}()
	}
	return func() [2]int {
		close(stop)
		var total [2]int
		for range conns {
			r := <-results
			require.NoError(t, r.err)
			total[0] += r.n[0]
			total[1] += r.n[1]
		}
		return total
	}
}

// Patching and reverting again and again while clients hammer the very
// function being replaced: every reply is one version's or the other's,
// no connection breaks, and the server ends as it began.
func TestApplyRevertUnderLoad(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	done := hammer(t, port, 4)
	for range 5 {
		_, err := Apply(context.Background(), target.Pid, newBin(t, "sshd-v3"), ApplyOptions{})
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
		_, err = Revert(context.Background(), target.Pid, RevertOptions{})
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
	}
	total := done()
	t.Logf("replies: %d from v2, %d from v3", total[0], total[1])
	require.Positive(t, total[0])
	require.Positive(t, total[1], "the new version answered while applied")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// Stacked patches that supersede each other under the same load: the code
// of each superseded patch is still unmapped (no frame can be in it once
// the safe point was reached), so one image stays mapped.
func TestStackedUnderLoadStaysBounded(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "sshd-v2", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	done := hammer(t, port, 4)
	v2, v3 := newBin(t, "sshd-v2"), newBin(t, "sshd-v3")
	var first uint64
	for i := range 20 {
		src := v3
		if i%2 == 1 {
			src = v2
		}
		res, err := Apply(context.Background(), target.Pid, src, ApplyOptions{})
		require.NoError(t, err, "patch %d", i+1)
		if i > 0 {
			require.Len(t, res.Unloaded, 1, "patch %d", i+1)
		}
		images, _ := graftMapped(t, target.Pid)
		if i == 0 {
			first = images
			require.Positive(t, first, "the first patch's image is mapped as /memfd:graft-*")
		}
		require.Equal(t, first, images, "after patch %d", i+1)
		time.Sleep(10 * time.Millisecond)
	}
	total := done()
	t.Logf("replies: %d from v2, %d from v3", total[0], total[1])
	require.Positive(t, total[1])
	_, err := Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}
