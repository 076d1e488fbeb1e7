package playbook

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft"
	"graft/internal/testutil"
)

// copyExe copies a testprocs build to a file of the test's own: the exe
// selector matches by inode, so the playbook sees this test's servers only,
// never those other tests (other packages run in parallel) start from the
// shared build.
func copyExe(t *testing.T, target, name string) string {
	t.Helper()
	b, err := os.ReadFile(testutil.Build(t, target))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, b, 0o755))
	return path
}

// startAt starts the server at path on a free port and waits until that
// very process listens (testutil.StartServer for a copied executable).
func startAt(t *testing.T, path string, extra ...string) (*testutil.Proc, int) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port := testutil.FreePort(t)
		p := testutil.Start(t, path, append([]string{strconv.Itoa(port)}, extra...)...)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !p.Exited() {
			if testutil.ListensOn(p.Pid, port) {
				return p, port
			}
			time.Sleep(10 * time.Millisecond)
		}
		require.False(t, !p.Exited(), "%s does not listen on %d", path, port)
	}
	t.Fatalf("%s exited at start 5 times", path)
	return nil, 0
}

// sshdLogin sends one LOGIN and returns the reply (after the banner).
func sshdLogin(t *testing.T, port int, user, pass string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	_, err = r.ReadString('\n')
	require.NoError(t, err)
	fmt.Fprintf(c, "LOGIN %s %s\n", user, pass)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	return strings.TrimRight(line, "\r\n")
}

func writePlaybook(t *testing.T, text string) *Playbook {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pb.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	pb, err := Load(path)
	require.NoError(t, err)
	return pb
}

type lines struct {
	mu sync.Mutex
	l  []string
	on func(string)
}

func (l *lines) add(s string) {
	l.mu.Lock()
	l.l = append(l.l, s)
	on := l.on
	l.mu.Unlock()
	if on != nil {
		on(s)
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.l, "\n")
}

func byPid(rep *Report) map[int]*TargetReport {
	m := map[int]*TargetReport{}
	for _, t := range rep.Targets {
		m[t.Pid] = t
	}
	return m
}

// requireCountsAddUp checks the recap's invariant.
func requireCountsAddUp(t *testing.T, rep *Report) {
	t.Helper()
	sum := 0
	for _, n := range rep.Counts {
		sum += n
	}
	require.Equal(t, rep.Total, sum, "counts %v", rep.Counts)
	require.Equal(t, len(rep.Targets), rep.Total)
}

// patches returns the ids of the patches in effect in pid (nil: no record
// at all, the process as it was before any graft).
func patches(t *testing.T, pid int) []string {
	t.Helper()
	st, err := graft.Status(pid)
	require.NoError(t, err)
	if st.Record == 0 {
		return nil
	}
	var ids []string
	for _, p := range st.Patches {
		ids = append(ids, p.ID)
	}
	return ids
}

const sshdHealthy = `
checks:
  - name: answers
    tcp: {send: "VERSION\n", expect: "OK SSH-2.0"}
    period: 100ms
`

