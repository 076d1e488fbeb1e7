package loader

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/tracer"
	"graft/trampoline"
)

// buildTick compiles elfpatch/testdata/loader/<version> like testprocs
// builds C targets: gcc -g -O2, gcc's default PIE.
func buildTick(t testing.TB, version string, flags ...string) string {
	t.Helper()
	dir := filepath.Join(testutil.Root(), "elfpatch", "testdata", "loader", version)
	src, _ := filepath.Glob(filepath.Join(dir, "*.c"))
	if len(src) == 0 {
		t.Fatalf("no sources in %s", dir)
	}
	out := filepath.Join(t.TempDir(), "tick-"+version)
	args := append(append([]string{"-g", "-O2"}, flags...), "-o", out)
	args = append(args, src...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, b)
	}
	return out
}

// funcSym finds a function by name (and compile unit for a static).
func funcSym(t testing.TB, f *elf.File, file, name string) elf.Symbol {
	t.Helper()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	cur := ""
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FILE {
			cur = s.Name
			continue
		}
		local := elf.ST_BIND(s.Info) == elf.STB_LOCAL
		if s.Name == name && elf.ST_TYPE(s.Info) == elf.STT_FUNC && local == (file != "") && (file == "" || cur == file) {
			return s
		}
	}
	t.Fatalf("no function %s:%s", file, name)
	return elf.Symbol{}
}

func planFunc(t testing.TB, old, new *elf.File, file, name string) elfpatch.PlanFunc {
	n := funcSym(t, new, file, name)
	pf := elfpatch.PlanFunc{Name: name, File: file, Local: file != "", NewAddr: n.Value, NewSize: n.Size}
	if old != nil {
		o := funcSym(t, old, file, name)
		pf.OldAddr, pf.OldSize = o.Value, o.Size
	}
	return pf
}

// lines delivers the target's stdout line by line.
func lines(r *bufio.Reader) <-chan string {
	ch := make(chan string, 4096)
	go func() {
		defer close(ch)
		for {
			s, err := r.ReadString('\n')
			if err != nil {
				return
			}
			ch <- strings.TrimSpace(s)
		}
	}()
	return ch
}

var tickLine = regexp.MustCompile(`^(v[12]) counter=(\d+) calls=(\d+) len=(\d+) helper=(\d+) other=(\d+) kind=(\d+) seen=(\d+) hist=(\d+)(?: added=(\d+))?$`)

type tick struct {
	version                                  string
	counter, calls, len, helper, other, kind int
	seen, hist, added                        int
	raw                                      string
}

func nextTick(t testing.TB, ch <-chan string, p *testutil.Proc) tick {
	t.Helper()
	select {
	case s, ok := <-ch:
		if !ok {
			t.Fatalf("target exited (stderr: %s)", p.Stderr())
		}
		m := tickLine.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("unexpected output line %q", s)
		}
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		return tick{m[1], n(2), n(3), n(4), n(5), n(6), n(7), n(8), n(9), n(10), s}
	case <-time.After(5 * time.Second):
		t.Fatalf("no output for 5s (stderr: %s)", p.Stderr())
	}
	return tick{}
}

func kindOf(x int) int {
	return []int{11, 23, 37, 41, 59, 61, 79}[x%7]
}

// checkTick checks a line's arithmetic: which function versions produced it
// and that they used the one copy of the program's state.
func checkTick(t *testing.T, k tick, wantVersion string) {
	t.Helper()
	mul := 2
	if wantVersion == "v2" {
		mul = 3
	}
	switch {
	case k.version != wantVersion:
		t.Fatalf("line %q: want %s", k.raw, wantVersion)
	case k.calls != k.counter:
		t.Fatalf("line %q: calls.0 and counter diverged (two copies of state?)", k.raw)
	case k.len != 5:
		t.Fatalf("line %q: strlen(name) = %d", k.raw, k.len)
	case k.helper != mul*k.counter:
		t.Fatalf("line %q: helper is not %s's", k.raw, wantVersion)
	case k.other != k.counter+1000:
		t.Fatalf("line %q: other() (other.c's helper) wrong", k.raw)
	case k.kind != kindOf(k.counter):
		t.Fatalf("line %q: kind() wrong", k.raw)
	case k.hist != 8*k.counter:
		// hist[7] += 8 on every call, in a loop gcc vectorises: NEW's
		// vector loads and stores (VEX under -mavx2) must reach OLD's
		// hist like its scalar load of hist[7] does.
		t.Fatalf("line %q: hist[7] is not 8*counter (two copies of hist?)", k.raw)
	}
}

