package tracer

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// tracer owns /proc: every path into a process's /proc entry is built
// here, so the rest of graft names what it wants (the executable, a
// module's file, the threads, the descriptors) and not where Linux keeps
// it. None of these attach or stop the process.

// ExePath returns a path that opens the very executable pid runs, even if
// it was deleted or replaced on disk since.
func ExePath(pid int) string { return fmt.Sprintf("/proc/%d/exe", pid) }

// ExeLink returns the path /proc shows for pid's executable (with
// " (deleted)" if it is gone from disk).
func ExeLink(pid int) (string, error) { return os.Readlink(ExePath(pid)) }

// ExeIdentity returns the device and inode of the executable pid runs.
func ExeIdentity(pid int) (dev, ino uint64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(ExePath(pid), &st); err != nil {
		return 0, 0, err
	}
	return uint64(st.Dev), st.Ino, nil
}

// RootPath returns path as pid sees it: through /proc/PID/root, the
// target's own mount namespace and chroot.
func RootPath(pid int, path string) string {
	return fmt.Sprintf("/proc/%d/root%s", pid, strings.TrimSuffix(path, " (deleted)"))
}

// MapFilePath returns the /proc/PID/map_files path that opens the file
// behind mapping m, even when the file was deleted or replaced.
func MapFilePath(pid int, m Mapping) string {
	return fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
}

// ModulePaths returns the two ways to a module's file, in the order to
// try them: through the target's root, then through map_files for its
// lowest mapping (none without mappings). Whether the file found is the
// mapped one is the caller's check (ModuleFile and openModule compare
// the inode).
func ModulePaths(pid int, mod *Module) []string {
	paths := []string{RootPath(pid, mod.Path)}
	if len(mod.Mappings) > 0 {
		paths = append(paths, MapFilePath(pid, lowest(mod.Mappings)))
	}
	return paths
}

// OpenMem opens pid's memory for reading, without attaching: enough for
// status and for reading images while the target runs.
func OpenMem(pid int) (*os.File, error) { return os.Open(fmt.Sprintf("/proc/%d/mem", pid)) }

// ProcMem reads pid's memory, opening it for each read; for the rare
// early read (the vDSO image) that holds no descriptor.
type ProcMem int

func (p ProcMem) ReadAt(b []byte, addr int64) (int, error) {
	f, err := OpenMem(int(p))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(b, addr)
}

// Tasks lists the thread IDs of pid, sorted.
func Tasks(pid int) ([]int, error) { return tasks(pid) }

// SleepingAt returns the stack pointer and pc of thread tid of pid if it
// sleeps in a system call (/proc/PID/task/TID/syscall reads "nr a1 a2 a3
// a4 a5 a6 sp pc"); ok is false for a running thread or one asleep
// outside a system call.
func SleepingAt(pid, tid int) (sp, pc uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 9 {
		return 0, 0, false
	}
	sp, err1 := strconv.ParseUint(strings.TrimPrefix(f[7], "0x"), 16, 64)
	pc, err2 := strconv.ParseUint(strings.TrimPrefix(f[8], "0x"), 16, 64)
	if err1 != nil || err2 != nil || sp == 0 || pc == 0 {
		return 0, 0, false
	}
	return sp, pc, true
}

// Comm returns the command name of pid, "" if unknown.
func Comm(pid int) string { return comm(pid) }

// ShadowStack reports whether pid runs with a CET user shadow stack
// enabled (x86_Thread_features in /proc/PID/status names shstk; kernels
// without the feature have no such line).
func ShadowStack(pid int) bool {
	st, err := status(pid)
	if err != nil {
		return false
	}
	return hasShstk(st["x86_Thread_features"])
}

func hasShstk(features string) bool {
	for _, f := range strings.Fields(features) {
		if f == "shstk" {
			return true
		}
	}
	return false
}

// TracerPid returns the process tracing pid (0: none, or unknown).
func TracerPid(pid int) int {
	st, err := status(pid)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(st["TracerPid"])
	return n
}

// FDLink returns what descriptor fd of pid refers to ("/memfd:NAME
// (deleted)", "socket:[INODE]", a path).
func FDLink(pid, fd int) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
}

// OpenFD opens, from outside, the file behind descriptor fd of pid (a
// memfd the target created, for one): flag as for os.OpenFile.
func OpenFD(pid, fd, flag int) (*os.File, error) {
	return os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), flag, 0)
}

// FDLinks returns, by descriptor number, what each open descriptor of pid
// refers to; a descriptor closed while the list is read is left out.
func FDLinks(pid int) (map[int]string, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := FDLink(pid, fd); err == nil {
			out[fd] = l
		}
	}
	return out, nil
}

// NetFile reads /proc/PID/net/NAME: the table (tcp, tcp6, ...) of pid's
// own network namespace.
func NetFile(pid int, name string) ([]byte, error) {
	return os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, name))
}

// Pids lists the process IDs on the host (the numeric entries of /proc).
func Pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// ProcStat is what /proc/PID/stat says of a process that selection needs.
type ProcStat struct {
	Comm  string
	State byte
	PPid  int
	Start uint64 // start time in clock ticks since boot: with the pid, an identity
}

// ReadProcStat reads /proc/PID/stat; false if pid is gone or the line is
// malformed.
func ReadProcStat(pid int) (ProcStat, bool) {
	var p ProcStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, false
	}
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open || close+2 >= len(b) {
		return p, false
	}
	p.Comm = string(b[open+1 : close])
	f := strings.Fields(string(b[close+2:]))
	// state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
	// utime stime cutime cstime priority nice threads itreal starttime
	if len(f) < 20 {
		return p, false
	}
	p.State = f[0][0]
	p.PPid, _ = strconv.Atoi(f[1])
	p.Start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}