// Three servers of one executable: the canary alone first, then the rest;
// each really runs the fixed cmd_login afterwards.
func TestPlayCanaryThenRest(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var ports []int
	var pids []int
	for i := 0; i < 3; i++ {
		p, port := startAt(t, exe)
		pids, ports = append(pids, p.Pid), append(ports, port)
		require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "sec"), "v1 lets a password prefix in")
	}
	pb := writePlaybook(t, fmt.Sprintf(`name: sshd login fix
patch: {new: %s}
targets:
  - exe: %s
rollout:
  batches: [1, "100%%"]
  on_failure: rollback
`, testutil.Build(t, "sshd-v2"), exe)+sshdHealthy)
	var prog lines
	rep := Run(context.Background(), pb, Options{Progress: prog.add})
	t.Log(prog.String())
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	require.Equal(t, 2, rep.Batches)
	requireCountsAddUp(t, rep)
	require.Equal(t, 3, rep.Counts[Applied])
	got := byPid(rep)
	// The canary is the lowest pid, alone in batch 1.
	require.Equal(t, 1, got[pids[0]].Batch)
	require.Equal(t, 2, got[pids[1]].Batch)
	require.Equal(t, 2, got[pids[2]].Batch)
	for i, pid := range pids {
		tr := got[pid]
		require.Equal(t, Applied, tr.Outcome)
		require.True(t, tr.Patched)
		require.Equal(t, []string{"cmd_login"}, tr.Functions)
		require.Equal(t, []string{tr.PatchID}, patches(t, pid))
		require.Len(t, tr.Checks, 2, "baseline and after")
		require.Equal(t, "FAIL login incorrect", sshdLogin(t, ports[i], "alice", "sec"))
		require.Equal(t, "OK welcome alice", sshdLogin(t, ports[i], "alice", "secret"))
		testutil.RequireReleased(t, pid)
	}
	// The canary's batch finished (checks included) before batch 2 began.
	out := prog.String()
	require.Equal(t, 1, strings.Count(out, "patch from build"), "one diff for three processes of one build:\n%s", out)
	require.Less(t, strings.Index(out, fmt.Sprintf("pid %d: checks after the patch passed", pids[0])),
		strings.Index(out, "batch 2"), out)

	// Again: every target already runs the NEW build.
	rep = Run(context.Background(), pb, Options{})
	require.Equal(t, ExitOK, rep.ExitCode)
	require.Equal(t, 3, rep.Counts[AlreadyApplied])
	requireCountsAddUp(t, rep)
}

// A check that fails once the canary is patched rolls the canary back,
// fails the run and never touches the other two.
func TestPlayFailedCanaryRollsBack(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var pids, ports []int
	for i := 0; i < 3; i++ {
		p, port := startAt(t, exe)
		pids, ports = append(pids, p.Pid), append(ports, port)
	}
	// The check holds on v1 (a prefix logs in) and no longer once
	// patched: a check that encodes the wrong expectation, as a bad
	// rollout would meet it.
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets: [{exe: %s}]
rollout: {batches: [1, "100%%"], on_failure: rollback}
checks:
  - name: prefix login
    tcp: {send: "LOGIN alice sec\n", expect: "OK welcome alice"}
    period: 50ms
    failure_threshold: 2
`, testutil.Build(t, "sshd-v2"), exe))
	rep := Run(context.Background(), pb, Options{})
	require.Equal(t, ExitFailed, rep.ExitCode)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	canary := got[pids[0]]
	require.Equal(t, FailedRolledBack, canary.Outcome, canary.Error)
	require.False(t, canary.Patched)
	require.NotEmpty(t, canary.PatchID)
	require.Contains(t, rep.Failure, `check "prefix login" failed after the patch`)
	require.Nil(t, patches(t, pids[0]), "the canary's patch was reverted: no record left")
	require.Equal(t, "OK welcome alice", sshdLogin(t, ports[0], "alice", "sec"), "the canary runs v1 again")
	for _, pid := range pids[1:] {
		require.Equal(t, NotReached, got[pid].Outcome)
		require.Nil(t, patches(t, pid), "pid %d was touched", pid)
		require.Empty(t, got[pid].Checks, "no check ran on pid %d", pid)
	}
	require.Equal(t, 1, rep.Counts[FailedRolledBack])
	require.Equal(t, 2, rep.Counts[NotReached])
	for _, pid := range pids {
		testutil.RequireReleased(t, pid)
	}
}

// A target whose baseline check fails is skipped and never patched; the
// others are patched; the exit status says the rollout is incomplete.
func TestPlaySkipsUnhealthy(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var pids []int
	for i := 0; i < 3; i++ {
		p, _ := startAt(t, exe)
		pids = append(pids, p.Pid)
	}
	marks := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(marks, "sick-"+strconv.Itoa(pids[1])), nil, 0o644))
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets: [{exe: %s}]
rollout: {batches: [1, "100%%"]}
checks:
  - name: not marked sick
    exec: [sh, -c, "test ! -e %s/sick-${pid} && echo healthy ${pid}"]
    expect: {exit: 0, stdout: "^healthy [0-9]+$"}
    period: 20ms
    failure_threshold: 2
`, testutil.Build(t, "sshd-v2"), exe, marks))
	rep := Run(context.Background(), pb, Options{})
	require.Equal(t, ExitIncomplete, rep.ExitCode, rep.Failure)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	sick := got[pids[1]]
	require.Equal(t, SkippedUnhealthy, sick.Outcome)
	require.Contains(t, sick.Error, "exit status 1, want 0")
	require.Len(t, sick.Checks, 1)
	require.Equal(t, 2, sick.Checks[0].Attempts, "failure_threshold attempts")
	require.Nil(t, patches(t, pids[1]), "the unhealthy target was touched")
	for _, pid := range []int{pids[0], pids[2]} {
		require.Equal(t, Applied, got[pid].Outcome, got[pid].Error)
		require.Len(t, patches(t, pid), 1)
	}
}