type tickCase struct {
	opt   Options
	flags []string // gcc flags for both builds
	// guard is TICK_GUARD for the running target (testdata/loader/guard.c
	// linked into v1): the restrictions of a hardened service.
	guard string
	// wantErr, if set, is what Load's error must say; the target must
	// then be left exactly as it was.
	wantErr string
	// cpu is a /proc/cpuinfo flag the builds need to run.
	cpu string
}

func TestLoadTickLive(t *testing.T) {
	testutil.RequirePtrace(t)
	for name, tc := range map[string]tickCase{
		"memfd": {opt: Options{ID: "tick-test"}},
		// The fallback for targets whose seccomp filter refuses
		// memfd_create, forced.
		"anonymous": {opt: Options{ID: "tick-test", NoMemfd: true}},
		// -fPIC without linker relaxation: every global is reached
		// through a GOT slot (RELATIVE for the program's own, GLOB_DAT
		// for stdout and stderr, no COPY relocations), so the fixups are
		// Abs64 GOT entries.
		"got": {opt: Options{ID: "tick-test"}, flags: []string{"-fPIC", "-pie", "-Wl,--no-relax"}},
		// Ubuntu's gcc defaults: CET landing pads at every entry, and
		// calls through the GOT without a PLT.
		"cet-noplt": {opt: Options{ID: "tick-test"}, flags: []string{"-fcf-protection=full", "-fno-plt"}},
		// AVX2: gcc vectorises work()'s loop over hist[] into VEX loads
		// and stores, RIP-relative operands x86asm does not mark as
		// such; they must reach OLD's hist too.
		"avx2": {opt: Options{ID: "tick-test"}, flags: []string{"-mavx2"}, cpu: "avx2"},
		// MemoryDenyWriteExecute: no page ever gains PROT_EXEC, so the
		// image loads anyway.
		"mdwe": {opt: Options{ID: "tick-test"}, guard: "mdwe"},
		// memfd_create refused by seccomp: anonymous mappings instead.
		"seccomp-nomemfd": {opt: Options{ID: "tick-test"}, guard: "nomemfd"},
		// No executable mapping allowed at all: a clear error, and the
		// target as it was.
		"seccomp-noexec": {opt: Options{ID: "tick-test"}, guard: "noexec", wantErr: "seccomp"},
	} {
		t.Run(name, func(t *testing.T) { testLoadTick(t, tc) })
	}
}

