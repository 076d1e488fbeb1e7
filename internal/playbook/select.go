package playbook

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"graft/tracer"
)

// Target is one process a playbook acts on.
type Target struct {
	Pid int `json:"pid"`
	// Start is the process's start time (clock ticks since boot, from
	// /proc/PID/stat): with Pid it names the process even if the pid is
	// reused later.
	Start uint64 `json:"-"`
	Exe   string `json:"exe"`
	Comm  string `json:"comm"`
	// Via says why it is a target: the selector, or "forked child of N".
	Via string `json:"via"`
	dev uint64
	ino uint64
}

type procInfo struct {
	pid, ppid int
	comm      string
	state     byte
	start     uint64
	exe       string
	dev, ino  uint64
	hasExe    bool
}

// key identifies a process over time.
type key struct {
	pid   int
	start uint64
}

func (t Target) key() key { return key{t.Pid, t.Start} }

// readProc reads what selection needs of one process; false if it is gone,
// a zombie or a kernel thread.
func readProc(pid int) (procInfo, bool) {
	p := procInfo{pid: pid}
	ps, ok := tracer.ReadProcStat(pid)
	if !ok {
		return p, false
	}
	p.comm, p.state, p.ppid, p.start = ps.Comm, ps.State, ps.PPid, ps.Start
	if p.state == 'Z' || p.state == 'X' {
		return p, false
	}
	exe, err := tracer.ExeLink(pid)
	if err != nil {
		return p, false // kernel thread, or gone
	}
	p.exe = strings.TrimSuffix(exe, " (deleted)")
	if dev, ino, err := tracer.ExeIdentity(pid); err == nil {
		p.dev, p.ino, p.hasExe = dev, ino, true
	}
	return p, true
}

func allProcs() map[int]procInfo {
	out := map[int]procInfo{}
	self := os.Getpid()
	for _, pid := range tracer.Pids() {
		if pid == self {
			continue
		}
		if p, ok := readProc(pid); ok {
			out[pid] = p
		}
	}
	return out
}

// Resolution is one pass of the selectors over the processes of the host.
type Resolution struct {
	Targets []Target
	// Empty names the selectors that matched nothing, with the reason.
	Empty []string
}

// Resolve finds the processes the selectors name, plus the forked
// children (same executable, any depth) of each. An error means a
// selector cannot be evaluated at all (no systemctl for unit:, an
// unreadable pidfile); a selector that matches nothing is no error
// (Resolution.Empty says so).
func Resolve(sels []Selector) (*Resolution, error) {
	procs := allProcs()
	res := &Resolution{}
	chosen := map[int]string{}
	for _, s := range sels {
		pids, why, err := match(s, procs)
		if err != nil {
			return nil, fmt.Errorf("%s: target %s: %w", s.Pos, s, err)
		}
		if len(pids) == 0 {
			res.Empty = append(res.Empty, fmt.Sprintf("%s: %s matched no process%s", s.Pos, s, why))
		}
		for _, pid := range pids {
			if _, ok := chosen[pid]; !ok {
				chosen[pid] = s.String()
			}
		}
	}
	// Forked children: a process whose ancestor is a target and that runs
	// the same file (it forked without exec). Walk each process's
	// ancestors until a chosen one.
	for pid, p := range procs {
		if _, ok := chosen[pid]; ok || !p.hasExe {
			continue
		}
		for anc, seen := p.ppid, 0; anc > 1 && seen < 64; seen++ {
			a, ok := procs[anc]
			if !ok || !a.hasExe || a.dev != p.dev || a.ino != p.ino {
				break
			}
			if _, ok := chosen[anc]; ok {
				chosen[pid] = fmt.Sprintf("forked child of %d", p.ppid)
				break
			}
			anc = a.ppid
		}
	}
	for pid, via := range chosen {
		p := procs[pid]
		res.Targets = append(res.Targets, Target{Pid: pid, Start: p.start, Exe: p.exe, Comm: p.comm, Via: via, dev: p.dev, ino: p.ino})
	}
	sort.Slice(res.Targets, func(i, j int) bool { return res.Targets[i].Pid < res.Targets[j].Pid })
	return res, nil
}