// --check resolves, builds the patch and runs the baseline checks, and
// writes nothing: no process has a record afterwards.
func TestPlayCheckWritesNothing(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var pids []int
	for i := 0; i < 3; i++ {
		p, _ := startAt(t, exe)
		pids = append(pids, p.Pid)
	}
	pb := writePlaybook(t, fmt.Sprintf("patch: {new: %s}\ntargets: [{exe: %s}]\nrollout: {batches: [1, \"50%%\"]}\n",
		testutil.Build(t, "sshd-v2"), exe)+sshdHealthy)
	rep := Run(context.Background(), pb, Options{Check: true})
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	require.True(t, rep.Check)
	requireCountsAddUp(t, rep)
	require.Equal(t, 3, rep.Counts[WouldApply])
	got := byPid(rep)
	require.Equal(t, []int{1, 2, 3}, []int{got[pids[0]].Batch, got[pids[1]].Batch, got[pids[2]].Batch}, "batches [1, 50%%] of 3")
	for _, pid := range pids {
		require.Len(t, got[pid].Checks, 1, "baseline check ran")
		require.Nil(t, patches(t, pid), "--check wrote into pid %d", pid)
		maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		require.NoError(t, err)
		require.NotContains(t, string(maps), "memfd:graft", "--check mapped something into pid %d", pid)
	}

	// A patch that does not fit is a failure already in --check.
	bad := writePlaybook(t, fmt.Sprintf("patch: {new: %s}\ntargets: [{pid: %d}]\n", testutil.Build(t, "ftpd-v2"), pids[0]))
	rep = Run(context.Background(), bad, Options{Check: true})
	require.Equal(t, ExitFailed, rep.ExitCode)
	require.Equal(t, Failed, rep.Targets[0].Outcome)
	require.Nil(t, patches(t, pids[0]))
}

// ftpSession is a logged-in FTP control connection.
type ftpSession struct {
	c *net.TCPConn
	r *bufio.Reader
}

func ftpOpen(t *testing.T, port int) *ftpSession {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	s := &ftpSession{c: c.(*net.TCPConn), r: bufio.NewReader(c)}
	require.True(t, strings.HasPrefix(s.reply(t), "220"))
	require.True(t, strings.HasPrefix(s.cmd(t, "USER anonymous"), "331"))
	require.True(t, strings.HasPrefix(s.cmd(t, "PASS guest@"), "230"))
	return s
}

func (s *ftpSession) reply(t *testing.T) string {
	t.Helper()
	s.c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := s.r.ReadString('\n')
	require.NoError(t, err)
	return strings.TrimRight(line, "\r\n")
}

func (s *ftpSession) cmd(t *testing.T, line string) string {
	t.Helper()
	_, err := io.WriteString(s.c, line+"\r\n")
	require.NoError(t, err)
	return s.reply(t)
}

