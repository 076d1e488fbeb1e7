// Package x86dec decodes x86-64 machine code for graft: x86asm, plus what
// x86asm gets wrong in code gcc emits, plus the instruction's PC-relative
// field as one value (where it is, how wide, what it reaches).
//
// The diff (which masks PC-relative fields to compare code), the planner
// (which points NEW code's references at OLD's state) and the trampoline
// check (which looks for branches into the bytes a jump overwrites) all
// decode through Decode, so they see the same instructions with the same
// lengths and the same references: a reference one of them missed would
// silently keep NEW's code on NEW's copy of a global, and a length one of
// them got wrong would misread every later instruction.
package x86dec

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// Inst is one decoded instruction and its PC-relative field, if it has
// one.
type Inst struct {
	x86asm.Inst
	// RelOff and RelSize locate the PC-relative field (a rel8/rel32
	// branch displacement or a RIP-relative disp32) in the instruction's
	// bytes; RelSize is 0 when there is none.
	RelOff, RelSize int
	// Target is the address the field reaches: the end of the
	// instruction plus the field's signed value.
	Target uint64
}

// Decode decodes the instruction at the start of code, which lies at
// address pc. It knows what x86asm gets wrong:
//
//   - the CET landing pads (endbr64, endbr32: at every function entry and
//     indirect branch target under -fcf-protection, Ubuntu's default),
//     which x86asm reads as a bare REP prefix, are one 4-byte instruction
//     without operands;
//   - an encoding x86asm returns without an opcode is an error, not a
//     1-byte instruction: a wrong length would misread every later one;
//   - VZEROUPPER and VZEROALL have no ModRM byte, but x86asm's AVX
//     decoder takes the next instruction's first byte as one (so
//     `vzeroupper; jmp helper`, gcc's usual AVX epilogue before a tail
//     call, hides the jump and misreads what follows); vzero decodes
//     them;
//   - a RIP-relative operand of a VEX or EVEX instruction (AVX: gcc emits
//     them for vectorised loops over globals under -mavx2 or
//     -march=x86-64-v3) comes back from x86asm as a bare displacement
//     without PCRel; fixVEXRIP restores it.
func Decode(code []byte, pc uint64) (Inst, error) {
	if len(code) >= 4 && code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && (code[3] == 0xfa || code[3] == 0xfb) {
		return Inst{Inst: x86asm.Inst{Op: x86asm.NOP, Len: 4}}, nil
	}
	if n, op := vzero(code); n > 0 {
		return Inst{Inst: x86asm.Inst{Op: op, Len: n}}, nil
	}
	inst, err := x86asm.Decode(code, 64)
	if err != nil {
		return Inst{Inst: inst}, fmt.Errorf("decode % x: %w", code[:min(len(code), 8)], err)
	}
	if inst.Op == 0 || inst.Len == 0 {
		return Inst{Inst: inst}, fmt.Errorf("unknown instruction % x", code[:min(len(code), 8)])
	}
	if inst.PCRel == 0 {
		fixVEXRIP(&inst, code[:inst.Len])
	}
	in := Inst{Inst: inst}
	if inst.PCRel == 0 {
		return in, nil
	}
	end := inst.PCRelOff + inst.PCRel
	if inst.PCRelOff <= 0 || end > inst.Len {
		return in, fmt.Errorf("instruction % x: PC-relative field at +%d (%d bytes) outside its %d bytes", code[:inst.Len], inst.PCRelOff, inst.PCRel, inst.Len)
	}
	field := code[inst.PCRelOff:end]
	var rel int64
	switch inst.PCRel {
	case 1:
		rel = int64(int8(field[0]))
	case 2:
		rel = int64(int16(binary.LittleEndian.Uint16(field)))
	case 4:
		rel = int64(int32(binary.LittleEndian.Uint32(field)))
	default:
		return in, fmt.Errorf("instruction % x: PC-relative field of %d bytes", code[:inst.Len], inst.PCRel)
	}
	in.RelOff, in.RelSize = inst.PCRelOff, inst.PCRel
	in.Target = pc + uint64(inst.Len) + uint64(rel)
	return in, nil
}

// fixVEXRIP repairs what x86asm leaves out for VEX- and EVEX-encoded
// instructions: a RIP-relative memory operand (ModRM mod=00, rm=101) comes
// back as a bare displacement without PCRel. It sets PCRel/PCRelOff and
// turns the operand into RIP+disp, so that the diff masks the field (an
// AVX load of a constant does not look changed whenever the function
// moved) and the planner fixes it up (an AVX store to a global reaches
// OLD's copy).
func fixVEXRIP(inst *x86asm.Inst, raw []byte) {
	mi := -1
	for i, a := range inst.Args {
		if m, ok := a.(x86asm.Mem); ok && m.Base == 0 && m.Index == 0 {
			mi = i
		}
	}
	if mi < 0 {
		return
	}
	p := 0
	for p < len(raw) {
		switch raw[p] {
		case 0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65:
			p++
			continue
		}
		break
	}
	var modrm int
	switch {
	case p < len(raw) && raw[p] == 0xc5:
		modrm = p + 3 // c5, payload, opcode
	case p < len(raw) && raw[p] == 0xc4:
		modrm = p + 4 // c4, two payload bytes, opcode
	case p < len(raw) && raw[p] == 0x62:
		modrm = p + 5 // 62, three payload bytes, opcode
	default:
		return
	}
	if modrm+5 > len(raw) || raw[modrm]&0xc7 != 0x05 {
		return
	}
	m := inst.Args[mi].(x86asm.Mem)
	m.Base = x86asm.RIP
	m.Disp = int64(int32(binary.LittleEndian.Uint32(raw[modrm+1:])))
	inst.Args[mi] = m
	inst.PCRel, inst.PCRelOff = 4, modrm+1
}

// vzero recognises VZEROUPPER and VZEROALL (VEX.0F 77, no ModRM) in their
// 2- and 3-byte VEX forms and returns their length and opcode, or 0.
func vzero(code []byte) (int, x86asm.Op) {
	op := func(l byte) x86asm.Op {
		if l&4 != 0 {
			return x86asm.VZEROALL
		}
		return x86asm.VZEROUPPER
	}
	switch {
	case len(code) >= 3 && code[0] == 0xc5 && code[1]&3 == 0 && code[2] == 0x77:
		return 3, op(code[1])
	case len(code) >= 4 && code[0] == 0xc4 && code[1]&0x1f == 1 && code[2]&3 == 0 && code[3] == 0x77:
		return 4, op(code[2])
	}
	return 0, 0
}
