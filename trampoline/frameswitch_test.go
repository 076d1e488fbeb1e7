package trampoline

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// TestFrameSwitchEncodings encodes each instruction form the stub uses
// and decodes it back with x86asm: operands and length must match.
func TestFrameSwitchEncodings(t *testing.T) {
	for _, c := range []struct {
		emit func(a *asm)
		want string
	}{
		{func(a *asm) { a.movMoffsRAX(0x200000000100) }, "mov qword ptr [0x200000000100], rax"},
		{func(a *asm) { a.movImm64(hRAX, 0x1122334455667788) }, "mov rax, 0x1122334455667788"},
		{func(a *asm) { a.movImm64(hRSP, 0x7ffc00001000) }, "mov rsp, 0x7ffc00001000"},
		{func(a *asm) { a.movImm64(hR11, 1) }, "mov r11, 0x1"},
		{func(a *asm) { a.store(8, hRAX, 0x58, hR11) }, "mov qword ptr [rax+0x58], r11"},
		{func(a *asm) { a.store(8, hR11, 0x10, hR15) }, "mov qword ptr [r11+0x10], r15"},
		{func(a *asm) { a.store(8, hR11, 0x8, hRBP) }, "mov qword ptr [r11+0x8], rbp"},
		{func(a *asm) { a.load(8, hR11, hR11, 0xd8) }, "mov r11, qword ptr [r11+0xd8]"},
		{func(a *asm) { a.load(8, hRAX, hR11, 0x100) }, "mov rax, qword ptr [r11+0x100]"},
		{func(a *asm) { a.load(4, hRAX, hR11, 0x104) }, "mov eax, dword ptr [r11+0x104]"},
		{func(a *asm) { a.load(2, hRAX, hR11, 0x108) }, "mov ax, word ptr [r11+0x108]"},
		{func(a *asm) { a.load(1, hRAX, hR11, 0x10a) }, "mov al, byte ptr [r11+0x10a]"},
		{func(a *asm) { a.store(8, hRSP, 0x20, hRAX) }, "mov qword ptr [rsp+0x20], rax"},
		{func(a *asm) { a.store(4, hRSP, 0x24, hRAX) }, "mov dword ptr [rsp+0x24], eax"},
		{func(a *asm) { a.store(2, hRSP, 0x28, hRAX) }, "mov word ptr [rsp+0x28], ax"},
		{func(a *asm) { a.store(1, hRSP, 0x2a, hRAX) }, "mov byte ptr [rsp+0x2a], al"},
		{func(a *asm) { a.store(8, hR11, 0x10, hR12) }, "mov qword ptr [r11+0x10], r12"},
		{func(a *asm) { a.lea(hRDI, hR11, 0x100) }, "lea rdi, ptr [r11+0x100]"},
		{func(a *asm) { a.lea(hRDI, hRSP, 0x18) }, "lea rdi, ptr [rsp+0x18]"},
		{func(a *asm) { a.movRR(hR11, hRAX) }, "mov r11, rax"},
		{func(a *asm) { a.movRR(hRSI, hRSP) }, "mov rsi, rsp"},
		{func(a *asm) { a.movRR(hR8, hRAX) }, "mov r8, rax"},
		{func(a *asm) { a.aluRR(0x29, hRDX, hRCX) }, "sub rdx, rcx"},
		{func(a *asm) { a.aluRR(0x39, hRDX, hRCX) }, "cmp rdx, rcx"},
		{func(a *asm) { a.aluRR(0x01, hRAX, hRDX) }, "add rax, rdx"},
		{func(a *asm) { a.aluRR(0x85, hRDX, hRDX) }, "test rdx, rdx"},
		{func(a *asm) { a.imul(hRAX, hRCX) }, "imul rax, rcx"},
		{func(a *asm) { a.div(hRCX) }, "div rcx"},
		{func(a *asm) { a.xorEDXEDX() }, "xor edx, edx"},
		{func(a *asm) { a.movsxdRDXFromRCXRDX4() }, "movsxd rdx, dword ptr [rcx+4*rdx]"},
		{func(a *asm) { a.cld() }, "cld"},
		{func(a *asm) { a.repMovsb() }, "rep movsb byte ptr [rdi], byte ptr [rsi]"},
		{func(a *asm) { a.jmpReg(hR9) }, "jmp r9"},
		{func(a *asm) { l := a.newLabel(); a.bind(l); a.jcc(ccAE, l) }, "jnb .-0x6"},
		{func(a *asm) { l := a.newLabel(); a.bind(l); a.jcc(ccNE, l) }, "jnz .-0x6"},
		{func(a *asm) { l := a.newLabel(); a.bind(l); a.jcc(ccS, l) }, "js .-0x6"},
		{func(a *asm) { l := a.newLabel(); a.jmp(l); a.bind(l) }, "jmp .+0x0"},
		{func(a *asm) { l := a.newLabel(); a.leaRIP(hR9, l); a.bind(l) }, "lea r9, ptr [rip]"},
		{func(a *asm) { l := a.newLabel(); a.jmpRIPIndirect(l); a.bind(l) }, "jmp qword ptr [rip]"},
	} {
		a := &asm{labels: map[int]int{}}
		c.emit(a)
		if err := a.resolve(); err != nil {
			t.Fatal(err)
		}
		inst, err := x86asm.Decode(a.b, 64)
		if err != nil {
			t.Errorf("%s: % x does not decode: %v", c.want, a.b, err)
			continue
		}
		got := strings.ToLower(x86asm.IntelSyntax(inst, 0, nil))
		if got != c.want || inst.Len != len(a.b) {
			t.Errorf("% x decodes to %q (%d of %d bytes), want %q", a.b, got, inst.Len, len(a.b), c.want)
		}
	}
}