// childOf returns the pids whose parent is ppid.
func childrenOf(t *testing.T, ppid int) []int {
	t.Helper()
	var out []int
	for pid, p := range allProcs() {
		if p.ppid == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// A session process the listener forked before the patch is a target too
// (selected through its parent), and a server started while follow watches
// is patched as well.
func TestPlayForkedChildAndFollow(t *testing.T) {
	testutil.RequirePtrace(t)
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "sub"), 0o755))
	exeA := copyExe(t, "ftpd-v2", "ftpd-a")
	exeB := copyExe(t, "ftpd-v2", "ftpd-b")
	lst, port := startAt(t, exeA, "-d", root)
	sess := ftpOpen(t, port)
	require.Regexp(t, `^213 \d+$`, sess.cmd(t, "SIZE sub"), "v2 gives a directory's size")
	kids := childrenOf(t, lst.Pid)
	require.Len(t, kids, 1, "one session process")
	child := kids[0]

	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets:
  - pid: %d
  - exe: %s
rollout: {follow: 60s}
checks:
  - name: greets
    tcp: {expect: "^220 "}
    when: after
    period: 100ms
`, testutil.Build(t, "ftpd-v3"), lst.Pid, exeB))
	var prog lines
	var late *testutil.Proc
	var latePort int
	started := make(chan struct{})
	var once sync.Once
	// Follow watches for up to a minute; the test ends it (an interrupt
	// only ends following) once the late server is patched and checked.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var latePid atomic.Int64
	prog.on = func(s string) {
		if strings.HasPrefix(s, "follow: watching") {
			once.Do(func() { close(started) })
		}
		if pid := latePid.Load(); pid != 0 && s == fmt.Sprintf("pid %d: checks after the patch passed", pid) {
			cancel()
		}
	}
	done := make(chan *Report, 1)
	go func() { done <- Run(ctx, pb, Options{Progress: prog.add}) }()
	select {
	case <-started:
	case rep := <-done:
		t.Fatalf("run ended before follow: %+v\n%s", rep, prog.String())
	}
	late, latePort = startAt(t, exeB, "-d", root)
	latePid.Store(int64(late.Pid))
	var rep *Report
	select {
	case rep = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("follow did not patch pid %d:\n%s", late.Pid, prog.String())
	}
	t.Log(prog.String())
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	require.Equal(t, Applied, got[lst.Pid].Outcome)
	require.Equal(t, Applied, got[child].Outcome, "the forked session")
	require.Contains(t, got[child].Via, "forked child of")
	require.Equal(t, Applied, got[late.Pid].Outcome, "the server started during follow")
	require.True(t, got[late.Pid].Followed)
	for _, pid := range []int{lst.Pid, child, late.Pid} {
		require.Len(t, patches(t, pid), 1, "pid %d", pid)
		testutil.RequireReleased(t, pid)
	}
	// The open session now runs the fixed SIZE, and so does a session of
	// the late server.
	require.True(t, strings.HasPrefix(sess.cmd(t, "SIZE sub"), "550"), "patched session")
	require.True(t, strings.HasPrefix(ftpOpen(t, latePort).cmd(t, "SIZE sub"), "550"), "late server")
}

// A target that stays inside a function the patch replaces is BUSY, with
// the blocking frame named; nothing is written, and the run stops there.
func TestPlayBusyNamesTheFrame(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "ftpd-v7", "ftpd-old")
	var pids []int
	for i := 0; i < 2; i++ {
		p, _ := startAt(t, exe, "-d", t.TempDir())
		pids = append(pids, p.Pid)
	}
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s, timeout: 300ms}
targets: [{exe: %s}]
rollout: {batches: [1]}
`, testutil.Build(t, "ftpd-v8"), exe))
	rep := Run(context.Background(), pb, Options{})
	require.Equal(t, ExitFailed, rep.ExitCode)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	busy := got[pids[0]]
	require.Equal(t, Busy, busy.Outcome, busy.Error)
	require.NotNil(t, busy.Blocker)
	require.Equal(t, "accept_loop", busy.Blocker.Function)
	require.Contains(t, busy.Blocker.Stack, "accept_loop")
	require.NotZero(t, busy.Blocker.Tid)
	require.False(t, busy.Patched)
	require.Equal(t, NotReached, got[pids[1]].Outcome)
	for _, pid := range pids {
		require.Nil(t, patches(t, pid))
		st, err := graft.Status(pid)
		require.NoError(t, err)
		require.Empty(t, st.Orphans, "the busy apply left its image mapped")
		testutil.RequireReleased(t, pid)
	}
}

