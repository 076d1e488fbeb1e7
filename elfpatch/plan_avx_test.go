package elfpatch

import (
	"encoding/binary"
	"encoding/hex"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// objdumpRef is one RIP-relative reference as objdump prints it.
type objdumpRef struct {
	addr   uint64 // the instruction's address
	raw    []byte // its bytes
	asm    string
	target uint64 // what objdump says the field reaches
	sym    string // objdump's <symbol+off> for the target
}

// objdumpLine: "    128d:\tc5 fd 6f 05 0b 0e 00 00 \tvmovdqa 0xe0b(%rip),%ymm0        # 20a0 <CSWTCH.19+0x30>"
var objdumpLine = regexp.MustCompile(`^\s*([0-9a-f]+):\t([0-9a-f ]+)\t(.*\(%rip\).*?)\s+# ([0-9a-f]+) <([^>]+)>$`)

// objdumpRIPRefs disassembles fn in path with objdump (--wide: one line per
// instruction) and returns its RIP-relative references. It is the test's
// independent view of the code: nothing of x86asm or the planner.
func objdumpRIPRefs(t *testing.T, path, fn string) []objdumpRef {
	t.Helper()
	if _, err := exec.LookPath("objdump"); err != nil {
		// binutils comes with gcc, which built the fixture: its absence
		// is a broken machine, not a reason to skip.
		t.Fatalf("objdump (binutils) is needed to check the fixture: %v", err)
	}
	out, err := exec.Command("objdump", "-d", "--wide", "--disassemble="+fn, path).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump %s: %v\n%s", path, err, out)
	}
	var refs []objdumpRef
	for _, line := range strings.Split(string(out), "\n") {
		m := objdumpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		addr, _ := strconv.ParseUint(m[1], 16, 64)
		target, _ := strconv.ParseUint(m[4], 16, 64)
		raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(m[2]), " ", ""))
		if err != nil {
			t.Fatalf("objdump bytes %q: %v", m[2], err)
		}
		refs = append(refs, objdumpRef{addr: addr, raw: raw, asm: strings.TrimSpace(m[3]), target: target, sym: m[5]})
	}
	return refs
}

// vex reports whether an instruction is VEX- or EVEX-encoded: its first
// byte after legacy prefixes is c5, c4 or 62 (in 64-bit mode these are
// never LDS, LES or BOUND).
func (r objdumpRef) vex() bool {
	for _, b := range r.raw {
		switch b {
		case 0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65:
			continue
		case 0xc5, 0xc4, 0x62:
			return true
		}
		return false
	}
	return false
}

// field returns the address of the disp32 that objdump's target comes
// from: the 4 bytes holding target - end of instruction.
func (r objdumpRef) field(t *testing.T) uint64 {
	t.Helper()
	rel := int32(int64(r.target) - int64(r.addr+uint64(len(r.raw))))
	var want [4]byte
	binary.LittleEndian.PutUint32(want[:], uint32(rel))
	i := strings.Index(string(r.raw), string(want[:]))
	if i < 0 || strings.LastIndex(string(r.raw), string(want[:])) != i {
		t.Fatalf("%#x %s: displacement % x not found once in % x", r.addr, r.asm, want, r.raw)
	}
	return r.addr + uint64(i)
}

// New code built with AVX2 (gcc vectorises work()'s loop over the global
// hist[] into VEX loads and stores) must reach OLD's hist like any other
// reference: x86asm reports VEX RIP-relative operands without PCRel, and a
// planner trusting it would leave them on NEW's copy of hist, splitting
// the program's state in two without a word.
func TestPlanAVXGlobal(t *testing.T) {
	v1, v2 := buildTick(t, "v1", "-mavx2"), buildTick(t, "v2", "-mavx2")
	old, err := Open(v1)
	if err != nil {
		t.Fatal(err)
	}
	new, err := Open(v2)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	im, err := PlanImage(old, new, r)
	if err != nil {
		t.Fatalf("PlanImage: %v", err)
	}
	oldHist := symAt(t, old.ELF(), "", "hist")
	newHist := symAt(t, new.ELF(), "", "hist")
	fix := map[uint64]Fixup{}
	for _, f := range im.Fixups {
		fix[f.Off] = f
	}
	vexRefs := 0
	for _, ref := range objdumpRIPRefs(t, v2, "work") {
		if ref.target < newHist.Value || ref.target >= newHist.Value+newHist.Size {
			continue
		}
		if ref.vex() {
			vexRefs++
		}
		field := ref.field(t)
		f, ok := fix[field]
		if !ok {
			t.Errorf("new %#x % x %s (vex %v): no fixup: it stays on NEW's %s", ref.addr, ref.raw, ref.asm, ref.vex(), ref.sym)
			continue
		}
		next, target := ref.addr+uint64(len(ref.raw)), oldHist.Value+(ref.target-newHist.Value)
		if f.Kind != FixupPC32 || f.PCNext != next || f.Target != target {
			t.Errorf("new %#x %s: fixup %+v, want pc32 with PCNext %#x to old %#x", ref.addr, ref.asm, f, next, target)
		}
	}
	if vexRefs == 0 {
		t.Fatalf("gcc -O2 -mavx2 emitted no VEX instruction with a RIP-relative reference to hist in work(): the fixture no longer tests this")
	}
	if !t.Failed() {
		t.Logf("%d VEX references to hist in work(), all pointed at OLD's", vexRefs)
	}
}
