package graft

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// ftpConnector opens ftpd sessions back to back from several goroutines
// (each one a session the listener counts in ftpd_stats.sessions) until
// stopped, and returns how many the listener accepted.
func ftpConnector(t *testing.T, port, workers int) func() int {
	var n atomic.Int64
	var mu sync.Mutex
	var failed error
	fail := func(err error) {
		mu.Lock()
		failed = err
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
				if err != nil {
					fail(err)
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tp := textproto.NewConn(c)
				if _, _, err := tp.ReadResponse(220); err != nil {
					fail(err)
					c.Close()
					return
				}
				n.Add(1) // accepted and forked: counted by the listener
				tp.PrintfLine("QUIT")
				tp.ReadResponse(221)
				c.Close()
				// Paced a little: each session's exit is a SIGCHLD to
				// the listener, and a storm of them starves graft's
				// remote system calls (issue 14 is about it).
				time.Sleep(25 * time.Millisecond)
			}
		}()
	}
	return func() int {
		close(stop)
		wg.Wait()
		if failed != nil {
			t.Fatalf("a client failed: %v", failed)
		}
		return int(n.Load())
	}
}

var sessionNumber = regexp.MustCompile(`Session number (\d+) since server start`)

func ftpSessionNumber(t *testing.T, stat string) int {
	t.Helper()
	m := sessionNumber.FindStringSubmatch(stat)
	require.NotNil(t, m, stat)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// ftpd v6 -> v7: struct ftpd_stats gains files_received (16 -> 24 bytes).
// It is converted in place in the pause while clients connect as fast as
// they can; every session the listener counted before, during and after
// the patch is in ftpd_stats.sessions afterwards (a later session's STAT
// shows the number), the new member works, and revert converts back with
// the count still exact.
func TestTransferFTPDLiveKeepsEveryCount(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v6", "-d", ftpTree(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)

	done := ftpConnector(t, port, 2)
	time.Sleep(300 * time.Millisecond)
	res, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v7"), ApplyOptions{})
	require.NoError(t, err)
	require.Len(t, res.Transfers, 1)
	tr := res.Transfers[0]
	require.Equal(t, "ftpd_stats", tr.Name)
	require.Equal(t, [2]uint64{16, 24}, [2]uint64{tr.OldSize, tr.NewSize})
	require.True(t, tr.InPlace)
	require.Empty(t, res.Irreversible)
	time.Sleep(300 * time.Millisecond)
	n := done()
	t.Logf("%d sessions around the apply (pause %d µs, state transfer %d µs)", n, res.PauseUS, res.TransferUS)
	require.Greater(t, n, 10)

	s := ftpLogin(t, port)
	stat := s.cmd("STAT")
	require.Equal(t, n+1, ftpSessionNumber(t, stat), "every session counted across the patch: %s", stat)
	require.Contains(t, stat, "Files received in this session: 0")
	require.Equal(t, "200 Switching to Binary mode.", s.cmd("TYPE I"))
	s.stor(t, "up.txt", "abc")
	require.Contains(t, s.cmd("STAT"), "Files received in this session: 1")
	require.Equal(t, "221 Goodbye.", s.cmd("QUIT"))

	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.Len(t, st.Patches[0].Transfers, 1)
	require.Equal(t, "ftpd_stats", st.Patches[0].Transfers[0].Name)
	require.Empty(t, st.Patches[0].Irreversible)

	// Revert under the same load: converted back, nothing lost.
	done = ftpConnector(t, port, 2)
	time.Sleep(300 * time.Millisecond)
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	m := done()
	stat = ftpLogin(t, port).cmd("STAT")
	require.Equal(t, n+1+m+1, ftpSessionNumber(t, stat), "every session counted across the revert: %s", stat)
	require.NotContains(t, stat, "Files received")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// stor uploads data as name over PASV.
func (s *ftpSession) stor(t *testing.T, name, data string) {
	t.Helper()
	pasv := s.cmd("PASV")
	var h [6]int
	i := regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`).FindStringSubmatch(pasv)
	require.NotNil(t, i, pasv)
	for k := range h {
		h[k], _ = strconv.Atoi(i[k+1])
	}
	dc, err := net.DialTimeout("tcp", fmt.Sprintf("%d.%d.%d.%d:%d", h[0], h[1], h[2], h[3], h[4]*256+h[5]), 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, s.tp.PrintfLine("STOR %s", name))
	_, _, err = s.tp.ReadResponse(150)
	require.NoError(t, err)
	_, err = dc.Write([]byte(data))
	require.NoError(t, err)
	dc.Close()
	_, _, err = s.tp.ReadResponse(226)
	require.NoError(t, err)
}

// A patch stacks on one that converted state: ftpd v7 -> v8 (the accept
// loop, allowed to stay active) on v6 -> v7's in-place ftpd_stats; both
// revert together, the counter intact.
func TestTransferThenStackedFTPD(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v6", "-d", ftpTree(t), "-m", "5")
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	require.Equal(t, "221 Goodbye.", ftpLogin(t, port).cmd("QUIT"))
	_, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v7"), ApplyOptions{})
	require.NoError(t, err)
	res, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v8"), ApplyOptions{AllowActive: []string{"accept_loop"}})
	require.NoError(t, err)
	require.Equal(t, []string{"accept_loop"}, res.Functions)
	stat := ftpLogin(t, port).cmd("STAT")
	require.Equal(t, 2, ftpSessionNumber(t, stat), stat)
	require.Contains(t, stat, "Files received in this session: 0")
	_, err = Revert(context.Background(), target.Pid, RevertOptions{All: true})
	require.NoError(t, err)
	stat = ftpLogin(t, port).cmd("STAT")
	require.Equal(t, 3, ftpSessionNumber(t, stat), stat)
	require.NotContains(t, stat, "Files received")
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}

// State transfer on top of another patch: ftpd v5 -> v6, then v6 -> v7
// converts ftpd_stats in place where it lives in the running v5
// executable (found by name: v6's addresses are not the running
// program's); both revert together, the session count intact.
func TestTransferOnTopOfPatch(t *testing.T) {
	requirePtrace(t)
	target, port := testutil.StartServer(t, "ftpd-v5", "-d", ftpTree(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	require.Equal(t, "221 Goodbye.", ftpLogin(t, port).cmd("QUIT"))
	_, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v6"), ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, "221 Goodbye.", ftpLogin(t, port).cmd("QUIT"))
	res, err := Apply(context.Background(), target.Pid, newBin(t, "ftpd-v7"), ApplyOptions{})
	require.NoError(t, err)
	require.Len(t, res.Transfers, 1)
	require.True(t, res.Transfers[0].InPlace)
	require.NotEmpty(t, res.OnTopOf)
	stat := ftpLogin(t, port).cmd("STAT")
	require.Equal(t, 3, ftpSessionNumber(t, stat), "sessions counted across both patches: %s", stat)
	require.Contains(t, stat, "Files received in this session: 0")
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	stat = ftpLogin(t, port).cmd("STAT")
	require.Equal(t, 4, ftpSessionNumber(t, stat), "converted back on top of v6: %s", stat)
	require.NotContains(t, stat, "Files received")
	_, err = Revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, 5, ftpSessionNumber(t, ftpLogin(t, port).cmd("STAT")))
	require.Equal(t, text, exeText(t, target.Pid))
	require.Empty(t, graftMappings(t, target.Pid))
}
