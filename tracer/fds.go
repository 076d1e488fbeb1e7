package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memfd is one open descriptor of a process that refers to a memfd.
type Memfd struct {
	FD   int
	Name string // as memfd_create got it ("graft-state"), without "/memfd:"
	Size int64  // the file's size
}

// MemfdDescriptors lists pid's open descriptors that refer to memfds
// (their /proc/PID/fd link reads "/memfd:NAME (deleted)"), without
// stopping or tracing the process. A descriptor closed while the list is
// read is skipped.
func MemfdDescriptors(pid int) ([]Memfd, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &ProcessExitedError{Pid: pid}
		}
		return nil, fmt.Errorf("read descriptors of pid %d: %w", pid, err)
	}
	var out []Memfd
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		name, ok := strings.CutPrefix(link, "/memfd:")
		if !ok {
			continue
		}
		m := Memfd{FD: fd, Name: strings.TrimSuffix(name, " (deleted)")}
		if fi, err := os.Stat(dir + "/" + e.Name()); err == nil {
			m.Size = fi.Size()
		}
		out = append(out, m)
	}
	return out, nil
}

// MemfdHolder is a process that maps or holds open memfds whose names
// start with a given prefix.
type MemfdHolder struct {
	Pid      int
	Comm     string    // /proc/PID/comm
	Mappings []Mapping // mappings of such memfds
	FDs      []Memfd   // open descriptors of such memfds
}

// ScanMemfds lists every process on the host that maps or holds open a
// memfd whose name starts with prefix, reading only /proc: no process is
// stopped or traced. Processes that vanish or cannot be read are
// skipped; those refused for want of privileges are counted.
func ScanMemfds(prefix string) (found []MemfdHolder, unreadable int, err error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, 0, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		maps, err := ReadMaps(pid)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				unreadable++
			}
			continue // gone meanwhile, or not ours to read
		}
		h := MemfdHolder{Pid: pid}
		for _, m := range maps {
			if strings.HasPrefix(m.Path, "/memfd:"+prefix) {
				h.Mappings = append(h.Mappings, m)
			}
		}
		if fds, err := MemfdDescriptors(pid); err == nil {
			for _, f := range fds {
				if strings.HasPrefix(f.Name, prefix) {
					h.FDs = append(h.FDs, f)
				}
			}
		}
		if len(h.Mappings) == 0 && len(h.FDs) == 0 {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			h.Comm = strings.TrimSpace(string(b))
		}
		found = append(found, h)
	}
	return found, unreadable, nil
}