// checkDecodes decodes every instruction the assembler recorded, with the
// package's decoder (x86dec): each must decode to exactly the bytes up to
// the next recorded start, except the final jmp *[rip], followed by the
// 8-byte Target, and the last instruction, followed by the tables.
// It returns how many instructions had the Target after them.
func checkDecodes(t testing.TB, fs *FrameSwitch, a *asm) (targets int) {
	t.Helper()
	for i, at := range a.insts {
		inst, err := decode(a.b[at:])
		if err != nil {
			t.Fatalf("instruction %d at +%#x (% x) does not decode: %v\n%+v", i, at, a.b[at:min(len(a.b), at+16)], err, fs)
		}
		next := len(a.b)
		if i+1 < len(a.insts) {
			next = a.insts[i+1]
		}
		if err := storeAllowed(fs, i, inst); err != nil {
			t.Fatalf("instruction %d at +%#x (%v): %v\n%+v", i, at, inst, err, fs)
		}
		switch gap := next - at - inst.Len; {
		case gap == 0:
		case gap == 8 && inst.Op == x86asm.JMP && binary.LittleEndian.Uint64(a.b[at+inst.Len:]) == fs.Target:
			targets++
		case i+1 == len(a.insts) && inst.Op == x86asm.JMP && gap > 0:
			// the relocation tables follow the last instruction
		default:
			t.Fatalf("instruction %d at +%#x (%v) is %d bytes, the next starts %d bytes later\n%+v", i, at, inst, inst.Len, next-at, fs)
		}
	}
	if targets != 1 {
		t.Fatalf("%d jumps followed by the Target address, want 1\n%+v", targets, fs)
	}
	return targets
}

// storeAllowed checks, instruction by instruction, that the stub writes
// memory only where a signal cannot clobber it and it may write: scratch
// (r11-based, the absolute rax save, the rax-based r11 save right after
// rax is loaded with Scratch) or the live frame at or above rsp. rep movsb
// writes at rdi, set by the lea before it to one of the same two places.
func storeAllowed(fs *FrameSwitch, i int, inst x86asm.Inst) error {
	if inst.Op != x86asm.MOV {
		return nil
	}
	m, ok := inst.Args[0].(x86asm.Mem)
	if !ok {
		return nil
	}
	switch {
	case m.Base == x86asm.R11 && m.Index == 0 && m.Disp >= 0 && m.Disp+8 <= int64(ScratchSize(fs)):
	case m.Base == x86asm.RSP && m.Index == 0 && m.Disp >= 0 && uint64(m.Disp)+8 <= fs.NewSize+7:
	case m.Base == 0 && m.Index == 0 && uint64(m.Disp) == fs.Scratch && i == 0:
	case m.Base == x86asm.RAX && m.Index == 0 && i == 2:
	default:
		return fmt.Errorf("stores to %v, outside scratch and the NEW frame", m)
	}
	return nil
}

// TestFrameSwitchDecodes builds stubs with every kind of move and checks
// the decoder reads every instruction at its recorded length; the only
// bytes between instructions are the 8-byte Target after the jump.
func TestFrameSwitchDecodes(t *testing.T) {
	fs := sampleFrameSwitch()
	a, err := buildFrameSwitch(fs)
	if err != nil {
		t.Fatal(err)
	}
	checkDecodes(t, fs, a)
	// The OffMap table is the code's tail.
	tail := a.b[len(a.b)-4*len(fs.Relocs[1].OffMap):]
	for i, v := range fs.Relocs[1].OffMap {
		if got := int32(binary.LittleEndian.Uint32(tail[4*i:])); got != v {
			t.Fatalf("table entry %d is %d, want %d", i, got, v)
		}
	}
}

