package graft

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"graft/internal/testutil"
	"graft/safepoint"
	"graft/tracer"
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
// GOGC=1, keep-alive clients, clients on fresh connections (a fresh
// goroutine with a small stack per request: the stack grows with the new
// handleCount's frame on it) and allocating PUTs; applied, reverted,
// applied again under load. Every request answered, each /count value
// handed out once per version, the counter exact, no runtime throw, and
// the runtime's own SIGQUIT traceback names v3's source for the new code.
// A thousand idle keep-alive connections hold a thousand more parked
// goroutines. The running program is a default (non-PIE) build.
func TestGoLiveCount(t *testing.T) {
	goLiveCount(t, "goserver-v2", "goserver-v3", "goserver-v3-pie")
}

// TestGoLiveCountPIE is M1 with the running program a PIE too.
func TestGoLiveCountPIE(t *testing.T) {
	goLiveCount(t, "goserver-v2-pie", "goserver-v3-pie", "goserver-v3-pie")
}

// TestGoLiveCountGo125 is M1 on the previous Go release's runtime (layouts
// read from its DWARF like any other).
func TestGoLiveCountGo125(t *testing.T) {
	goLiveCount(t, "goserver-v2-go125", "goserver-v3-go125", "goserver-v3-go125-pie")
}

func goLiveCount(t *testing.T, oldT, newT, pieT string) {
	testutil.RequirePtrace(t)
	newBin, newPIE := testutil.Build(t, newT), testutil.Build(t, pieT)
	t.Setenv("GOGC", "1")
	t.Setenv("GOTRACEBACK", "all")
	srv, port := testutil.StartServer(t, oldT)
	// A thousand more goroutines, parked on idle keep-alive connections:
	// every safe-point check walks them all.
	idle := idleConns(t, port, 1000)
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	load := startGoLoad(t, port, 32, 8)
	fresh := startFreshCounts(t, port, 16, load)
	time.Sleep(300 * time.Millisecond)
	ctx := context.Background()
	// The first apply goes through the public path (diff, plan, apply);
	// the second reuses its patch (planning takes seconds).
	sys, err := defaultSystem()
	if err != nil {
		t.Fatal(err)
	}
	src := Source{NewBinary: newBin, GoPIE: newPIE}
	if newBin == newPIE {
		src.GoPIE = ""
	}
	pt, err := sys.resolve(srv.Pid, src)
	if err != nil {
		t.Fatal(err)
	}
	apply := func() {
		t.Helper()
		cp := *pt
		res, err := sys.apply(ctx, srv.Pid, &cp, ApplyOptions{Timeout: 10 * time.Second})
		if err != nil {
			fresh.stop.Store(true)
			load.finish(t)
			t.Fatalf("apply: %v\nstderr:\n%s", err, srv.Stderr())
		}
		t.Logf("applied %s: pause %d us, image at %#x", res.PatchID, res.PauseUS, res.Base)
	}
	apply()
	time.Sleep(time.Second)
	st, err := Status(srv.Pid)
	if err != nil || len(st.Patches) != 1 {
		t.Fatalf("status after apply: %+v, %v", st, err)
	}
	rv, err := Revert(ctx, srv.Pid, RevertOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("revert: %v", err)
	}
	t.Logf("reverted %v: pause %d us", rv.Reverted, rv.PauseUS)
	time.Sleep(500 * time.Millisecond)
	apply()
	time.Sleep(time.Second)
	fresh.stop.Store(true)
	fresh.wg.Wait()
	vals := load.finish(t)
	noThrow(t, srv.Stderr())

	// Each version hands out distinct values; the revert hands one value
	// out twice (v3 returned the counter after its increment, v2 returns
	// it before), each apply skips one.
	dups, skipped := 0, 0
	next := int64(0)
	for i, v := range vals {
		if i > 0 && v == vals[i-1] {
			dups++
			continue
		}
		skipped += int(v - next)
		next = v + 1
	}
	if dups > 1 || skipped != 2 {
		t.Fatalf("%d answers: %d values handed out twice (want at most 1, at the revert), %d skipped (want 2, one per apply)", len(vals), dups, skipped)
	}
	// Every request incremented the counter exactly once: under v3 the
	// next answer is the number of requests so far plus one.
	got := getCount(t, port)
	if got != int64(len(vals))+1 {
		t.Fatalf("after %d /count requests the next answer is %d, want %d", len(vals), got, len(vals)+1)
	}
	t.Logf("%d /count answers, counter exact", len(vals))

	// The runtime's own view: lock main.counterMu from outside (its
	// state word, written while the process is stopped), so the clients'
	// requests pile up in the new handleCount, blocked in Lock; then a
	// SIGQUIT: the runtime's dump must show those frames with v3's file.
	load2 := startGoLoad(t, port, 50, 0)
	defer func() { load2.stop.Store(true); load2.wg.Wait() }()
	lockFromOutside(t, srv.Pid, "main.counterMu")
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(srv.Pid, syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !srv.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	dump := srv.Stderr()
	if !regexp.MustCompile(`goroutine 1 .*\[`).MatchString(dump) {
		t.Fatalf("no SIGQUIT goroutine dump:\n%s", dump)
	}
	for _, bad := range []string{"unknown pc", "unexpected return pc", "fatal error"} {
		if strings.Contains(dump, bad) {
			t.Fatalf("dump has %q:\n%s", bad, dump)
		}
	}
	m := regexp.MustCompile(`main\.handleCount\([^\n]*\n\s*(\S*goserver/v3/main\.go:\d+)`).FindStringSubmatch(dump)
	if m == nil {
		t.Fatalf("the SIGQUIT dump shows no frame of the new handleCount with goserver/v3/main.go:\n%s", dump)
	}
	t.Logf("SIGQUIT dump: main.handleCount at %s", m[1])
}

// lockFromOutside sets the locked bit of the sync.Mutex named sym in pid
// in a pause in which it is free.
func lockFromOutside(t *testing.T, pid int, sym string) {
	t.Helper()
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var addr uint64
	for _, s := range syms {
		if s.Name == sym {
			addr = s.Value
		}
	}
	if addr == 0 {
		t.Fatalf("no symbol %s", sym)
	}
	mods, err := tracer.Modules(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if m.Main {
			addr += m.Bias
		}
	}
	p, err := tracer.Attach(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 0; i < 1000; i++ {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		var b [4]byte
		if _, err := p.ReadAt(b[:], int64(addr)); err != nil {
			t.Fatal(err)
		}
		if b == [4]byte{} {
			b[0] = 1 // mutexLocked
			if _, err := p.WriteAt(b[:], int64(addr)); err != nil {
				t.Fatal(err)
			}
			if err := p.Resume(); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never free", sym)
}

// getCount does one /count request on a fresh connection.
func getCount(t *testing.T, port int) int64 {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/count", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("/count: %q", b)
	}
	return n
}

// freshCounts are /count clients that open a new connection per request,
// recording their answers into l.
type freshCounts struct {
	stop atomic.Bool
	wg   sync.WaitGroup
}

func startFreshCounts(t *testing.T, port, n int, l *goLoad) *freshCounts {
	f := &freshCounts{}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < n; i++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for !f.stop.Load() {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/count", port))
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err.Error())
					l.mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				if err != nil {
					l.failed.Add(1)
					continue
				}
				l.mu.Lock()
				l.counts = append(l.counts, v)
				l.mu.Unlock()
			}
		}()
	}
	return f
}