// uniqueBuild copies a testprocs build under a name of its own and gives
// the copy a build-id of its own (the note's bytes rewritten), so the name
// and build_id selectors see this test's processes only.
func uniqueBuild(t *testing.T, target string) (path, buildID string) {
	t.Helper()
	b, err := os.ReadFile(testutil.Build(t, target))
	require.NoError(t, err)
	f, err := elfpatchOpen(testutil.Build(t, target))
	require.NoError(t, err)
	old := f.BuildID()
	raw, err := hexDecode(old)
	require.NoError(t, err)
	i := strings.Index(string(b), string(raw))
	require.Positive(t, i)
	stamp := fmt.Sprintf("%016x", time.Now().UnixNano())
	copy(b[i:], stamp[:8])
	name := "sx" + stamp[10:]
	path = filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, b, 0o755))
	g, err := elfpatchOpen(path)
	require.NoError(t, err)
	require.NotEqual(t, old, g.BuildID())
	return path, g.BuildID()
}

// Every selector, and a patch file made beforehand.
func TestPlaySelectorsAndPatchFile(t *testing.T) {
	testutil.RequirePtrace(t)
	exe, id := uniqueBuild(t, "sshd-v1")
	var pids, ports []int
	for i := 0; i < 3; i++ {
		p, port := startAt(t, exe)
		pids, ports = append(pids, p.Pid), append(ports, port)
	}
	pidfile := filepath.Join(t.TempDir(), "a.pid")
	require.NoError(t, os.WriteFile(pidfile, []byte(strconv.Itoa(pids[0])+"\n"), 0o644))
	sel := func(kind, val string) []int {
		s := Selector{Kind: kind, Value: val, Pos: Pos{"pb.yaml", 1, 1}}
		if kind == "pid" {
			s.Pid, _ = strconv.Atoi(val)
		}
		res, err := Resolve([]Selector{s})
		require.NoError(t, err)
		var out []int
		for _, tg := range res.Targets {
			out = append(out, tg.Pid)
		}
		return out
	}
	require.Equal(t, []int{pids[0]}, sel("pidfile", pidfile))
	require.Equal(t, []int{pids[1]}, sel("pid", strconv.Itoa(pids[1])))
	require.Equal(t, pids, sel("name", filepath.Base(exe)[:6]+"*"))
	require.Equal(t, pids, sel("build_id", id))
	require.Equal(t, pids, sel("exe", exe))
	require.Empty(t, sel("pid", "999999999"))
	if _, err := exec.LookPath("systemctl"); err != nil {
		_, err := Resolve([]Selector{{Kind: "unit", Value: "sshd.service", Pos: Pos{"pb.yaml", 3, 5}}})
		require.ErrorContains(t, err, "pb.yaml:3:5: target unit: sshd.service: the unit selector needs systemd, and systemctl is not on this host's PATH")
	}

	fix := filepath.Join(t.TempDir(), "fix.patch")
	writePatch(t, exe, testutil.Build(t, "sshd-v2"), fix)
	pb := writePlaybook(t, fmt.Sprintf(`patch: {file: %s}
targets:
  - pidfile: %s
  - build_id: %s
rollout: {batches: ["34%%"]}
`, fix, pidfile, id)+sshdHealthy)
	rep := Run(context.Background(), pb, Options{})
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	require.Equal(t, 3, rep.Batches, "34%% of 3 is one per batch")
	require.Equal(t, id, rep.Patch.OldBuildID)
	got := byPid(rep)
	require.Equal(t, "pidfile: "+pidfile, got[pids[0]].Via)
	require.Equal(t, "build_id: "+id, got[pids[1]].Via)
	for i, pid := range pids {
		require.Equal(t, Applied, got[pid].Outcome)
		require.Equal(t, id, got[pid].BuildID)
		require.Equal(t, "FAIL login incorrect", sshdLogin(t, ports[i], "alice", "sec"))
	}
}