// sampleFrameSwitch has a move of every kind, both relocation flavours
// and an OLD frame larger than the NEW one.
func sampleFrameSwitch() *FrameSwitch {
	return &FrameSwitch{
		Addr: 0x100000000000, Scratch: 0x200000000010, CFA: 0x300000004000,
		OldSize: 0x58, NewSize: 0x48, Target: 0x180000010123,
		Moves: []Move{
			{Dst: reg(DwarfRBX), Src: reg(DwarfRBP), Size: 8},
			{Dst: reg(12), Src: slot(-0x20), Size: 8, Reloc: true},
			{Dst: slot(-0x10), Src: reg(13), Size: 8},
			{Dst: slot(-0x18), Src: konst(7), Size: 4},
			{Dst: slot(-0x30), Src: slot(-0x40), Size: 16, Reloc: true},
			{Dst: slot(-0x33), Src: slot(-0x43), Size: 3},
			{Dst: slot(-0x48), Src: slot(-0x58), Size: 24},
		},
		Relocs: []Reloc{
			{OldBase: 0x5000, OldSize: 0x100, OldStride: 0x10, NewBase: 0x9000, NewStride: 0x18},
			{OldBase: 0x6000, OldSize: 0x40, OldStride: 0x8, NewBase: 0xa000, NewStride: 0x10,
				OffMap: []int32{8, 9, 10, 11, -1, -1, -1, -1}},
		},
	}
}

func reg(r int) Loc      { return Loc{Kind: LocReg, Reg: r} }
func slot(off int64) Loc { return Loc{Kind: LocSlot, Off: off} }
func konst(v uint64) Loc { return Loc{Kind: LocConst, Value: v} }

func TestFrameSwitchInvalid(t *testing.T) {
	for _, c := range []struct {
		edit func(fs *FrameSwitch)
		want string
	}{
		{func(fs *FrameSwitch) { fs.OldSize = 4 }, "OLD frame size"},
		{func(fs *FrameSwitch) { fs.NewSize = MaxFrameSize + 8 }, "NEW frame size"},
		{func(fs *FrameSwitch) { fs.CFA = 0x10 }, "CFA"},
		{func(fs *FrameSwitch) { fs.Moves[0].Dst = reg(DwarfRSP) }, "rsp"},
		{func(fs *FrameSwitch) { fs.Moves[0].Src = reg(16) }, "not a DWARF general register"},
		{func(fs *FrameSwitch) { fs.Moves[0].Size = 4 }, "register, the size must be 8"},
		{func(fs *FrameSwitch) { fs.Moves[2].Dst = slot(-0x50) }, "outside the NEW frame"},
		{func(fs *FrameSwitch) { fs.Moves[2].Dst = slot(-4) }, "outside the NEW frame"},
		{func(fs *FrameSwitch) { fs.Moves[2].Dst = slot(0) }, "outside the NEW frame"},
		{func(fs *FrameSwitch) { fs.Moves[1].Src = slot(-0x60) }, "outside the OLD frame"},
		{func(fs *FrameSwitch) { fs.Moves[1].Dst = konst(1) }, "destination is a constant"},
		{func(fs *FrameSwitch) { fs.Moves[3].Src = konst(0x100000000) }, "does not fit in 4 bytes"},
		{func(fs *FrameSwitch) { fs.Moves[3].Size = 3 }, "1, 2, 4 or 8 bytes"},
		{func(fs *FrameSwitch) { fs.Moves[5].Reloc = true }, "8-byte words"},
		{func(fs *FrameSwitch) { fs.Moves[0].Size = 0 }, "not positive"},
		{func(fs *FrameSwitch) { fs.Moves[0].Src.Kind = 9 }, "unknown"},
		{func(fs *FrameSwitch) { fs.Relocs[1].OffMap = fs.Relocs[1].OffMap[:7] }, "offset map has 7 entries"},
		{func(fs *FrameSwitch) { fs.Relocs[1].OffMap[0] = 16 }, "outside the new element"},
		{func(fs *FrameSwitch) { fs.Relocs[0].OldStride = 0x30 }, "not a multiple"},
		{func(fs *FrameSwitch) { fs.Relocs[0].NewStride = 0x8 }, "identity offset map"},
		{func(fs *FrameSwitch) { fs.Relocs[1].OldBase = 0x50f8 }, "overlaps"},
		{func(fs *FrameSwitch) { fs.Relocs[0].OldStride = 0 }, "positive"},
	} {
		fs := sampleFrameSwitch()
		c.edit(fs)
		b, err := BuildFrameSwitch(fs)
		if !errors.Is(err, ErrInvalidFrameSwitch) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error saying %q, got %v (%d bytes of code)", c.want, err, len(b))
		}
	}
	if _, err := BuildFrameSwitch(nil); !errors.Is(err, ErrInvalidFrameSwitch) {
		t.Errorf("nil frame switch: %v", err)
	}
}

