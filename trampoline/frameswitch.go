package trampoline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// This file generates the frame-switch stub: x86-64 code that a waiting
// frame returns into instead of OLD's code, which rebuilds the frame in
// NEW's layout and jumps into NEW's code (on-stack replacement). See the
// package comment for the algorithm; the invariants are on FrameSwitch.

// DWARF register numbers (x86-64 psABI) the Loc.Reg field uses.
const (
	DwarfRAX = 0
	DwarfRDX = 1
	DwarfRCX = 2
	DwarfRBX = 3
	DwarfRSI = 4
	DwarfRDI = 5
	DwarfRBP = 6
	DwarfRSP = 7 // never a Loc: the stub owns rsp
	DwarfR8  = 8
	DwarfR15 = 15
)

// LocKind says where a value lives.
type LocKind uint8

const (
	LocReg   LocKind = iota // a general register: Loc.Reg, DWARF number 0..15, never 7 (rsp)
	LocSlot                 // frame memory at CFA+Loc.Off (Off < 0)
	LocConst                // the constant Loc.Value (a Move's source only)
)

func (k LocKind) String() string {
	switch k {
	case LocReg:
		return "register"
	case LocSlot:
		return "slot"
	case LocConst:
		return "constant"
	}
	return fmt.Sprintf("LocKind(%d)", uint8(k))
}

// Loc is one place a Move reads from or writes to.
type Loc struct {
	Kind  LocKind
	Reg   int    // LocReg: DWARF register number
	Off   int64  // LocSlot: offset from the CFA, negative
	Value uint64 // LocConst: the value (little-endian, its low Size bytes)
}

func (l Loc) String() string {
	switch l.Kind {
	case LocReg:
		return fmt.Sprintf("register %d", l.Reg)
	case LocSlot:
		return fmt.Sprintf("CFA%+d", l.Off)
	case LocConst:
		return fmt.Sprintf("constant %#x", l.Value)
	}
	return l.Kind.String()
}

// Move copies Size bytes from Src, as the OLD frame held them when the
// callee returned, to Dst in the NEW frame or NEW registers.
//
//   - A register, source or destination, is exactly 8 bytes.
//   - A constant source goes to a register (Size 8) or to a slot of
//     Size 1, 2, 4 or 8; its Value must fit in Size bytes.
//   - Slot to slot copies any Size > 0 exactly (a 3-byte char array, a
//     24-byte struct).
//   - Reloc passes the value through FrameSwitch.Relocs: a Size 8 value,
//     or each 8-byte word of a slot-to-slot copy whose Size is a multiple
//     of 8.
//
// Moves run in order; a later move to the same place wins.
type Move struct {
	Dst, Src Loc
	Size     int
	Reloc    bool
}

// Reloc maps values that point into a moved object, one past its end
// included. For v in [OldBase, OldBase+OldSize]: d := v-OldBase,
// idx := d/OldStride, off := d%OldStride; if idx == OldSize/OldStride (the
// end pointer) v becomes NewBase + idx*NewStride; else if OffMap[off] >= 0
// v becomes NewBase + idx*NewStride + OffMap[off]; else v is unchanged (it
// pointed into a member NEW does not have). Values outside every Reloc are
// unchanged. A plain struct is OldStride = OldSize (one element). Objects
// may not overlap but may touch: a value that is both the end of one and
// the start of the next points into the next.
type Reloc struct {
	OldBase   uint64  // the old object's address
	OldSize   uint64  // its size in bytes, a multiple of OldStride
	OldStride uint64  // the old element size (> 0)
	NewBase   uint64  // the new object's address
	NewStride uint64  // the new element size (> 0)
	OffMap    []int32 // old offset in an element -> new offset (< NewStride), or < 0: leave the value; nil: identity (off -> off)
}

