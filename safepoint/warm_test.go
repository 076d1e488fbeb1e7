package safepoint

import (
	"testing"
	"time"

	"graft/internal/testutil"
	"graft/tracer"
)

// BenchmarkWarm: unwinding every thread of a stopped process (9 threads
// asleep) with a fresh unwinder, cold against warmed by Warm while the
// process ran, alternating in the same run. Reports warm/cold.
func BenchmarkWarm(b *testing.B) {
	testutil.RequirePtrace(b)
	target := testutil.Start(b, testutil.Build(b, "sleepers"), "8")
	target.WaitLine(b, "ready", 10*time.Second)
	p, err := tracer.Attach(target.Pid)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		p.Close()
		testutil.RequireReleased(b, target.Pid)
	}()
	var cold, warm time.Duration
	for i := 0; i < b.N; i++ {
		for _, warmed := range []bool{false, true} {
			u, err := ForProcess(target.Pid)
			if err != nil {
				b.Fatal(err)
			}
			if warmed {
				u.Warm(target.Pid, tracer.ProcMem(target.Pid))
			}
			if err := p.Stop(); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			stacks, err := u.StacksOf(p)
			d := time.Since(t0)
			if err := p.Resume(); err != nil {
				b.Fatal(err)
			}
			if err != nil || len(stacks) != 9 {
				b.Fatalf("%d stacks, %v", len(stacks), err)
			}
			for tid, st := range stacks {
				if len(st) == 0 || st[len(st)-1].Incomplete {
					b.Fatalf("tid %d: incomplete stack %+v", tid, st)
				}
			}
			if warmed {
				warm += d
			} else {
				cold += d
			}
		}
	}
	b.ReportMetric(float64(warm)/float64(cold), "warm/cold")
}

// Warm leaves the stacks a later stop unwinds exactly as a cold unwinder
// finds them.
func TestWarmSameStacks(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sleepers"), "3")
	target.WaitLine(t, "ready", 10*time.Second)
	p, err := tracer.Attach(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Close()
		testutil.RequireReleased(t, target.Pid)
	}()
	cold, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	warm, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	warm.Warm(target.Pid, tracer.ProcMem(target.Pid))
	if len(warm.mods) == 0 {
		t.Fatal("no modules")
	}
	memoed := 0
	for _, m := range warm.mods {
		memoed += len(m.memo)
	}
	if memoed == 0 {
		t.Fatal("Warm memoised no unwind rule")
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	a, err1 := cold.StacksOf(p)
	b, err2 := warm.StacksOf(p)
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	for tid, fa := range a {
		fb := b[tid]
		if len(fa) != len(fb) {
			t.Fatalf("tid %d: %d frames cold, %d warmed", tid, len(fa), len(fb))
		}
		for i := range fa {
			if fa[i] != fb[i] {
				t.Errorf("tid %d frame %d: cold %+v, warmed %+v", tid, i, fa[i], fb[i])
			}
		}
	}
}
