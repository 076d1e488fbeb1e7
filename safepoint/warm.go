package safepoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"graft/tracer"
)

// Warm unwinds, while pid runs, each thread asleep in a system call from
// the stack pointer and pc /proc/PID/task/TID/syscall shows, and throws
// the frames away: what stays is the memo of unwind rules for every
// return address met (module.rules), so that the pause, which unwinds
// the same sleeping stacks, does not run the CIE and FDE programs cold
// (about half the unwinding time of a pause at 9 threads). Only rsp and
// rip are known: a frame whose CFA needs another register ends the walk
// early, which costs nothing but the warm-up of the frames beyond.
// Safe while the target runs: it only reads memory.
func (u *Unwinder) Warm(pid int, mem Memory) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return
	}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, e.Name()))
		if err != nil {
			continue
		}
		// "nr a1 a2 a3 a4 a5 a6 sp pc" for a thread asleep in a call;
		// "running" or "-1 sp pc" otherwise.
		f := strings.Fields(string(b))
		if len(f) != 9 {
			continue
		}
		sp, err1 := strconv.ParseUint(strings.TrimPrefix(f[7], "0x"), 16, 64)
		pc, err2 := strconv.ParseUint(strings.TrimPrefix(f[8], "0x"), 16, 64)
		if err1 != nil || err2 != nil || sp == 0 || pc == 0 {
			continue
		}
		u.Unwind(tracer.Regs{Rsp: sp, Rip: pc}, mem)
	}
}