// TestGoLiveVersions patches a running goserver v1 version by version up
// to v8 (v2: an inlined helper's change inside handleKV; v3: a body; v4: a
// string literal; v5: a longer literal that moves the others; v6: a new
// closure calling a standard-library function not linked before; v7: the
// closure's body; v8: the inlined helper again) under GOGC=2 with clients
// on every handler, checks each version's answers, then reverts one patch
// and then all. Each Go patch is made against the running executable and
// redirects everything changed since, over the jumps in place. The running
// program is a PIE here, a default build in TestGoLiveVersionsDefault.
func TestGoLiveVersions(t *testing.T) {
	goLiveVersions(t, "-pie", 8)
}

// TestGoLiveVersionsDefault is TestGoLiveVersions on a default build (NEW
// diffed as a default build, loaded as a PIE).
func TestGoLiveVersionsDefault(t *testing.T) {
	goLiveVersions(t, "", 8)
}

func goLiveVersions(t *testing.T, suffix string, upto int) {
	testutil.RequirePtrace(t)
	t.Setenv("GOGC", "2")
	srv, port := testutil.StartServer(t, "goserver-v1"+suffix)
	load := startGoLoad(t, port, 16, 4)
	fresh := startFreshCounts(t, port, 8, load)
	ctx := context.Background()
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	key20 := strings.Repeat("k", 20)
	check := func(v int) {
		t.Helper()
		wantKV := 400
		if v >= 2 {
			wantKV = 200
		}
		if code, body := do(http.MethodPut, "/kv?key="+key20, "x"); code != wantKV {
			t.Errorf("v%d: PUT 20-byte key: %d %q, want %d", v, code, body, wantKV)
		}
		wantVer := "goserver/1.0\n"
		if v == 4 {
			wantVer = "goserver/1.1\n"
		} else if v >= 5 {
			wantVer = "goserver/1.2.0\n"
		}
		if _, body := do(http.MethodGet, "/version", ""); body != wantVer {
			t.Errorf("v%d: /version %q, want %q", v, body, wantVer)
		}
		wantHello := map[bool]string{true: "hello, go-pher\n"}[v <= 5]
		if v == 6 {
			wantHello = "hello, GO-PHER\n"
		} else if v >= 7 {
			wantHello = "hello, GO PHER\n"
		}
		if code, body := do(http.MethodGet, "/hello?name=go-pher", ""); code != 200 || body != wantHello {
			t.Errorf("v%d: /hello: %d %q, want %q", v, code, body, wantHello)
		}
		wantSlash := 200
		if v >= 8 {
			wantSlash = 400
		}
		if code, body := do(http.MethodPut, "/kv?key=/a", "x"); code != wantSlash {
			t.Errorf("v%d: PUT key /a: %d %q, want %d", v, code, body, wantSlash)
		}
	}
	check(1)
	for v := 2; v <= upto; v++ {
		src := Source{NewBinary: testutil.Build(t, fmt.Sprintf("goserver-v%d%s", v, suffix))}
		if suffix == "" {
			src.GoPIE = testutil.Build(t, fmt.Sprintf("goserver-v%d-pie", v))
		}
		res, err := Apply(ctx, srv.Pid, src, ApplyOptions{Timeout: 10 * time.Second})
		if err != nil {
			fresh.stop.Store(true)
			load.finish(t)
			t.Fatalf("apply v%d: %v", v, err)
		}
		t.Logf("v%d: %s %v, pause %d us, on top of %q", v, res.PatchID, res.Functions, res.PauseUS, res.OnTopOf)
		time.Sleep(300 * time.Millisecond)
		check(v)
	}
	if _, err := Revert(ctx, srv.Pid, RevertOptions{Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("revert v%d: %v", upto, err)
	}
	check(upto - 1)
	if _, err := Revert(ctx, srv.Pid, RevertOptions{Timeout: 10 * time.Second, All: true}); err != nil {
		t.Fatalf("revert all: %v", err)
	}
	check(1)
	st, err := Status(srv.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Patches) != 0 {
		t.Errorf("status after reverting all: %d patches", len(st.Patches))
	}
	fresh.stop.Store(true)
	fresh.wg.Wait()
	vals := load.finish(t)
	noThrow(t, srv.Stderr())
	// Every /count request incremented the counter once; v1 answers
	// with the value before its increment.
	if got := getCount(t, port); got != int64(len(vals)) {
		t.Errorf("after %d /count requests the counter reads %d", len(vals), got)
	}
}

// TestGoLiveActiveGoroutine: a goroutine parked inside the function to
// replace blocks the patch. main.counterMu is locked from outside, so
// requests wait in v2's handleCount; apply must time out naming the
// goroutine, its status and its stack, and leave the process untouched.
func TestGoLiveActiveGoroutine(t *testing.T) {
	testutil.RequirePtrace(t)
	srv, port := testutil.StartServer(t, "goserver-v2")
	lockFromOutside(t, srv.Pid, "main.counterMu")
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 20 * time.Second}
			if resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/count", port)); err == nil {
				resp.Body.Close()
			}
		}()
	}
	defer func() { syscall.Kill(srv.Pid, syscall.SIGKILL); wg.Wait() }()
	time.Sleep(300 * time.Millisecond)
	_, err := Apply(context.Background(), srv.Pid, Source{
		NewBinary: testutil.Build(t, "goserver-v3"),
		GoPIE:     testutil.Build(t, "goserver-v3-pie"),
	}, ApplyOptions{Timeout: 1500 * time.Millisecond})
	if err == nil {
		t.Fatal("apply went in while goroutines wait inside main.handleCount")
	}
	if !errors.Is(err, safepoint.ErrActive) {
		t.Fatalf("apply: %v; want a safe-point refusal", err)
	}
	msg := err.Error()
	if !regexp.MustCompile(`goroutine \d+ \[waiting\] is inside main\.handleCount`).MatchString(msg) ||
		!strings.Contains(msg, "internal/sync.(*Mutex).lockSlow") || !strings.Contains(msg, "net/http.(*conn).serve") {
		t.Fatalf("refusal does not name the goroutine and its stack: %v", err)
	}
	t.Logf("refused: %v", err)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", srv.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(maps), "memfd:graft") {
		t.Errorf("a refused apply left a mapping:\n%s", maps)
	}
	noThrow(t, srv.Stderr())
}