// ---- execution through the C harness ----

const (
	harnessStack    = 0x300000000000 // stack region, 32 KiB
	harnessStackLen = 0x8000
	harnessScrPad   = 64 // bytes past ScratchSize the stub must leave alone
)

func buildHarness(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed: the frame-switch stub cannot be executed")
	}
	bin := filepath.Join(t.TempDir(), "fsharness")
	if out, err := exec.Command("gcc", "-O1", "-o", bin, filepath.Join("testdata", "frameswitch_harness.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// fsRun is one execution: the stub's inputs and what the harness saw.
type fsRun struct {
	fs      *FrameSwitch
	regs    [16]uint64 // at entry, DWARF order
	stack   []byte     // initial stack region at harnessStack
	scratch []byte     // initial scratch contents (ScratchSize + pad)

	gotRegs    [16]uint64
	gotStack   []byte
	gotScratch []byte
}

func (r *fsRun) run(t *testing.T, bin string) {
	t.Helper()
	code, err := BuildFrameSwitch(r.fs)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	var in bytes.Buffer
	fmt.Fprintf(&in, "code %x %x\n%x\n", r.fs.Addr, len(code), code)
	fmt.Fprintf(&in, "target %x\n", r.fs.Target)
	fmt.Fprintf(&in, "scratch %x %x\n%x\n", r.fs.Scratch, len(r.scratch), r.scratch)
	fmt.Fprintf(&in, "stack %x %x\n%x\n", uint64(harnessStack), len(r.stack), r.stack)
	fmt.Fprintf(&in, "enter %x\nregs", r.fs.CFA-r.fs.OldSize)
	for _, v := range r.regs {
		fmt.Fprintf(&in, " %x", v)
	}
	in.WriteString("\n")
	cmd := exec.Command(bin)
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("harness: %v\n%s\nframe switch %+v", err, stderr.String(), r.fs)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		switch f[0] {
		case "regs":
			if len(f) != 17 {
				t.Fatalf("harness regs line: %q", line)
			}
			for i := range 16 {
				if r.gotRegs[i], err = strconv.ParseUint(f[i+1], 16, 64); err != nil {
					t.Fatal(err)
				}
			}
		case "stack":
			r.gotStack, err = hex.DecodeString(f[1])
		case "scratch":
			r.gotScratch, err = hex.DecodeString(f[1])
		}
		if err != nil {
			t.Fatalf("harness line %q: %v", line, err)
		}
	}
	if r.gotStack == nil || r.gotScratch == nil {
		t.Fatalf("harness printed no memory:\n%s", out)
	}
}

// relocRef is the Reloc rule written out plainly, to check the stub by.
func relocRef(rs []Reloc, v uint64) uint64 {
	for _, r := range rs {
		if v == r.OldBase+r.OldSize && !slices.ContainsFunc(rs, func(o Reloc) bool { return v >= o.OldBase && v < o.OldBase+o.OldSize }) {
			return r.NewBase + r.OldSize/r.OldStride*r.NewStride
		}
		if v < r.OldBase || v >= r.OldBase+r.OldSize {
			continue
		}
		d := v - r.OldBase
		idx, off := d/r.OldStride, d%r.OldStride
		to := int64(off)
		if r.OffMap != nil {
			to = int64(r.OffMap[off])
		}
		if to < 0 {
			return v
		}
		return r.NewBase + idx*r.NewStride + uint64(to)
	}
	return v
}

// model computes what the stub must leave: the registers at Target and
// the stack region. It reads the OLD frame before any write, as the stub
// does with its snapshot.
func (r *fsRun) model() (regs [16]uint64, stack []byte) {
	fs := r.fs
	regs = r.regs
	stack = bytes.Clone(r.stack)
	at := func(off int64) int { return int(int64(fs.CFA-harnessStack) + off) }
	for _, m := range fs.Moves {
		var val []byte
		switch m.Src.Kind {
		case LocConst:
			val = binary.LittleEndian.AppendUint64(nil, m.Src.Value)[:m.Size]
		case LocReg:
			val = binary.LittleEndian.AppendUint64(nil, r.regs[m.Src.Reg])
		case LocSlot:
			val = bytes.Clone(r.stack[at(m.Src.Off) : at(m.Src.Off)+m.Size])
		}
		if m.Reloc {
			for w := 0; w < len(val); w += 8 {
				binary.LittleEndian.PutUint64(val[w:], relocRef(fs.Relocs, binary.LittleEndian.Uint64(val[w:])))
			}
		}
		switch m.Dst.Kind {
		case LocReg:
			regs[m.Dst.Reg] = binary.LittleEndian.Uint64(val)
		case LocSlot:
			copy(stack[at(m.Dst.Off):], val)
		}
	}
	regs[DwarfRSP] = fs.CFA - fs.NewSize
	return regs, stack
}

// check compares the run with the model: every register, every byte of
// the stack region (below the new rsp and above the CFA included: the
// stub may not touch them) and the scratch bytes past ScratchSize.
func (r *fsRun) check(t *testing.T) {
	t.Helper()
	wantRegs, wantStack := r.model()
	for i := range 16 {
		if r.gotRegs[i] != wantRegs[i] {
			t.Errorf("register %d at Target is %#x, want %#x", i, r.gotRegs[i], wantRegs[i])
		}
	}
	for i := range wantStack {
		if r.gotStack[i] != wantStack[i] {
			t.Errorf("stack byte at CFA%+d is %#02x, want %#02x", int64(harnessStack)+int64(i)-int64(r.fs.CFA), r.gotStack[i], wantStack[i])
		}
	}
	n := ScratchSize(r.fs)
	if !bytes.Equal(r.gotScratch[n:], r.scratch[n:]) {
		t.Errorf("the stub wrote past ScratchSize (%d bytes): % x, was % x", n, r.gotScratch[n:], r.scratch[n:])
	}
	if t.Failed() {
		t.Logf("frame switch %+v", r.fs)
	}
}

// newRun fills registers, stack and scratch with recognisable random bytes.
func newRun(fs *FrameSwitch, rng *rand.Rand) *fsRun {
	r := &fsRun{fs: fs, stack: make([]byte, harnessStackLen), scratch: make([]byte, ScratchSize(fs)+harnessScrPad)}
	for i := range r.regs {
		r.regs[i] = 0x0101010101010101*uint64(i) + 0x0010203040506070
	}
	for i := range r.stack {
		r.stack[i] = byte(rng.Uint32())
	}
	for i := range r.scratch {
		r.scratch[i] = byte(rng.Uint32())
	}
	return r
}

func (r *fsRun) put64(off int64, v uint64) {
	binary.LittleEndian.PutUint64(r.stack[int64(r.fs.CFA-harnessStack)+off:], v)
}

// TestFrameSwitchRuns executes stubs in a real process and compares
// registers and memory at Target with the moves' meaning.
func TestFrameSwitchRuns(t *testing.T) {
	bin := buildHarness(t)
	arr := Reloc{OldBase: 0x5000, OldSize: 0x100, OldStride: 0x10, NewBase: 0x9000, NewStride: 0x18}
	mapped := Reloc{OldBase: 0x6000, OldSize: 0x40, OldStride: 0x8, NewBase: 0xa000, NewStride: 0x10,
		OffMap: []int32{8, 9, 10, 11, -1, -1, -1, -1}}
	strct := Reloc{OldBase: 0x7000, OldSize: 0x20, OldStride: 0x20, NewBase: 0xb000, NewStride: 0x30}
	touching := Reloc{OldBase: 0x6ff8, OldSize: 8, OldStride: 8, NewBase: 0xc000, NewStride: 8} // ends where strct starts
	base := func(oldSize, newSize uint64) *FrameSwitch {
		return &FrameSwitch{
			Addr: 0x100000000000, Scratch: 0x200000000010, CFA: harnessStack + 0x4000,
			OldSize: oldSize, NewSize: newSize, Target: 0x180000010123,
			Relocs: []Reloc{arr, mapped, touching, strct},
		}
	}
	for _, c := range []struct {
		name  string
		fs    *FrameSwitch
		setup func(r *fsRun)
		// want: values at Target worked out by hand, besides the model.
		wantRegs  map[int]uint64
		wantSlots map[int64]uint64
	}{
		{
			name: "no moves keeps every register and the frame",
			fs:   base(0x38, 0x38),
		},
		{
			name: "register moves and constants",
			fs: func() *FrameSwitch {
				fs := base(0x28, 0x38)
				fs.Moves = []Move{
					{Dst: reg(DwarfRBX), Src: reg(DwarfRAX), Size: 8},
					{Dst: reg(DwarfRAX), Src: reg(DwarfRBX), Size: 8}, // reads the OLD rbx, not the new one
					{Dst: reg(11), Src: reg(15), Size: 8},
					{Dst: reg(DwarfRDI), Src: konst(0xdeadbeefcafe), Size: 8},
					{Dst: reg(9), Src: slot(-0x10), Size: 8},
					{Dst: slot(-0x38), Src: reg(DwarfRDX), Size: 8},
					{Dst: slot(-0x30), Src: konst(0xab), Size: 1},
					{Dst: slot(-0x2e), Src: konst(0xbeef), Size: 2},
					{Dst: slot(-0x2c), Src: konst(0x12345678), Size: 4},
					{Dst: slot(-0x20), Src: konst(0x1122334455667788), Size: 8},
				}
				return fs
			}(),
			setup: func(r *fsRun) { r.put64(-0x10, 0x4242424242424242) },
			wantRegs: map[int]uint64{
				DwarfRBX: 0x0010203040506070, // old rax
				DwarfRAX: 0x0313233343536373, // old rbx
				11:       0x0f1f2f3f4f5f6f7f, // old r15
				DwarfRDI: 0xdeadbeefcafe,
				9:        0x4242424242424242,
				DwarfRSP: harnessStack + 0x4000 - 0x38,
			},
			wantSlots: map[int64]uint64{-0x38: 0x0111213141516171, -0x20: 0x1122334455667788},
		},
		{
			name: "slot moves of 1, 3, 8, 16 and 24 bytes, NEW frame larger",
			fs: func() *FrameSwitch {
				fs := base(0x40, 0x70)
				fs.Moves = []Move{
					{Dst: slot(-0x70), Src: slot(-0x40), Size: 24},
					{Dst: slot(-0x58), Src: slot(-0x28), Size: 16},
					{Dst: slot(-0x45), Src: slot(-0x13), Size: 3},
					{Dst: slot(-0x41), Src: slot(-0x11), Size: 1},
					{Dst: slot(-0x40), Src: slot(-0x10), Size: 8},
				}
				return fs
			}(),
		},
		{
			name: "NEW frame smaller, overlapping moves read the OLD bytes",
			fs: func() *FrameSwitch {
				fs := base(0x80, 0x30)
				fs.Moves = []Move{
					// shift the frame up by 8 bytes: each move overwrites
					// the source of the next one
					{Dst: slot(-0x28), Src: slot(-0x30), Size: 8},
					{Dst: slot(-0x20), Src: slot(-0x28), Size: 8},
					{Dst: slot(-0x18), Src: slot(-0x20), Size: 16},
					// from below the new rsp, where the stub must not write
					{Dst: slot(-0x30), Src: slot(-0x80), Size: 8},
					{Dst: reg(DwarfRBP), Src: slot(-0x78), Size: 8},
				}
				return fs
			}(),
		},
		{
			name: "large slot copy (rep movsb) with overlap",
			fs: func() *FrameSwitch {
				fs := base(0x210, 0x220)
				fs.Moves = []Move{{Dst: slot(-0x218), Src: slot(-0x208), Size: 0x201}}
				return fs
			}(),
		},
		{
			name: "relocations: inside, at the end, outside, mapped, unmapped",
			fs: func() *FrameSwitch {
				fs := base(0x100, 0x100)
				fs.Moves = []Move{
					{Dst: reg(DwarfRAX), Src: reg(DwarfRAX), Size: 8, Reloc: true},
					{Dst: reg(DwarfRDX), Src: reg(DwarfRDX), Size: 8, Reloc: true},
					{Dst: reg(DwarfRCX), Src: reg(DwarfRCX), Size: 8, Reloc: true},
					{Dst: reg(DwarfRBX), Src: reg(DwarfRBX), Size: 8, Reloc: true},
					{Dst: reg(DwarfRSI), Src: reg(DwarfRSI), Size: 8, Reloc: true},
					{Dst: reg(DwarfRDI), Src: reg(DwarfRDI), Size: 8, Reloc: true},
					{Dst: reg(8), Src: reg(8), Size: 8, Reloc: true},
					{Dst: reg(9), Src: reg(9), Size: 8, Reloc: true},
					{Dst: reg(10), Src: reg(10), Size: 8, Reloc: true},
					{Dst: reg(12), Src: reg(12), Size: 8}, // no Reloc: unchanged
					{Dst: reg(13), Src: konst(0x7008), Size: 8, Reloc: true},
					{Dst: reg(14), Src: reg(14), Size: 8, Reloc: true},
					{Dst: reg(15), Src: reg(15), Size: 8, Reloc: true},
					{Dst: slot(-0x10), Src: slot(-0x10), Size: 8, Reloc: true},
					{Dst: slot(-0x38), Src: slot(-0x30), Size: 24, Reloc: true},
					{Dst: slot(-0x48), Src: slot(-0x48), Size: 16}, // no Reloc
				}
				return fs
			}(),
			setup: func(r *fsRun) {
				r.regs[DwarfRAX] = 0x5000             // first element
				r.regs[DwarfRDX] = 0x5000 + 0x34      // element 3 + 4
				r.regs[DwarfRCX] = 0x5100             // end pointer
				r.regs[DwarfRBX] = 0x5101             // one past the end: outside
				r.regs[DwarfRSI] = 0x4fff             // below: outside
				r.regs[DwarfRDI] = 0x6000 + 0x8*3 + 2 // element 3, offset 2 -> 10
				r.regs[8] = 0x6000 + 0x8*5 + 6        // element 5, offset 6: unmapped
				r.regs[9] = 0x6040                    // end of the mapped array
				r.regs[10] = 0x7020                   // end of the struct
				r.regs[12] = 0x5010
				r.regs[14] = 0x7000 // end of touching, start of strct: strct wins
				r.regs[15] = 0x6ffc
				r.put64(-0x10, 0x50f8)
				r.put64(-0x30, 0x6008)
				r.put64(-0x28, 0xffffffffffff5000)
				r.put64(-0x20, 0x701f)
				r.put64(-0x48, 0x5000)
				r.put64(-0x40, 0x5008)
			},
			wantRegs: map[int]uint64{
				DwarfRAX: 0x9000,
				DwarfRDX: 0x9000 + 3*0x18 + 4,
				DwarfRCX: 0x9000 + 16*0x18,
				DwarfRBX: 0x5101,
				DwarfRSI: 0x4fff,
				DwarfRDI: 0xa000 + 3*0x10 + 10,
				8:        0x6000 + 0x8*5 + 6,
				9:        0xa000 + 8*0x10,
				10:       0xb030,
				12:       0x5010,
				13:       0xb008,
				14:       0xb000,
				15:       0xc004,
			},
			wantSlots: map[int64]uint64{
				-0x10: 0x9000 + 15*0x18 + 8,
				-0x38: 0xa000 + 0x10 + 8,
				-0x30: 0xffffffffffff5000,
				-0x28: 0xb01f,
				-0x48: 0x5000,
				-0x40: 0x5008,
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRun(c.fs, rand.New(rand.NewPCG(1, uint64(len(c.name)))))
			if c.setup != nil {
				c.setup(r)
			}
			r.run(t, bin)
			r.check(t)
			for d, v := range c.wantRegs {
				if r.gotRegs[d] != v {
					t.Errorf("register %d at Target is %#x, want %#x", d, r.gotRegs[d], v)
				}
			}
			for off, v := range c.wantSlots {
				i := int64(c.fs.CFA-harnessStack) + off
				if got := binary.LittleEndian.Uint64(r.gotStack[i:]); got != v {
					t.Errorf("slot CFA%+d at Target holds %#x, want %#x", off, got, v)
				}
			}
		})
	}
}

// randomFrameSwitch returns a valid frame switch with random moves and
// relocations, and plants relocatable values in the run's registers and
// stack.
func randomFrameSwitch(rng *rand.Rand) *FrameSwitch {
	size := func() uint64 {
		if rng.IntN(4) == 0 {
			return 8 + uint64(rng.IntN(300))
		}
		return 8 * (1 + uint64(rng.IntN(64)))
	}
	fs := &FrameSwitch{
		Addr: 0x100000000000 + uint64(rng.IntN(4096)), Scratch: 0x200000000000 + uint64(rng.IntN(4096)),
		CFA: harnessStack + 0x4000 + 16*uint64(rng.IntN(64)), OldSize: size(), NewSize: size(),
		Target: 0x180000010000 + uint64(rng.IntN(4000)),
	}
	next := uint64(0x10000)
	for range rng.IntN(4) {
		stride := 1 + uint64(rng.IntN(40))
		n := 1 + uint64(rng.IntN(20))
		r := Reloc{OldBase: next, OldSize: n * stride, OldStride: stride, NewBase: 0x7000000 + uint64(rng.IntN(1<<20)), NewStride: stride + uint64(rng.IntN(16))}
		if rng.IntN(2) == 0 {
			r.NewStride = 1 + uint64(rng.IntN(48))
			r.OffMap = make([]int32, stride)
			for i := range r.OffMap {
				r.OffMap[i] = int32(rng.IntN(int(r.NewStride)+4)) - 4 // some negative
			}
		}
		fs.Relocs = append(fs.Relocs, r)
		next += r.OldSize + uint64(rng.IntN(64)) // sometimes touching
	}
	anyReg := func() int {
		for {
			if r := rng.IntN(16); r != DwarfRSP {
				return r
			}
		}
	}
	for range rng.IntN(14) {
		var m Move
		switch rng.IntN(6) {
		case 0:
			m = Move{Dst: reg(anyReg()), Src: reg(anyReg()), Size: 8}
		case 1:
			m = Move{Dst: reg(anyReg()), Src: konst(rng.Uint64()), Size: 8}
		case 2:
			m = Move{Dst: reg(anyReg()), Src: slot(-8 - int64(rng.IntN(int(fs.OldSize)-7))), Size: 8}
		case 3:
			m = Move{Dst: slot(-8 - int64(rng.IntN(int(fs.NewSize)-7))), Src: reg(anyReg()), Size: 8}
		case 4:
			m.Size = []int{1, 2, 4, 8}[rng.IntN(4)]
			m.Src = konst(rng.Uint64() >> (64 - 8*m.Size))
			m.Dst = slot(-int64(m.Size) - int64(rng.IntN(int(fs.NewSize)-m.Size+1)))
		case 5:
			m.Size = 1 + rng.IntN(int(min(fs.OldSize, fs.NewSize)))
			if rng.IntN(2) == 0 {
				m.Size = (m.Size + 7) &^ 7
				if m.Size > int(min(fs.OldSize, fs.NewSize)) {
					m.Size -= 8
				}
				if m.Size == 0 {
					m.Size = 8
				}
				m.Reloc = true
			}
			m.Src = slot(-int64(m.Size) - int64(rng.IntN(int(fs.OldSize)-m.Size+1)))
			m.Dst = slot(-int64(m.Size) - int64(rng.IntN(int(fs.NewSize)-m.Size+1)))
		}
		if m.Size == 8 && rng.IntN(2) == 0 {
			m.Reloc = true
		}
		fs.Moves = append(fs.Moves, m)
	}
	return fs
}

// plant puts values at, around and inside the relocated objects into the
// run's registers and OLD frame words.
func (r *fsRun) plant(rng *rand.Rand) {
	if len(r.fs.Relocs) == 0 {
		return
	}
	pick := func() uint64 {
		rl := r.fs.Relocs[rng.IntN(len(r.fs.Relocs))]
		switch rng.IntN(4) {
		case 0:
			return rl.OldBase + rl.OldSize // end
		case 1:
			return rl.OldBase - 1
		default:
			return rl.OldBase + uint64(rng.IntN(int(rl.OldSize)))
		}
	}
	for i := range r.regs {
		if rng.IntN(2) == 0 {
			r.regs[i] = pick()
		}
	}
	for off := -int64(r.fs.OldSize &^ 7); off < 0; off += 8 {
		if rng.IntN(2) == 0 {
			r.put64(off, pick())
		}
	}
}

// TestFrameSwitchRandom: random valid frame switches always decode, and
// a sample of them executes to the model's result.
func TestFrameSwitchRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 34))
	for range 3000 {
		fs := randomFrameSwitch(rng)
		a, err := buildFrameSwitch(fs)
		if err != nil {
			t.Fatalf("valid random frame switch refused: %v\n%+v", err, fs)
		}
		checkDecodes(t, fs, a)
	}
	bin := buildHarness(t)
	runs := 40
	if testing.Short() {
		runs = 8
	}
	for i := range runs {
		fs := randomFrameSwitch(rng)
		r := newRun(fs, rng)
		r.plant(rng)
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			r.run(t, bin)
			r.check(t)
		})
	}
}