// FrameSwitch describes one frame to move from OLD's layout to NEW's.
//
// At stub entry (the callee's ret) rsp == CFA-OldSize; rbx, rbp, r12-r15
// hold the OLD frame's values; rax and rdx the callee's return value;
// the other registers are dead. The stub saves rax, rcx, rdx, rbx, rbp,
// rsi, rdi and r8-r15 (the "old registers") and the OLD frame bytes
// [CFA-OldSize, CFA) in Scratch, copies the old registers to the "new
// registers", sets rsp = CFA-NewSize, runs the Moves (reading only the
// saved copies, so the frames may overlap), loads every register from
// the new registers and jumps to Target.
//
// Bytes of [CFA-NewSize, CFA) that no move writes keep what the stack
// holds there: the OLD frame's byte at the same address (the frame's own
// return address at CFA-8 among them), or, below the old rsp, whatever
// was below it. The stub stores only into Scratch and into the NEW frame
// at or above the new rsp, so a signal may arrive at any instruction.
// It leaves rflags undefined (DF clear).
type FrameSwitch struct {
	Addr    uint64 // runtime address the code will be placed at (the code is position-independent: kept for the caller's record)
	Scratch uint64 // runtime address of a writable area of at least ScratchSize bytes, private to this stub
	CFA     uint64 // the frame's CFA (unchanged by the switch)
	OldSize uint64 // CFA - rsp of the OLD frame once the callee has returned (rsp at stub entry)
	NewSize uint64 // CFA - rsp of the NEW frame at Target
	Target  uint64 // where to continue in NEW's code
	Moves   []Move
	Relocs  []Reloc
}

// ErrInvalidFrameSwitch is wrapped by every error BuildFrameSwitch returns.
var ErrInvalidFrameSwitch = errors.New("invalid frame switch")

// MaxFrameSize bounds OldSize and NewSize (every displacement is 32-bit).
const MaxFrameSize = 1 << 20

// Scratch layout: the old registers and the new registers, 8 bytes per
// DWARF number 0..15 (7, rsp, unused), then the OLD frame snapshot.
const (
	scrOld  = 0
	scrNew  = 16 * 8
	scrSnap = 32 * 8
)

// ScratchSize is the number of bytes at fs.Scratch the stub uses.
func ScratchSize(fs *FrameSwitch) int {
	return scrSnap + int((fs.OldSize+7)&^7)
}

// Hardware register numbers (ModRM/REX encoding).
const (
	hRAX = 0
	hRCX = 1
	hRDX = 2
	hRBX = 3
	hRSP = 4
	hRBP = 5
	hRSI = 6
	hRDI = 7
	hR8  = 8
	hR9  = 9
	hR11 = 11
	hR12 = 12
	hR15 = 15
)

// dwarfToHW maps DWARF register numbers 0..15 to hardware numbers.
var dwarfToHW = [16]int{hRAX, hRDX, hRCX, hRBX, hRSI, hRDI, hRBP, hRSP, 8, 9, 10, 11, 12, 13, 14, 15}

// BuildFrameSwitch validates fs and returns the stub's code, to be placed
// at fs.Addr (read-only and executable: the stub never writes its own
// code). The code embeds Target and the relocation tables; it does not
// depend on Scratch being near Addr.
func BuildFrameSwitch(fs *FrameSwitch) ([]byte, error) {
	a, err := buildFrameSwitch(fs)
	if err != nil {
		return nil, err
	}
	return a.b, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidFrameSwitch}, args...)...)
}

func validateFrameSwitch(fs *FrameSwitch) error {
	if fs == nil {
		return invalid("no frame switch given")
	}
	if fs.OldSize < 8 || fs.OldSize > MaxFrameSize {
		return invalid("OLD frame size %#x is not in [8, %#x] (it holds at least the return address)", fs.OldSize, MaxFrameSize)
	}
	if fs.NewSize < 8 || fs.NewSize > MaxFrameSize {
		return invalid("NEW frame size %#x is not in [8, %#x] (it holds at least the return address)", fs.NewSize, MaxFrameSize)
	}
	if fs.CFA < fs.OldSize || fs.CFA < fs.NewSize {
		return invalid("CFA %#x is below the frame sizes (OLD %#x, NEW %#x)", fs.CFA, fs.OldSize, fs.NewSize)
	}
	if fs.Scratch+uint64(ScratchSize(fs)) < fs.Scratch {
		return invalid("scratch area at %#x wraps the address space", fs.Scratch)
	}
	for i, m := range fs.Moves {
		if err := validateMove(fs, m); err != nil {
			return fmt.Errorf("move %d (%v <- %v, %d bytes): %w", i, m.Dst, m.Src, m.Size, err)
		}
	}
	for i, r := range fs.Relocs {
		if err := validateReloc(r); err != nil {
			return fmt.Errorf("reloc %d (old %#x+%#x): %w", i, r.OldBase, r.OldSize, err)
		}
		for j := range i {
			o := fs.Relocs[j]
			if r.OldBase < o.OldBase+o.OldSize && o.OldBase < r.OldBase+r.OldSize {
				return invalid("reloc %d (old %#x+%#x) overlaps reloc %d (old %#x+%#x): a value would have two new places", i, r.OldBase, r.OldSize, j, o.OldBase, o.OldSize)
			}
		}
	}
	return nil
}

