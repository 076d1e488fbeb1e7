package safepoint

import (
	"strconv"
	"testing"
	"time"

	"graft/internal/testutil"
)

// BenchmarkStacks measures what WaitSafe adds to a pause: stop every
// thread, unwind every stack, resume, against the tracer's bare cycle
// (stop, read every thread's registers, resume) measured alternately in
// the same run on the same process. Reported: both times per cycle and
// their ratio.
func BenchmarkStacks(b *testing.B) {
	testutil.RequirePtrace(b)
	for _, n := range []int{1, 8, 64} {
		b.Run(strconv.Itoa(n)+"threads", func(b *testing.B) {
			target := testutil.Start(b, testutil.Build(b, "sp_many"), strconv.Itoa(n))
			target.WaitLine(b, "ready", 10*time.Second)
			u, err := ForProcess(target.Pid)
			if err != nil {
				b.Fatal(err)
			}
			p := attach(b, target.Pid)
			u.Preload(p)
			bare := func() {
				if err := p.BareCycle(); err != nil {
					b.Fatal(err)
				}
			}
			frames := 0
			unwind := func() {
				if err := p.Stop(); err != nil {
					b.Fatal(err)
				}
				st, err := u.StacksOf(p)
				if err != nil {
					b.Fatal(err)
				}
				if len(st) != n {
					b.Fatalf("%d stacks, want %d", len(st), n)
				}
				for _, s := range st {
					if s[len(s)-1].Incomplete {
						b.Fatalf("incomplete stack: %s", FormatStack(s))
					}
					frames += len(s)
				}
				if err := p.Resume(); err != nil {
					b.Fatal(err)
				}
			}
			bare()
			unwind() // warm up: first reads of every stack page
			frames = 0
			var tBare, tUnwind time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				bare()
				t1 := time.Now()
				unwind()
				tUnwind += time.Since(t1)
				tBare += t1.Sub(t0)
			}
			b.StopTimer()
			b.ReportMetric(float64(tBare.Microseconds())/float64(b.N), "µs-bare")
			b.ReportMetric(float64(tUnwind.Microseconds())/float64(b.N), "µs-unwind")
			b.ReportMetric(float64(tUnwind)/float64(tBare), "ratio")
			b.ReportMetric(float64(frames)/float64(b.N*n), "frames/thread")
		})
	}
}
