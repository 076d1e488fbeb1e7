package graft

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
// every thread's registers, resume. It returns the mean of n cycles. A
// first, untimed cycle follows the attach. (Apply's pause is now its
// first stop of the whole process after attaching, which also lists
// /proc/PID/task once for threads the attach missed: the baseline leaves
// that cost out, to the pause's disadvantage.)
func bareCycle(b testing.TB, pid, n int) time.Duration {
	b.Helper()
	p, err := tracer.Attach(pid)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var total time.Duration
	for i := range n + 1 {
		t0 := time.Now()
		if err := p.BareCycle(); err != nil {
			b.Fatal(err)
		}
		if i > 0 {
			total += time.Since(t0)
		}
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
	pt, err := diffBinaries(v1, v2, nil)
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
			var pauses, bares, unpauses, settled []time.Duration
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
				settled = append(settled, settledCycle(b, target.Pid, 3))
			}
			b.StopTimer()
			pm, bm := median(pauses), median(bares)
			b.ReportMetric(float64(pm.Microseconds()), "pause-µs")
			b.ReportMetric(float64(median(unpauses).Microseconds()), "revert-pause-µs")
			b.ReportMetric(float64(bm.Microseconds()), "stop-resume-µs")
			b.ReportMetric(float64(pm)/float64(bm), "pause/stop-resume")
			b.ReportMetric(float64(pm)/float64(median(settled)), "pause/settled-stop-resume")
		})
	}
}

// lineLoad drives sshd with conns connections of rounds round trips of
// line each, all at once (logged in as alice first when login is set), and
// returns requests per second. It returns its error rather than failing
// the benchmark, so it can run on a goroutine of its own (testing's
// FailNow must be called from the benchmark's goroutine).
func lineLoad(port, conns, rounds int, login bool, line, want string) (float64, error) {
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
				if login {
					if _, err := fmt.Fprintf(c, "LOGIN alice wonderland\n"); err != nil {
						return err
					}
					if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "OK") {
						return fmt.Errorf("login: %q %v", l, err)
					}
				}
				req := []byte(line + "\n")
				for range rounds {
					if _, err := c.Write(req); err != nil {
						return err
					}
					l, err := r.ReadString('\n')
					if err != nil {
						return err
					}
					if l != want+"\n" {
						return fmt.Errorf("%s: %q, want %q", line, l, want)
					}
				}
				return nil
			}()
		}()
	}
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return 0, fmt.Errorf("load on port %d: %w", port, first)
	}
	return float64(conns*rounds) / time.Since(start).Seconds(), nil
}

// BenchmarkPatchedThroughput: steady-state throughput of a server patched
// live against a freshly started server of the new version under the same
// load, run side by side; the load goes through the patched
// function (behind one extra jump): sshd v1 -> v2 (cmd_login, failed
// logins) and v2 -> v3 (cmd_echo). Reports patched/fresh (aim: >= 0.99).
func BenchmarkPatchedThroughput(b *testing.B) {
	requirePtrace(b)
	users := filepath.Join(b.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:wonderland\nbob:hunter2\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		from, to    int
		login       bool
		line, reply string
	}{
		{1, 2, false, "LOGIN bob hunter3", "FAIL login incorrect"},
		{2, 3, true, "ECHO the quick brown fox", "OK the quick brown fox"},
		// Control: two fresh v2 servers, nothing patched. Its ratio is
		// what the harness itself gives (which server gets which
		// goroutine, scheduling): read the two above against it.
		{2, 2, false, "LOGIN bob hunter3", "FAIL login incorrect"},
	} {
		name := fmt.Sprintf("sshd-v%d-v%d", c.from, c.to)
		if c.from == c.to {
			name = fmt.Sprintf("control-sshd-v%d-unpatched", c.from)
		}
		b.Run(name, func(b *testing.B) {
			fresh, fport := testutil.StartServer(b, fmt.Sprintf("sshd-v%d", c.to), "-u", users)
			patched, pport := testutil.StartServer(b, fmt.Sprintf("sshd-v%d", c.from), "-u", users)
			defer testutil.RequireReleased(b, fresh.Pid)
			defer testutil.RequireReleased(b, patched.Pid)
			if c.from != c.to {
				if _, err := Apply(context.Background(), patched.Pid, Source{NewBinary: testutil.Build(b, fmt.Sprintf("sshd-v%d", c.to))}, ApplyOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			const conns, rounds = 4, 400
			load := func(port int) (float64, error) { return lineLoad(port, conns, rounds, c.login, c.line, c.reply) }
			for _, port := range []int{fport, pport} { // warm up both
				if _, err := load(port); err != nil {
					b.Fatal(err)
				}
			}
			// Both servers take their load at the same time, so whatever
			// else the shared machine does disturbs both alike; the
			// ratio is taken per round.
			var fr, pr, ratio []float64
			b.ResetTimer()
			for range b.N {
				type rate struct {
					v   float64
					err error
				}
				done := make(chan rate, 1)
				go func() {
					v, err := load(fport)
					done <- rate{v, err}
				}()
				p, err := load(pport)
				f := <-done
				if err != nil || f.err != nil {
					b.Fatal(errors.Join(err, f.err))
				}
				fr, pr, ratio = append(fr, f.v), append(pr, p), append(ratio, p/f.v)
			}
			b.StopTimer()
			b.ReportMetric(medianF(fr), "fresh-req/s")
			b.ReportMetric(medianF(pr), "patched-req/s")
			b.ReportMetric(medianF(ratio), "patched/fresh")
		})
	}
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
