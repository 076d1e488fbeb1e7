package graft

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"graft/internal/goruntime"
	"graft/internal/testutil"
	"graft/safepoint"
	"graft/tracer"
)

// BenchmarkGoroutineWalk: one stop in which every goroutine of a process
// with 10,000 parked goroutines (each ten frames deep) is read from
// runtime.allgs and unwound with the pclntab, against the bare
// stop/registers/resume cycle of the same process.
func BenchmarkGoroutineWalk(b *testing.B) {
	requirePtrace(b)
	const n = 10000
	target := testutil.Start(b, testutil.Build(b, "goparked-v1"), strconv.Itoa(n))
	target.WaitLine(b, "ready", 60*time.Second)
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", target.Pid))
	if err != nil {
		b.Fatal(err)
	}
	l, err := goruntime.ReadLayout(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	g := safepoint.NewGoUnwinder(l, 0)
	p, err := tracer.Attach(target.Pid)
	if err != nil {
		b.Fatal(err)
	}
	if err := g.Preload(p); err != nil {
		b.Fatal(err)
	}
	var walks, bares []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := p.Stop(); err != nil {
			b.Fatal(err)
		}
		stacks, err := g.StacksOf(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Resume(); err != nil {
			b.Fatal(err)
		}
		walks = append(walks, time.Since(t0))
		gs := 0
		for _, st := range stacks {
			if st.Kind == "goroutine" {
				gs++
				if last := st.Frames[len(st.Frames)-1]; last.Incomplete {
					b.Fatalf("goroutine %d incomplete: %s", st.ID, last.Reason)
				}
			}
		}
		if gs < n {
			b.Fatalf("%d goroutines walked, want at least %d", gs, n)
		}
		t0 = time.Now()
		if err := p.BareCycle(); err != nil {
			b.Fatal(err)
		}
		bares = append(bares, time.Since(t0))
	}
	b.StopTimer()
	p.Close()
	wm, bm := median(walks), median(bares)
	b.ReportMetric(float64(wm.Microseconds()), "walk-µs")
	b.ReportMetric(float64(wm.Nanoseconds())/n, "ns/goroutine")
	b.ReportMetric(float64(bm.Microseconds()), "stop-resume-µs")
	b.ReportMetric(float64(wm)/float64(bm), "walk/stop-resume")
}

// BenchmarkGoPause: the pause of the Go patch goserver v2 -> v3 (stop,
// walk every goroutine, link the module, write the record and the jump,
// resume) against the bare stop/registers/resume cycle, in a server with
// a thousand idle keep-alive connections (a thousand parked goroutines).
// Each iteration applies and reverts once. The images stay mapped (a Go
// module is never unregistered), and each reserves NEW's whole span within
// ±2 GiB of the executable, so a fresh server takes over every 16
// iterations (outside the timing).
func BenchmarkGoPause(b *testing.B) {
	requirePtrace(b)
	sys, err := defaultSystem()
	if err != nil {
		b.Fatal(err)
	}
	var srv *testutil.Proc
	var conns []net.Conn
	fresh := func() {
		for _, c := range conns {
			c.Close()
		}
		if srv != nil {
			syscall.Kill(srv.Pid, syscall.SIGKILL)
		}
		var port int
		srv, port = testutil.StartServer(b, "goserver-v2")
		conns = idleConns(b, port, 1000)
	}
	fresh()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	pt, err := sys.resolve(srv.Pid, Source{NewBinary: testutil.Build(b, "goserver-v3"), GoPIE: testutil.Build(b, "goserver-v3-pie")})
	if err != nil {
		b.Fatal(err)
	}
	var pauses, unpauses, bares []time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%16 == 0 {
			b.StopTimer()
			fresh()
			b.StartTimer()
		}
		cp := *pt
		res, err := sys.apply(context.Background(), srv.Pid, &cp, ApplyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		pauses = append(pauses, time.Duration(res.PauseUS)*time.Microsecond)
		rr, err := sys.revert(context.Background(), srv.Pid, RevertOptions{})
		if err != nil {
			b.Fatal(err)
		}
		unpauses = append(unpauses, time.Duration(rr.PauseUS)*time.Microsecond)
		bares = append(bares, bareCycle(b, srv.Pid, 3))
	}
	b.StopTimer()
	pm, bm := median(pauses), median(bares)
	b.ReportMetric(float64(pm.Microseconds()), "pause-µs")
	b.ReportMetric(float64(median(unpauses).Microseconds()), "revert-pause-µs")
	b.ReportMetric(float64(bm.Microseconds()), "stop-resume-µs")
	b.ReportMetric(float64(pm)/float64(bm), "pause/stop-resume")
}

// idleConns opens n keep-alive connections to a goserver, each having
// completed one request: n server goroutines parked reading the next.
func idleConns(b testing.TB, port, n int) []net.Conn {
	b.Helper()
	var out []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, c)
		if _, err := io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 512)
	for _, c := range out {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	return out
}
