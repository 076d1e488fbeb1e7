package graft

import (
	"fmt"
	"slices"
	"sort"

	"graft/tracer"
)

// Stacking: binding a patch to a process that already runs earlier
// patches, and unloading the code a new patch supersedes (doc.go).

// layer is the executable or one loaded patch image, for resolving symbols
// of a stacked patch's OLD by name: the lowest layer defining a name holds
// the live copy (every later image was linked against it).
type layer struct {
	rec  *PatchRecord // nil: the executable
	syms *symbols
	base uint64 // runtime address = base + link-time address
}

// prepareStacked binds a patch built from (NEW of the top patch, NEWER) to a
// process running the executable plus earlier patches: OLD's symbols are
// mapped to their live copies by name, and every live copy of a redirected
// function gets a jump straight to the newest version.
func prepareStacked(pid int, pr *prepared, exe *tracer.Module, readSyms func(path, buildID string) (*symbols, error)) (*prepared, error) {
	pt, st := pr.patch, pr.state
	path, err := tracer.ModuleFile(pid, exe)
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	exeSyms, err := readSyms(path, exe.BuildID)
	if err != nil {
		return nil, fmt.Errorf("apply patch %s: %w", pt.ID, err)
	}
	top := st.TopFor(exe)
	// Each loaded image's symbols come from its record (what lives in the
	// image); only a patch recorded without them (from a version-1 patch
	// file) needs its NEW binary on disk.
	layers := []layer{{syms: exeSyms, base: exe.Bias}}
	for i := range st.Patches {
		rec := &st.Patches[i]
		if rec.Unloaded || !rec.inModule(exe) {
			continue
		}
		if len(rec.Symbols) > 0 {
			layers = append(layers, layer{rec: rec, syms: recordSymbols(rec), base: rec.Base})
			continue
		}
		if rec.NewPath == "" {
			return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: patch %s records neither its image's symbols nor its NEW binary, so its symbols cannot be mapped", pt.ID, top.ID, pid, rec.ID)
		}
		syms, err := readSyms(rec.NewPath, rec.NewBuildID)
		if err != nil {
			return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: NEW of %s: %w", pt.ID, top.ID, pid, rec.ID, err)
		}
		layers = append(layers, layer{rec: rec, syms: syms, base: rec.Base})
	}
	if top.Unloaded {
		return nil, fmt.Errorf("apply patch %s to pid %d: top patch %s is unloaded", pt.ID, pid, top.ID)
	}

	// resolve returns the live address of OLD's symbol name (of unit
	// file, for a static) plus off.
	refs := map[string]bool{}
	resolve := func(name, file string, off uint64) (uint64, bool) {
		for _, l := range layers {
			if s, ok := l.syms.lookup(name, file); ok {
				if l.rec != nil {
					refs[l.rec.ID] = true
				}
				return l.base + s.Addr + off, true
			}
		}
		return 0, false
	}
	if len(pt.Transfers) > 0 {
		var recs []*PatchRecord
		for _, l := range layers[1:] {
			recs = append(recs, l.rec)
		}
		at, err := stackedXferLocs(pt, recs, func(name, file string, off uint64) (uint64, uint64, uint64, bool) {
			for _, l := range layers {
				if s, ok := l.syms.lookup(name, file); ok {
					if l.rec != nil {
						refs[l.rec.ID] = true
					}
					return l.base + s.Addr + off, s.Size, l.syms.room(s.Addr), true
				}
			}
			return 0, 0, 0, false
		}, func(r *PatchRecord) { refs[r.ID] = true })
		if err != nil {
			return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: %w", pt.ID, top.ID, pid, err)
		}
		pr.xfer = at
	}
	// oldSyms is the top patch's NEW symbol table, read only for a
	// patch file that does not name its fixups' symbols (version 1).
	var oldSyms *symbols

	im := *pt.Image
	im.Fixups = slices.Clone(pt.Image.Fixups)
	for i := range im.Fixups {
		f := &im.Fixups[i]
		name, file, symAddr := f.Name, f.File, f.SymAddr
		if name == "" {
			if oldSyms == nil {
				if top.NewPath == "" {
					return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: reference to %s at %#x: the patch does not name the symbol (version-1 patch file) and the NEW binary of %s is not on this machine", pt.ID, top.ID, pid, f.Symbol, f.Target, top.ID)
				}
				s, err := readSyms(top.NewPath, top.NewBuildID)
				if err != nil {
					return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: %w", pt.ID, top.ID, pid, err)
				}
				oldSyms = s
			}
			s, ok := oldSyms.containing(f.Target)
			if !ok {
				return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: reference to %s at %#x: no symbol of %s holds it", pt.ID, top.ID, pid, f.Symbol, f.Target, top.NewPath)
			}
			name, file, symAddr = s.Name, s.File, s.Addr
		}
		if f.Target < symAddr {
			return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: reference to %s at %#x lies before its symbol %s at %#x", pt.ID, top.ID, pid, f.Symbol, f.Target, name, symAddr)
		}
		addr, ok := resolve(name, file, f.Target-symAddr)
		if !ok {
			return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: reference to %s: symbol %s is ambiguous or missing in the running program", pt.ID, top.ID, pid, f.Symbol, name)
		}
		// Link adds OLD's bias; hand it the live address minus it.
		f.Target = addr - exe.Bias
	}
	pr.image = &im
	for id := range refs {
		pr.refs = append(pr.refs, id)
	}
	sort.Strings(pr.refs)

	pr.parts = partRanges(pt, layers)
	pr.parts = append(pr.parts, pointerUserRanges(pt, layers)...)
	for i, r := range pt.Image.Redirects {
		var vs []version
		if s, ok := exeSyms.unique(r.Name); ok && s.Func {
			vs = append(vs, version{redir: i, name: r.Name, entry: exe.Bias + s.Addr, size: s.Size})
		}
		for _, l := range layers[1:] {
			for _, f := range l.rec.Functions {
				if f.Name == r.Name {
					vs = append(vs, version{redir: i, name: r.Name, entry: f.New, size: f.NewSize})
				}
			}
		}
		if len(vs) == 0 {
			// A function earlier patches added: its copy in the
			// lowest image defining it is the one that runs.
			for _, l := range layers[1:] {
				if s, ok := l.syms.unique(r.Name); ok && s.Func {
					vs = append(vs, version{redir: i, name: r.Name, entry: l.base + s.Addr, size: s.Size})
					break
				}
			}
		}
		if len(vs) == 0 {
			return nil, fmt.Errorf("apply patch %s on top of %s in pid %d: function %s not found in the running program", pt.ID, top.ID, pid, r.Name)
		}
		pr.versions = append(pr.versions, vs...)
	}
	return pr, nil
}

