package tracer

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"graft/internal/testutil"
)

// output collects a target's stdout lines from the moment it is created,
// so a test can look for a line and also assert what never appeared.
type output struct {
	mu    sync.Mutex
	lines []string
}

func collect(p *testutil.Proc) *output {
	o := &output{}
	go func() {
		for {
			line, err := p.Stdout.ReadString('\n')
			if line != "" {
				o.mu.Lock()
				o.lines = append(o.lines, strings.TrimRight(line, "\n"))
				o.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return o
}

func (o *output) all() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

// wait returns the first line with the given prefix, waiting for it.
func (o *output) wait(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range o.all() {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line %q within %v; output so far: %q", prefix, timeout, o.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count returns how many lines start with prefix.
func (o *output) count(prefix string) int {
	n := 0
	for _, l := range o.all() {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// blockers starts testprocs/tracee/blockers.c and returns it with its
// output and the thread ID of each role (read, accept, sleep, futex, cond,
// main) and its TCP port.
type blockersProc struct {
	*testutil.Proc
	out  *output
	fifo string
	tid  map[string]int
	port int
}

func startBlockers(t *testing.T) *blockersProc {
	t.Helper()
	fifo := t.TempDir() + "/fifo"
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	p := testutil.Start(t, testutil.Build(t, "blockers"), fifo)
	b := &blockersProc{Proc: p, out: collect(p), fifo: fifo, tid: map[string]int{}}
	b.out.wait(t, "ready", 10*time.Second)
	for _, l := range b.out.all() {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "tid" {
			b.tid[f[1]], _ = strconv.Atoi(f[2])
		}
		if len(f) == 2 && f[0] == "port" {
			b.port, _ = strconv.Atoi(f[1])
		}
	}
	for _, role := range []string{"read", "accept", "sleep", "futex", "cond", "main"} {
		if b.tid[role] == 0 {
			t.Fatalf("blockers did not report its %s thread: %q", role, b.out.all())
		}
	}
	// Let every thread reach its blocking call.
	deadline := time.Now().Add(5 * time.Second)
	for role, tid := range b.tid {
		for ThreadState(p.Pid, tid) != "S" {
			if time.Now().After(deadline) {
				t.Fatalf("%s thread %d never blocked (state %q)", role, tid, ThreadState(p.Pid, tid))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return b
}

// requireNoEINTR fails if the target reported an interrupted or failed
// blocking call, or a spurious wake-up.
func (b *blockersProc) requireNoEINTR(t *testing.T) {
	t.Helper()
	for _, l := range b.out.all() {
		for _, bad := range []string{"EINTR", "error", "spurious", "woke futex"} {
			if strings.HasPrefix(l, bad) {
				t.Errorf("target reported %q", l)
			}
		}
	}
}