func testLoadTick(t *testing.T, tc tickCase) {
	if tc.cpu != "" {
		requireCPU(t, tc.cpu)
	}
	opt := tc.opt
	v1flags := tc.flags
	if tc.guard != "" {
		v1flags = append(append([]string(nil), tc.flags...), filepath.Join(testutil.Root(), "elfpatch", "testdata", "loader", "guard.c"))
	}
	v1 := buildTick(t, "v1", v1flags...)
	im := planTick(t, v1, buildTick(t, "v2", tc.flags...), true)

	t.Setenv("TICK_GUARD", tc.guard)
	proc := testutil.Start(t, v1)
	out := lines(proc.Stdout)
	if s := <-out; s != "ready" {
		t.Fatalf("first line %q", s)
	}
	var last tick
	for i := 0; i < 5; i++ {
		last = nextTick(t, out, proc)
		checkTick(t, last, "v1")
	}

	a := attach(t, proc)
	p, main := a.p, a.main
	if tc.guard != "" {
		waitStderr(t, proc, "guard: "+tc.guard)
	}
	if tc.guard == "mdwe" {
		requireMDWE(t, p)
	}
	if tc.wantErr != "" {
		before := snapshot(t, proc.Pid)
		_, err := Load(p, im, main, a.res.Resolve, opt)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Fatalf("Load: want an error saying %q, got %v", tc.wantErr, err)
		}
		t.Logf("Load refused as expected: %v", err)
		if after := snapshot(t, proc.Pid); after != before {
			t.Fatalf("failed Load left a trace:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		checkTick(t, nextTick(t, out, proc), "v1")
		return
	}
	l, err := Load(p, im, main, a.res.Resolve, opt)
	if err != nil {
		t.Fatal(err)
	}
	if p.Stopped() {
		t.Fatal("Load left the process stopped")
	}
	t.Logf("loaded %#x bytes at %#x (executable at %#x), %d fixups, %d imports", l.Size, l.Base, main.Base, len(im.Fixups), len(im.Imports))
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", proc.Pid))
	if !strings.Contains(string(maps), fmt.Sprintf("%x-", l.Base)) {
		t.Fatalf("maps do not show the image at %#x:\n%s", l.Base, maps)
	}
	wantAnon := opt.NoMemfd || tc.guard == "nomemfd"
	if named := strings.Contains(string(maps), "memfd:graft-tick-test"); named == wantAnon || (l.Name != "") != named {
		t.Fatalf("memfd in maps: %v, Loaded.Name %q, want anonymous %v:\n%s", named, l.Name, wantAnon, maps)
	}
	checkRegions(t, proc.Pid, l)

	// The redirects, written by hand while the process is stopped (the
	// trampoline package owns the real thing): jmp rel32 at OLD's entry.
	saved := writeRedirects(t, p, im, main.Bias, l.Base)

	// Lines already buffered may still be v1's; the first v2 line must
	// continue the count exactly: one counter, one calls.0, one seen.
	var first tick
	for {
		k := nextTick(t, out, proc)
		if k.version == "v1" {
			checkTick(t, k, "v1")
			last = k
			continue
		}
		first = k
		break
	}
	checkTick(t, first, "v2")
	t.Logf("last v1 line: %s", last.raw)
	t.Logf("first v2 line: %s", first.raw)
	if first.counter != last.counter+1 {
		t.Fatalf("counter jumped from %d (v1) to %d (v2): state not shared", last.counter, first.counter)
	}
	// helper() runs once per call in both versions and bumps main.c's
	// seen (printed before helper ran or after: argument order is the
	// compiler's), never other.c's.
	if first.seen < last.seen || first.seen > last.seen+2 {
		t.Fatalf("seen went from %d to %d", last.seen, first.seen)
	}
	// added() is new: bonus starts at 100 in NEW's data, so the first
	// call returns 101 + ops[x&1](x), where ops holds OLD's kind/other.
	want := 101 + kindOf(first.counter)
	if first.counter&1 == 1 {
		want = 101 + first.counter + 1000
	}
	if first.added != want {
		t.Fatalf("first v2 line %q: added=%d, want %d", first.raw, first.added, want)
	}
	prev := first
	for i := 0; i < 120; i++ {
		k := nextTick(t, out, proc)
		checkTick(t, k, "v2")
		if k.counter != prev.counter+1 || k.added-kindOrOther(k.counter) != prev.added-kindOrOther(prev.counter)+1 {
			t.Fatalf("after %q came %q", prev.raw, k.raw)
		}
		prev = k
	}
	// fprintf(stderr) from NEW's code reaches the stream libc owns.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(proc.Stderr(), "v2 at ") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(proc.Stderr(), "v2 at ") {
		t.Fatalf("no v2 stderr line; stderr: %q", proc.Stderr())
	}

	// Revert, then unload once a v1 line proves the (single) thread has
	// left NEW's work().
	revertRedirects(t, p, saved)
	for {
		k := nextTick(t, out, proc)
		if k.version == "v1" {
			checkTick(t, k, "v1")
			break
		}
	}
	if err := l.Unload(p); err != nil {
		t.Fatal(err)
	}
	maps, _ = os.ReadFile(fmt.Sprintf("/proc/%d/maps", proc.Pid))
	if strings.Contains(string(maps), "/memfd:graft-tick-test") || strings.Contains(string(maps), fmt.Sprintf("%x-", l.Base)) {
		t.Fatalf("image still mapped after Unload:\n%s", maps)
	}
	for i := 0; i < 3; i++ {
		checkTick(t, nextTick(t, out, proc), "v1")
	}
}

func kindOrOther(x int) int {
	if x&1 == 1 {
		return x + 1000
	}
	return kindOf(x)
}

// stopped runs fn with every thread stopped.
func stopped(t *testing.T, p *tracer.Process, fn func()) {
	t.Helper()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
	}()
	fn()
}