// partRanges finds the out-of-line parts of pt's functions in every layer.
func partRanges(pt *Patch, layers []layer) []namedRange {
	var out []namedRange
	for fn, parts := range pt.Parts {
		for _, part := range parts {
			for _, l := range layers {
				if s, ok := l.syms.unique(part); ok && s.Size > 0 {
					out = append(out, namedRange{fn, Range{l.base + s.Addr, l.base + s.Addr + s.Size}})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// outcome is one way the pause can end: the jumps to write and the
// encoded record.
type outcome struct {
	unload []int
	sites  []SiteRecord
	buf    []byte
}

// outcome encodes the record after rec is applied and the patches unload
// (indexes into st.Patches) are unloaded; jumps into them are dropped.
func (sys *system) outcome(st *State, rec PatchRecord, sites []SiteRecord, unload []int) (outcome, error) {
	next := &State{Patches: slices.Clone(st.Patches), Retained: st.Retained, Pending: st.Pending}
	sites = slices.Clone(sites)
	for _, i := range unload {
		next.Patches[i].Unloaded = true
		next.Patches[i].SupersededBy = rec.ID
		gone := Range{st.Patches[i].Base, st.Patches[i].Base + st.Patches[i].Size}
		sites = slices.DeleteFunc(sites, func(s SiteRecord) bool { return gone.Contains(s.Addr) })
	}
	rec.Sites = sites
	next.Patches = append(next.Patches, rec)
	buf, err := encodeState(next, st.Generation+1)
	if err != nil {
		return outcome{}, err
	}
	return outcome{unload: unload, sites: sites, buf: buf}, nil
}

// removable returns the candidates (indexes into st.Patches) that can be
// unmapped: no frame inside (hit is parallel to cands) and no image that
// stays loaded points into them.
func removable(st *State, cands []int, hit []bool) []int {
	gone := map[string]bool{}
	for k, i := range cands {
		if k < len(hit) && !hit[k] {
			gone[st.Patches[i].ID] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, r := range st.Patches {
			if r.Unloaded || gone[r.ID] {
				continue
			}
			for _, ref := range r.Refs {
				if gone[ref] {
					delete(gone, ref)
					changed = true
				}
			}
		}
	}
	var out []int
	for _, i := range cands {
		if gone[st.Patches[i].ID] {
			out = append(out, i)
		}
	}
	return out
}

func inAnyImage(st *State, addr uint64) bool {
	for _, r := range st.Patches {
		if !r.Unloaded && addr >= r.Base && addr < r.Base+r.Size {
			return true
		}
	}
	return false
}
