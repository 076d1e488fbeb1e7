package graft

import (
	"errors"
	"fmt"
	"strings"

	"graft/tracer"
)

// Leftovers: descriptors and host-wide listing.
//
// Every memfd graft creates in a target (an image's, "graft-<id>", and the
// record's, "graft-state") is closed in the target right after it is
// mapped, also on every error path. A graft killed with SIGKILL between
// memfd_create and that close leaves the descriptor open in the target,
// pinning the memfd's memory. status lists such descriptors; revert --all
// closes them, in a stop of its own, each checked again (by its
// /proc/PID/fd link) with the process stopped, so a number the program
// reused meanwhile is never closed.

// Descriptor is a graft memfd left open in a target.
type Descriptor struct {
	FD   int    `json:"fd"`
	Name string `json:"name"` // "graft-<id>" or "graft-state"
	Size int64  `json:"size"`
}

// graftFDPrefix is the name prefix of every memfd graft creates.
const graftFDPrefix = "graft"

// leftDescriptors lists pid's open graft memfds. sys.fds nil (fakes):
// none.
func (sys *system) leftDescriptors(pid int) ([]Descriptor, error) {
	if sys.fds == nil {
		return nil, nil
	}
	fds, err := sys.fds(pid)
	if err != nil {
		return nil, err
	}
	var out []Descriptor
	for _, f := range fds {
		if isGraftMemfd(f.Name) {
			out = append(out, Descriptor{FD: f.FD, Name: f.Name, Size: f.Size})
		}
	}
	return out, nil
}

func isGraftMemfd(name string) bool {
	return name == stateName || strings.HasPrefix(name, graftFDPrefix+"-")
}

// closeDescriptors closes the given graft memfds in the stopped target,
// each only if its number still refers to that memfd.
func closeDescriptors(p proc, pid int, fds []Descriptor) error {
	var errs []error
	for _, d := range fds {
		link, err := tracer.FDLink(pid, d.FD)
		if err != nil || strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)") != d.Name || !strings.HasPrefix(link, "/memfd:") {
			continue // closed or reused meanwhile
		}
		if err := tracer.CloseFD(p, uint64(d.FD)); err != nil {
			errs = append(errs, fmt.Errorf("close descriptor %d (%s): %w", d.FD, d.Name, err))
		}
	}
	return errors.Join(errs...)
}

// HostEntry is one process on the host that carries graft's work: a
// record, images, or descriptors left by a killed graft.
type HostEntry struct {
	Pid  int    `json:"pid"`
	Comm string `json:"comm"`
	// Record: the process maps a graft record (patches may be in effect;
	// graft status -p PID lists them).
	Record bool `json:"record"`
	// Images is the number of graft image mappings (the patches' code, or
	// an orphaned image).
	Images int `json:"images"`
	// Descriptors are graft memfds left open (a killed graft's).
	Descriptors []Descriptor `json:"descriptors,omitempty"`
}

// ScanHost lists every process on the host that maps a graft record or
// image or holds a graft memfd open, from /proc alone: nothing is stopped
// or traced. unreadable counts processes whose maps could not be read
// (without root, other users' processes).
func ScanHost() (entries []HostEntry, unreadable int, err error) {
	found, unreadable, err := tracer.ScanMemfds(graftFDPrefix)
	if err != nil {
		return nil, 0, err
	}
	for _, h := range found {
		e := HostEntry{Pid: h.Pid, Comm: h.Comm}
		images := map[string]bool{}
		for _, m := range h.Mappings {
			name := strings.TrimSuffix(strings.TrimPrefix(m.Path, "/memfd:"), " (deleted)")
			switch {
			case name == stateName:
				e.Record = true
			case strings.HasPrefix(name, graftFDPrefix+"-"):
				images[name] = true
			}
		}
		e.Images = len(images)
		for _, f := range h.FDs {
			if isGraftMemfd(f.Name) {
				e.Descriptors = append(e.Descriptors, Descriptor{FD: f.FD, Name: f.Name, Size: f.Size})
			}
		}
		if e.Record || e.Images > 0 || len(e.Descriptors) > 0 {
			entries = append(entries, e)
		}
	}
	return entries, unreadable, nil
}
