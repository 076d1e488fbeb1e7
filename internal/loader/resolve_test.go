package loader

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/tracer"
)

func libc(t *testing.T, mods []tracer.Module) (*tracer.Module, *elf.File) {
	t.Helper()
	for i := range mods {
		if strings.Contains(mods[i].Path, "/libc.so") {
			f, err := elf.Open(mods[i].Path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return &mods[i], f
		}
	}
	t.Fatalf("no libc among %d modules", len(mods))
	return nil, nil
}

// dynsym returns libc's definition of name at version (default if "").
func dynsym(t *testing.T, f *elf.File, name, version string) elf.Symbol {
	t.Helper()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == name && s.Section != elf.SHN_UNDEF && (s.Version == version || version == "" && !s.VersionIndex.IsHidden()) {
			return s
		}
	}
	t.Fatalf("libc does not define %s@%s", name, version)
	return elf.Symbol{}
}

func TestResolverLive(t *testing.T) {
	testutil.RequirePtrace(t)
	tgt := startTick(t)
	mods, r, main := tgt.mods, tgt.res, tgt.main
	lc, lf := libc(t, mods)
	inText := func(m *tracer.Module, a uint64) bool {
		for _, mp := range m.Mappings {
			if mp.Executable() && a >= mp.Start && a < mp.End {
				return true
			}
		}
		return false
	}

	// strlen is an IFUNC: .dynsym holds its resolver, OLD's GOT the
	// implementation the dynamic linker chose. The import must get the
	// latter.
	strlen := dynsym(t, lf, "strlen", "GLIBC_2.2.5")
	if elf.ST_TYPE(strlen.Info) != elf.STT_GNU_IFUNC {
		t.Fatalf("libc's strlen is not an IFUNC here (%v): the test no longer tests IFUNCs", elf.ST_TYPE(strlen.Info))
	}
	got, err := r.Resolve(elfpatch.Import{Symbol: "strlen", Version: "GLIBC_2.2.5", Call: true})
	if err != nil {
		t.Fatal(err)
	}
	if got == strlen.Value+lc.Bias || !inText(lc, got) {
		t.Fatalf("strlen resolved to %#x (resolver at %#x): want the chosen implementation in libc's text", got, strlen.Value+lc.Bias)
	}

	// The same IFUNC looked up in libc itself (as for a symbol OLD never
	// imported): libc's IRELATIVE field for strlen's resolver holds the
	// dynamic linker's choice, which must agree with OLD's GOT.
	libsOnly := *r
	libsOnly.oldSlots = nil
	if got2, err := libsOnly.Resolve(elfpatch.Import{Symbol: "strlen", Version: "GLIBC_2.2.5", Call: true}); err != nil || got2 != got {
		t.Fatalf("strlen through libc's IRELATIVE field = %#x, %v; OLD's GOT says %#x", got2, err, got)
	}
	// Every other IFUNC: either resolved to libc text other than its
	// resolver, or refused with ErrIFUNC; never the resolver's address.
	syms, _ := lf.DynamicSymbols()
	resolved, refused := 0, 0
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_GNU_IFUNC || s.VersionIndex.IsHidden() {
			continue
		}
		v, err := libsOnly.Resolve(elfpatch.Import{Symbol: s.Name, Version: s.Version, Call: true})
		switch {
		case errors.Is(err, ErrIFUNC):
			refused++
		case err != nil:
			t.Fatalf("%s: %v", s.Name, err)
		case v == s.Value+lc.Bias || !inText(lc, v):
			t.Fatalf("%s resolved to %#x (resolver %#x)", s.Name, v, s.Value+lc.Bias)
		default:
			resolved++
		}
	}
	t.Logf("libc IFUNCs: %d resolved through IRELATIVE fields, %d refused", resolved, refused)
	if resolved == 0 {
		t.Fatal("no IFUNC resolved through libc's IRELATIVE fields")
	}

	// A plain function OLD never imported: libc's .dynsym plus bias.
	getpid := dynsym(t, lf, "getpid", "GLIBC_2.2.5")
	if got, err := r.Resolve(elfpatch.Import{Symbol: "getpid", Version: "GLIBC_2.2.5"}); err != nil || got != getpid.Value+lc.Bias {
		t.Fatalf("getpid = %#x, %v; want %#x", got, err, getpid.Value+lc.Bias)
	}
	// Without a version, the default one binds: memcpy@@GLIBC_2.14 (an
	// IFUNC), never the hidden memcpy@GLIBC_2.2.5 (a plain function).
	hidden := dynsym(t, lf, "memcpy", "GLIBC_2.2.5")
	if !hidden.VersionIndex.IsHidden() {
		t.Fatal("memcpy@GLIBC_2.2.5 is not hidden in this libc: the test no longer tests default versions")
	}
	if v, err := libsOnly.Resolve(elfpatch.Import{Symbol: "memcpy"}); err == nil && v == hidden.Value+lc.Bias {
		t.Fatal("unversioned memcpy bound to the hidden GLIBC_2.2.5 definition")
	} else if err != nil && !errors.Is(err, ErrIFUNC) {
		t.Fatalf("unversioned memcpy: %v", err)
	}

	// fprintf: tick calls it only every 100th line, so OLD's slot may
	// still hold its lazy PLT stub. A call slot may take the stub (it
	// resolves on first call) or the function; a data slot only the
	// function.
	fprintf := dynsym(t, lf, "fprintf", "GLIBC_2.2.5").Value + lc.Bias
	if got, err := r.Resolve(elfpatch.Import{Symbol: "fprintf", Version: "GLIBC_2.2.5", Call: true}); err != nil || (got != fprintf && !main.Contains(got)) {
		t.Fatalf("fprintf (call) = %#x, %v", got, err)
	}
	if got, err := r.Resolve(elfpatch.Import{Symbol: "fprintf", Version: "GLIBC_2.2.5"}); err != nil || got != fprintf {
		t.Fatalf("fprintf (address) = %#x, %v; want %#x", got, err, fprintf)
	}

	// Absent symbols: a weak one is 0, a strong one an error naming it.
	if got, err := r.Resolve(elfpatch.Import{Symbol: "graft_no_such_symbol", Weak: true}); err != nil || got != 0 {
		t.Fatalf("absent weak = %#x, %v", got, err)
	}
	if _, err := r.Resolve(elfpatch.Import{Symbol: "graft_no_such_symbol", Version: "GLIBC_2.2.5"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "graft_no_such_symbol@GLIBC_2.2.5") {
		t.Fatalf("absent strong: %v", err)
	}
	// A version libc does not have for a name it does.
	if _, err := r.Resolve(elfpatch.Import{Symbol: "getpid", Version: "GLIBC_9.99"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong version: %v", err)
	}
}

// failingProc makes the n-th remote system call fail, to check that Load
// leaves nothing behind whichever step fails.
type failingProc struct {
	*tracer.Process
	n, calls int
	nrs      []uint64
}

func (f *failingProc) Syscall(nr uint64, args ...uint64) (uint64, error) {
	f.calls++
	if f.calls == f.n {
		return 0, fmt.Errorf("injected failure of syscall %d: %w", nr, syscall.EPERM)
	}
	f.nrs = append(f.nrs, nr)
	return f.Process.Syscall(nr, args...)
}

func snapshot(t *testing.T, pid int) string {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		fds = append(fds, e.Name())
	}
	sort.Strings(fds)
	return string(maps) + "fds: " + strings.Join(fds, " ")
}