// regsOK fails if a thread's PC lies inside the n bytes about to be
// overwritten at from, other than at their first byte (the test program's
// threads are otherwise never inside them for long, so a failure here is
// real, not flaky: retrying would hide it).
func regsOK(t *testing.T, p *tracer.Process, from, n uint64) {
	t.Helper()
	for _, tid := range p.Threads() {
		r, err := p.Regs(tid)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rip > from && r.Rip < from+n {
			t.Fatalf("thread %d stopped at %#x inside the jump being written at %#x", tid, r.Rip, from)
		}
	}
}

// writeRedirects writes the jump from OLD's entry of every redirected
// function to NEW's (trampoline.Plan: after an endbr64, int3-padded to an
// instruction boundary), with the process stopped, and returns the sites
// to revert.
func writeRedirects(t *testing.T, p *tracer.Process, im *elfpatch.Image, oldBias, newBase uint64) []*trampoline.Site {
	t.Helper()
	var sites []*trampoline.Site
	stopped(t, p, func() {
		for _, r := range im.Redirects {
			from, to := oldBias+r.Old, newBase+r.New
			code := make([]byte, r.OldSize)
			if _, err := p.ReadAt(code, int64(from)); err != nil {
				t.Fatal(err)
			}
			site, err := trampoline.Plan(code, from, to)
			if err != nil {
				t.Fatalf("redirect %s: %v", r.Name, err)
			}
			if site.New[0] != 0xe9 {
				t.Fatalf("redirect %s: not a jmp rel32 although the image is within reach: % x", r.Name, site.New)
			}
			regsOK(t, p, site.Addr, uint64(len(site.New)))
			if _, err := p.WriteAt(site.New, int64(site.Addr)); err != nil {
				t.Fatal(err)
			}
			sites = append(sites, site)
		}
	})
	return sites
}

// revertRedirects puts the saved bytes back, with the process stopped.
func revertRedirects(t *testing.T, p *tracer.Process, sites []*trampoline.Site) {
	t.Helper()
	stopped(t, p, func() {
		for _, site := range sites {
			regsOK(t, p, site.Addr, uint64(len(site.Orig)))
			if _, err := p.WriteAt(site.Revert(), int64(site.Addr)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// checkRegions compares the target's mappings over the image with the
// regions Load reported: same ranges, same protections, never W+X.
func checkRegions(t *testing.T, pid int, l *Loaded) {
	t.Helper()
	maps, err := tracer.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	prot := func(perms string) int {
		p := 0
		if perms[0] == 'r' {
			p |= 1
		}
		if perms[1] == 'w' {
			p |= 2
		}
		if perms[2] == 'x' {
			p |= 4
		}
		return p
	}
	var seen uint64
	for _, m := range maps {
		if m.End <= l.Base || m.Start >= l.Base+l.Size {
			continue
		}
		if prot(m.Perms)&6 == 6 {
			t.Errorf("mapping %+v is writable and executable", m)
		}
		for _, r := range l.Regions {
			if m.Start >= r.Addr && m.End <= r.Addr+r.Size && prot(m.Perms) != r.Prot {
				t.Errorf("mapping %+v, region says prot %d", m, r.Prot)
			}
		}
		seen += m.End - m.Start
	}
	if seen != l.Size {
		t.Errorf("maps cover %#x bytes of the image, want %#x", seen, l.Size)
	}
}

func waitStderr(t *testing.T, proc *testutil.Proc, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(proc.Stderr(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("target never said %q on stderr: %q", want, proc.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// requireMDWE proves the target is really under MDWE: the classic way of
// loading code (map writable, fill, mprotect to executable) is refused.
func requireMDWE(t *testing.T, p *tracer.Process) {
	t.Helper()
	stopped(t, p, func() {
		a, err := p.Mmap(0, pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Munmap(a, pageSize)
		if err := p.Mprotect(a, pageSize, unix.PROT_READ|unix.PROT_EXEC); err == nil {
			t.Fatal("mprotect(PROT_EXEC) of a writable mapping succeeded: MDWE is not in force")
		}
	})
}

// requireCPU skips when this machine's CPU lacks flag: a build for it
// would die of SIGILL, which says nothing about the loader.
func requireCPU(t *testing.T, flag string) {
	t.Helper()
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("read /proc/cpuinfo: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, flags, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "flags" {
			if slices.Contains(strings.Fields(flags), flag) {
				return
			}
			t.Skipf("the CPU lacks %s (/proc/cpuinfo flags: %s): the target built for it cannot run here", flag, strings.TrimSpace(flags))
		}
	}
	t.Fatalf("no flags line in /proc/cpuinfo")
}
