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
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
)

type statdConn struct {
	c net.Conn
	r *bufio.Reader
}

func statdDial(t *testing.T, port int) *statdConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &statdConn{c: c, r: bufio.NewReader(c)}
}

func (s *statdConn) do(line string) (string, error) {
	s.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(s.c, "%s\n", line); err != nil {
		return "", err
	}
	l, err := s.r.ReadString('\n')
	return strings.TrimSuffix(l, "\n"), err
}

func (s *statdConn) cmd(t *testing.T, line string) string {
	t.Helper()
	l, err := s.do(line)
	require.NoError(t, err, line)
	return l
}

// statdField reads name=VALUE from a STATS reply.
func statdField(t *testing.T, stats, name string) string {
	t.Helper()
	m := regexp.MustCompile(`\b` + name + `=(\S+)`).FindStringSubmatch(stats)
	require.NotNil(t, m, "%s in %q", name, stats)
	return m[1]
}

// statdLoad sends REQ 1 from several connections until stopped and counts
// the OK replies: each one is an increment of stats.requests.
func statdLoad(t *testing.T, port, conns int) func() int {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	var failed error
	for range conns {
		c := statdDial(t, port)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			defer func() { mu.Lock(); total += n; mu.Unlock() }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := c.do("REQ 1")
				if err != nil || l != "OK" {
					mu.Lock()
					failed = fmt.Errorf("REQ 1: %q %v", l, err)
					mu.Unlock()
					return
				}
				n++
			}
		}()
	}
	return func() int {
		close(stop)
		wg.Wait()
		require.NoError(t, failed)
		return total
	}
}

// statd v1 -> v2 (testprocs/statd/VERSIONS.md): stats changes layout in
// every generated way and moves into the new image, while clients send
// requests as fast as they can. Every request is counted afterwards, the
// other members keep their values in their new form, the pointer another
// global holds into stats follows it, and revert carries everything back.
func TestTransferStatdLive(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "statd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)

	c := statdDial(t, port)
	for _, l := range []string{"REQ 0", "REQ 3", "REQ 9", "ADD -5", "MODE busy", "ERR"} {
		require.Equal(t, "OK", c.cmd(t, l), l)
	}
	before := c.cmd(t, "STATS")
	require.Equal(t, "3", statdField(t, before, "requests"))
	require.Equal(t, "errors", statdField(t, before, "counter"))

	// A user of the moved global may not stay on a stack: its frame
	// would go on with the old object.
	_, err := Apply(context.Background(), target.Pid, newBin(t, "statd-v2"), ApplyOptions{AllowActive: []string{"cmd_req"}})
	require.ErrorContains(t, err, "--allow-active cmd_req: it uses stats, whose contents move to a new object")
	require.Equal(t, text, exeText(t, target.Pid))

	done := statdLoad(t, port, 3)
	time.Sleep(200 * time.Millisecond)
	res, err := Apply(context.Background(), target.Pid, newBin(t, "statd-v2"), ApplyOptions{})
	require.NoError(t, err)
	require.Len(t, res.Transfers, 1)
	require.False(t, res.Transfers[0].InPlace)
	require.Equal(t, 1, res.Transfers[0].Pointers, "last_counter rewritten")
	require.ElementsMatch(t, []string{"cmd_add", "cmd_err", "cmd_mode", "cmd_req", "cmd_stats", "stats_init"}, res.Functions)
	time.Sleep(200 * time.Millisecond)
	n := done()
	t.Logf("%d requests around the apply (pause %d µs, state transfer %d µs)", n, res.PauseUS, res.TransferUS)
	require.Greater(t, n, 20)

	after := c.cmd(t, "STATS")
	require.Equal(t, strconv.Itoa(3+n), statdField(t, after, "requests"), "no increment lost: %s", after)
	require.Equal(t, "-5", statdField(t, after, "delta"), "sign-extended")
	require.Equal(t, "busy", statdField(t, after, "mode"), "enum by name (MODE_BUSY 1 -> 2)")
	require.Equal(t, fmt.Sprintf("1,%d,0,2,0,0,0,0", n), statdField(t, after, "hist"), "array grown")
	require.Equal(t, fmt.Sprintf("%d/0/0", 12+n), statdField(t, after, "io"), "nested struct grown")
	require.Equal(t, "REQ", statdField(t, after, "last"), "function pointer")
	// last_counter pointed at the old stats.errors: it now points at
	// the new one.
	require.Equal(t, "OK", c.cmd(t, "ERR"))
	require.Equal(t, "OK", c.cmd(t, "BUMP"))
	after = c.cmd(t, "STATS")
	require.Equal(t, "3", statdField(t, after, "errors"))
	require.Equal(t, "errors", statdField(t, after, "counter"))
	require.Equal(t, "OK", c.cmd(t, "REQ 6"))
	require.Equal(t, "OK", c.cmd(t, "ADD -10"))
	after = c.cmd(t, "STATS")
	require.Equal(t, fmt.Sprintf("1,%d,0,2,0,0,1,0", n), statdField(t, after, "hist"))
	require.Equal(t, "-15", statdField(t, after, "delta"))

	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.Len(t, st.Patches[0].Transfers, 1)
	require.Equal(t, "stats", st.Patches[0].Transfers[0].Name)

	// Revert under load: converted back into the old object.
	done = statdLoad(t, port, 3)
	time.Sleep(200 * time.Millisecond)
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond)
	m := done()
	back := c.cmd(t, "STATS")
	require.Equal(t, strconv.Itoa(3+n+1+m), statdField(t, back, "requests"), "no increment lost: %s", back)
	require.Equal(t, "-15", statdField(t, back, "delta"))
	require.Equal(t, "busy", statdField(t, back, "mode"))
	require.Equal(t, fmt.Sprintf("1,%d,0,2", n+m), statdField(t, back, "hist"), "old length again: hist[6] is dropped")
	// The load's REQ left last_counter on stats.requests, in the new
	// object: it points into the old one again.
	require.Equal(t, "requests", statdField(t, back, "counter"))
	require.Equal(t, "OK", c.cmd(t, "BUMP"))
	require.Equal(t, strconv.Itoa(3+n+1+m+1), statdField(t, c.cmd(t, "STATS"), "requests"), "pointer carried back")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// statd v2 -> v3 needs the operator: started (seconds) became started_ms