// TestGoLiveCountGo125PIE is M1 on Go 1.25 with the running program a PIE.
func TestGoLiveCountGo125PIE(t *testing.T) {
	goLiveCount(t, "goserver-v2-go125-pie", "goserver-v3-go125-pie", "goserver-v3-go125-pie")
}

// TestGoLiveInterfaceMethod: goserver v9 -> v10 changes a method called
// through an interface (the itab's pointer wrapper inlines it): the live
// patch redirects both, the greeting gains its '!', revert takes it away.
func TestGoLiveInterfaceMethod(t *testing.T) {
	goLiveInterfaceMethod(t, "-pie")
}

// TestGoLiveInterfaceMethodDefault is TestGoLiveInterfaceMethod with the
// running program a default build.
func TestGoLiveInterfaceMethodDefault(t *testing.T) {
	goLiveInterfaceMethod(t, "")
}

func goLiveInterfaceMethod(t *testing.T, suffix string) {
	testutil.RequirePtrace(t)
	t.Setenv("GOGC", "1")
	srv, port := testutil.StartServer(t, "goserver-v9"+suffix)
	load := startGoLoad(t, port, 16, 4)
	hello := func() string {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/hello?name=go-pher", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := hello(); got != "hello, GO PHER\n" {
		t.Fatalf("v9 /hello: %q", got)
	}
	ctx := context.Background()
	src := Source{NewBinary: testutil.Build(t, "goserver-v10"+suffix)}
	if suffix == "" {
		src.GoPIE = testutil.Build(t, "goserver-v10-pie")
	}
	res, err := Apply(ctx, srv.Pid, src, ApplyOptions{Timeout: 10 * time.Second})
	if err != nil {
		load.finish(t)
		t.Fatalf("apply v10: %v", err)
	}
	t.Logf("v10: %v, pause %d us", res.Functions, res.PauseUS)
	if got := hello(); got != "hello, GO PHER!\n" {
		t.Errorf("v10 /hello: %q", got)
	}
	if _, err := Revert(ctx, srv.Pid, RevertOptions{Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("revert: %v", err)
	}
	if got := hello(); got != "hello, GO PHER\n" {
		t.Errorf("reverted /hello: %q", got)
	}
	load.finish(t)
	noThrow(t, srv.Stderr())
}

// TestGoLiveRefusedNewGlobal: v8 -> v9 adds a global (and a type and its
// itab) the running program has no storage for: apply refuses naming it
// and leaves the process untouched.
func TestGoLiveRefusedNewGlobal(t *testing.T) {
	testutil.RequirePtrace(t)
	srv, _ := testutil.StartServer(t, "goserver-v8-pie")
	_, err := Apply(context.Background(), srv.Pid, Source{NewBinary: testutil.Build(t, "goserver-v9-pie")}, ApplyOptions{Timeout: 5 * time.Second})
	if err == nil {
		t.Fatal("v8 -> v9 (a new global) was applied")
	}
	if !strings.Contains(err.Error(), "main.defaultGreeter") {
		t.Fatalf("refusal does not name the new global: %v", err)
	}
	t.Logf("refused: %.300s", err)
	maps, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/maps", srv.Pid))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if strings.Contains(string(maps), "memfd:graft") {
		t.Errorf("a refused apply left a mapping:\n%s", maps)
	}
	testutil.RequireReleased(t, srv.Pid)
}

