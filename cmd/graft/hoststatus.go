package main

import (
	"fmt"
	"io"
	"strings"

	"graft"
)

// runHostStatus lists every process on the host that carries graft's
// work (status without -p), like kpatch list: from /proc alone.
func runHostStatus(stdout, stderr io.Writer, asJSON bool) error {
	entries, unreadable, err := graft.ScanHost()
	if err != nil {
		return err
	}
	if asJSON {
		out := hostStatusWire{Processes: []hostProcessWire{}, Unreadable: unreadable}
		for _, e := range entries {
			out.Processes = append(out.Processes, hostProcessWire{
				Pid: e.Pid, Comm: e.Comm, Record: e.Record, Images: e.Images, Descriptors: descriptorsWire(e.Descriptors),
			})
		}
		return writeJSON(stdout, out)
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "no process on this host carries a graft patch or graft leftovers")
	} else {
		fmt.Fprintf(stdout, "%-8s %-16s %-7s %-7s %s\n", "PID", "COMMAND", "RECORD", "IMAGES", "LEFTOVER DESCRIPTORS")
		for _, e := range entries {
			rec := "no"
			if e.Record {
				rec = "yes"
			}
			var fds []string
			for _, d := range e.Descriptors {
				fds = append(fds, fmt.Sprintf("%d (%s)", d.FD, d.Name))
			}
			fmt.Fprintf(stdout, "%-8d %-16s %-7s %-7d %s\n", e.Pid, e.Comm, rec, e.Images, strings.Join(fds, ", "))
		}
		fmt.Fprintln(stdout, "\n'graft status -p PID' shows a process's patches; 'graft revert -p PID --all' removes leftovers")
	}
	if unreadable > 0 {
		fmt.Fprintf(stderr, "graft status: %d processes could not be read (run as root to see every process)\n", unreadable)
	}
	return nil
}
