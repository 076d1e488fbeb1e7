package graft

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"graft/internal/testutil"
	"graft/tracer"
)

// Benchmarks. Figures are reported as ratios to a baseline measured in the
// same run on the same target, never as absolute thresholds.

// buildPauseBench compiles testdata/pausebench twice (ten functions differ).
func buildPauseBench(b testing.TB) (v1, v2 string) {
	b.Helper()
	dir := b.TempDir()
	src := filepath.Join("testdata", "pausebench", "pausebench.c")
	out := [2]string{}
	for i := range out {
		out[i] = filepath.Join(dir, fmt.Sprintf("pausebench-v%d", i+1))
		cmd := exec.Command("gcc", "-g", "-O2", fmt.Sprintf("-DVERSION=%d", i+1), "-o", out[i], src, "-lpthread")
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("gcc: %v\n%s", err, o)
		}
	}
	return out[0], out[1]
}

// bareCycle is the floor a ptrace patcher pays: stop every thread, read
// every thread's registers, resume. It returns the mean of n cycles.
func bareCycle(b testing.TB, pid, n int) time.Duration {
	b.Helper()
	p, err := tracer.Attach(pid)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var total time.Duration
	for range n {
		t0 := time.Now()
		if err := p.Stop(); err != nil {
			b.Fatal(err)
		}
		for _, tid := range p.Threads() {
			if _, err := p.Regs(tid); err != nil {
				b.Fatal(err)
			}
		}
		if err := p.Resume(); err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
	}
	return total / time.Duration(n)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkPause: the pause of a 10-function patch (stop, unwind and check
// every thread, write ten jumps and the record, resume) against the bare
// stop/registers/resume cycle, on 1, 8, 12 and 64 worker threads (plus main).
// Each iteration applies and reverts the patch once and measures the bare
// cycle in between.
func BenchmarkPause(b *testing.B) {
	requirePtrace(b)
	v1, v2 := buildPauseBench(b)
	pt, err := diffBinaries(v1, v2)
	if err != nil {
		b.Fatal(err)
	}
	if len(pt.Image.Redirects) != 10 {
		b.Fatalf("pausebench diff redirects %d functions, want 10", len(pt.Image.Redirects))
	}
	sys, err := defaultSystem()
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 8, 12, 64} {
		b.Run("threads="+strconv.Itoa(n), func(b *testing.B) {
			target := testutil.Start(b, v1, strconv.Itoa(n))
			target.WaitLine(b, "ready", 20*time.Second)
			defer testutil.RequireReleased(b, target.Pid)
			var pauses, bares, unpauses []time.Duration
			b.ResetTimer()
			for range b.N {
				p := *pt
				res, err := sys.apply(context.Background(), target.Pid, &p, ApplyOptions{})
				if err != nil {
					b.Fatal(err)
				}
				pauses = append(pauses, time.Duration(res.PauseUS)*time.Microsecond)
				rr, err := sys.revert(context.Background(), target.Pid, RevertOptions{})
				if err != nil {
					b.Fatal(err)
				}
				unpauses = append(unpauses, time.Duration(rr.PauseUS)*time.Microsecond)
				bares = append(bares, bareCycle(b, target.Pid, 3))
			}
			b.StopTimer()
			pm, bm := median(pauses), median(bares)
			b.ReportMetric(float64(pm.Microseconds()), "pause-µs")
			b.ReportMetric(float64(median(unpauses).Microseconds()), "revert-pause-µs")
			b.ReportMetric(float64(bm.Microseconds()), "stop-resume-µs")
			b.ReportMetric(float64(pm)/float64(bm), "pause/stop-resume")
		})
	}
}

// echoLoad drives sshd with conns connections of rounds ECHO round trips
// each, all at once, and returns requests per second.
func echoLoad(b testing.TB, port, conns, rounds int) float64 {
	b.Helper()
	errs := make(chan error, conns)
	start := time.Now()
	for range conns {
		go func() {
			errs <- func() error {
				c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				r := bufio.NewReader(c)
				if _, err := r.ReadString('\n'); err != nil {
					return err
				}
				if _, err := fmt.Fprintf(c, "LOGIN alice wonderland\n"); err != nil {
					return err
				}
				if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "OK") {
					return fmt.Errorf("login: %q %v", l, err)
				}
				for range rounds {
					if _, err := c.Write([]byte("ECHO the quick brown fox\n")); err != nil {
						return err
					}
					l, err := r.ReadString('\n')
					if err != nil {
						return err
					}
					if l != "OK the quick brown fox\n" {
						return fmt.Errorf("ECHO: %q", l)
					}
				}
				return nil
			}()
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return float64(conns*rounds) / time.Since(start).Seconds()
}

// BenchmarkPatchedThroughput: steady-state throughput of sshd v2 patched
// live to v3 (cmd_echo, on the measured path, runs behind one extra jump)
// against a freshly started v3 under the same load, alternating which
// server goes first. Reports patched/fresh (aim: >= 0.99).
func BenchmarkPatchedThroughput(b *testing.B) {
	requirePtrace(b)
	users := filepath.Join(b.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:wonderland\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	fresh, fport := testutil.StartServer(b, "sshd-v3", "-u", users)
	patched, pport := testutil.StartServer(b, "sshd-v2", "-u", users)
	defer testutil.RequireReleased(b, fresh.Pid)
	defer testutil.RequireReleased(b, patched.Pid)
	if _, err := Apply(context.Background(), patched.Pid, Source{NewBinary: testutil.Build(b, "sshd-v3")}, ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
	const conns, rounds = 4, 400
	echoLoad(b, fport, conns, rounds/4) // warm up both
	echoLoad(b, pport, conns, rounds/4)
	var fr, pr []float64
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			fr = append(fr, echoLoad(b, fport, conns, rounds))
			pr = append(pr, echoLoad(b, pport, conns, rounds))
		} else {
			pr = append(pr, echoLoad(b, pport, conns, rounds))
			fr = append(fr, echoLoad(b, fport, conns, rounds))
		}
	}
	b.StopTimer()
	// The machine is shared: medians, and the best round of each (the
	// least disturbed), both as ratios.
	fm, pm := medianF(fr), medianF(pr)
	b.ReportMetric(fm, "fresh-req/s")
	b.ReportMetric(pm, "patched-req/s")
	b.ReportMetric(pm/fm, "patched/fresh")
	b.ReportMetric(slices.Max(pr)/slices.Max(fr), "best-patched/best-fresh")
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
