package loader

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"graft/internal/testutil"
)

// Two images side by side (two patches applied in turn): both land
// within reach of the executable, apart, and unload independently.
func TestLoadTwice(t *testing.T) {
	testutil.RequirePtrace(t)
	tgt := startTick(t)
	p, main, res := tgt.p, tgt.main, tgt.res
	im := tickImage(t)
	a, err := Load(p, im, main, res.Resolve, Options{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(p, im, main, res.Resolve, Options{ID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Base < b.Base+b.Size && b.Base < a.Base+a.Size {
		t.Fatalf("images overlap: %#x+%#x and %#x+%#x", a.Base, a.Size, b.Base, b.Size)
	}
	span := ImageSpan(nil, main)
	for _, l := range []*Loaded{a, b} {
		lo, hi := min(l.Base, span.Start), max(l.Base+l.Size, span.End)
		if hi-lo > 1<<31 {
			t.Fatalf("image at %#x out of reach of %#x-%#x", l.Base, span.Start, span.End)
		}
		if len(l.Pauses) != 1 {
			t.Errorf("Load held a borrowed thread %d times, want once", len(l.Pauses))
		}
	}
	// Only the borrowed thread was stopped, once per Load, never for a
	// pause: the others ran on.
	var stopped []string
	for _, h := range p.Holds() {
		if h.Stops > 0 {
			stopped = append(stopped, fmt.Sprintf("tid %d: %d stops, pause %v, syscalls %v", h.Tid, h.Stops, h.Pause, h.Syscalls))
		}
		if h.Pause != 0 || (h.Stops > 0 && h.Syscalls == 0) {
			t.Errorf("tid %d held for a pause (%v) or not for system calls: %+v", h.Tid, h.Pause, h)
		}
	}
	if len(stopped) != 1 || !strings.Contains(stopped[0], ": 2 stops") {
		t.Errorf("two Loads should stop one borrowed thread twice and nothing else:\n%s", strings.Join(stopped, "\n"))
	}
	maps := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if m := maps(); !strings.Contains(m, "/memfd:graft-a") || !strings.Contains(m, "/memfd:graft-b") {
		t.Fatalf("maps:\n%s", m)
	}
	if err := a.Unload(p); err != nil {
		t.Fatal(err)
	}
	if err := a.Unload(p); err != nil {
		t.Fatalf("second Unload: %v", err)
	}
	if m := maps(); strings.Contains(m, "/memfd:graft-a") || !strings.Contains(m, "/memfd:graft-b") {
		t.Fatalf("after unloading a:\n%s", m)
	}
	if err := b.Unload(p); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLoad measures how long Load holds its borrowed thread stopped
// (the others run on), against the floor of a bare Stop+Resume of the
// same process in the same run (reported as pause-ratio: held time per
// Load / one Stop+Resume).
func BenchmarkLoad(b *testing.B) {
	testutil.RequirePtrace(b)
	im := tickImage(b)
	tgt := startTick(b)
	p, main, res := tgt.p, tgt.main, tgt.res
	var floor, paused time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := p.Stop(); err != nil {
			b.Fatal(err)
		}
		if err := p.Resume(); err != nil {
			b.Fatal(err)
		}
		floor += time.Since(start)
		l, err := Load(p, im, main, res.Resolve, Options{ID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range l.Pauses {
			paused += d
		}
		if err := l.Unload(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(paused.Microseconds())/float64(b.N), "pause-µs/load")
	b.ReportMetric(float64(floor.Microseconds())/float64(b.N), "stopresume-µs")
	b.ReportMetric(float64(paused)/float64(floor), "pause-ratio")
}

// A caller that already holds the process stopped (the controller inside
// its pause) keeps it stopped: Load and Unload neither stop nor resume.
func TestLoadWhileStopped(t *testing.T) {
	testutil.RequirePtrace(t)
	tgt := startTick(t)
	p, main, res := tgt.p, tgt.main, tgt.res
	im := tickImage(t)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	defer p.Resume()
	l, err := Load(p, im, main, res.Resolve, Options{ID: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Stopped() || len(l.Pauses) != 0 {
		t.Fatalf("stopped %v, pauses %v: Load resumed a process its caller held", p.Stopped(), l.Pauses)
	}
	checkRegions(t, p.Pid(), l)
	if err := l.Unload(p); err != nil {
		t.Fatal(err)
	}
	if !p.Stopped() {
		t.Fatal("Unload resumed a process its caller held")
	}
}