// TestGoLiveDeepRecursion patches main.depth of testprocs/gorecurse, a
// recursion whose every frame holds the only pointer to a heap node and a
// 256-byte local: each request grows its goroutine's stack many times
// with frames of the function on it (the runtime copies them by their
// pclntab: NEW's after the patch), and GOGC=1 collects while they hold
// the list. Answers must be exactly v1's or v2's sum, and v2's for every
// request started after the apply returned.
func TestGoLiveDeepRecursion(t *testing.T) {
	const n = 3000
	goLiveDeep(t, "gorecurse-v1", "gorecurse-v2", n, n*(n+1)/2, n*(n+1))
}

// TestGoLivePanicRecover: gorecurse v2 -> v3 makes the bottom of the
// recursion panic and a new function (with a new deferred closure)
// recover it: every panic unwinds 3000 frames of the new depth and the
// runtime runs the new closure's defer, under GOGC=1 and stack growth.
func TestGoLivePanicRecover(t *testing.T) {
	const n = 3000
	goLiveDeep(t, "gorecurse-v2", "gorecurse-v3", n, n*(n+1), n*(n+1)+1)
}

func goLiveDeep(t *testing.T, oldT, newT string, n int, s1, s2 int64) {
	testutil.RequirePtrace(t)
	t.Setenv("GOGC", "1")
	srv, port := testutil.StartServer(t, oldT)
	var applied atomic.Int64 // unix nanos when apply returned
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	var old, new, after atomic.Int64
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: i%2 == 0}}
			for !stop.Load() {
				start := time.Now().UnixNano()
				resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/deep?n=%d", port, n))
				var v int64
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					v, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				}
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case v == s1:
					old.Add(1)
					if a := applied.Load(); a != 0 && start > a {
						errs = append(errs, "v1's answer to a request started after the apply")
					}
				case v == s2:
					new.Add(1)
					if a := applied.Load(); a != 0 && start > a {
						after.Add(1)
					}
				default:
					errs = append(errs, fmt.Sprintf("answer %d is neither %d nor %d", v, s1, s2))
				}
				mu.Unlock()
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	res, err := Apply(context.Background(), srv.Pid, Source{
		NewBinary: testutil.Build(t, newT),
		GoPIE:     testutil.Build(t, newT+"-pie"),
	}, ApplyOptions{Timeout: 20 * time.Second})
	if err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("apply: %v", err)
	}
	applied.Store(time.Now().UnixNano())
	t.Logf("applied %v: pause %d us", res.Functions, res.PauseUS)
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	noThrow(t, srv.Stderr())
	if len(errs) > 0 {
		t.Fatalf("%d bad answers: %v", len(errs), errs[:min(len(errs), 5)])
	}
	if after.Load() == 0 {
		t.Fatal("no request started after the apply was answered")
	}
	t.Logf("%d answers from v1, %d from v2 (%d started after the apply)", old.Load(), new.Load(), after.Load())
}
