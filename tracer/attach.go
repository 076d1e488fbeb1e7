package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// precheck turns the common reasons an attach fails into clear errors
// before any ptrace request is made.
func precheck(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("attach pid %d: %w", pid, ErrNoSuchProcess)
	}
	me := os.Getpid()
	if pid == me {
		return fmt.Errorf("attach pid %d: %w", pid, ErrSelf)
	}
	st, err := status(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("attach pid %d: %w", pid, ErrNoSuchProcess)
		}
		return fmt.Errorf("attach pid %d: read status: %w", pid, err)
	}
	if tgid, _ := strconv.Atoi(st["Tgid"]); tgid != pid {
		if tgid == me {
			return fmt.Errorf("attach pid %d: %w (it is one of graft's threads)", pid, ErrSelf)
		}
		return fmt.Errorf("attach pid %d: %w: %d is a thread of process %d; attach to %d",
			pid, ErrNoSuchProcess, pid, tgid, tgid)
	}
	if s := st["State"]; strings.HasPrefix(s, "Z") || strings.HasPrefix(s, "X") {
		if len(mustTasks(pid)) <= 1 {
			return fmt.Errorf("attach pid %d: %w: it has exited and waits for its parent (pid %s) to reap it",
				pid, ErrZombie, st["PPid"])
		}
	}
	if tp, _ := strconv.Atoi(st["TracerPid"]); tp != 0 {
		if ownThread(tp) {
			return fmt.Errorf("attach pid %d: %w by this graft process (attach once, share the *Process)",
				pid, ErrAlreadyTraced)
		}
		return fmt.Errorf("attach pid %d: %w by pid %d (%s): detach that debugger or tracer first",
			pid, ErrAlreadyTraced, tp, comm(tp))
	}
	return nil
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
	return fmt.Errorf("attach pid %d: %w: %s (run graft as root or with CAP_SYS_PTRACE)",
		pid, ErrPermission, strings.Join(why, "; "))
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
