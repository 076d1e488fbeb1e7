package trampoline

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// TestJmpRel32 encodes jumps and decodes them back with x86asm.
func TestJmpRel32(t *testing.T) {
	for _, c := range []struct{ from, to uint64 }{
		{0x1000, 0x2000},
		{0x2000, 0x1000},
		{0x1000, 0x1005}, // rel 0
		{0x7f0000000000, 0x7f0000000000 + 5 + 0x7fffffff},
		{0x7f0080000000, 0x7f0080000000 + 5 - 0x80000000},
	} {
		b, err := JmpRel32(c.from, c.to)
		if err != nil {
			t.Fatalf("JmpRel32(%#x, %#x): %v", c.from, c.to, err)
		}
		inst, err := x86asm.Decode(b, 64)
		if err != nil || inst.Op != x86asm.JMP || inst.Len != Rel32Len {
			t.Fatalf("decode % x: %v %v", b, inst, err)
		}
		rel, ok := inst.Args[0].(x86asm.Rel)
		if !ok || c.from+uint64(inst.Len)+uint64(int64(rel)) != c.to {
			t.Errorf("% x at %#x decodes to %v, want a jump to %#x", b, c.from, inst, c.to)
		}
	}
	for _, c := range []struct{ from, to uint64 }{
		{0x1000, 0x1000 + 5 + 0x80000000},
		{0x7f0080000000, 0x7f0080000000 + 5 - 0x80000001},
		{0x1000, 0x7f0000000000},
	} {
		if b, err := JmpRel32(c.from, c.to); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("JmpRel32(%#x, %#x) = % x, %v; want ErrOutOfRange", c.from, c.to, b, err)
		}
	}
}

func TestJmpAbs64(t *testing.T) {
	for _, to := range []uint64{0, 0x401000, 0x7fffdeadbeef, ^uint64(0)} {
		b := JmpAbs64(to)
		if len(b) != Abs64Len {
			t.Fatalf("len %d", len(b))
		}
		inst, err := x86asm.Decode(b, 64)
		if err != nil || inst.Op != x86asm.JMP || inst.Len != 6 {
			t.Fatalf("decode % x: %v %v", b, inst, err)
		}
		// jmp *0(%rip): the pointer is the 8 bytes right after it.
		m, ok := inst.Args[0].(x86asm.Mem)
		if !ok || m.Base != x86asm.RIP || m.Disp != 0 || m.Index != 0 {
			t.Fatalf("% x decodes to %v, want jmp [rip+0]", b, inst)
		}
		if got := binary.LittleEndian.Uint64(b[6:]); got != to {
			t.Errorf("address %#x, want %#x", got, to)
		}
	}
}

func TestPlanTable(t *testing.T) {
	f, err := os.Open("testdata/plan.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fs := strings.Split(text, " | ")
		if len(fs) != 5 {
			t.Fatalf("plan.txt:%d: %d fields", line, len(fs))
		}
		name := fs[0]
		code, err := hex.DecodeString(strings.ReplaceAll(fs[1], " ", ""))
		if err != nil {
			t.Fatalf("plan.txt:%d: %v", line, err)
		}
		entry, err1 := strconv.ParseUint(fs[2], 0, 64)
		target, err2 := strconv.ParseUint(fs[3], 0, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("plan.txt:%d: bad address", line)
		}
		n++
		site, err := Plan(code, entry, target)
		want := fs[4]
		if msg, ok := strings.CutPrefix(want, "error "); ok {
			var pe *PlanError
			if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), msg) {
				t.Errorf("%s (line %d): got %+v, %v; want error containing %q", name, line, site, err, msg)
			}
			continue
		}
		w := strings.Fields(strings.TrimPrefix(want, "ok "))
		addr, _ := strconv.ParseUint(w[0], 0, 64)
		nw, _ := hex.DecodeString(w[1])
		if err != nil {
			t.Errorf("%s (line %d): %v", name, line, err)
			continue
		}
		if site.Addr != addr || !bytes.Equal(site.New, nw) {
			t.Errorf("%s (line %d): site %#x % x, want %#x % x", name, line, site.Addr, site.New, addr, nw)
		}
		off := int(site.Addr - entry)
		if !bytes.Equal(site.Orig, code[off:off+len(site.New)]) || !bytes.Equal(site.Revert(), site.Orig) {
			t.Errorf("%s: Orig % x / Revert % x, want the original % x", name, site.Orig, site.Revert(), code[off:off+len(site.New)])
		}
		// The written bytes decode to a jump to target.
		inst, err := x86asm.Decode(site.New, 64)
		if err != nil || inst.Op != x86asm.JMP {
			t.Errorf("%s: written bytes % x do not decode to a jmp: %v", name, site.New, err)
		}
		if rel, ok := inst.Args[0].(x86asm.Rel); ok && site.Addr+uint64(inst.Len)+uint64(int64(rel)) != target {
			t.Errorf("%s: jmp lands at %#x, want %#x", name, site.Addr+uint64(inst.Len)+uint64(int64(rel)), target)
		}
		// Writing New leaves whole instructions after it.
		patched := append(bytes.Clone(code[:off]), site.New...)
		patched = append(patched, code[off+len(site.New):]...)
		for i := off + len(site.New); i < len(patched); {
			inst, err := decode(patched[i:])
			if err != nil {
				t.Errorf("%s: patched code does not decode at +%#x: %v", name, i, err)
				break
			}
			i += inst.Len
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d cases read", n)
	}
}

// Revert must not hand out the Site's own slice: a caller that scribbles
// on it must not change what a later revert writes.
func TestRevertCopies(t *testing.T) {
	s, err := Plan([]byte{0x31, 0xc0, 0x90, 0x90, 0x90, 0xc3}, 0x1000, 0x2000)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Revert()
	r[0] = 0
	if s.Orig[0] != 0x31 {
		t.Fatal("Revert returned the Site's own bytes")
	}
}

// FuzzPlan: Plan never panics, and what it plans is consistent.
func FuzzPlan(f *testing.F) {
	f.Add([]byte{0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3}, uint64(0x1000), uint64(0x2000))
	f.Add([]byte{0x31, 0xc0, 0xff, 0xc0, 0x83, 0xf8, 0x0a, 0x75, 0xf9, 0xc3}, uint64(0x1000), uint64(0x7f0000000000))
	f.Fuzz(func(t *testing.T, code []byte, entry, target uint64) {
		s, err := Plan(code, entry, target)
		if err != nil {
			return
		}
		off := s.Addr - entry
		if off > uint64(len(code)) || off+uint64(len(s.New)) > uint64(len(code)) ||
			len(s.New) < Rel32Len || !bytes.Equal(s.Orig, code[off:off+uint64(len(s.New))]) {
			t.Fatalf("inconsistent site %+v for % x", s, code)
		}
	})
}