// (milliseconds) and MODE_DRAIN was renamed MODE_CLOSING. The patch with
// TODOs is refused, untouched; the state description's rules complete
// it; the scale has no inverse, so dry run, apply and status say the patch
// is irreversible and revert refuses it before touching anything.
func TestTransferStatdOperator(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "statd-v2")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	c := statdDial(t, port)
	require.Equal(t, "OK", c.cmd(t, "MODE drain"))
	require.Equal(t, "OK", c.cmd(t, "REQ 2"))

	old, err := elfpatch.Open(testutil.Build(t, "statd-v2"))
	require.NoError(t, err)
	nb, err := elfpatch.Open(testutil.Build(t, "statd-v3"))
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(p *elfpatch.Patch) string {
		file := filepath.Join(dir, "v2-v3.patch")
		f, err := os.Create(file)
		require.NoError(t, err)
		_, err = p.WriteTo(f)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		return file
	}

	p, err := elfpatch.BuildPatch(old, nb)
	require.NoError(t, err)
	_, err = Apply(context.Background(), target.Pid, Source{File: write(p)}, ApplyOptions{})
	require.ErrorIs(t, err, ErrRefused)
	require.ErrorContains(t, err, "MODE_DRAIN")
	require.ErrorContains(t, err, "started_ms")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))

	desc := `globals:
  - name: stats
    rules:
      from: {started_ms: started}
      scale: {started_ms: 1000}
      enum: {mode: {MODE_DRAIN: MODE_CLOSING}}
`
	rules, err := elfpatch.ReadStateRules(strings.NewReader(desc))
	require.NoError(t, err)
	p, err = elfpatch.BuildPatch(old, nb, elfpatch.WithRules(rules))
	require.NoError(t, err)
	file := write(p)

	dry, err := Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{DryRun: true})
	require.NoError(t, err)
	require.Contains(t, dry.Irreversible, "no generated inverse")
	require.Equal(t, text, exeText(t, target.Pid))

	res, err := Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{})
	require.NoError(t, err)
	require.Contains(t, res.Irreversible, "no generated inverse")
	s := c.cmd(t, "STATS")
	require.Equal(t, "closing", statdField(t, s, "mode"), "renamed enumerator mapped")
	up, err := strconv.Atoi(strings.TrimSuffix(statdField(t, s, "uptime"), "ms"))
	require.NoError(t, err)
	require.True(t, up >= 0 && up < 600_000, "uptime in ms from seconds times 1000: %s", s)
	require.Equal(t, "1", statdField(t, s, "requests"))

	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Contains(t, st.Patches[0].Irreversible, "no generated inverse")
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.ErrorIs(t, err, ErrIrreversible)
	st, err = Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1, "still applied")
	require.Equal(t, "closing", statdField(t, c.cmd(t, "STATS"), "mode"))
}

