package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"text/tabwriter"

	"graft/internal/symtab"
	"graft/tracer"
)

func runInspect(stdout, stderr io.Writer, pid int, asJSON bool) error {
	// SIGINT/SIGTERM cancel ctx instead of killing graft: the deferred
	// release (and attached's watcher) detach before the command returns.
	ctx, stop := interruptible()
	defer stop()
	out, err := inspect(pid, ctx.Done())
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, out)
	}
	printInspect(stdout, out)
	return nil
}

// inspect attaches, reads every thread's registers in one short stop, and
// detaches. Modules and symbols are read while the process runs.
func inspect(pid int, interrupted <-chan struct{}) (*inspectJSON, error) {
	p, err := attachInterruptible(pid, interrupted)
	if err != nil {
		return nil, err
	}
	defer p.release()
	check := p.check

	mods, err := tracer.Modules(pid)
	if err != nil {
		return nil, fmt.Errorf("list modules of pid %d: %w", pid, err)
	}
	out := &inspectJSON{Pid: pid, Threads: []inspectThreadJSON{}, Modules: []inspectModuleJSON{}}
	for _, m := range mods {
		out.Modules = append(out.Modules, inspectModuleJSON{
			Path: m.Path, Base: hex(m.Base), Bias: hex(m.Bias), BuildID: m.BuildID, Main: m.Main,
		})
	}
	if err := check(); err != nil {
		return nil, err
	}

	// States first: once stopped, every thread reads "t".
	states := map[int]string{}
	for _, tid := range p.Threads() {
		states[tid] = tracer.ThreadState(pid, tid)
	}
	if err := p.Stop(); err != nil {
		return nil, err
	}
	type reg struct{ pc, sp uint64 }
	regs := map[int]reg{}
	tids := p.Threads()
	for _, tid := range tids {
		r, err := p.Regs(tid)
		if err != nil {
			p.Resume()
			return nil, err
		}
		regs[tid] = reg{r.PC(), r.SP()}
	}
	if err := p.Resume(); err != nil {
		return nil, err
	}
	if err := check(); err != nil {
		return nil, err
	}

	syms := symbolizer{pid: pid, mem: p, tables: map[string]*symtab.Table{}}
	for _, tid := range tids {
		st := states[tid]
		if st == "" {
			st = "?" // appeared between listing and the stop
		}
		th := inspectThreadJSON{Tid: tid, State: st, PC: hex(regs[tid].pc), SP: hex(regs[tid].sp)}
		th.Function, th.Module = syms.lookup(mods, regs[tid].pc)
		out.Threads = append(out.Threads, th)
	}
	return out, p.release()
}

// symbolizer names the function at an address: the module containing it,
// the link-time address pc - bias, and the module's symbol table (the vDSO's
// read from memory).
type symbolizer struct {
	pid    int
	mem    io.ReaderAt
	tables map[string]*symtab.Table // nil entry: no symbols
}

func (s *symbolizer) lookup(mods []tracer.Module, pc uint64) (fn, module string) {
	for i := range mods {
		m := &mods[i]
		if !m.Contains(pc) {
			continue
		}
		tab, ok := s.tables[m.Path]
		if !ok {
			tab = s.open(m)
			s.tables[m.Path] = tab
		}
		if tab != nil {
			if f, ok := tab.Lookup(pc - m.Bias); ok {
				return fmt.Sprintf("%s+%#x", f.Name, pc-m.Bias-f.Addr), m.Path
			}
		}
		return "", m.Path
	}
	return "", ""
}

func (s *symbolizer) open(m *tracer.Module) *symtab.Table {
	if m.Path == "[vdso]" {
		mp := m.Mappings[0]
		b := make([]byte, mp.End-mp.Start)
		if _, err := s.mem.ReadAt(b, int64(mp.Start)); err != nil {
			return nil
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			return nil
		}
		tab, _ := symtab.FromELF(f)
		return tab
	}
	// Through the target's root, so a process in a container or chroot
	// resolves its own files.
	path := tracer.RootPath(s.pid, m.Path)
	tab, err := symtab.Open(path)
	if err != nil {
		return nil
	}
	return tab
}

func printInspect(w io.Writer, out *inspectJSON) {
	fmt.Fprintf(w, "pid %d: %d threads, %d modules\n\n", out.Pid, len(out.Threads), len(out.Modules))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TID\tSTATE\tPC\tFUNCTION\tMODULE")
	for _, t := range out.Threads {
		fn := t.Function
		if fn == "" {
			fn = "??"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", t.Tid, t.State, t.PC, fn, t.Module)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BASE\tBIAS\tBUILD-ID\tPATH")
	for _, m := range out.Modules {
		id := m.BuildID
		if id == "" {
			id = "-"
		}
		path := m.Path
		if m.Main {
			path += " (main)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Base, m.Bias, id, path)
	}
	tw.Flush()
}