// FuzzFrameSwitch: any input is refused with an error or builds code
// that decodes; nothing panics.
func FuzzFrameSwitch(f *testing.F) {
	f.Add(uint64(0x58), uint64(0x48), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add(uint64(8), uint64(0x200), []byte{0xff, 0x80, 0x10, 0x22, 0x91, 0x7, 0x13})
	f.Fuzz(func(t *testing.T, oldSize, newSize uint64, prog []byte) {
		fs := &FrameSwitch{Addr: 0x1000, Scratch: 0x2000, CFA: 0x7ffe0000, OldSize: oldSize, NewSize: newSize, Target: 0x3000}
		loc := func(b byte, v uint64) Loc {
			switch b % 3 {
			case 0:
				return Loc{Kind: LocReg, Reg: int(b/3) % 17}
			case 1:
				return Loc{Kind: LocSlot, Off: -int64(b / 3)}
			}
			return Loc{Kind: LocConst, Value: v}
		}
		for i := 0; i+4 <= len(prog); i += 4 {
			fs.Moves = append(fs.Moves, Move{Dst: loc(prog[i], 0), Src: loc(prog[i+1], uint64(prog[i+2])), Size: int(prog[i+2] % 40), Reloc: prog[i+3]&1 != 0})
		}
		if len(prog) > 0 {
			st := uint64(prog[0]%16 + 1)
			fs.Relocs = []Reloc{{OldBase: 0x5000, OldSize: st * 4, OldStride: st, NewBase: 0x9000, NewStride: st + uint64(prog[len(prog)-1]%8)}}
		}
		a, err := buildFrameSwitch(fs)
		if err != nil {
			if !errors.Is(err, ErrInvalidFrameSwitch) {
				t.Fatalf("error not marked invalid: %v", err)
			}
			return
		}
		checkDecodes(t, fs, a)
	})
}
