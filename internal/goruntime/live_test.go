package goruntime

import (
	"debug/elf"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"graft/internal/testutil"
	"graft/tracer"
)

// walkAll stops p once and unwinds every goroutine.
func walkAll(t testing.TB, p *tracer.Process, ms *Modules) []Stack {
	t.Helper()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
	}()
	regs := map[int]ThreadRegs{}
	for _, tid := range p.Threads() {
		r, err := p.Regs(tid)
		if err != nil {
			t.Fatal(err)
		}
		regs[tid] = ThreadRegs{PC: r.PC(), SP: r.SP()}
	}
	if err := ms.Refresh(p); err != nil {
		t.Fatal(err)
	}
	gs, err := ms.L.Goroutines(p, ms.Bias)
	if err != nil {
		t.Fatal(err)
	}
	var out []Stack
	for _, g := range gs {
		out = append(out, ms.GoroutineStack(p, g, regs))
	}
	return out
}

// TestGoroutinesLive walks every goroutine of a goserver under load, many
// times: parked goroutines (main in accept, connection readers) must
// unwind to their top frame, every stack that is complete must end in a
// top frame. Then main.counterMu is locked from outside, so requests wait
// inside main.handleCount: the walk must show them there.
func TestGoroutinesLive(t *testing.T) {
	testutil.RequirePtrace(t)
	bin := testutil.Build(t, "goserver-v2")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f0 := f
	l, err := ReadLayout(f)
	if err != nil {
		t.Fatal(err)
	}
	srv, port := testutil.StartServer(t, "goserver-v2")
	var stop atomic.Bool
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 3 * time.Second}
	var failed atomic.Int64
	var locked atomic.Bool
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/count", port))
				if err != nil {
					if !locked.Load() {
						failed.Add(1)
					}
					return
				}
				io.ReadAll(resp.Body)
				resp.Body.Close()
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	p, err := tracer.Attach(srv.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ms := NewModules(l, 0)
	sawHandler, sawMain, incomplete, total := false, false, 0, 0
	for round := 0; round < 60; round++ {
		if round == 50 {
			lockMutex(t, p, f0, "main.counterMu")
			locked.Store(true)
			time.Sleep(300 * time.Millisecond)
		}
		for _, st := range walkAll(t, p, ms) {
			total++
			var names []string
			for _, fr := range st.Frames {
				names = append(names, fr.Func)
			}
			joined := strings.Join(names, " <- ")
			if st.Incomplete != "" {
				incomplete++
				// Running goroutines (in a signal handler, say) and
				// one caught while its stack is copied may be
				// incomplete; a parked one may not.
				if st.G.Status != l.Status["running"] && st.G.Status != l.Status["copystack"] {
					t.Errorf("goroutine %d (%s) parked but incomplete: %s: %s", st.G.ID, l.StatusName(st.G.Status), st.Incomplete, joined)
				}
				continue
			}
			if last := names[len(names)-1]; last != "runtime.goexit" && last != "runtime.mstart" && last != "runtime.rt0_go" {
				t.Errorf("goroutine %d: stack ends at %s, not at a top frame: %s", st.G.ID, last, joined)
			}
			if st.G.ID == 1 && strings.Contains(joined, "main.main") {
				sawMain = true
			}
			if locked.Load() && strings.Contains(joined, "main.handleCount") && st.G.Status == l.Status["waiting"] {
				sawHandler = true
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d goroutine stacks walked, %d incomplete (running)", total, incomplete)
	if !sawMain {
		t.Error("goroutine 1 never showed main.main")
	}
	if !sawHandler {
		t.Error("no goroutine was seen waiting in main.handleCount with its mutex held")
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
}

// lockMutex sets the locked bit of the sync.Mutex sym (a default build)
// in a pause in which it is free.
func lockMutex(t *testing.T, p *tracer.Process, f *elf.File, sym string) {
	t.Helper()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var addr uint64
	for _, s := range syms {
		if s.Name == sym {
			addr = s.Value
		}
	}
	for i := 0; i < 1000; i++ {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		var b [4]byte
		if _, err := p.ReadAt(b[:], int64(addr)); err != nil {
			t.Fatal(err)
		}
		free := b == [4]byte{}
		if free {
			b[0] = 1
			if _, err := p.WriteAt(b[:], int64(addr)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		if free {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never free", sym)
}

// TestGoroutinesAsyncPreempt: two goroutines spin in main.spin (no calls)
// with GOMAXPROCS=1, so the runtime preempts them with a signal: the one
// not running sits in runtime.asyncPreempt with main.spin below it at the
// exact PC it was interrupted at, and its stack unwinds to goexit; the
// one running is walked from its thread's registers, also to goexit; a
// goroutine reading the clock is caught inside the vDSO (on the system
// stack, g.sched stale) and walked from m.vdsoPC/SP through main.clock.
func TestGoroutinesAsyncPreempt(t *testing.T) {
	testutil.RequirePtrace(t)
	t.Setenv("GOMAXPROCS", "1")
	bin := testutil.Build(t, "goparked-v1")
	srv := testutil.Start(t, bin, "10", "spin")
	srv.WaitLine(t, "ready", 20*time.Second)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ReadLayout(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracer.Attach(srv.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ms := NewModules(l, 0)
	sawPreempted, sawRunning, sawVDSO := false, false, false
	for round := 0; round < 1000 && !(sawPreempted && sawRunning && sawVDSO); round++ {
		for _, st := range walkAll(t, p, ms) {
			if st.From == "vdso" {
				var names []string
				for _, fr := range st.Frames {
					names = append(names, fr.Func)
				}
				joined := strings.Join(names, " <- ")
				if st.Incomplete != "" || !strings.Contains(joined, "main.clock") || names[len(names)-1] != "runtime.goexit" {
					t.Fatalf("goroutine %d in a vDSO call: %s (%s)", st.G.ID, joined, st.Incomplete)
				}
				if !sawVDSO {
					t.Logf("goroutine %d in a vDSO call: %s", st.G.ID, joined)
				}
				sawVDSO = true
			}
			if st.From == "thread" && len(st.Frames) > 0 && st.Frames[0].Func == "main.spin" {
				if st.Incomplete != "" || st.Frames[len(st.Frames)-1].Func != "runtime.goexit" {
					t.Fatalf("running goroutine %d: stack from its thread does not reach goexit: %s", st.G.ID, st.Incomplete)
				}
				sawRunning = true
			}
			for i, fr := range st.Frames {
				if fr.Func != "runtime.asyncPreempt" || i+1 >= len(st.Frames) {
					continue
				}
				next := st.Frames[i+1]
				inClock := false
				for _, fr := range st.Frames {
					inClock = inClock || fr.Func == "main.clock"
				}
				if inClock && next.Exact && st.Incomplete == "" {
					continue // the clock goroutine, preempted on its way
				}
				if next.Func != "main.spin" || !next.Exact {
					t.Fatalf("goroutine %d: asyncPreempt's caller is %s (exact %v), want main.spin at its interrupted pc", st.G.ID, next.Func, next.Exact)
				}
				if st.Incomplete != "" || st.Frames[len(st.Frames)-1].Func != "runtime.goexit" {
					t.Fatalf("goroutine %d: preempted stack does not reach goexit: %s", st.G.ID, st.Incomplete)
				}
				if !sawPreempted {
					t.Logf("goroutine %d [%s]: asyncPreempt <- main.spin at %#x (round %d)", st.G.ID, l.StatusName(st.G.Status), next.PC, round)
				}
				sawPreempted = true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !sawPreempted {
		t.Error("no goroutine was seen asynchronously preempted in main.spin")
	}
	if !sawRunning {
		t.Error("no goroutine was seen running main.spin on its thread")
	}
	if !sawVDSO {
		t.Error("no goroutine was seen inside a vDSO call from main.clock")
	}
}