func validateMove(fs *FrameSwitch, m Move) error {
	if m.Size <= 0 {
		return invalid("size %d is not positive", m.Size)
	}
	if m.Reloc && m.Size%8 != 0 {
		return invalid("relocation needs 8-byte words, the size is %d", m.Size)
	}
	if m.Reloc && m.Size != 8 && (m.Src.Kind != LocSlot || m.Dst.Kind != LocSlot) {
		return invalid("relocation of more than one word needs a slot-to-slot move")
	}
	checkLoc := func(l Loc, frame uint64, which string) error {
		switch l.Kind {
		case LocReg:
			if l.Reg < 0 || l.Reg > 15 {
				return invalid("%s register %d is not a DWARF general register (0..15)", which, l.Reg)
			}
			if l.Reg == DwarfRSP {
				return invalid("%s register is rsp: the stub sets rsp from the frame sizes", which)
			}
			if m.Size != 8 {
				return invalid("%s is a register, the size must be 8", which)
			}
		case LocSlot:
			if l.Off >= 0 || l.Off < -int64(frame) || l.Off+int64(m.Size) > 0 {
				return invalid("%s slot CFA%+d..%+d is outside the %s frame [CFA-%#x, CFA)", which, l.Off, l.Off+int64(m.Size), which, frame)
			}
		case LocConst:
			if which == "NEW" {
				return invalid("the destination is a constant")
			}
			switch {
			case m.Dst.Kind == LocSlot && m.Size != 1 && m.Size != 2 && m.Size != 4 && m.Size != 8:
				return invalid("a constant goes to a slot of 1, 2, 4 or 8 bytes, not %d", m.Size)
			case m.Size < 8 && l.Value>>(8*m.Size) != 0:
				return invalid("constant %#x does not fit in %d bytes", l.Value, m.Size)
			}
		default:
			return invalid("%s location kind %v is unknown", which, l.Kind)
		}
		return nil
	}
	if err := checkLoc(m.Src, fs.OldSize, "OLD"); err != nil {
		return err
	}
	return checkLoc(m.Dst, fs.NewSize, "NEW")
}

func validateReloc(r Reloc) error {
	if r.OldSize == 0 || r.OldStride == 0 || r.NewStride == 0 {
		return invalid("sizes and strides must be positive (size %#x, old stride %#x, new stride %#x)", r.OldSize, r.OldStride, r.NewStride)
	}
	if r.OldSize%r.OldStride != 0 {
		return invalid("size %#x is not a multiple of the old stride %#x", r.OldSize, r.OldStride)
	}
	if r.OldBase+r.OldSize < r.OldBase {
		return invalid("old object wraps the address space")
	}
	n := r.OldSize / r.OldStride
	hi, lo := bits.Mul64(n, r.NewStride)
	if hi != 0 || r.NewBase+lo < r.NewBase {
		return invalid("new object (%d elements of %#x bytes at %#x) wraps the address space", n, r.NewStride, r.NewBase)
	}
	if r.OffMap != nil {
		if uint64(len(r.OffMap)) != r.OldStride {
			return invalid("offset map has %d entries, want one per byte of the old element (%d)", len(r.OffMap), r.OldStride)
		}
		if r.OldStride > MaxFrameSize {
			return invalid("offset map of %d entries is too large (at most %d)", len(r.OffMap), MaxFrameSize)
		}
		for off, v := range r.OffMap {
			if v >= 0 && uint64(v) >= r.NewStride {
				return invalid("offset map sends old offset %d to %d, outside the new element of %d bytes", off, v, r.NewStride)
			}
		}
	} else if r.NewStride < r.OldStride {
		return invalid("identity offset map needs a new stride (%#x) at least the old one (%#x)", r.NewStride, r.OldStride)
	}
	return nil
}

