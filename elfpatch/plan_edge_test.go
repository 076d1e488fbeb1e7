package elfpatch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"graft/internal/testutil"
)

// buildSrc writes files (name -> source) into a fresh directory and links
// them with gcc -g -O2 plus flags; it returns the opened executable.
func buildSrc(t *testing.T, files map[string]string, flags ...string) *elf.File {
	t.Helper()
	dir := t.TempDir()
	var names []string
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Join(dir, name))
	}
	sort.Strings(names)
	out := filepath.Join(dir, "a.out")
	args := append(append([]string{"-g", "-O2"}, flags...), "-o", out)
	args = append(args, names...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return openELF(t, out)
}

func fixupsTo(im *Image, target uint64) []Fixup {
	var out []Fixup
	for _, f := range im.Fixups {
		if f.Target == target {
			out = append(out, f)
		}
	}
	return out
}

func fixupAt(im *Image, off uint64) (Fixup, bool) {
	for _, f := range im.Fixups {
		if f.Off == off {
			return f, true
		}
	}
	return Fixup{}, false
}

const coldMain = `#include <stdio.h>
int counter;
void work(void);
int main(void) { for (int i = 0; i < 200; i++) work(); printf("%d\n", counter); return 0; }
`

// coldAsm is work() split the way gcc splits a function with an unlikely
// block: work.cold, a local symbol in .text.unlikely, jumped to from work
// and jumping back into its middle. (gcc 12 -O2 splits only with profile
// data, so the test writes the split by hand.)
const coldAsm = `	.file	"cold.s"
	.text
	.globl	work
	.type	work, @function
work:
	addl	$1, counter(%rip)
	cmpl	$LIMIT, counter(%rip)
	jg	work.cold
.Lback:
	ret
	.size	work, .-work
	.section	.text.unlikely,"ax",@progbits
	.type	work.cold, @function
work.cold:
	addl	$2, counter(%rip)
	jmp	.Lback
	.size	work.cold, .-work.cold
	.section	.note.GNU-stack,"",@progbits
`

