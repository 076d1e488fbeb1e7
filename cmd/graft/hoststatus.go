package main

import (
	"fmt"
	"io"
	"os"
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
		next := "run graft status as root to see every process"
		if os.Geteuid() == 0 {
			next = "even as root: a security module or another PID namespace's owner forbids it"
		}
		fmt.Fprintf(stderr, "graft status: %d processes could not be read (%s)\n", unreadable, next)
	}
	return nil
}
