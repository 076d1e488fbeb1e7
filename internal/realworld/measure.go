package main

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"graft/elfpatch"
)

// lines are source lines by path relative to the tree root.
type lines map[string]map[int]bool

func (l lines) add(file string, from, n int) {
	if n <= 0 {
		return
	}
	if l[file] == nil {
		l[file] = map[int]bool{}
	}
	for i := from; i < from+n; i++ {
		l[file][i] = true
	}
}

// sourceDiff compares every C source and header of the two trees and
// returns the lines deleted from OLD and added in NEW.
func sourceDiff(oldTree, newTree string) (del, add lines, files, hunks int, err error) {
	del, add = lines{}, lines{}
	rels := map[string]bool{}
	for _, root := range []string{oldTree, newTree} {
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == ".pc" || d.Name() == "debian" || d.Name() == ".git") {
				return filepath.SkipDir
			}
			if !d.Type().IsRegular() || !(strings.HasSuffix(path, ".c") || strings.HasSuffix(path, ".h")) {
				return nil
			}
			rel, _ := filepath.Rel(root, path)
			rels[rel] = true
			return nil
		})
		if err != nil {
			return
		}
	}
	for _, rel := range sortedKeys(rels) {
		o, _ := os.ReadFile(filepath.Join(oldTree, rel))
		n, _ := os.ReadFile(filepath.Join(newTree, rel))
		if bytes.Equal(o, n) {
			continue
		}
		files++
		h, derr := diffFile(filepath.Join(oldTree, rel), filepath.Join(newTree, rel), rel, del, add)
		if derr != nil {
			return nil, nil, 0, 0, derr
		}
		hunks += h
	}
	return
}