func TestLoadFailureLeavesNothing(t *testing.T) {
	testutil.RequirePtrace(t)
	im := tickImage(t)
	tgt := startTick(t)
	proc, p, main, res := tgt.proc, tgt.p, tgt.main, tgt.res
	// A link failure touches nothing at all.
	before := snapshot(t, proc.Pid)
	fp := &failingProc{Process: p}
	_, err := Load(fp, im, main, func(elfpatch.Import) (uint64, error) { return 0, errors.New("no") }, Options{ID: "fail"})
	if err == nil || fp.calls != 0 {
		t.Fatalf("link failure: err %v after %d syscalls", err, fp.calls)
	}
	failures := 0
	for n := 1; ; n++ {
		fp := &failingProc{Process: p, n: n}
		before := snapshot(t, proc.Pid)
		l, err := Load(fp, im, main, res.Resolve, Options{ID: "fail"})
		if err == nil {
			if fp.calls < n {
				// Every syscall of a successful load has had its turn to fail.
				if err := l.Unload(p); err != nil {
					t.Fatal(err)
				}
				break
			}
			// memfd_create/ftruncate failures fall back to anonymous
			// mappings: a success, and it must be complete.
			checkRegions(t, proc.Pid, l)
			if err := l.Unload(p); err != nil {
				t.Fatal(err)
			}
		} else {
			failures++
			if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", proc.Pid)) {
				t.Errorf("error does not name the pid: %v", err)
			}
		}
		if p.Stopped() {
			t.Fatalf("syscall %d failing left the process stopped", n)
		}
		if after := snapshot(t, proc.Pid); after != before {
			t.Fatalf("syscall %d (of %v) failing left a trace:\nbefore:\n%s\nafter:\n%s", n, fp.nrs, before, after)
		}
		if n > 50 {
			t.Fatal("Load never succeeded")
		}
	}
	if failures == 0 {
		t.Fatal("no injected failure made Load fail")
	}
	if after := snapshot(t, proc.Pid); after != before {
		t.Fatalf("target changed:\n%s\n%s", before, after)
	}
}

