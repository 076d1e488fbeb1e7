package graft

import (
	"debug/elf"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"graft/tracer"
)

// The patched module.
//
// A patch applies to one ELF module of the process: the executable or any
// shared library it maps. Which one is decided by the patch's OLD
// build-id, matched against the build-ids of the mapped modules (read from
// the files the process mapped, through map_files when an upgrade deleted
// or replaced them on disk), so the same patch file patches a library in
// every process that maps that build, whatever path it was loaded from.
//
// Patches stack per module: a patch on top of another is one whose OLD is
// the NEW of the newest patch of the same module. The record lists the
// patches of every module in the order they were applied; revert takes
// the newest out first, whichever module it patched.

// inModule reports whether rec redirects functions of mod. Records
// written before graft patched libraries have no Module: they patched the
// executable.
func (r *PatchRecord) inModule(mod *tracer.Module) bool {
	if r.Module == "" {
		return mod.Main
	}
	return r.Module == mod.BuildID
}

// TopFor returns the newest patch of mod, or nil.
func (s *State) TopFor(mod *tracer.Module) *PatchRecord {
	if s == nil {
		return nil
	}
	for i := len(s.Patches) - 1; i >= 0; i-- {
		if s.Patches[i].inModule(mod) {
			return &s.Patches[i]
		}
	}
	return nil
}

// patchedModule picks the module a patch whose OLD is oldBuildID applies
// to: the module mapped with that build-id, or the one whose newest patch
// made it run that build (stacking). With neither, it returns the
// executable, so the caller's build-id check names what the process runs.
func patchedModule(mods []tracer.Module, st *State, oldBuildID string) *tracer.Module {
	for i := range mods {
		if m := &mods[i]; m.BuildID != "" && m.BuildID == oldBuildID {
			return m
		}
	}
	for i := range mods {
		if top := st.TopFor(&mods[i]); top != nil && top.NewBuildID == oldBuildID {
			return &mods[i]
		}
	}
	return mainModule(mods)
}

// moduleForNew picks the module a NEW binary replaces (graft apply
// --new): a shared library (an ELF with a DT_SONAME) is
// matched by SONAME against the libraries the process maps, then by file
// name; anything else is the executable.
func moduleForNew(pid int, mods []tracer.Module, newPath string) (*tracer.Module, error) {
	soname, err := sonameOf(newPath)
	if err != nil {
		return nil, err
	}
	if soname == "" {
		if m := mainModule(mods); m != nil {
			return m, nil
		}
		return nil, fmt.Errorf("no main executable among the modules of pid %d", pid)
	}
	var byName *tracer.Module
	var libs []string
	for i := range mods {
		m := &mods[i]
		if m.Main || !strings.HasPrefix(m.Path, "/") {
			continue
		}
		libs = append(libs, m.Path)
		path, err := tracer.ModuleFile(pid, m)
		if err != nil {
			continue
		}
		if s, _ := sonameOf(path); s == soname {
			return m, nil
		}
		if filepath.Base(strings.TrimSuffix(m.Path, " (deleted)")) == soname && byName == nil {
			byName = m
		}
	}
	if byName != nil {
		return byName, nil
	}
	sort.Strings(libs)
	return nil, fmt.Errorf("%s is the library %s, and pid %d maps no library of that name (it maps: %s)", newPath, soname, pid, strings.Join(libs, ", "))
}

// sonameOf returns a shared library's DT_SONAME, "" for an executable.
// (libc.so.6 has a PT_INTERP and runs as a program too: the SONAME is what
// makes a library.)
func sonameOf(path string) (soname string, err error) {
	defer func() {
		if x := recover(); x != nil {
			soname, err = "", fmt.Errorf("read %s: malformed ELF: %v", path, x)
		}
	}()
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	names, err := f.DynString(elf.DT_SONAME)
	if err != nil || len(names) == 0 {
		return "", nil
	}
	return names[0], nil
}