func buildFrameSwitch(fs *FrameSwitch) (*asm, error) {
	if err := validateFrameSwitch(fs); err != nil {
		return nil, err
	}
	a := &asm{labels: map[int]int{}}
	old := func(d int) int32 { return int32(scrOld + 8*d) }
	nw := func(d int) int32 { return int32(scrNew + 8*d) }

	// Save rax without a free register (mov moffs64, rax), then r11, which
	// becomes the scratch base, then the rest.
	a.movMoffsRAX(fs.Scratch + uint64(old(DwarfRAX)))
	a.movImm64(hRAX, fs.Scratch)
	a.store(8, hRAX, old(11), hR11)
	a.movRR(hR11, hRAX)
	for d := 1; d < 16; d++ {
		if d != DwarfRSP && d != 11 {
			a.store(8, hR11, old(d), dwarfToHW[d])
		}
	}
	// Snapshot the OLD frame: rsp is CFA-OldSize here.
	a.cld()
	a.movRR(hRSI, hRSP)
	a.lea(hRDI, hR11, scrSnap)
	a.movImm64(hRCX, fs.OldSize)
	a.repMovsb()
	// New registers start as the old ones.
	for d := range 16 {
		if d != DwarfRSP {
			a.load(8, hRAX, hR11, old(d))
			a.store(8, hR11, nw(d), hRAX)
		}
	}
	a.movImm64(hRSP, fs.CFA-fs.NewSize)

	relocLabel := a.newLabel()
	reloc := func() {
		if len(fs.Relocs) == 0 {
			return
		}
		back := a.newLabel()
		a.leaRIP(hR9, back)
		a.jmp(relocLabel)
		a.bind(back)
	}
	snap := func(off int64) int32 { return int32(scrSnap + int64(fs.OldSize) + off) }
	live := func(off int64) int32 { return int32(int64(fs.NewSize) + off) }
	for _, m := range fs.Moves {
		if m.Src.Kind == LocSlot && m.Dst.Kind == LocSlot && m.Size != 8 {
			copySlot(a, snap(m.Src.Off), live(m.Dst.Off), m.Size, m.Reloc, reloc)
			continue
		}
		// One value of m.Size bytes (8 unless a constant to a slot) in rax.
		switch m.Src.Kind {
		case LocConst:
			a.movImm64(hRAX, m.Src.Value)
		case LocReg:
			a.load(8, hRAX, hR11, old(m.Src.Reg))
		case LocSlot:
			a.load(8, hRAX, hR11, snap(m.Src.Off))
		}
		if m.Reloc {
			reloc()
		}
		switch m.Dst.Kind {
		case LocReg:
			a.store(8, hR11, nw(m.Dst.Reg), hRAX)
		case LocSlot:
			a.store(m.Size, hRSP, live(m.Dst.Off), hRAX)
		}
	}

	// Load the new registers, r11 (the base) last, and go.
	for d := range 16 {
		if d != DwarfRSP && d != 11 {
			a.load(8, dwarfToHW[d], hR11, nw(d))
		}
	}
	a.load(8, hR11, hR11, nw(11))
	target := a.newLabel()
	a.jmpRIPIndirect(target)
	a.bind(target)
	a.data64(fs.Target)

	if len(fs.Relocs) > 0 {
		a.bind(relocLabel)
		emitReloc(a, fs.Relocs)
	}
	if err := a.resolve(); err != nil {
		return nil, err
	}
	return a, nil
}

// copySlot copies size bytes from the snapshot at [r11+src] to the live
// frame at [rsp+dst]: 8-byte words through rax (relocated when reloc is
// set), then 4, 2, 1-byte tails; large plain copies with rep movsb.
func copySlot(a *asm, src, dst int32, size int, reloc bool, relocate func()) {
	if !reloc && size > 64 {
		a.lea(hRSI, hR11, src)
		a.lea(hRDI, hRSP, dst)
		a.movImm64(hRCX, uint64(size))
		a.repMovsb()
		return
	}
	off := int32(0)
	for _, n := range []int{8, 4, 2, 1} {
		for size-int(off) >= n {
			a.load(n, hRAX, hR11, src+off)
			if n == 8 && reloc {
				relocate()
			}
			a.store(n, hRSP, dst+off, hRAX)
			off += int32(n)
		}
	}
}

