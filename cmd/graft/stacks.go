package main

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"graft"
	"graft/tracer"
)

func runStacks(stdout, stderr io.Writer, pid int, asJSON bool) error {
	// SIGINT/SIGTERM cancel ctx instead of killing graft: attached's
	// watcher detaches at once, and the command reports the interrupt.
	ctx, stop := interruptible()
	defer stop()
	out, err := collectStacks(pid, ctx.Done())
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, out)
	}
	printGoroutines(stdout, out.Goroutines)
	for i, t := range out.Threads {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "thread %d:\n", t.Tid)
		for n, f := range t.Frames {
			name := f.Function
			if name == "" {
				name = "??"
			}
			mod := ""
			if f.Module != "" {
				mod = " (" + f.Module + ")"
			}
			fmt.Fprintf(stdout, "  #%-2d %18s %s%s\n", n, f.PC, name, mod)
		}
		if t.Incomplete != "" {
			fmt.Fprintf(stdout, "  (stack incomplete: %s)\n", t.Incomplete)
		}
		if t.Note != "" {
			fmt.Fprintf(stdout, "  (%s)\n", t.Note)
		}
	}
	return nil
}

// collectStacks loads CFI while the target runs, then holds it only for
// the unwinding itself.
func collectStacks(pid int, interrupted <-chan struct{}) (_ *stacksJSON, err error) {
	// Attach first: it explains a wrong PID or missing privileges best.
	// Seizing does not stop the process; loading the CFI happens while
	// it runs.
	p, err := attachInterruptible(pid, interrupted)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := p.release(); cerr != nil && err == nil {
			err = cerr
		}
		if p.check() != nil {
			// Whatever failed after the interrupt failed because of it.
			err = p.check()
		}
	}()
	// A Go program's goroutines are unwound through its pclntab.
	if g, ok, err := graft.GoUnwinder(pid); ok {
		if err != nil {
			return nil, fmt.Errorf("stacks of pid %d: %w", pid, err)
		}
		g.Mods.Lines = true
		return collectGoStacks(p, pid, g)
	}
	// The controller's unwinder also reads the CFI of patched code from
	// the target, so stacks through it are complete without NEW on disk.
	u, err := graft.Unwinder(pid)
	if err != nil {
		return nil, fmt.Errorf("stacks of pid %d: %w", pid, err)
	}
	u.Preload(p.Process)
	if err := p.check(); err != nil {
		return nil, err
	}
	if err := p.Stop(); err != nil {
		return nil, fmt.Errorf("stacks of pid %d: %w", pid, err)
	}
	stacks, serr := u.StacksOf(p.Process)
	rerr := p.Resume()
	if serr != nil {
		return nil, fmt.Errorf("stacks of pid %d: %w", pid, serr)
	}
	if rerr != nil && !errors.Is(rerr, tracer.ErrProcessExited) {
		return nil, fmt.Errorf("stacks of pid %d: resume: %w", pid, rerr)
	}
	out := &stacksJSON{Pid: pid, Threads: []threadJSON{}}
	tids := make([]int, 0, len(stacks))
	for tid := range stacks {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	for _, tid := range tids {
		t := threadJSON{Tid: tid, Frames: []frameJSON{}}
		for _, f := range stacks[tid] {
			fj := frameJSON{PC: hex(f.PC), Function: f.Function, Module: f.Module}
			if f.CFA != 0 {
				fj.CFA = hex(f.CFA)
			}
			t.Frames = append(t.Frames, fj)
			if f.Incomplete {
				t.Incomplete = f.Reason
			}
		}
		out.Threads = append(out.Threads, t)
	}
	return out, nil
}
