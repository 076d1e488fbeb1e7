package graft

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/tracer"
)

// Benchmarks of issue 15 (one stop per apply). Every figure is reported as
// a ratio to a baseline measured in the same run: the bare stop/registers/
// resume cycle of the same target (tracer.BareCycle), the heartbeat's gap
// at rest, or the aim the issue sets.

// BenchmarkIdleStops: how often an idle thread (blocked in read()) is
// stopped per apply and per revert, from its voluntary context switches
// divided by those of one bare stop cycle, and how long the borrowed
// thread is held for graft's system calls, against one bare cycle.
func BenchmarkIdleStops(b *testing.B) {
	requirePtrace(b)
	id := startIdlers(b, "v1", 2)
	defer testutil.RequireReleased(b, id.proc.Pid)
	per := switchesPerStop(b, id)
	v2 := testutil.Build(b, "idlers-v2")
	ctx := context.Background()
	var applyStops, revertStops []float64
	var borrowed, bare []time.Duration
	b.ResetTimer()
	for range b.N {
		for _, op := range []string{"apply", "revert"} {
			settle(b, id)
			before := switchesOf(b, id.proc.Pid, id.idle())
			var held []ThreadHold
			if op == "apply" {
				res, err := Apply(ctx, id.proc.Pid, Source{NewBinary: v2}, ApplyOptions{})
				if err != nil {
					b.Fatal(err)
				}
				held = res.Held
			} else {
				res, err := Revert(ctx, id.proc.Pid, RevertOptions{})
				if err != nil {
					b.Fatal(err)
				}
				held = res.Held
			}
			stops := stopsOf(b, id, before, per)
			var lent int
			for _, h := range held {
				if h.SyscallsUS > 0 {
					lent = h.Tid
					if op == "apply" {
						borrowed = append(borrowed, time.Duration(h.SyscallsUS)*time.Microsecond)
					}
				}
			}
			for tid, n := range stops {
				if tid == lent {
					continue
				}
				if op == "apply" {
					applyStops = append(applyStops, n)
				} else {
					revertStops = append(revertStops, n)
				}
			}
		}
		bare = append(bare, bareCycle(b, id.proc.Pid, 3))
	}
	b.StopTimer()
	b.ReportMetric(maxF(applyStops), "max-idle-stops/apply")
	b.ReportMetric(maxF(revertStops), "max-idle-stops/revert")
	b.ReportMetric(float64(median(borrowed))/float64(median(bare)), "borrowed-held/stop-resume")
}