// on_failure: stop leaves the failed canary patched (and says so) and
// touches nothing more.
func TestPlayOnFailureStop(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var pids []int
	for i := 0; i < 2; i++ {
		p, _ := startAt(t, exe)
		pids = append(pids, p.Pid)
	}
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets: [{exe: %s}]
rollout: {batches: [1], on_failure: stop}
checks:
  - name: prefix login
    when: after
    tcp: {send: "LOGIN alice sec\n", expect: "OK welcome alice"}
    period: 50ms
    failure_threshold: 1
`, testutil.Build(t, "sshd-v2"), exe))
	rep := Run(context.Background(), pb, Options{})
	require.Equal(t, ExitFailed, rep.ExitCode)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	require.Equal(t, Failed, got[pids[0]].Outcome)
	require.True(t, got[pids[0]].Patched)
	require.Len(t, patches(t, pids[0]), 1, "stop leaves the canary patched")
	require.Equal(t, NotReached, got[pids[1]].Outcome)
	require.Nil(t, patches(t, pids[1]))
}

// Targets are resolved again before each batch: a server started after
// the canary joins the next batch, one that exited is GONE.
func TestPlayResolvesAgainPerBatch(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var procs []*testutil.Proc
	for i := 0; i < 3; i++ {
		p, _ := startAt(t, exe)
		procs = append(procs, p)
	}
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets: [{exe: %s}]
rollout: {batches: [1, "100%%"], pause: 1s}
`, testutil.Build(t, "sshd-v2"), exe))
	var late *testutil.Proc
	var prog lines
	prog.on = func(s string) {
		if strings.HasPrefix(s, "pause ") {
			// Between the batches: one target exits, a new one starts.
			procs[2].Cmd.Process.Kill()
			for !procs[2].Exited() {
				time.Sleep(5 * time.Millisecond)
			}
			late, _ = startAt(t, exe)
		}
	}
	rep := Run(context.Background(), pb, Options{Progress: prog.add})
	t.Log(prog.String())
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	requireCountsAddUp(t, rep)
	require.NotNil(t, late)
	got := byPid(rep)
	require.Equal(t, Applied, got[procs[0].Pid].Outcome)
	require.Equal(t, 1, got[procs[0].Pid].Batch)
	require.Equal(t, Applied, got[procs[1].Pid].Outcome)
	require.Equal(t, Gone, got[procs[2].Pid].Outcome)
	require.Equal(t, Applied, got[late.Pid].Outcome)
	require.Equal(t, 2, got[late.Pid].Batch)
	require.Len(t, patches(t, late.Pid), 1)
	require.Equal(t, 1, rep.Counts[Gone])
	require.Equal(t, 4, rep.Total)
}