func TestPlanColdPart(t *testing.T) {
	old := buildSrc(t, map[string]string{"main.c": coldMain, "cold.s": strings.Replace(coldAsm, "LIMIT", "100", 1)})
	new := buildSrc(t, map[string]string{"main.c": coldMain, "cold.s": strings.Replace(coldAsm, "LIMIT", "150", 1)})
	im, err := PlanELF(old, new, []PlanFunc{funcOf(t, old, new, "", "work")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	work, cold := symAt(t, new, "", "work"), symAt(t, new, "cold.s", "work.cold")
	counter := symAt(t, old, "", "counter")
	// Three references to counter: two in work, one in work.cold: all
	// to OLD's counter, so the cold part was planned too.
	fs := fixupsTo(im, counter.Value)
	inCold := 0
	for _, f := range fs {
		if f.Off >= cold.Value && f.Off < cold.Value+cold.Size {
			inCold++
		}
	}
	if len(fs) != 3 || inCold != 1 {
		t.Fatalf("fixups to counter: %+v (in work.cold: %d)", fs, inCold)
	}
	// work -> work.cold and work.cold -> work+N stay in NEW, although
	// OLD has a work.cold too.
	for field, target := range refsFrom(t, new, work) {
		if target == cold.Value {
			if f, ok := fixupAt(im, field); ok {
				t.Fatalf("jump to work.cold redirected to OLD: %+v", f)
			}
			return
		}
	}
	t.Fatal("work does not jump to work.cold")
}

// v1 calls scale with a variable k; v2 with a constant, so gcc makes
// scale.constprop.0, which only NEW has: it must run from NEW's image
// with its own reference to total pointed at OLD's.
func TestPlanNewClone(t *testing.T) {
	src := `#include <stdio.h>
int total;
__attribute__((noinline)) static int scale(int x, int k) { return x * k + total; }
__attribute__((noinline)) void work(int x) { total += scale(x, K); }
int main(int argc, char **argv) { work(argc); work(argc + 1); printf("%d\n", total); return 0; }
`
	old := buildSrc(t, map[string]string{"main.c": strings.Replace(src, "K", "x & 7", 1)})
	new := buildSrc(t, map[string]string{"main.c": strings.Replace(src, "K", "5", 1)})
	clone := symAt(t, new, "main.c", "scale.constprop.0")
	im, err := PlanELF(old, new, []PlanFunc{funcOf(t, old, new, "", "work")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	total := symAt(t, old, "", "total")
	n := 0
	for _, f := range fixupsTo(im, total.Value) {
		if f.Off >= clone.Value && f.Off < clone.Value+clone.Size {
			n++
		}
	}
	if n == 0 {
		t.Fatalf("scale.constprop.0 (new only) was not planned: fixups %+v", im.Fixups)
	}
	for field, target := range refsFrom(t, new, symAt(t, new, "", "work")) {
		if target == clone.Value {
			if _, ok := fixupAt(im, field); ok {
				t.Fatal("call to the new clone was pointed into OLD")
			}
		}
	}
}

// Built -fPIC without relaxation, code reaches globals through GOT slots:
// the program's own (RELATIVE) must become Abs64 fixups to OLD's copy,
// libc's (GLOB_DAT, no COPY) imports that are not calls.
func TestPlanGOT(t *testing.T) {
	flags := []string{"-fPIC", "-pie", "-Wl,--no-relax"}
	old := openELF(t, buildTick(t, "v1", flags...))
	new := openELF(t, buildTick(t, "v2", flags...))
	im, err := PlanELF(old, new, []PlanFunc{funcOf(t, old, new, "", "work"), funcOf(t, old, new, "main.c", "helper")},
		[]PlanFunc{funcOf(t, nil, new, "", "added")})
	if err != nil {
		t.Fatal(err)
	}
	counter := symAt(t, old, "", "counter")
	abs := false
	for _, f := range fixupsTo(im, counter.Value) {
		abs = abs || f.Kind == FixupAbs64 && sectionName(new, f.Off) == ".got"
	}
	if !abs {
		t.Fatalf("no abs64 GOT fixup to OLD's counter: %+v", im.Fixups)
	}
	found := false
	for _, imp := range im.Imports {
		if imp.Symbol == "stderr" {
			found = true
			if imp.Call || sectionName(new, imp.Off) != ".got" {
				t.Errorf("stderr import %+v", imp)
			}
		}
	}
	if !found {
		t.Fatalf("no import of stderr: %+v", im.Imports)
	}
}

// A pointer in NEW's data to a library function is an R_X86_64_64
// relocation: an import of the address, with its addend.
func TestPlanAbs64Import(t *testing.T) {
	src := `#include <stdio.h>
#include <string.h>
int counter;
VAR
__attribute__((noinline)) void work(void) { counter++; BODY }
int main(void) { work(); return 0; }
`
	old := buildSrc(t, map[string]string{"main.c": strings.NewReplacer("VAR", "", "BODY", "").Replace(src)})
	new := buildSrc(t, map[string]string{"main.c": strings.NewReplacer(
		"VAR", "size_t (*lenfn)(const char *) = strlen;",
		"BODY", `printf("%zu\n", lenfn("abc"));`).Replace(src)})
	im, err := PlanELF(old, new, []PlanFunc{funcOf(t, old, new, "", "work")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lenfn := symAt(t, new, "", "lenfn")
	for _, imp := range im.Imports {
		if imp.Off == lenfn.Value {
			if imp.Symbol != "strlen" || imp.Call {
				t.Fatalf("lenfn import %+v", imp)
			}
			return
		}
	}
	t.Fatalf("no import for lenfn at %#x: %+v", lenfn.Value, im.Imports)
}

// Thread-local variables: an unchanged layout plans; a new one is refused.
func TestPlanTLS(t *testing.T) {
	src := `#include <stdio.h>
__thread int tcount;
EXTRA
__attribute__((noinline)) void work(void) { tcount += STEP; }
int main(void) { work(); printf("%d\n", tcount); return 0; }
`
	mk := func(extra, step string) *elf.File {
		return buildSrc(t, map[string]string{"main.c": strings.NewReplacer("EXTRA", extra, "STEP", step).Replace(src)})
	}
	old := mk("", "1")
	same := mk("", "2")
	if _, err := PlanELF(old, same, []PlanFunc{funcOf(t, old, same, "", "work")}, nil); err != nil {
		t.Fatalf("same TLS layout: %v", err)
	}
	grown := mk("__thread long tother;", "2 + (int)tother")
	_, err := PlanELF(old, grown, []PlanFunc{funcOf(t, old, grown, "", "work")}, nil)
	if err == nil || !strings.Contains(err.Error(), "thread-local") {
		t.Fatalf("new TLS variable: want a thread-local error, got %v", err)
	}
}

// Malformed input never panics.
func TestPlanGarbage(t *testing.T) {
	p := planTick(t)
	// A symbol-less NEW.
	stripped := filepath.Join(t.TempDir(), "stripped")
	src := buildTick(t, "v2")
	if b, err := exec.Command("strip", "-o", stripped, src).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, b)
	}
	_, err := PlanELF(p.old, openELF(t, stripped), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "stripped") {
		t.Fatalf("stripped NEW: %v", err)
	}
	// A changed function that NEW does not have.
	_, err = PlanELF(p.old, p.new, []PlanFunc{{Name: "nope", NewAddr: 0x1234, OldAddr: 0x1234}}, nil)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown function: %v", err)
	}
	// Corrupted bytes anywhere in NEW: an error or a plan, never a panic
	// (PlanELF recovers from debug/elf's; this checks its own code too,
	// since a recovered panic still surfaces as "malformed ELF").
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	changed := []PlanFunc{funcOf(t, p.old, p.new, "", "work")}
	seed := uint64(1)
	next := func() uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return seed >> 33 }
	panics := 0
	for i := 0; i < 300; i++ {
		b := append([]byte(nil), orig...)
		for j := 0; j < 8; j++ {
			b[next()%uint64(len(b))] = byte(next())
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			continue
		}
		if _, err := PlanELF(p.old, f, changed, nil); err != nil && strings.Contains(err.Error(), "malformed ELF") && strings.Contains(err.Error(), "runtime error") {
			panics++
			t.Logf("mutation %d: %v", i, err)
		}
	}
	if panics > 0 {
		t.Errorf("%d mutations made the planner itself fault (index out of range and the like)", panics)
	}
}

// Planning a build against itself with every function marked changed
// makes all of its code run from the image: then every fixup must point
// exactly where the original field pointed (OLD == NEW), which checks the
// symbol matching (statics of the same name in several units included)
// and the offset arithmetic on whole real programs.
func TestPlanIdentity(t *testing.T) {
	paths := map[string]string{
		"tick":     buildTick(t, "v2"),
		"tick-got": buildTick(t, "v2", "-fPIC", "-pie", "-Wl,--no-relax"),
		// CET landing pads (which x86asm cannot decode), calls through
		// the GOT, and AVX2 code from -march=haswell -O3.
		"tick-cet":     buildTick(t, "v2", "-fcf-protection=full", "-fno-plt"),
		"tick-haswell": buildTick(t, "v2", "-march=haswell", "-O3"),
		"ftpd":         testutil.Build(t, "ftpd-v8"),
		"sshd":         testutil.Build(t, "sshd-v6"),
	}
	for name, path := range paths {
		t.Run(name, func(t *testing.T) {
			old, new := openELF(t, path), openELF(t, path)
			syms, err := new.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			var all []PlanFunc
			cu := ""
			for _, s := range syms {
				if elf.ST_TYPE(s.Info) == elf.STT_FILE {
					cu = s.Name
					continue
				}
				if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || s.Section == elf.SHN_UNDEF {
					continue
				}
				local := elf.ST_BIND(s.Info) == elf.STB_LOCAL
				f := PlanFunc{Name: s.Name, Local: local, OldAddr: s.Value, OldSize: s.Size, NewAddr: s.Value, NewSize: s.Size}
				if local {
					f.File = cu
				}
				all = append(all, f)
			}
			data := map[uint64]uint64{} // RELATIVE addends by field
			rel, err := dynRelocs(new)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rel {
				if r.typ == elf.R_X86_64_RELATIVE {
					data[r.off] = uint64(r.addend)
				}
			}
			check := func(im *Image) int {
				pc32 := 0
				for _, f := range im.Fixups {
					var orig uint64
					switch f.Kind {
					case FixupPC32:
						b := readAt(t, new, f.Off, 4)
						orig = f.PCNext + uint64(int64(int32(binary.LittleEndian.Uint32(b))))
						pc32++
					case FixupAbs64:
						a, ok := data[f.Off]
						if !ok {
							continue // a GOT slot of a symbol NEW defines (GLOB_DAT)
						}
						orig = a
					}
					if orig != f.Target {
						t.Errorf("fixup %+v: the field pointed at %#x", f, orig)
					}
				}
				return pc32
			}
			// Each function alone: its calls to the others go to OLD.
			for _, f := range all {
				im, err := PlanELF(old, new, []PlanFunc{f}, nil)
				if err != nil {
					t.Fatalf("%s alone: %v", f.Name, err)
				}
				check(im)
				runs := map[string]bool{}
				for _, r := range im.Runs {
					runs[r.File+":"+r.Name] = true
				}
				if !runs[f.File+":"+f.Name] {
					t.Errorf("%s alone: not among the image's runs %v", f.Name, im.Runs)
				}
				// tick's other() tail-jumps to other.c's helper with a
				// 2-byte jmp: NEW's helper must run too.
				if name == "tick" && f.Name == "other" && !runs["other.c:helper"] {
					t.Errorf("other alone: other.c's helper not among the runs %v", im.Runs)
				}
			}
			// All at once: only data references leave the image.
			im, err := PlanELF(old, new, all, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Redirects) != len(all) {
				t.Fatalf("%d redirects for %d functions", len(im.Redirects), len(all))
			}
			pc32 := check(im)
			if pc32 == 0 {
				t.Fatal("no pc32 fixups at all")
			}
			t.Logf("%d functions, %d fixups (%d pc32), %d imports, %d relatives", len(all), len(im.Fixups), pc32, len(im.Imports), len(im.Relatives))
		})
	}
}

func readAt(t *testing.T, f *elf.File, addr, n uint64) []byte {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr+n <= p.Vaddr+p.Filesz {
			b := make([]byte, n)
			if _, err := p.ReadAt(b, int64(addr-p.Vaddr)); err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no file bytes at %#x", addr)
	return nil
}

// BenchmarkPlanImage plans ftpd v4 -> v5 (four changed functions) and
// reports the cost relative to the Diff of the same pair, measured in the
// same run (plan-vs-diff).
func BenchmarkPlanImage(b *testing.B) {
	oldPath, err := testutil.BuildE("ftpd-v4")
	if err != nil {
		b.Fatal(err)
	}
	newPath, err := testutil.BuildE("ftpd-v5")
	if err != nil {
		b.Fatal(err)
	}
	old, err := Open(oldPath)
	if err != nil {
		b.Fatal(err)
	}
	new, err := Open(newPath)
	if err != nil {
		b.Fatal(err)
	}
	r, err := Diff(old, new)
	if err != nil {
		b.Fatal(err)
	}
	var diffTime, planTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := Diff(old, new); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := PlanImage(old, new, r); err != nil {
			b.Fatal(err)
		}
		planTime += time.Since(mid)
		diffTime += mid.Sub(start)
	}
	b.ReportMetric(float64(planTime.Microseconds())/float64(b.N), "plan-µs")
	b.ReportMetric(float64(planTime)/float64(diffTime), "plan-vs-diff")
}

// A pointer one past the end of an array (a loop bound), in code and in
// data, belongs to the array: it must become OLD's array end, even where
// OLD places other objects differently.
func TestPlanEndPointer(t *testing.T) {
	src := `#include <stdio.h>
extern int arr[100];
EXTRA
int arr[100] = {7};
long later __attribute__((aligned(64)));
__attribute__((noinline)) int work(void)
{
	int *end, s = 0;
	__asm__("lea arr+400(%%rip), %0" : "=r"(end));
	for (int *p = arr; p != end; p++)
		s += *p;
	return s + USE + (int)later;
}
int main(void) { arr[1] = 2; printf("%d\n", work()); return 0; }
`
	old := buildSrc(t, map[string]string{"main.c": strings.NewReplacer("EXTRA", "", "USE", "0").Replace(src)})
	// NEW adds an object that moves arr (and is aligned away from its
	// end: where another object starts right at the end, the reference is
	// taken as that object's, see endOf) and a new pointer to arr's end,
	// which lives in NEW's data and must reach OLD's arr.
	new := buildSrc(t, map[string]string{"main.c": strings.NewReplacer(
		"EXTRA", "int fresh[3] __attribute__((aligned(64))) = {1, 2, 3};\nint *arr_end = arr + 100;",
		"USE", "(arr_end == end) + fresh[0]").Replace(src)})
	im, err := PlanELF(old, new, []PlanFunc{funcOf(t, old, new, "", "work")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	oarr, narr := symAt(t, old, "", "arr"), symAt(t, new, "", "arr")
	if oarr.Value == narr.Value {
		t.Fatalf("arr did not move (%#x): the test proves nothing", oarr.Value)
	}
	var code, data bool
	for _, f := range im.Fixups {
		if f.Target == oarr.Value+400 {
			code = code || f.Kind == FixupPC32
			data = data || f.Kind == FixupAbs64 && f.Off == symAt(t, new, "", "arr_end").Value
		}
	}
	if !code || !data {
		t.Fatalf("end of arr (new %#x, old %#x): pc32 fixup %v, arr_end fixup %v: %+v", narr.Value+400, oarr.Value+400, code, data, im.Fixups)
	}
}