func maxF(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// gap asks idlers' heartbeat for its longest gap since the last ask.
func (id *idlers) gap(t testing.TB) time.Duration {
	f := strings.Fields(id.ask(t, "gap"))
	if len(f) != 3 {
		t.Fatalf("gap answer %q", f)
	}
	us, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(us) * time.Microsecond
}

// BenchmarkHeartbeatStall: the longest gap a heartbeat thread of the
// target (a timestamp every ~100 µs) sees while graft applies and reverts
// a patch, against its longest gap at rest over the same time span, and
// against the bare stop cycle.
func BenchmarkHeartbeatStall(b *testing.B) {
	requirePtrace(b)
	id := startIdlers(b, "v1", 2)
	defer testutil.RequireReleased(b, id.proc.Pid)
	v2 := testutil.Build(b, "idlers-v2")
	ctx := context.Background()
	var rest, during, pause, bare []time.Duration
	b.ResetTimer()
	for range b.N {
		id.gap(b)
		t0 := time.Now()
		res, err := Apply(ctx, id.proc.Pid, Source{NewBinary: v2}, ApplyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		span := time.Since(t0)
		during = append(during, id.gap(b))
		pause = append(pause, time.Duration(res.PauseUS)*time.Microsecond)
		time.Sleep(span)
		rest = append(rest, id.gap(b))
		if _, err := Revert(ctx, id.proc.Pid, RevertOptions{}); err != nil {
			b.Fatal(err)
		}
		bare = append(bare, bareCycle(b, id.proc.Pid, 3))
	}
	b.StopTimer()
	b.ReportMetric(float64(median(during).Microseconds()), "apply-gap-µs")
	b.ReportMetric(float64(median(rest).Microseconds()), "rest-gap-µs")
	b.ReportMetric(float64(median(during))/float64(median(rest)), "apply-gap/rest-gap")
	b.ReportMetric(float64(median(during))/float64(median(pause)), "apply-gap/pause")
	b.ReportMetric(float64(median(during))/float64(median(bare)), "apply-gap/stop-resume")
}

// timedProc records when the pause's steps happen (outlier analysis).
type timedProc struct {
	*tracer.Process
	mu                      sync.Mutex
	stopStart, stopEnd      time.Time
	firstWrite, lastWrite   time.Time
	endStart, endEnd        time.Time
	stops                   int
	afterStop, wroteInPause bool
	// waited: the most any target thread spent runnable but waiting for
	// a CPU during the stop (schedstat's run_delay), and which thread.
	waited    time.Duration
	waitedTid int
	delays0   map[int]time.Duration
}

// runDelays reads every thread's run_delay (/proc/PID/task/TID/schedstat,
// second field: time spent on a runqueue waiting for a CPU).
func runDelays(pid int) map[int]time.Duration {
	out := map[int]time.Duration{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, e.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		tid, _ := strconv.Atoi(e.Name())
		if len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			out[tid] = time.Duration(ns)
		}
	}
	return out
}

func (t *timedProc) Stop() error {
	if t.Process.Stopped() {
		return t.Process.Stop() // a no-op: not a stop of its own
	}
	s := time.Now()
	err := t.Process.Stop()
	e := time.Now()
	t.mu.Lock()
	t.stopStart, t.stopEnd, t.afterStop = s, e, true
	t.firstWrite = time.Time{}
	t.stops++
	t.mu.Unlock()
	return err
}

func (t *timedProc) WriteAt(b []byte, addr int64) (int, error) {
	n, err := t.Process.WriteAt(b, addr)
	t.mu.Lock()
	if t.afterStop {
		if t.firstWrite.IsZero() {
			t.firstWrite = time.Now()
		}
		t.lastWrite = time.Now()
	}
	t.mu.Unlock()
	return n, err
}

func (t *timedProc) EndPause(keep bool) (int, error) {
	s := time.Now()
	k, err := t.Process.EndPause(keep)
	e := time.Now()
	// Read after the pause (not to lengthen it): the threads were
	// stopped, not runnable, in between, so what grew is waits that
	// ended during the stop (plus any right after the pause).
	d1 := runDelays(t.Pid())
	t.mu.Lock()
	t.endStart, t.endEnd, t.afterStop = s, e, false
	t.waited, t.waitedTid = 0, 0
	for tid, d := range d1 {
		if w := d - t.delays0[tid]; w > t.waited {
			t.waited, t.waitedTid = w, tid
		}
	}
	t.mu.Unlock()
	return k, err
}

// Settle is the last request before apply's pause: the run delays are
// read now, outside the pause.
func (t *timedProc) Settle() error {
	err := t.Process.Settle()
	d := runDelays(t.Pid())
	t.mu.Lock()
	t.delays0 = d
	t.mu.Unlock()
	return err
}

// latencyProbe measures graft's own scheduling latency: a goroutine on
// its own OS thread sleeping 100 µs at a time, recording how late each
// wake-up is, so a slow pause can be set against what the machine did to
// graft at that very moment.
type latencyProbe struct {
	mu    sync.Mutex
	wakes []struct {
		at   time.Time
		late time.Duration
	}
	stop chan struct{}
	done chan struct{}
}

func startProbe() *latencyProbe {
	pr := &latencyProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		defer close(pr.done)
		for {
			select {
			case <-pr.stop:
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(100 * time.Microsecond)
			now := time.Now()
			pr.mu.Lock()
			pr.wakes = append(pr.wakes, struct {
				at   time.Time
				late time.Duration
			}{now, now.Sub(t0) - 100*time.Microsecond})
			pr.mu.Unlock()
		}
	}()
	return pr
}

// worst is the latest wake-up in [from, to].
func (pr *latencyProbe) worst(from, to time.Time) time.Duration {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var w time.Duration
	for _, x := range pr.wakes {
		if !x.at.Before(from) && !x.at.After(to.Add(x.late)) {
			w = max(w, x.late)
		}
	}
	return w
}

func (pr *latencyProbe) close() { close(pr.stop); <-pr.done }

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkStackedPauses: 20 stacked applies (pausebench v1->v2->v1->...,
// 8 worker threads) and the breakdown of each pause: the stop (interrupt
// every thread, wait for each, read registers), the check (unwind every
// stack), the writes, the end (detach), plus what the machine did
// meanwhile: graft's own worst wake-up latency (latencyProbe) and Go GC
// cycles during the pause. A pause over 3x the median is logged with its
// breakdown; the metrics give the slowest pause against the median and
// the share of the slowest pause's time spent in each step.
func BenchmarkStackedPauses(b *testing.B) {
	requirePtrace(b)
	v1, v2 := buildPauseBench(b)
	pts := [2]*Patch{}
	for i, pair := range [2][2]string{{v1, v2}, {v2, v1}} {
		pt, err := diffBinaries(pair[0], pair[1], nil)
		if err != nil {
			b.Fatal(err)
		}
		pts[i] = pt
	}
	sys, err := defaultSystem()
	if err != nil {
		b.Fatal(err)
	}
	var cur *timedProc
	sys.attach = func(pid int) (proc, error) {
		p, err := tracer.Attach(pid)
		if err != nil {
			return nil, err
		}
		cur = &timedProc{Process: p}
		return cur, nil
	}
	load := sys.load
	sys.load = func(ctx context.Context, p proc, pid int, im *elfpatch.Image, exe *tracer.Module, mods []tracer.Module, id string) (loadedImage, error) {
		return load(ctx, p.(*timedProc).Process, pid, im, exe, mods, id)
	}
	type pauseRec struct {
		total, stop, check, write, end, late time.Duration
		waited                               time.Duration
		gcs                                  uint64
		retries                              int
	}
	var all []pauseRec
	var bare []time.Duration
	b.ResetTimer()
	for range b.N {
		target := testutil.Start(b, v1, benchThreads())
		target.WaitLine(b, "ready", 20*time.Second)
		probe := startProbe()
		for k := range 20 {
			p := *pts[k%2]
			gc0 := gcCycles()
			res, err := sys.apply(context.Background(), target.Pid, &p, ApplyOptions{})
			if err != nil {
				probe.close()
				b.Fatal(err)
			}
			t := cur
			r := pauseRec{
				total:   time.Duration(res.PauseUS) * time.Microsecond,
				stop:    t.stopEnd.Sub(t.stopStart),
				check:   t.firstWrite.Sub(t.stopEnd),
				write:   t.lastWrite.Sub(t.firstWrite),
				end:     t.endEnd.Sub(t.endStart),
				late:    probe.worst(t.stopStart, t.endEnd),
				waited:  t.waited,
				gcs:     gcCycles() - gc0,
				retries: t.stops - 1,
			}
			all = append(all, r)
		}
		probe.close()
		bare = append(bare, bareCycle(b, target.Pid, 3))
		testutil.RequireReleased(b, target.Pid)
		syscallKill(target.Pid)
	}
	b.StopTimer()
	totals := make([]time.Duration, len(all))
	for i, r := range all {
		totals[i] = r.total
	}
	med := median(totals)
	worst := all[0]
	for _, r := range all {
		if r.total > worst.total {
			worst = r
		}
		if r.total > 3*med {
			b.Logf("slow pause %v (median %v): stop %v (a target thread waited %v of it on a runqueue), check %v, write %v, end %v; graft's worst wake-up latency meanwhile %v; GC cycles in the apply %d; safe-point retries %d",
				r.total, med, r.stop, r.waited, r.check, r.write, r.end, r.late, r.gcs, r.retries)
		}
	}
	b.ReportMetric(float64(med)/float64(median(bare)), "median-pause/stop-resume")
	b.ReportMetric(float64(worst.total)/float64(med), "worst/median-pause")
	b.ReportMetric(float64(worst.stop)/float64(worst.total), "worst-stop-share")
	b.ReportMetric(float64(worst.check)/float64(worst.total), "worst-check-share")
	b.ReportMetric(float64(worst.late)/float64(worst.total), "worst-latency/worst-pause")
	b.ReportMetric(float64(worst.waited)/float64(worst.stop), "worst-runqueue-wait/worst-stop")
	// Over every pause whose stop took over 3x the median stop: how much
	// of that stop one target thread spent waiting for a CPU.
	stops := make([]time.Duration, len(all))
	for i, r := range all {
		stops[i] = r.stop
	}
	medStop := median(stops)
	var slow, explained float64
	for _, r := range all {
		if r.stop > 3*medStop {
			slow += float64(r.stop)
			explained += float64(min(r.waited, r.stop))
		}
	}
	if slow > 0 {
		b.ReportMetric(explained/slow, "slow-stops-runqueue-share")
	}
	// Slow pauses (over 3x the median): how many have their excess over
	// the median covered, at least half, by a target thread's runqueue
	// wait or graft's own wake-up latency in the same window (the
	// machine).
	var nslow, machine float64
	for _, r := range all {
		if r.total <= 3*med {
			continue
		}
		nslow++
		if 2*max(r.waited, r.late) >= r.total-med {
			machine++
		}
	}
	if nslow > 0 {
		b.ReportMetric(machine/nslow, "slow-pauses-explained-by-machine")
		b.ReportMetric(nslow/float64(len(all)), "slow-pause-rate")
	}
	sort.Slice(all, func(i, j int) bool { return all[i].total > all[j].total })
	b.Logf("pauses, slowest first (of %d): %v", len(all), fmtPauses(all[:min(5, len(all))], func(r pauseRec) string {
		return fmt.Sprintf("%v[stop %v (runqueue wait %v) check %v write %v end %v late %v]", r.total, r.stop, r.waited, r.check, r.write, r.end, r.late)
	}))
}

func fmtPauses[T any](v []T, f func(T) string) string {
	var s []string
	for _, x := range v {
		s = append(s, f(x))
	}
	return strings.Join(s, ", ")
}

// BenchmarkApplyWall: `graft apply -p PID FILE` end to end (the CLI
// binary, patch file made beforehand) on a small server (sshd v1->v2) and
// on a ~5 MB C binary with DWARF (generated), against the aims of issue
// 15 (150 ms and 500 ms). --new (the diff made on the fly) is reported
// too.
func BenchmarkApplyWall(b *testing.B) {
	requirePtrace(b)
	dir := b.TempDir()
	cli := filepath.Join(dir, "gcli")
	if out, err := exec.Command("go", "build", "-o", cli, "./cmd/graft").CombinedOutput(); err != nil {
		b.Fatalf("build cli: %v\n%s", err, out)
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:wonderland\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	bigV1, bigV2 := buildBig(b, dir)
	for _, c := range []struct {
		name     string
		aim      time.Duration
		old, new string
		start    func() int
	}{
		{"sshd", 150 * time.Millisecond, testutil.Build(b, "sshd-v1"), testutil.Build(b, "sshd-v2"), func() int {
			p, _ := testutil.StartServer(b, "sshd-v1", "-u", users)
			return p.Pid
		}},
		{"big-5MB", 500 * time.Millisecond, bigV1, bigV2, func() int {
			p := testutil.Start(b, bigV1)
			p.WaitLine(b, "ready", 20*time.Second)
			return p.Pid
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			st, _ := os.Stat(c.old)
			patch := filepath.Join(dir, c.name+".patch")
			if out, err := exec.Command(cli, "diff", "-o", patch, c.old, c.new).CombinedOutput(); err != nil {
				b.Fatalf("diff: %v\n%s", err, out)
			}
			var file, onTheFly []time.Duration
			b.ResetTimer()
			for range b.N {
				pid := c.start()
				for _, args := range [][]string{{patch}, {"--new", c.new}} {
					t0 := time.Now()
					out, err := exec.Command(cli, append([]string{"apply", "-p", strconv.Itoa(pid)}, args...)...).CombinedOutput()
					d := time.Since(t0)
					if err != nil {
						b.Fatalf("apply %v: %v\n%s", args, err, out)
					}
					if args[0] == patch {
						file = append(file, d)
					} else {
						onTheFly = append(onTheFly, d)
					}
					if out, err := exec.Command(cli, "revert", "-p", strconv.Itoa(pid)).CombinedOutput(); err != nil {
						b.Fatalf("revert: %v\n%s", err, out)
					}
				}
				syscallKill(pid)
			}
			b.StopTimer()
			b.ReportMetric(float64(st.Size())/1e6, "binary-MB")
			b.ReportMetric(float64(median(file).Milliseconds()), "apply-ms")
			b.ReportMetric(float64(median(file))/float64(c.aim), "apply/aim")
			b.ReportMetric(float64(median(onTheFly))/float64(c.aim), "apply-new/aim")
		})
	}
}

// buildBig generates and compiles a C program of about 5 MB with DWARF
// (gcc -g -O0): 10000 functions over as many struct types, one of which
// (work_0) differs between the two builds. It prints "ready" and then
// calls work_0 now and then. The builds are cached in testprocs/build
// (compiling takes minutes on a loaded machine), next to their source,
// and rebuilt when the source changes.
func buildBig(b testing.TB, dir string) (v1, v2 string) {
	b.Helper()
	const nfuncs = 10000
	cache := filepath.Join(testutil.TestprocsDir(), "build")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, v := range []int{1, 2} {
		var sb strings.Builder
		sb.WriteString("#include <stdio.h>\n#include <unistd.h>\n#include <string.h>\n")
		for i := range nfuncs {
			fmt.Fprintf(&sb, "struct rec_%d { int id; long count; char name[16]; double weight; struct rec_%d *next; };\n", i, i)
			fmt.Fprintf(&sb, "__attribute__((noinline)) long work_%d(struct rec_%d *r, int n) {\n", i, i)
			fmt.Fprintf(&sb, "\tlong acc = %d;\n\tfor (int k = 0; k < n && r; k++, r = r->next) {\n", i)
			k := 7
			if i == 0 {
				k = 6 + v
			}
			fmt.Fprintf(&sb, "\t\tacc += r->id * %d + r->count + (long)r->weight;\n\t\tif (strlen(r->name) > %d) acc ^= %d;\n\t}\n\treturn acc;\n}\n", k, i%13, i)
		}
		sb.WriteString("int main(void) {\n\tstruct rec_0 r = {1, 2, \"x\", 3.0, 0};\n\tvolatile long sink = 0;\n\tprintf(\"ready\\n\");\n\tfflush(stdout);\n\tfor (;;) { sink += work_0(&r, 1); usleep(10000); }\n}\n")
		src := filepath.Join(cache, fmt.Sprintf("bigdwarf-v%d.c", v))
		out := filepath.Join(cache, fmt.Sprintf("bigdwarf-v%d", v))
		old, _ := os.ReadFile(src)
		if _, err := os.Stat(out); err != nil || string(old) != sb.String() {
			if err := os.WriteFile(src, []byte(sb.String()), 0o644); err != nil {
				b.Fatal(err)
			}
			tmp := out + ".tmp"
			if o, err := exec.Command("gcc", "-g", "-O0", "-o", tmp, src).CombinedOutput(); err != nil {
				b.Fatalf("gcc: %v\n%s", err, o)
			}
			if err := os.Rename(tmp, out); err != nil {
				b.Fatal(err)
			}
		}
		if v == 1 {
			v1 = out
		} else {
			v2 = out
		}
	}
	return v1, v2
}

// syscallKill ends a target started in a benchmark iteration (its process
// group, as testutil's cleanup would at the end).
func syscallKill(pid int) { syscall.Kill(-pid, syscall.SIGKILL) }

// settledCycle is bareCycle with the target left alone for 10 ms before
// each timed cycle, as it is before apply's pause: back to back, a cycle
// finds threads it just resumed not yet asleep again (an idle thread then
// stops without a wake-up of its own, see switchesPerStop), which makes
// the bare cycle cheaper than any stop of a settled process.
func settledCycle(b testing.TB, pid, n int) time.Duration {
	b.Helper()
	p, err := tracer.Attach(pid)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var total time.Duration
	for i := range n + 1 {
		time.Sleep(10 * time.Millisecond)
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

// benchThreads is BenchmarkStackedPauses' worker count: 8, or
// $STACKED_THREADS.
func benchThreads() string {
	if n := os.Getenv("STACKED_THREADS"); n != "" {
		return n
	}
	return "8"
}
