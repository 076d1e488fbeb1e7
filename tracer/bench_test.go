package tracer

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// benchTarget starts prog (spin: busy threads; sleepers: threads blocked
// in nanosleep) with n extra threads and attaches to it.
func benchTarget(b *testing.B, prog string, n int) *Process {
	b.Helper()
	path, err := testutil.BuildE(prog)
	if err != nil {
		b.Fatal(err)
	}
	target := testutil.Start(b, path, strconv.Itoa(n))
	target.WaitLine(b, "ready", 10*time.Second)
	p, err := Attach(target.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := p.Close(); err != nil {
			b.Errorf("close: %v", err)
		}
		testutil.RequireReleased(b, target.Pid)
	})
	if got := len(p.Threads()); got != n+1 {
		b.Fatalf("%d threads, want %d", got, n+1)
	}
	return p
}

// stopCycle is one pause of the kind graft's apply makes: stop every
// thread, read every thread's registers, resume.
func stopCycle(b *testing.B, p *Process) {
	if err := p.BareCycle(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStopRegsResume measures the stop + registers + resume cycle at
// 1, 2, 9 and 65 threads (main plus 0, 1, 8, 64; DESIGN.md quotes 2, 9
// and 65), sleeping and busy. Each sub-benchmark also reports its cost
// relative to the single-thread cycle measured in the same run (x_base).
//
// Busy threads stop only when the scheduler next runs them, so with more
// busy threads than cores a cycle costs about one scheduling period of the
// machine (tens of milliseconds at 9 threads on 2 loaded cores, most of a
// second at 65): that is the kernel's, not tracer's, and the 65-thread busy
// case is left out to keep `make bench` short.
func BenchmarkStopRegsResume(b *testing.B) {
	var base float64
	for _, prog := range []string{"sleepers", "spin"} {
		for _, n := range []int{0, 1, 8, 64} {
			if prog == "spin" && n == 64 {
				continue
			}
			b.Run(fmt.Sprintf("%s/threads=%d", prog, n+1), func(b *testing.B) {
				p := benchTarget(b, prog, n)
				stopCycle(b, p) // first Stop also verifies the thread list
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					stopCycle(b, p)
				}
				b.StopTimer()
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				if prog == "sleepers" && n == 0 {
					base = ns
				}
				if base > 0 {
					b.ReportMetric(ns/base, "x_base")
				}
			})
		}
	}
}

// BenchmarkRemoteMmap measures one remote mmap + munmap pair on a stopped
// process, and reports it relative to a remote getpid (the fixed cost of
// borrowing a thread) measured in the same run.
func BenchmarkRemoteMmap(b *testing.B) {
	var base float64
	b.Run("getpid", func(b *testing.B) {
		p := benchTarget(b, "sleepers", 1)
		if err := p.Stop(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		base = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		p.Resume()
	})
	b.Run("mmap+munmap", func(b *testing.B) {
		p := benchTarget(b, "sleepers", 1)
		if err := p.Stop(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			a, err := p.Mmap(0, 1<<16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Munmap(a, 1<<16); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if base > 0 {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x_getpid")
		}
		p.Resume()
	})
}

// BenchmarkRemoteSyscallMechanism compares a remote getpid run
// self-restoring (PTRACE_SYSCALL with a signal frame on the thread's
// stack, the default) with the single-step fallback, in the same run; it
// reports the frame's cost as a ratio to the single-step.
func BenchmarkRemoteSyscallMechanism(b *testing.B) {
	var step float64
	for _, mode := range []string{"step", "frame"} {
		b.Run(mode, func(b *testing.B) {
			p := benchTarget(b, "sleepers", 1)
			if err := p.Stop(); err != nil {
				b.Fatal(err)
			}
			p.forceStep = mode == "step"
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if mode == "step" {
				step = per
			} else if step > 0 {
				if p.frameCalls == 0 {
					b.Fatal("no remote call took the frame path")
				}
				b.ReportMetric(per/step, "x_step")
			}
			p.Resume()
		})
	}
}