// statd v3 -> v4 changes struct client, which lives on the heap (one per
// connection, listed from a global pointer): refused with the type named,
// nothing touched.
func TestTransferHeapRefusedLive(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "statd-v3")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	c := statdDial(t, port)
	require.Equal(t, "OK", c.cmd(t, "REQ 1"))
	_, err := Apply(context.Background(), target.Pid, newBin(t, "statd-v4"), ApplyOptions{})
	require.ErrorIs(t, err, ErrRefused)
	require.ErrorContains(t, err, "struct client")
	require.ErrorContains(t, err, "heap")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
	require.Equal(t, "1", statdField(t, c.cmd(t, "STATS"), "requests"))
}

// Narrowing is checked on the live value in the pause: statd v2 -> v1
// (delta int64_t -> int32_t, in place; MODE_PAUSED mapped by the operator)
// applies while delta fits and is refused, untouched, once it does not.
func TestTransferNarrowingCheckedLive(t *testing.T) {
	requirePtrace(t)
	old, err := elfpatch.Open(testutil.Build(t, "statd-v2"))
	require.NoError(t, err)
	nb, err := elfpatch.Open(testutil.Build(t, "statd-v1"))
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb, elfpatch.WithRules(map[string]*elfpatch.Rules{
		"stats": {Enum: map[string]map[string]string{"mode": {"MODE_PAUSED": "MODE_IDLE"}}},
	}))
	require.NoError(t, err)
	require.Len(t, p.Report.Transfers, 1)
	require.True(t, p.Report.Transfers[0].InPlace, "88 bytes fit the 136-byte slot")
	file := filepath.Join(t.TempDir(), "v2-v1.patch")
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	target, port := testutil.StartServer(t, "statd-v2")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	c := statdDial(t, port)
	for range 3 {
		require.Equal(t, "OK", c.cmd(t, "ADD 2000000000"))
	}
	require.Equal(t, "6000000000", statdField(t, c.cmd(t, "STATS"), "delta"))
	_, err = Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{})
	require.ErrorContains(t, err, "stats.delta holds 6000000000, which does not fit its new 4-byte signed type")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
	require.Equal(t, "6000000000", statdField(t, c.cmd(t, "STATS"), "delta"), "untouched")

	for range 3 {
		require.Equal(t, "OK", c.cmd(t, "ADD -2000000000"))
	}
	require.Equal(t, "OK", c.cmd(t, "ADD 1"))
	require.Equal(t, "OK", c.cmd(t, "MODE paused"))
	_, err = Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{})
	require.NoError(t, err)
	s := c.cmd(t, "STATS")
	require.Equal(t, "1", statdField(t, s, "delta"))
	require.Equal(t, "idle", statdField(t, s, "mode"), "MODE_PAUSED mapped to MODE_IDLE by the operator")
	require.Regexp(t, `hist=\d+,\d+,\d+,\d+ `, s, "v1's four buckets")
}
