package tracer

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Helpers that read /proc. They never need the tracer goroutine.

// tasks lists the thread IDs of pid from /proc/PID/task.
func tasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	return tids, nil
}

// threadState returns the state letter of one thread (R, S, D, T, t, Z, X)
// from /proc/PID/task/TID/stat, or 0 if the thread is gone.
func threadState(pid, tid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may itself contain ") ".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// ThreadState returns the state letter /proc reports for thread tid of pid
// ("R", "S", "D", "T", "t", "Z", ...), or "" if the thread is gone.
func ThreadState(pid, tid int) string {
	s := threadState(pid, tid)
	if s == 0 {
		return ""
	}
	return string(s)
}

// status reads /proc/PID/status into a map of field -> trimmed value.
func status(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// tracerOf returns the TracerPid of a thread (0: not traced, -1: unknown).
func tracerOf(pid, tid int) int {
	st, err := status(tid)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(st["TracerPid"])
	if err != nil {
		return -1
	}
	return n
}

// processGone reports whether pid no longer runs: /proc has no entry, or
// the thread-group leader is a zombie or dead.
func processGone(pid int) bool {
	s := threadState(pid, pid)
	return s == 0 || s == 'Z' || s == 'X'
}

// comm returns the command name of pid, "" if unknown.
func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// sigPending reports whether sig is pending for the thread (its own
// pending set, /proc/PID/task/TID/status SigPnd).
func sigPending(pid, tid, sig int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigPnd:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && set&(1<<(sig-1)) != 0
		}
	}
	return false
}
