package main

import (
	"errors"
	"fmt"
	"io"

	"graft/safepoint"
	"graft/tracer"
)

// Go programs: `graft stacks` lists every goroutine (id, status, frames
// with file:line, as a SIGQUIT dump does) and then every thread.

type goroutineJSON struct {
	ID     int64       `json:"id"`
	Status string      `json:"status"`
	Tid    int         `json:"tid,omitempty"`
	Frames []frameJSON `json:"frames"`
	// Incomplete is the reason the stack could not be unwound to its end.
	Incomplete string `json:"incomplete,omitempty"`
}

// collectGoStacks unwinds every goroutine and thread of the attached Go
// process p with g.
func collectGoStacks(p *attached, pid int, g *safepoint.GoUnwinder) (*stacksJSON, error) {
	if err := p.Stop(); err != nil {
		return nil, fmt.Errorf("stacks of pid %d: %w", pid, err)
	}
	stacks, serr := g.StacksOf(p.Process)
	rerr := p.Resume()
	if serr != nil {
		return nil, fmt.Errorf("stacks of pid %d: %w", pid, serr)
	}
	if rerr != nil && !errors.Is(rerr, tracer.ErrProcessExited) {
		return nil, fmt.Errorf("stacks of pid %d: resume: %w", pid, rerr)
	}
	out := &stacksJSON{Pid: pid, Threads: []threadJSON{}, Goroutines: []goroutineJSON{}}
	for _, st := range stacks {
		var frames []frameJSON
		why := ""
		for _, f := range st.Frames {
			fj := frameJSON{PC: hex(f.PC), Function: f.Function}
			if f.CFA != 0 {
				fj.CFA = hex(f.CFA)
			}
			frames = append(frames, fj)
			if f.Incomplete || (st.Informational && f.Reason != "") {
				why = f.Reason
			}
		}
		if st.Kind == "goroutine" {
			out.Goroutines = append(out.Goroutines, goroutineJSON{ID: st.ID, Status: st.Status, Tid: st.Tid, Frames: frames, Incomplete: why})
		} else {
			out.Threads = append(out.Threads, threadJSON{Tid: int(st.ID), Frames: frames, Note: why})
		}
	}
	return out, nil
}

// printGoroutines prints the goroutines the way a SIGQUIT dump does.
func printGoroutines(w io.Writer, gs []goroutineJSON) {
	for _, g := range gs {
		fmt.Fprintf(w, "goroutine %d [%s]", g.ID, g.Status)
		if g.Tid != 0 {
			fmt.Fprintf(w, " on thread %d", g.Tid)
		}
		fmt.Fprintln(w, ":")
		for _, f := range g.Frames {
			fmt.Fprintf(w, "  %18s %s\n", f.PC, f.Function)
		}
		if g.Incomplete != "" {
			fmt.Fprintf(w, "  (stack incomplete: %s)\n", g.Incomplete)
		}
		fmt.Fprintln(w)
	}
}