// An interrupt (Ctrl-C) ends the rollout like a failure: what was patched
// is rolled back, nothing more is touched.
func TestPlayInterruptRollsBack(t *testing.T) {
	testutil.RequirePtrace(t)
	exe := copyExe(t, "sshd-v1", "sshd-old")
	var pids []int
	for i := 0; i < 2; i++ {
		p, _ := startAt(t, exe)
		pids = append(pids, p.Pid)
	}
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets: [{exe: %s}]
rollout: {batches: [1], pause: 30s}
`, testutil.Build(t, "sshd-v2"), exe))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var prog lines
	prog.on = func(s string) {
		if strings.HasPrefix(s, "pause ") {
			cancel()
		}
	}
	start := time.Now()
	rep := Run(ctx, pb, Options{Progress: prog.add})
	require.Less(t, time.Since(start), 20*time.Second, "the pause was not cut short")
	require.Equal(t, ExitFailed, rep.ExitCode)
	require.Equal(t, "interrupted", rep.Failure)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	require.Equal(t, RolledBack, got[pids[0]].Outcome)
	require.Equal(t, NotReached, got[pids[1]].Outcome)
	for _, pid := range pids {
		require.Nil(t, patches(t, pid))
	}
}

// A session forked after the listener was patched inherited the patch; a
// rollback takes it out of that session too.
func TestPlayRollbackReachesInheritingChild(t *testing.T) {
	testutil.RequirePtrace(t)
	root := t.TempDir()
	exe := copyExe(t, "ftpd-v2", "ftpd-a")
	lst, _ := startAt(t, exe, "-d", root)
	// The check opens a session that outlives it (the server forks a
	// patched child for it), then fails.
	holder := filepath.Join(t.TempDir(), "holder.pid")
	t.Cleanup(func() {
		// The client holding the session: ours, so ours to end.
		if b, err := os.ReadFile(holder); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	pb := writePlaybook(t, fmt.Sprintf(`patch: {new: %s}
targets: [{pid: %d}]
checks:
  - name: keeps a session open, then fails
    when: after
    exec: [bash, -c, "(echo $BASHPID > %s; exec 3<>/dev/tcp/127.0.0.1/${port}; exec sleep 30) >/dev/null 2>&1 & sleep 0.5; exit 1"]
    failure_threshold: 1
`, testutil.Build(t, "ftpd-v3"), lst.Pid, holder))
	rep := Run(context.Background(), pb, Options{})
	require.Equal(t, ExitFailed, rep.ExitCode)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	require.Equal(t, FailedRolledBack, got[lst.Pid].Outcome)
	kids := childrenOf(t, lst.Pid)
	require.Len(t, kids, 1, "the session the check opened")
	child := got[kids[0]]
	require.NotNil(t, child, "the inheriting session is in the report: %+v", rep.Targets)
	require.Equal(t, RolledBack, child.Outcome, child.Error)
	require.Contains(t, child.Error, "inherited the patch by fork")
	require.Nil(t, patches(t, lst.Pid))
	require.Nil(t, patches(t, kids[0]))
}

// patch.state: a playbook rolls out sshd v5 -> v6 from NEW on the spot
// with the operator's state description (every struct session lives in
// sessions): two servers, each with a logged-in session open, converted
// and their waiting frames switched; without the state the diff is
// refused and nothing is touched.
func TestPlayWithStateDescription(t *testing.T) {
	testutil.RequirePtrace(t)
	exe, _ := uniqueBuild(t, "sshd-v5")
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	var pids []int
	var conns []*bufio.ReadWriter
	for i := 0; i < 2; i++ {
		p, port := startAt(t, exe, "-u", users)
		pids = append(pids, p.Pid)
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
		rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
		_, err = rw.ReadString('\n')
		require.NoError(t, err)
		conns = append(conns, rw)
	}
	say := func(rw *bufio.ReadWriter, s string) string {
		fmt.Fprintf(rw, "%s\n", s)
		require.NoError(t, rw.Flush())
		l, err := rw.ReadString('\n')
		require.NoError(t, err)
		return strings.TrimSpace(l)
	}
	for _, rw := range conns {
		require.Equal(t, "OK welcome alice", say(rw, "LOGIN alice wonderland"))
	}
	newBin := testutil.Build(t, "sshd-v6")

	pb := writePlaybook(t, fmt.Sprintf("patch: {new: %s}\ntargets:\n  - exe: %s\n", newBin, exe)+sshdHealthy)
	rep := Run(context.Background(), pb, Options{})
	require.NotEqual(t, ExitOK, rep.ExitCode)
	for _, pid := range pids {
		require.Nil(t, patches(t, pid), "refused: nothing touched")
	}

	state := filepath.Join(t.TempDir(), "v6.state.yaml")
	require.NoError(t, os.WriteFile(state, []byte("globals:\n  - name: sessions\n    rules:\n      sole_home_of: [\"struct session\"]\n"), 0o644))
	pb = writePlaybook(t, fmt.Sprintf("patch: {new: %s, state: %s, timeout: 10s}\ntargets:\n  - exe: %s\n", newBin, state, exe)+sshdHealthy)
	rep = Run(context.Background(), pb, Options{})
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	for i, pid := range pids {
		require.Len(t, patches(t, pid), 1)
		require.Equal(t, "OK alice commands=1", say(conns[i], "WHOAMI"), "the open session goes on in the new code")
	}

	_, err := writePlaybookErr(t, fmt.Sprintf("patch: {file: x.patch, state: %s}\ntargets:\n  - pid: 1\n", state))
	require.ErrorContains(t, err, "patch.state goes with patch.new")
}

func writePlaybookErr(t *testing.T, text string) (*Playbook, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pb.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return Load(path)
}