// emitReloc emits the relocation routine: value in rax, result in rax,
// clobbers rcx, rdx, r8 and flags, returns through jmp *r9. No stack.
// A first pass looks for an object the value points inside; only then
// does a second pass look for an end pointer, so a pointer to the start
// of one object that is also the end of the object before it is taken as
// pointing into the former.
func emitReloc(a *asm, relocs []Reloc) {
	unchanged := a.newLabel()
	a.movRR(hR8, hRAX)
	for _, r := range relocs {
		next := a.newLabel()
		// d = v - OldBase; inside when d < OldSize (unsigned).
		a.movRR(hRDX, hR8)
		a.movImm64(hRCX, r.OldBase)
		a.aluRR(0x29, hRDX, hRCX) // sub rdx, rcx
		a.movImm64(hRCX, r.OldSize)
		a.aluRR(0x39, hRDX, hRCX) // cmp rdx, rcx
		a.jcc(ccAE, next)
		// rax = d / OldStride, rdx = d % OldStride.
		a.movRR(hRAX, hRDX)
		a.xorEDXEDX()
		a.movImm64(hRCX, r.OldStride)
		a.div(hRCX)
		a.movImm64(hRCX, r.NewStride)
		a.imul(hRAX, hRCX)
		if r.OffMap != nil {
			a.leaRIP(hRCX, a.table(r.OffMap))
			a.movsxdRDXFromRCXRDX4()
			a.aluRR(0x85, hRDX, hRDX) // test rdx, rdx
			a.jcc(ccS, unchanged)
		}
		a.aluRR(0x01, hRAX, hRDX) // add rax, rdx
		a.movImm64(hRCX, r.NewBase)
		a.aluRR(0x01, hRAX, hRCX) // add rax, rcx
		a.jmpReg(hR9)
		a.bind(next)
	}
	for _, r := range relocs {
		next := a.newLabel()
		n := r.OldSize / r.OldStride
		a.movImm64(hRCX, r.OldBase+r.OldSize)
		a.aluRR(0x39, hR8, hRCX) // cmp r8, rcx
		a.jcc(ccNE, next)
		a.movImm64(hRAX, r.NewBase+n*r.NewStride)
		a.jmpReg(hR9)
		a.bind(next)
	}
	a.bind(unchanged)
	a.movRR(hRAX, hR8)
	a.jmpReg(hR9)
	a.emitTables()
}

// asm is a tiny x86-64 assembler: the forms the stub needs, rel32 label
// fixups, and instruction boundaries kept for the tests' decoder check.
type asm struct {
	b      []byte
	insts  []int // start offset of every instruction (data excluded)
	labels map[int]int
	fixups []fixup
	tables []pendingTable
	nlabel int
}

type fixup struct {
	at    int // offset of the rel32
	end   int // offset the rel32 is relative to (end of the instruction)
	label int
}

type pendingTable struct {
	label int
	vals  []int32
}

const (
	ccAE = 0x3
	ccNE = 0x5
	ccS  = 0x8
)

func (a *asm) newLabel() int  { a.nlabel++; return a.nlabel }
func (a *asm) bind(l int)     { a.labels[l] = len(a.b) }
func (a *asm) inst()          { a.insts = append(a.insts, len(a.b)) }
func (a *asm) emit(b ...byte) { a.b = append(a.b, b...) }

func (a *asm) imm32(v int32)  { a.b = binary.LittleEndian.AppendUint32(a.b, uint32(v)) }
func (a *asm) imm64(v uint64) { a.b = binary.LittleEndian.AppendUint64(a.b, v) }

// rel32 emits a placeholder the label's distance goes into; the
// instruction ends right after it.
func (a *asm) rel32(label int) {
	a.fixups = append(a.fixups, fixup{at: len(a.b), end: len(a.b) + 4, label: label})
	a.imm32(0)
}

func (a *asm) resolve() error {
	for _, f := range a.fixups {
		to, ok := a.labels[f.label]
		if !ok {
			return fmt.Errorf("frame switch: internal error: label %d not bound", f.label)
		}
		rel := int64(to - f.end)
		if rel < math.MinInt32 || rel > math.MaxInt32 {
			return fmt.Errorf("frame switch: internal error: branch of %d bytes", rel)
		}
		binary.LittleEndian.PutUint32(a.b[f.at:], uint32(int32(rel)))
	}
	return nil
}

func rex(w bool, reg, index, base int) byte {
	b := byte(0x40)
	if w {
		b |= 8
	}
	b |= byte(reg>>3&1)<<2 | byte(index>>3&1)<<1 | byte(base>>3&1)
	return b
}

// memOp emits [prefix] [REX] opcode ModRM [SIB] disp32 for reg, [base+disp32].
func (a *asm) memOp(p66, w bool, op []byte, reg, base int, disp int32) {
	a.inst()
	if p66 {
		a.emit(0x66)
	}
	if r := rex(w, reg, 0, base); r != 0x40 {
		a.emit(r)
	}
	a.emit(op...)
	a.emit(0x80 | byte(reg&7)<<3 | byte(base&7))
	if base&7 == hRSP {
		a.emit(0x24) // SIB: no index, base rsp/r12
	}
	a.imm32(disp)
}