var hunkRe = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@`)

// diffFile runs diff -U0 on one file (a missing side is empty) and records
// its hunks.
func diffFile(oldPath, newPath, rel string, del, add lines) (int, error) {
	args := []string{"-U0", "--new-file", oldPath, newPath}
	out, err := exec.Command("diff", args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			return 0, fmt.Errorf("diff %s: %v", rel, err)
		}
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		m := hunkRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n++
		num := func(s string, def int) int {
			if s == "" {
				return def
			}
			v, _ := strconv.Atoi(s)
			return v
		}
		del.add(rel, num(m[1], 0), num(m[2], 1))
		add.add(rel, num(m[3], 0), num(m[4], 1))
	}
	return n, nil
}

// fnSym is a sized function symbol with the STT_FILE a static follows.
type fnSym struct {
	addr, size uint64
	name, file string
	local      bool
}

// key names a function as graft's report does: statics by file, gcc's
// clone numbers dropped and a .cold part folded into its function.
func fnKey(name, file string, local bool) string {
	if i := strings.Index(name, ".cold"); i > 0 {
		name = name[:i]
	}
	parts := strings.Split(name, ".")
	keep := parts[:1]
	for _, p := range parts[1:] {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			continue
		}
		keep = append(keep, p)
	}
	name = strings.Join(keep, ".")
	if local && file != "" {
		return file + ":" + name
	}
	return name
}

func functions(f *elf.File) ([]fnSym, error) {
	syms, err := f.Symbols()
	if err != nil {
		return nil, err
	}
	var out []fnSym
	file := ""
	for _, s := range syms {
		typ, bind := elf.ST_TYPE(s.Info), elf.ST_BIND(s.Info)
		if typ == elf.STT_FILE {
			file = s.Name
			continue
		}
		if bind != elf.STB_LOCAL {
			file = ""
		}
		if typ != elf.STT_FUNC || s.Size == 0 || s.Section == elf.SHN_UNDEF {
			continue
		}
		out = append(out, fnSym{addr: s.Value, size: s.Size, name: s.Name, file: file, local: bind == elf.STB_LOCAL})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out, nil
}

// aliases maps the key of every function symbol to one key per address
// (the smallest), so that aliases (libxml2's xmlFoo and its hidden
// xmlFoo__internal_alias) count as the one function they are.
func aliases(bin string, canon map[string]string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	fns, err := functions(f)
	if err != nil {
		return err
	}
	byAddr := map[uint64][]string{}
	for _, fn := range fns {
		byAddr[fn.addr] = append(byAddr[fn.addr], fnKey(fn.name, fn.file, fn.local))
	}
	for _, keys := range byAddr {
		sort.Strings(keys)
		for _, k := range keys {
			if c, ok := canon[k]; !ok || keys[0] < c {
				canon[k] = keys[0]
			}
		}
	}
	return nil
}

func fnAt(fns []fnSym, addr uint64) *fnSym {
	i := sort.Search(len(fns), func(i int) bool { return fns[i].addr > addr }) - 1
	for j := i; j >= 0 && j > i-8; j-- {
		if addr >= fns[j].addr && addr < fns[j].addr+fns[j].size {
			return &fns[j]
		}
	}
	return nil
}

// touched returns the functions of bin whose code comes from one of the
// given lines, by its DWARF line table: every row's address range is
// attributed to the function symbol holding it, inlined code included.
func touched(bin, tree string, want lines, out map[string]bool) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	fns, err := functions(f)
	if err != nil {
		return err
	}
	d, err := f.DWARF()
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	root := filepath.Clean(tree) + "/"
	resolved := map[string]string{}
	rd := d.Reader()
	for {
		e, err := rd.Next()
		if err != nil {
			return err
		}
		if e == nil {
			break
		}
		if e.Tag != dwarf.TagCompileUnit {
			rd.SkipChildren()
			continue
		}
		lr, err := d.LineReader(e)
		if err != nil || lr == nil {
			rd.SkipChildren()
			continue
		}
		var row dwarf.LineEntry
		for lr.Next(&row) == nil {
			if row.EndSequence || row.File == nil {
				continue
			}
			rel, ok := resolved[row.File.Name]
			if !ok {
				rel = resolve(row.File.Name, root, want)
				resolved[row.File.Name] = rel
			}
			if !want[rel][row.Line] {
				continue
			}
			if fn := fnAt(fns, row.Address); fn != nil {
				out[fnKey(fn.name, fn.file, fn.local)] = true
				if why := os.Getenv("REALWORLD_WHY"); why != "" && strings.Contains(fn.name, why) {
					fmt.Fprintf(os.Stderr, "%s: %s at %#x is %s:%d\n", filepath.Base(bin), fn.name, row.Address, rel, row.Line)
				}
			}
		}
		rd.SkipChildren()
	}
	return nil
}

func measure(p pair, oldTree, newTree, oldBin, newBin string) (result, error) {
	r := result{p: p}
	del, add, files, hunks, err := sourceDiff(oldTree, newTree)
	if err != nil {
		return r, err
	}
	r.files, r.hunks = files, hunks
	truth := map[string]bool{}
	if err := touched(oldBin, oldTree, del, truth); err != nil {
		return r, err
	}
	if err := touched(newBin, newTree, add, truth); err != nil {
		return r, err
	}
	ob, err := elfpatch.Open(oldBin)
	if err != nil {
		return r, err
	}
	nb, err := elfpatch.Open(newBin)
	if err != nil {
		return r, err
	}
	rep, err := elfpatch.Diff(ob, nb)
	if err != nil {
		return r, err
	}
	r.verdict = string(rep.Verdict)
	r.switchable, r.returns = elfpatch.SwitchCoverage(ob, nb, rep)
	if r.strippedSame, r.strippedVerdict, err = strippedSame(oldBin, newBin, rep); err != nil {
		return r, err
	}
	for _, rs := range rep.Reasons {
		if strings.Contains(rs.Message, "whose end is unknown") {
			r.unknownExtent = append(r.unknownExtent, rs.Symbol)
		}
	}
	graft := map[string]bool{}
	for _, fs := range [][]elfpatch.Func{rep.Changed, rep.Added, rep.Removed} {
		for _, f := range fs {
			graft[fnKey(f.Name, f.File, f.Local)] = true
			if f.OldName != "" {
				graft[fnKey(f.OldName, f.File, f.Local)] = true
			}
		}
	}
	canon := map[string]string{}
	if err := aliases(oldBin, canon); err != nil {
		return r, err
	}
	if err := aliases(newBin, canon); err != nil {
		return r, err
	}
	canonical := func(m map[string]bool) map[string]bool {
		out := map[string]bool{}
		for k := range m {
			if c, ok := canon[k]; ok {
				k = c
			}
			out[k] = true
		}
		return out
	}
	truth, graft = canonical(truth), canonical(graft)
	r.truth, r.graft = sortedKeys(truth), sortedKeys(graft)
	names := map[string]string{}
	for _, bin := range []string{oldBin, newBin} {
		if err := symbolNames(bin, canon, names); err != nil {
			return r, err
		}
	}
	var kept []string
	for _, k := range r.truth {
		switch {
		case graft[k]:
			r.both = append(r.both, k)
		case sameCode(oldBin, newBin, names[k]):
			// Touched lines, same machine code: not a change.
			r.sameCode = append(r.sameCode, k)
			continue
		default:
			r.missed = append(r.missed, k)
		}
		kept = append(kept, k)
	}
	r.truth = kept
	for _, k := range r.graft {
		if !truth[k] {
			r.extra = append(r.extra, k)
		}
	}
	return r, nil
}

// resolve maps a line table's file name to the path, relative to the tree
// root, of a file the source diff touched ("" if none). Names are absolute
// or relative to a directory that debug/dwarf does not always keep (a
// libtool build in src/liblzma names ../common/x.c "common/x.c"), so a
// relative name matches a touched path it is a suffix of, if only one.
func resolve(name, root string, want lines) string {
	name = filepath.Clean(name)
	if filepath.IsAbs(name) {
		rel := strings.TrimPrefix(name, root)
		if want[rel] != nil {
			return rel
		}
		return ""
	}
	name = strings.TrimLeft(strings.TrimPrefix("/"+name, "/"), "./")
	found := ""
	for rel := range want {
		if rel == name || strings.HasSuffix(rel, "/"+name) {
			if found != "" {
				return "" // ambiguous
			}
			found = rel
		}
	}
	return found
}

// symbolNames maps a canonical function key to a symbol name objdump can
// disassemble it by.
func symbolNames(bin string, canon, names map[string]string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	fns, err := functions(f)
	if err != nil {
		return err
	}
	for _, fn := range fns {
		own := fnKey(fn.name, fn.file, fn.local)
		k := own
		if c, ok := canon[k]; ok {
			k = c
		}
		// The symbol whose own key is the canonical one, if any: the
		// name objdump labels the address with.
		if _, ok := names[k]; !ok || own == k {
			names[k] = fn.name
		}
	}
	return nil
}

// changeSet is a report's changed, added and removed functions, by name
// (an added static has no file when NEW has no STT_FILE symbols).
func changeSet(r *elfpatch.Report) string {
	var out []string
	for _, f := range r.Changed {
		out = append(out, "changed "+f.Name)
	}
	for _, f := range r.Added {
		out = append(out, "added "+f.Name)
	}
	for _, f := range r.Removed {
		out = append(out, "removed "+f.Name)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// strippedSame diffs OLD against a copy of NEW run through strip -g (the
// usual production build) and reports whether graft finds the same
// functions as with the debug build.
func strippedSame(oldBin, newBin string, want *elfpatch.Report) (bool, string, error) {
	dir, err := os.MkdirTemp("", "realworld-strip-")
	if err != nil {
		return false, "", err
	}
	defer os.RemoveAll(dir)
	s := filepath.Join(dir, filepath.Base(newBin))
	if out, err := exec.Command("cp", newBin, s).CombinedOutput(); err != nil {
		return false, "", fmt.Errorf("cp: %v\n%s", err, out)
	}
	if out, err := exec.Command("strip", "-g", s).CombinedOutput(); err != nil {
		return false, "", fmt.Errorf("strip -g: %v\n%s", err, out)
	}
	ob, err := elfpatch.Open(oldBin)
	if err != nil {
		return false, "", err
	}
	nb, err := elfpatch.Open(s)
	if err != nil {
		return false, "", err
	}
	got, err := elfpatch.Diff(ob, nb)
	if err != nil {
		return false, "", err
	}
	return changeSet(got) == changeSet(want), string(got.Verdict), nil
}
