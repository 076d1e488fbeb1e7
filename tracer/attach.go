package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrKernelThread: the PID is a kernel thread; it has no user memory to
// read or patch.
var ErrKernelThread = errors.New("is a kernel thread")

// Check says, without attaching, whether pid is a user process graft can
// look at: it exists, is a process (not one of its threads), is not a
// kernel thread or a zombie, and its memory may be read (ptrace access:
// privileges, Yama, a security module). It does not mind another tracer,
// so read-only callers (status) use it too; Attach checks that besides.
// Callers run it before reading /proc/PID/maps or mem, whose own errors
// ("no such process" for a kernel thread's mem, "permission denied" for
// maps) would not say why.
func Check(pid int) error {
	if err := checkTarget(pid); err != nil {
		return err
	}
	// Opening mem takes the same access check as PTRACE_SEIZE's
	// (PTRACE_MODE_ATTACH): refused, it is explained the same way.
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		switch {
		case errors.Is(err, os.ErrPermission):
			return explainPerm(pid)
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH):
			if processGone(pid) {
				return &ProcessExitedError{Pid: pid}
			}
		}
		return fmt.Errorf("check pid %d: %w", pid, err)
	}
	f.Close()
	return nil
}

// precheck turns the common reasons an attach fails into clear errors
// before any ptrace request is made.
func precheck(pid int) error {
	if err := checkTarget(pid); err != nil {
		return err
	}
	st, err := status(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pid %d: %w", pid, ErrNoSuchProcess)
		}
		return fmt.Errorf("pid %d: read status: %w", pid, err)
	}
	if tp, _ := strconv.Atoi(st["TracerPid"]); tp != 0 {
		if ownThread(tp) {
			return fmt.Errorf("pid %d: %w by this graft process (attach once, share the *Process)",
				pid, ErrAlreadyTraced)
		}
		return fmt.Errorf("pid %d: %w by pid %d (%s): detach that debugger or tracer first",
			pid, ErrAlreadyTraced, tp, comm(tp))
	}
	return nil
}

// checkTarget is Check without the access check.
func checkTarget(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("pid %d: %w", pid, ErrNoSuchProcess)
	}
	me := os.Getpid()
	if pid == me {
		return fmt.Errorf("pid %d: %w", pid, ErrSelf)
	}
	st, err := status(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pid %d: %w", pid, ErrNoSuchProcess)
		}
		return fmt.Errorf("pid %d: read status: %w", pid, err)
	}
	if tgid, _ := strconv.Atoi(st["Tgid"]); tgid != pid {
		if tgid == me {
			return fmt.Errorf("pid %d: %w (it is one of graft's threads)", pid, ErrSelf)
		}
		return fmt.Errorf("pid %d: %w: %d is a thread of process %d; attach to %d",
			pid, ErrNoSuchProcess, pid, tgid, tgid)
	}
	if s := st["State"]; strings.HasPrefix(s, "Z") || strings.HasPrefix(s, "X") {
		if len(mustTasks(pid)) <= 1 {
			return fmt.Errorf("pid %d: %w: it has exited and waits for its parent (pid %s) to reap it",
				pid, ErrZombie, st["PPid"])
		}
	}
	if kernelThread(pid) {
		return fmt.Errorf("pid %d: %w (%s): graft patches user processes", pid, ErrKernelThread, comm(pid))
	}
	return nil
}

// kernelThread reports whether pid is a kernel thread: PF_KTHREAD in the
// flags of /proc/PID/stat (status has "Kthread:" only since Linux 6.0, and
// a PID namespace makes "pid 2 or a child of it" mean nothing).
func kernelThread(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return false
	}
	// After the name: state ppid pgrp session tty_nr tpgid flags ...
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 7 {
		return false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	const pfKthread = 0x00200000
	return err == nil && flags&pfKthread != 0
}

func mustTasks(pid int) []int {
	t, _ := tasks(pid)
	return t
}

// explainPerm says why the kernel answered EPERM to PTRACE_SEIZE, as far
// as it can be told from outside: missing privilege, Yama's ptrace_scope,
// another owner, or a tracer that got there first.
func explainPerm(pid int) error {
	if tp := tracerOf(pid, pid); tp > 0 {
		if ownThread(tp) {
			return fmt.Errorf("attach pid %d: %w by this graft process", pid, ErrAlreadyTraced)
		}
		return fmt.Errorf("attach pid %d: %w by pid %d (%s): detach that debugger or tracer first",
			pid, ErrAlreadyTraced, tp, comm(tp))
	}
	var why []string
	privileged := os.Geteuid() == 0 || hasCapSysPtrace()
	if !privileged {
		why = append(why, fmt.Sprintf("graft runs as uid %d without CAP_SYS_PTRACE", os.Geteuid()))
		if st, err := status(pid); err == nil {
			if f := strings.Fields(st["Uid"]); len(f) > 0 && f[0] != strconv.Itoa(os.Getuid()) {
				why = append(why, fmt.Sprintf("the process belongs to uid %s", f[0]))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		switch v := strings.TrimSpace(string(b)); v {
		case "1":
			if !privileged {
				why = append(why, "kernel.yama.ptrace_scope=1 lets only a parent trace its children")
			}
		case "2":
			why = append(why, "kernel.yama.ptrace_scope=2 requires CAP_SYS_PTRACE")
		case "3":
			why = append(why, "kernel.yama.ptrace_scope=3 forbids attaching at all (until reboot)")
		}
	}
	if privileged && len(why) == 0 {
		why = append(why, "a security module (SELinux, AppArmor, seccomp of graft's own sandbox) or a non-dumpable/setuid target may forbid ptrace")
	}
	next := "run graft as root or with CAP_SYS_PTRACE"
	if privileged {
		next = "graft has the privilege already: look at the security module's log (audit.log, dmesg) for the denial"
	}
	return fmt.Errorf("trace pid %d: %w: %s (%s)",
		pid, ErrPermission, strings.Join(why, "; "), next)
}

// hasCapSysPtrace reads graft's own effective capabilities.
func hasCapSysPtrace() bool {
	st, err := status(os.Getpid())
	if err != nil {
		return false
	}
	caps, err := strconv.ParseUint(st["CapEff"], 16, 64)
	if err != nil {
		return false
	}
	const capSysPtrace = 19
	return caps&(1<<capSysPtrace) != 0
}

// ownThread reports whether tid is a thread of graft's own process.
// TracerPid in /proc names the tracing thread, not its process.
func ownThread(tid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
	return err == nil
}
