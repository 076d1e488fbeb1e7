package graft

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"graft/internal/testutil"
	"graft/tracer"
)

// idlers is testprocs/idlers running: threads that wait, a heartbeat, and
// its stdin for commands.
type idlers struct {
	proc    *testutil.Proc
	in      io.Writer
	main    int
	beat    int
	readers []int
}

func startIdlers(t testing.TB, version string, nreaders int) *idlers {
	t.Helper()
	proc, in := testutil.StartInteractive(t, testutil.Build(t, "idlers-"+version), strconv.Itoa(nreaders))
	proc.WaitLine(t, "ready", 20*time.Second)
	id := &idlers{proc: proc, in: in}
	f := strings.Fields(id.ask(t, "tids"))
	if len(f) != 3+nreaders {
		t.Fatalf("tids answer %q", f)
	}
	for i, s := range f[1:] {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("tids answer %q", f)
		}
		switch i {
		case 0:
			id.main = n
		case 1:
			id.beat = n
		default:
			id.readers = append(id.readers, n)
		}
	}
	return id
}

// ask sends a command and returns the answer line.
func (id *idlers) ask(t testing.TB, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(id.in, cmd); err != nil {
		t.Fatal(err)
	}
	want := cmd
	if cmd == "ver" {
		want = "answer"
	}
	return strings.TrimSpace(id.proc.WaitLine(t, want, 10*time.Second))
}

// idle are the threads that only wait: main (between commands) and the
// readers.
func (id *idlers) idle() []int { return append([]int{id.main}, id.readers...) }

// voluntarySwitches reads a thread's voluntary context switches: a thread
// blocked in read() adds a fixed number per ptrace stop (it wakes into the
// stop and sleeps again after it).
func voluntarySwitches(t testing.TB, pid, tid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "voluntary_ctxt_switches:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no voluntary_ctxt_switches for tid %d", tid)
	return 0
}

func switchesOf(t testing.TB, pid int, tids []int) map[int]int {
	m := map[int]int{}
	for _, tid := range tids {
		m[tid] = voluntarySwitches(t, pid, tid)
	}
	return m
}

// settle waits until every idle thread sleeps (main has answered its
// last command and is back in read()).
func settle(t testing.TB, id *idlers) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		asleep := true
		for _, tid := range id.idle() {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", id.proc.Pid, tid))
			asleep = asleep && err == nil && strings.HasPrefix(string(b), "0 ") // read
			asleep = asleep && tracer.ThreadState(id.proc.Pid, tid) == "S"
		}
		if asleep {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("idle threads of idlers never all asleep in read()")
		}
		time.Sleep(time.Millisecond)
	}
}

// switchesPerStop measures, on the idle threads, how many voluntary
// context switches one bare stop/resume cycle costs each (every idle
// thread must give the same figure).
func switchesPerStop(t testing.TB, id *idlers) int {
	t.Helper()
	p, err := tracer.Attach(id.proc.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	settle(t, id)
	const n = 4
	before := switchesOf(t, id.proc.Pid, id.idle())
	for range n {
		if err := p.BareCycle(); err != nil {
			t.Fatal(err)
		}
		// Back in read() before the next stop: one woken but not yet
		// asleep again would stop without a switch of its own.
		settle(t, id)
	}
	after := switchesOf(t, id.proc.Pid, id.idle())
	per := -1
	for tid, b := range before {
		d := after[tid] - b
		if d%n != 0 || d == 0 || (per >= 0 && d/n != per) {
			t.Fatalf("idle tid %d: %d voluntary switches in %d stop cycles (others: %d per cycle)", tid, d, n, per)
		}
		per = d / n
	}
	return per
}

// stopsOf turns the switch counts around an operation into stops per
// idle thread.
func stopsOf(t testing.TB, id *idlers, before map[int]int, per int) map[int]float64 {
	settle(t, id) // a thread let go just now may not have slept again yet
	after := switchesOf(t, id.proc.Pid, id.idle())
	out := map[int]float64{}
	for tid, b := range before {
		out[tid] = float64(after[tid]-b) / float64(per)
	}
	return out
}

// checkHeld: every thread of the target was stopped exactly once, by the
// report (Held) and, for the idle threads, by the kernel's count.
func checkHeld(t *testing.T, what string, id *idlers, held []ThreadHold, stops map[int]float64) {
	t.Helper()
	tids, err := testutil.ThreadStates(id.proc.Pid)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	var borrowed []int
	for _, h := range held {
		seen[h.Tid] = true
		if h.Stops != 1 {
			t.Errorf("%s: tid %d stopped %d times by graft's own count, want 1 (%+v)", what, h.Tid, h.Stops, h)
		}
		if h.SyscallsUS > 0 {
			borrowed = append(borrowed, h.Tid)
		}
	}
	for tid := range tids {
		if !seen[tid] {
			t.Errorf("%s: tid %d missing from the held report %+v", what, tid, held)
		}
	}
	if len(borrowed) > 1 {
		t.Errorf("%s: %d threads borrowed for system calls (%v), want at most one", what, len(borrowed), borrowed)
	}
	// The kernel's count, for every idle thread but the borrowed one:
	// that one passes through two ptrace syscall-stops per injected call
	// within its one hold (it runs none of its own code in between).
	checked := 0
	for tid, n := range stops {
		if len(borrowed) == 1 && tid == borrowed[0] {
			continue
		}
		checked++
		if n != 1 {
			t.Errorf("%s: idle tid %d stopped %.2f times (from its voluntary context switches), want 1", what, tid, n)
		}
	}
	if checked == 0 {
		t.Errorf("%s: no idle thread left to count stops on", what)
	}
	t.Logf("%s: held %+v; idle stops %v; borrowed %v", what, held, stops, borrowed)
}

// An idle thread of the target is stopped once per apply and once per
// revert: the image is loaded and the record created on one borrowed
// thread that stays held into the pause, the pause ends by detaching, and
// a superseded image is unmapped on a thread kept from the pause.
func TestIdleThreadStoppedOnce(t *testing.T) {
	requirePtrace(t)
	id := startIdlers(t, "v1", 2)
	defer testutil.RequireReleased(t, id.proc.Pid)
	per := switchesPerStop(t, id)
	ctx := context.Background()
	pid := id.proc.Pid

	for _, step := range []struct {
		what, version, want string
	}{
		{"first apply (the record is created)", "v2", "v2 answer"},
		{"stacked apply (the image below is unloaded)", "v3", "v3 answer"},
	} {
		settle(t, id)
		before := switchesOf(t, pid, id.idle())
		res, err := Apply(ctx, pid, Source{NewBinary: testutil.Build(t, "idlers-"+step.version)}, ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkHeld(t, step.what, id, res.Held, stopsOf(t, id, before, per))
		if got := id.ask(t, "ver"); got != step.want {
			t.Fatalf("%s: ver answers %q, want %q", step.what, got, step.want)
		}
		if step.version == "v3" && len(res.Unloaded) != 1 {
			t.Fatalf("%s: unloaded %v, want the v1->v2 image", step.what, res.Unloaded)
		}
	}

	settle(t, id)
	before := switchesOf(t, pid, id.idle())
	rr, err := Revert(ctx, pid, RevertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkHeld(t, "revert (images and record unmapped)", id, rr.Held, stopsOf(t, id, before, per))
	if got := id.ask(t, "ver"); got != "v1 answer" {
		t.Fatalf("after revert: ver answers %q", got)
	}
	if m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid)); strings.Contains(string(m), "/memfd:graft") {
		t.Fatalf("after revert: graft mappings remain:\n%s", m)
	}
}
