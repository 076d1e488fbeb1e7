package elfpatch

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// buildTick compiles testdata/loader/<version> the way testprocs builds its
// C targets (gcc -g -O2, gcc's default PIE) plus extra flags.
func buildTick(t testing.TB, version string, extra ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatalf("gcc is needed to build the loader's test targets: %v", err)
	}
	src, err := filepath.Glob(filepath.Join("testdata", "loader", version, "*.c"))
	if err != nil || len(src) == 0 {
		t.Fatalf("no sources for %s: %v", version, err)
	}
	out := filepath.Join(t.TempDir(), "tick-"+version)
	args := append([]string{"-g", "-O2"}, extra...)
	args = append(args, "-o", out)
	args = append(args, src...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

func openELF(t testing.TB, path string) *elf.File {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// symAt finds a defined symbol by name and, for a static, by the STT_FILE
// it follows. It reads debug/elf directly so the test does not trust the
// planner's own symbol index.
func symAt(t testing.TB, f *elf.File, file, name string) elf.Symbol {
	t.Helper()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	cur := ""
	var found []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FILE {
			cur = s.Name
			continue
		}
		if s.Section == elf.SHN_UNDEF || stripVersion(s.Name) != name {
			continue
		}
		local := elf.ST_BIND(s.Info) == elf.STB_LOCAL
		if file != "" && (!local || cur != file) {
			continue
		}
		if file == "" && local {
			continue
		}
		found = append(found, s)
	}
	if len(found) != 1 {
		t.Fatalf("symbol %s:%s: %d definitions", file, name, len(found))
	}
	return found[0]
}

// funcOf builds a PlanFunc for name (in file, "" for a global) from both
// builds, standing in for Diff's report.
func funcOf(t testing.TB, old, new *elf.File, file, name string) PlanFunc {
	t.Helper()
	n := symAt(t, new, file, name)
	f := PlanFunc{Name: name, File: file, Local: file != "", NewAddr: n.Value, NewSize: n.Size}
	if old != nil {
		o := symAt(t, old, file, name)
		f.OldAddr, f.OldSize = o.Value, o.Size
	}
	return f
}

type tickPlan struct {
	old, new *elf.File
	im       *Image
}

func planTick(t testing.TB, extra ...string) tickPlan {
	t.Helper()
	old := openELF(t, buildTick(t, "v1", extra...))
	new := openELF(t, buildTick(t, "v2", extra...))
	changed := []PlanFunc{funcOf(t, old, new, "", "work"), funcOf(t, old, new, "main.c", "helper")}
	added := []PlanFunc{funcOf(t, nil, new, "", "added")}
	im, err := PlanELF(old, new, changed, added)
	if err != nil {
		t.Fatalf("PlanELF: %v", err)
	}
	return tickPlan{old, new, im}
}

// refsFrom decodes NEW's function and returns, for each PC-relative
// rel32/disp32 field, the NEW address it reaches, keyed by field address.
func refsFrom(t testing.TB, f *elf.File, fn elf.Symbol) map[uint64]uint64 {
	t.Helper()
	text := f.Section(".text")
	data, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	b := data[fn.Value-text.Addr : fn.Value-text.Addr+fn.Size]
	out := map[uint64]uint64{}
	for off := 0; off < len(b); {
		inst, err := x86asm.Decode(b[off:], 64)
		if err != nil {
			t.Fatalf("decode %s+%#x: %v", fn.Name, off, err)
		}
		if inst.PCRel == 4 {
			rel := int32(binary.LittleEndian.Uint32(b[off+inst.PCRelOff:]))
			out[fn.Value+uint64(off+inst.PCRelOff)] = fn.Value + uint64(off+inst.Len) + uint64(int64(rel))
		}
		off += inst.Len
	}
	return out
}

func TestPlanTick(t *testing.T) {
	p := planTick(t)
	im := p.im

	// Redirects: exactly the two changed functions, OLD entry -> NEW entry.
	want := map[string][2]uint64{
		"work":   {symAt(t, p.old, "", "work").Value, symAt(t, p.new, "", "work").Value},
		"helper": {symAt(t, p.old, "main.c", "helper").Value, symAt(t, p.new, "main.c", "helper").Value},
	}
	if len(im.Redirects) != 2 {
		t.Fatalf("redirects: %+v", im.Redirects)
	}
	for _, r := range im.Redirects {
		if w, ok := want[r.Name]; !ok || r.Old != w[0] || r.New != w[1] {
			t.Errorf("redirect %+v, want old/new %#x/%#x", r, w[0], w[1])
		}
	}

	// Every PC-relative field in work: where it must end up.
	fix := map[uint64]Fixup{}
	for _, f := range im.Fixups {
		fix[f.Off] = f
	}
	nw := symAt(t, p.new, "", "work")
	type expect struct {
		old   elf.Symbol // fixup to this OLD symbol
		stays bool
	}
	newToOld := map[uint64]expect{}
	for _, c := range []struct{ file, name string }{
		{"", "counter"}, {"", "name"}, {"main.c", "seen"}, {"main.c", "calls.0"},
		{"", "stdout"}, {"", "stderr"}, {"", "other"}, {"", "kind"},
	} {
		newToOld[symAt(t, p.new, c.file, c.name).Value] = expect{old: symAt(t, p.old, c.file, c.name)}
	}
	for _, c := range []struct{ file, name string }{{"main.c", "helper"}, {"", "added"}} {
		newToOld[symAt(t, p.new, c.file, c.name).Value] = expect{stays: true}
	}
	// hist[] is reached at offsets inside it (gcc's vectorised loop
	// loads and stores it 16 bytes at a time).
	newHist, oldHist := symAt(t, p.new, "", "hist"), symAt(t, p.old, "", "hist")
	seen := map[string]bool{}
	for field, target := range refsFrom(t, p.new, nw) {
		e, known := newToOld[target]
		f, fixed := fix[field]
		switch {
		case target >= newHist.Value && target < newHist.Value+newHist.Size:
			seen["hist"] = true
			if want := oldHist.Value + target - newHist.Value; !fixed || f.Kind != FixupPC32 || f.Target != want {
				t.Errorf("work field %#x -> new hist+%d: want pc32 fixup to old %#x, got %+v (fixed %v)", field, target-newHist.Value, want, f, fixed)
			}
		case known && e.stays:
			seen["stay"] = true
			if fixed {
				t.Errorf("work field %#x -> new %#x must stay in NEW, got fixup %+v", field, target, f)
			}
		case known:
			seen[e.old.Name] = true
			if !fixed || f.Kind != FixupPC32 || f.Target != e.old.Value {
				t.Errorf("work field %#x -> new %#x: want pc32 fixup to old %s %#x, got %+v (fixed %v)", field, target, e.old.Name, e.old.Value, f, fixed)
			}
			if fixed && f.PCNext <= f.Off {
				t.Errorf("fixup %+v: PCNext not after the field", f)
			}
		default:
			// PLT calls and string literals stay in NEW.
			if fixed {
				t.Errorf("work field %#x -> new %#x (%s): unexpected fixup %+v", field, target, sectionName(p.new, target), f)
			}
			if s := sectionName(p.new, target); s != ".plt" && s != ".plt.sec" && s != ".rodata" {
				t.Errorf("work field %#x -> new %#x in %s: unexplained reference", field, target, s)
			}
		}
	}
	for _, n := range []string{"counter", "seen", "calls.0", "other", "kind", "stay", "hist"} {
		if !seen[n] {
			t.Errorf("work never referenced %s: the test target no longer exercises it", n)
		}
	}
	if !seen["stdout@GLIBC_2.2.5"] && !seen["stdout"] {
		t.Errorf("work never referenced stdout: %v", seen)
	}

	// main.c's seen is not other.c's seen.
	for _, f := range im.Fixups {
		if f.Target == symAt(t, p.old, "other.c", "seen").Value {
			t.Errorf("fixup %+v points at other.c's seen", f)
		}
	}

	// ops[] in .data.rel.ro holds pointers to kind and other: Abs64 to OLD.
	ops := symAt(t, p.new, "main.c", "ops")
	for i, name := range []string{"kind", "other"} {
		f, ok := fix[ops.Value+uint64(8*i)]
		if !ok || f.Kind != FixupAbs64 || f.Target != symAt(t, p.old, "", name).Value {
			t.Errorf("ops[%d]: want abs64 fixup to old %s, got %+v", i, name, f)
		}
	}

	// Imports: NEW's GOT slots for libc functions, with versions.
	imports := map[string]Import{}
	for _, imp := range im.Imports {
		imports[imp.Symbol] = imp
	}
	for _, n := range []string{"strlen", "printf", "fprintf", "fflush"} {
		imp, ok := imports[n]
		if !ok || imp.Version != "GLIBC_2.2.5" {
			t.Errorf("import %s: %+v (present %v)", n, imp, ok)
		}
	}
	if imp := imports["__gmon_start__"]; !imp.Weak {
		t.Errorf("__gmon_start__ should be a weak import: %+v", imp)
	}

	// Runs: work, main.c's helper and added; not other.c's helper.
	var runs []string
	for _, r := range im.Runs {
		runs = append(runs, r.File+":"+r.Name)
	}
	sort.Strings(runs)
	if want := []string{":added", ":work", "main.c:helper"}; !reflect.DeepEqual(runs, want) {
		t.Errorf("runs %v, want %v", runs, want)
	}

	// Segments and size.
	var end uint64
	for _, s := range im.Segments {
		end = max(end, s.Vaddr+s.Memsz)
	}
	if im.Size < end || im.Size%4096 != 0 || im.Size-end >= 4096 {
		t.Errorf("size %#x for segments ending at %#x", im.Size, end)
	}
}

func sectionName(f *elf.File, addr uint64) string {
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && addr >= s.Addr && addr < s.Addr+s.Size {
			return s.Name
		}
	}
	return "?"
}

