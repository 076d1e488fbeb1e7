package tracer

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestMain fails the run if any child of the test binary (every target a
// test started) is left traced or in a ptrace or job-control stop: the
// package's promise is that it never leaves a process behind stopped.
func TestMain(m *testing.M) {
	if spec := os.Getenv("GRAFT_TRACER_HELPER"); spec != "" {
		runHelper(spec) // a helper process some tests start; never returns
	}
	code := m.Run()
	if bad := stuckChildren(); len(bad) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: processes left stopped or traced: %s\n", strings.Join(bad, ", "))
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// stuckChildren lists threads of our children (and their children) that
// are in state t/T or have a tracer.
func stuckChildren() []string {
	me := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var bad []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := status(pid)
		if err != nil {
			continue
		}
		if pp, _ := strconv.Atoi(st["PPid"]); pp != me {
			continue
		}
		tids, _ := tasks(pid)
		for _, tid := range tids {
			s := threadState(pid, tid)
			if s == 't' || s == 'T' {
				bad = append(bad, fmt.Sprintf("pid %d tid %d state %c", pid, tid, s))
			}
			if tp := tracerOf(pid, tid); tp > 0 {
				bad = append(bad, fmt.Sprintf("pid %d tid %d traced by %d", pid, tid, tp))
			}
		}
	}
	return bad
}
