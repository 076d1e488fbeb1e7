package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Main runs a package's tests and then fails the run if any child of the
// test binary (every target a test started) is left traced or in a ptrace
// or job-control stop: every package that attaches promises to leave
// nothing behind stopped. Use it as the package's TestMain.
func Main(m *testing.M) {
	os.Exit(CheckLeftovers(m.Run()))
}

// CheckLeftovers turns a test run's exit code into a failure when a child
// of the test binary is left stopped or traced (for a TestMain that does
// more than run the tests).
func CheckLeftovers(code int) int {
	if bad := StuckChildren(); len(bad) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: processes left stopped or traced: %s\n", strings.Join(bad, ", "))
		if code == 0 {
			code = 1
		}
	}
	return code
}

// StuckChildren lists the threads of the test binary's children that are
// in state t/T or have a tracer.
func StuckChildren() []string {
	me := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var bad []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || parentOf(pid) != me {
			continue
		}
		states, err := ThreadStates(pid)
		if err != nil {
			continue
		}
		for tid, s := range states {
			if s == "t" || s == "T" {
				bad = append(bad, fmt.Sprintf("pid %d tid %d state %s", pid, tid, s))
			}
			if tp, err := TracerPid(tid); err == nil && tp > 0 {
				bad = append(bad, fmt.Sprintf("pid %d tid %d traced by %d", pid, tid, tp))
			}
		}
	}
	return bad
}

// parentOf returns pid's parent from /proc/PID/stat (0 if unknown).
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}