// match evaluates one selector; why explains an empty match.
func match(s Selector, procs map[int]procInfo) (pids []int, why string, err error) {
	switch s.Kind {
	case "pid":
		if _, ok := procs[s.Pid]; ok {
			return []int{s.Pid}, "", nil
		}
		return nil, " (no such process, a zombie or a kernel thread)", nil
	case "pidfile":
		b, err := os.ReadFile(s.Value)
		if err != nil {
			return nil, "", fmt.Errorf("read pidfile: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid < 1 {
			return nil, "", fmt.Errorf("pidfile %s does not hold a pid: %q", s.Value, strings.TrimSpace(string(b)))
		}
		if _, ok := procs[pid]; ok {
			return []int{pid}, "", nil
		}
		return nil, fmt.Sprintf(" (it names pid %d, which is not running)", pid), nil
	case "exe":
		var st syscall.Stat_t
		if err := syscall.Stat(s.Value, &st); err != nil {
			return nil, "", fmt.Errorf("executable %s: %w (the selector matches processes running that very file, by inode)", s.Value, err)
		}
		for pid, p := range procs {
			if p.hasExe && p.dev == uint64(st.Dev) && p.ino == st.Ino {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			why = " (no process runs that file; a process started from a file since replaced runs the old inode: select it by build_id)"
		}
		return pids, why, nil
	case "name":
		for pid, p := range procs {
			if ok, _ := filepath.Match(s.Value, p.comm); ok {
				pids = append(pids, pid)
			}
		}
		return pids, " (name matches the command name, /proc/PID/comm, at most 15 characters)", nil
	case "unit":
		pid, err := unitMainPID(s.Value)
		if err != nil {
			return nil, "", err
		}
		if pid == 0 {
			return nil, " (the unit has no main process: not running?)", nil
		}
		if _, ok := procs[pid]; ok {
			return []int{pid}, "", nil
		}
		return nil, fmt.Sprintf(" (its MainPID %d is not running)", pid), nil
	case "build_id":
		// The executable's build-id is read from its memory; a shared
		// library's from the file the process mapped (through map_files
		// when an upgrade deleted it): every process mapping a module of
		// that build is a target.
		for pid, p := range procs {
			if !p.hasExe {
				continue
			}
			if id, err := tracer.ExeBuildID(pid); err == nil && id == s.Value {
				pids = append(pids, pid)
				continue
			}
			mods, err := tracer.Modules(pid)
			if err != nil {
				continue
			}
			for _, m := range mods {
				if m.BuildID == s.Value {
					pids = append(pids, pid)
					break
				}
			}
		}
		return pids, " (no running executable or mapped library has that build-id)", nil
	}
	return nil, "", fmt.Errorf("unknown selector %q", s.Kind)
}

// unitMainPID asks systemd for a unit's main process.
func unitMainPID(unit string) (int, error) {
	path, err := exec.LookPath("systemctl")
	if err != nil {
		return 0, errors.New("the unit selector needs systemd, and systemctl is not on this host's PATH: select the process by pidfile, exe or name instead")
	}
	out, err := exec.Command(path, "show", "--property=MainPID", "--value", unit).Output()
	if err != nil {
		msg := ""
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return 0, fmt.Errorf("systemctl show %s: %v %s (is systemd running here?)", unit, err, msg)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("systemctl show %s: MainPID %q is not a number", unit, strings.TrimSpace(string(out)))
	}
	return pid, nil
}

// alive reports whether t is still the same running process.
func alive(t Target) bool {
	p, ok := readProc(t.Pid)
	return ok && p.start == t.Start
}

// ListenPort returns the lowest TCP port pid listens on, read from its own
// network namespace (/proc/PID/net/tcp and tcp6) and matched to its
// sockets; 0 if it listens on none.
func ListenPort(pid int) (int, error) {
	inodes := map[string]bool{}
	links, err := tracer.FDLinks(pid)
	if err != nil {
		return 0, fmt.Errorf("descriptors of pid %d: %w", pid, err)
	}
	for _, l := range links {
		if strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	lowest := 0
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := tracer.NetFile(pid, f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
				continue
			}
			i := strings.LastIndexByte(fs[1], ':')
			port, err := strconv.ParseUint(fs[1][i+1:], 16, 16)
			if err == nil && (lowest == 0 || int(port) < lowest) {
				lowest = int(port)
			}
		}
	}
	return lowest, nil
}