func TestPlanDeterministic(t *testing.T) {
	a := planTick(t)
	old := a.old
	new := a.new
	changed := []PlanFunc{funcOf(t, old, new, "", "work"), funcOf(t, old, new, "main.c", "helper")}
	added := []PlanFunc{funcOf(t, nil, new, "", "added")}
	for i := 0; i < 3; i++ {
		im, err := PlanELF(old, new, changed, added)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(im, a.im) {
			t.Fatalf("run %d planned a different image", i)
		}
	}
}

func TestPlanNotPIE(t *testing.T) {
	old := openELF(t, buildTick(t, "v1", "-no-pie", "-fno-pie"))
	new := openELF(t, buildTick(t, "v2", "-no-pie", "-fno-pie"))
	_, err := PlanELF(old, new, nil, nil)
	if !errors.Is(err, ErrNotPIE) || !strings.Contains(err.Error(), "-fPIE -pie") {
		t.Fatalf("want ErrNotPIE naming the flags, got %v", err)
	}
}

// A global whose size changed between builds must not be silently shared.
func TestPlanRefusesResizedGlobal(t *testing.T) {
	dir := t.TempDir()
	for v, decl := range map[string]string{"v1": "int counter[2];", "v2": "long counter[2];"} {
		os.MkdirAll(filepath.Join(dir, v), 0o755)
		src := decl + `
__attribute__((noinline)) void work(void) { counter[1]++; }
int main(void) { work(); return 0; }
`
		if err := os.WriteFile(filepath.Join(dir, v, "main.c"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command("gcc", "-O2", "-o", filepath.Join(dir, v, "t"), filepath.Join(dir, v, "main.c")).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
	}
	old := openELF(t, filepath.Join(dir, "v1", "t"))
	new := openELF(t, filepath.Join(dir, "v2", "t"))
	_, err := PlanELF(old, new, []PlanFunc{funcOf(t, old, new, "", "work")}, nil)
	var pe *PlanError
	if !errors.As(err, &pe) || pe.Symbol != "counter" || !strings.Contains(err.Error(), "size differs") {
		t.Fatalf("want a PlanError naming counter, got %v", err)
	}
}