// A library replaced on disk after the target mapped it (a package
// upgrade): its symbols must come from the mapped file, not the path.
func TestResolverReplacedLibrary(t *testing.T) {
	testutil.RequirePtrace(t)
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gcc := func(args ...string) {
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, b)
		}
	}
	gcc("-O2", "-shared", "-fPIC", "-o", filepath.Join(dir, "libt.so"),
		write("t1.c", "int only_old(void) { return 1; }\nint tval(void) { return 7; }\n"))
	gcc("-O2", "-shared", "-fPIC", "-o", filepath.Join(dir, "libt.so.new"),
		write("t2.c", "int only_new(void) { return 2; }\nint pad[4096] = {1};\nint tval(void) { return 8; }\n"))
	main := filepath.Join(dir, "main")
	gcc("-O2", "-o", main, write("main.c", `#include <stdio.h>
#include <unistd.h>
int tval(void);
int main(void) { printf("ready %d\n", tval()); fflush(stdout); for (;;) pause(); }
`), "-L", dir, "-lt", "-Wl,-rpath,"+dir)
	proc := testutil.Start(t, main)
	proc.WaitLine(t, "ready 7", 5*time.Second)
	lib, err := elf.Open(filepath.Join(dir, "libt.so"))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	if err := os.Rename(filepath.Join(dir, "libt.so.new"), filepath.Join(dir, "libt.so")); err != nil {
		t.Fatal(err)
	}
	tgt := attach(t, proc)
	mods, r := tgt.mods, tgt.res
	var lt *tracer.Module
	for i := range mods {
		if strings.Contains(mods[i].Path, "libt.so") {
			lt = &mods[i]
		}
	}
	if lt == nil {
		t.Fatalf("libt.so not among %+v", mods)
	}
	syms, _ := lib.DynamicSymbols()
	var want uint64
	for _, s := range syms {
		if s.Name == "only_old" {
			want = s.Value + lt.Bias
		}
	}
	if got, err := r.Resolve(elfpatch.Import{Symbol: "only_old"}); err != nil || got != want {
		t.Fatalf("only_old = %#x, %v; want %#x from the mapped file", got, err, want)
	}
	if _, err := r.Resolve(elfpatch.Import{Symbol: "only_new"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("only_new (in the file now on disk, not in the mapped one): %v", err)
	}
}
