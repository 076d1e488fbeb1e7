package safepoint

import "graft/tracer"

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
	tids, err := tracer.Tasks(pid)
	if err != nil {
		return
	}
	for _, tid := range tids {
		sp, pc, ok := tracer.SleepingAt(pid, tid)
		if !ok {
			continue
		}
		u.Unwind(tracer.Regs{Rsp: sp, Rip: pc}, mem)
	}
}