// load moves size (8, 4, 2, 1) bytes at [base+disp] into reg (1, 2 and
// 4 only with rax: al, ax, eax).
func (a *asm) load(size, reg, base int, disp int32) {
	switch size {
	case 8:
		a.memOp(false, true, []byte{0x8b}, reg, base, disp)
	case 4:
		a.memOp(false, false, []byte{0x8b}, reg, base, disp)
	case 2:
		a.memOp(true, false, []byte{0x8b}, reg, base, disp)
	case 1:
		a.memOp(false, false, []byte{0x8a}, reg, base, disp)
	}
}

// store moves the low size bytes of reg to [base+disp].
func (a *asm) store(size, base int, disp int32, reg int) {
	switch size {
	case 8:
		a.memOp(false, true, []byte{0x89}, reg, base, disp)
	case 4:
		a.memOp(false, false, []byte{0x89}, reg, base, disp)
	case 2:
		a.memOp(true, false, []byte{0x89}, reg, base, disp)
	case 1:
		a.memOp(false, false, []byte{0x88}, reg, base, disp)
	}
}

// lea reg, [base+disp32]
func (a *asm) lea(reg, base int, disp int32) { a.memOp(false, true, []byte{0x8d}, reg, base, disp) }

// leaRIP reg, [rip+label]
func (a *asm) leaRIP(reg, label int) {
	a.inst()
	a.emit(rex(true, reg, 0, 0), 0x8d, 0x05|byte(reg&7)<<3)
	a.rel32(label)
}

// movImm64 reg, imm64 (movabs).
func (a *asm) movImm64(reg int, v uint64) {
	a.inst()
	a.emit(rex(true, 0, 0, reg), 0xb8+byte(reg&7))
	a.imm64(v)
}

// movMoffsRAX stores rax at an absolute 64-bit address (REX.W A3).
func (a *asm) movMoffsRAX(addr uint64) {
	a.inst()
	a.emit(0x48, 0xa3)
	a.imm64(addr)
}

// aluRR emits a two-register r/m64, r64 form: op rm, reg (mov 89, add 01,
// sub 29, cmp 39, test 85).
func (a *asm) aluRR(op byte, rm, reg int) {
	a.inst()
	a.emit(rex(true, reg, 0, rm), op, 0xc0|byte(reg&7)<<3|byte(rm&7))
}

func (a *asm) movRR(dst, src int) { a.aluRR(0x89, dst, src) }

// imul dst, src (REX.W 0F AF /r).
func (a *asm) imul(dst, src int) {
	a.inst()
	a.emit(rex(true, dst, 0, src), 0x0f, 0xaf, 0xc0|byte(dst&7)<<3|byte(src&7))
}

// div rm: unsigned rdx:rax / rm.
func (a *asm) div(rm int) {
	a.inst()
	a.emit(rex(true, 0, 0, rm), 0xf7, 0xc0|6<<3|byte(rm&7))
}

func (a *asm) xorEDXEDX() { a.inst(); a.emit(0x31, 0xd2) }

// movsxd rdx, dword [rcx+rdx*4]
func (a *asm) movsxdRDXFromRCXRDX4() { a.inst(); a.emit(0x48, 0x63, 0x14, 0x91) }

func (a *asm) cld()      { a.inst(); a.emit(0xfc) }
func (a *asm) repMovsb() { a.inst(); a.emit(0xf3, 0xa4) }

func (a *asm) jcc(cc byte, label int) {
	a.inst()
	a.emit(0x0f, 0x80|cc)
	a.rel32(label)
}

func (a *asm) jmp(label int) {
	a.inst()
	a.emit(0xe9)
	a.rel32(label)
}

// jmpReg: jmp *reg.
func (a *asm) jmpReg(reg int) {
	a.inst()
	if reg >= 8 {
		a.emit(0x41)
	}
	a.emit(0xff, 0xe0|byte(reg&7))
}

// jmpRIPIndirect: jmp *[rip+label].
func (a *asm) jmpRIPIndirect(label int) {
	a.inst()
	a.emit(0xff, 0x25)
	a.rel32(label)
}

func (a *asm) data64(v uint64) { a.imm64(v) }

// table records an int32 table to place after the code; returns its label.
func (a *asm) table(vals []int32) int {
	l := a.newLabel()
	a.tables = append(a.tables, pendingTable{label: l, vals: vals})
	return l
}

func (a *asm) emitTables() {
	for len(a.b)%4 != 0 {
		a.emit(0xcc)
	}
	for _, t := range a.tables {
		a.bind(t.label)
		for _, v := range t.vals {
			a.imm32(v)
		}
	}
}
