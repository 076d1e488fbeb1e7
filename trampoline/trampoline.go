package trampoline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// Encoding lengths.
const (
	Rel32Len = 5  // e9 rel32
	Abs64Len = 14 // ff 25 00000000 (jmp *0(%rip)) + 8-byte address
)

// endbr64 is the CET landing pad gcc puts at function entries
// (-fcf-protection). It stays: an indirect call must still land on it.
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// ErrOutOfRange is returned by JmpRel32 when the target is beyond ±2 GB.
var ErrOutOfRange = errors.New("jump target out of rel32 range")

// JmpRel32 encodes a 5-byte `jmp rel32` placed at from that lands on to.
func JmpRel32(from, to uint64) ([]byte, error) {
	rel := int64(to - (from + Rel32Len))
	if rel < math.MinInt32 || rel > math.MaxInt32 {
		return nil, fmt.Errorf("encode jmp at %#x to %#x: %w (distance %d)", from, to, ErrOutOfRange, rel)
	}
	b := make([]byte, Rel32Len)
	b[0] = 0xe9
	binary.LittleEndian.PutUint32(b[1:], uint32(int32(rel)))
	return b, nil
}

// JmpAbs64 encodes a 14-byte absolute jump to to: `jmp *0(%rip)` followed
// by the address it reads. It needs no register and reaches anywhere.
func JmpAbs64(to uint64) []byte {
	b := make([]byte, Abs64Len)
	b[0], b[1] = 0xff, 0x25
	binary.LittleEndian.PutUint64(b[6:], to)
	return b
}

// Site is one planned write: New goes at Addr, Orig is what is there now.
type Site struct {
	Addr uint64
	Orig []byte
	New  []byte
}

// Revert returns the original bytes, to write back at Addr.
func (s *Site) Revert() []byte { return bytes.Clone(s.Orig) }

// PlanError says why a function's entry cannot take a jump.
type PlanError struct {
	Entry  uint64
	Off    int // offset from the entry the problem is at (-1: none)
	Reason string
}

func (e *PlanError) Error() string {
	if e.Off >= 0 {
		return fmt.Sprintf("plan jump at %#x: %s (at +%#x)", e.Entry, e.Reason, e.Off)
	}
	return fmt.Sprintf("plan jump at %#x: %s", e.Entry, e.Reason)
}

// decode decodes one instruction with x86dec, which the diff and the
// planner use too: it knows what x86asm gets wrong (the CET landing pads,
// read as a bare REP prefix; VZEROUPPER, whose length it overstates by a
// byte; encodings it returns without an opcode).
func decode(code []byte) (x86asm.Inst, error) {
	in, err := x86dec.Decode(code, 0)
	return in.Inst, err
}

// Plan decides the bytes to write over the entry of a function whose
// whole code (code, at runtime address entry) is replaced by target.
// An endbr64 at the entry stays; the jump goes after it. A 5-byte jmp
// rel32 is used when target is within ±2 GB, else a 14-byte absolute
// jump. The overwritten bytes are extended with int3 to the next
// instruction boundary, so what follows them in the old code is still
// whole instructions (a stray return into them traps instead of running
// half an instruction). Plan refuses, with a *PlanError, when the function
// is too short, when its bytes cannot be decoded up to that boundary, and
// when a relative branch anywhere in the function (jmp, jcc, call, loop,
// jrcxz) targets the overwritten bytes other than their first byte.
// Indirect branches (jump tables) cannot be checked here.
func Plan(code []byte, entry uint64, target uint64) (*Site, error) {
	fail := func(off int, format string, args ...any) (*Site, error) {
		return nil, &PlanError{Entry: entry, Off: off, Reason: fmt.Sprintf(format, args...)}
	}
	off := 0
	if bytes.HasPrefix(code, endbr64) {
		off = len(endbr64)
	}
	addr := entry + uint64(off)
	jmp, err := JmpRel32(addr, target)
	if err != nil {
		jmp = JmpAbs64(target)
	}
	if len(code)-off < len(jmp) {
		why := ""
		if len(jmp) == Abs64Len {
			why = fmt.Sprintf(" (target %#x is out of rel32 range, so the 14-byte absolute jump is needed)", target)
		}
		return fail(-1, "function too short: %d bytes after the entry point, the jump needs %d%s",
			len(code)-off, len(jmp), why)
	}

	// Decode the whole function: its instruction boundaries and its
	// relative branches.
	end := -1 // end of the overwritten bytes: first boundary >= off+len(jmp)
	type branch struct {
		at     int
		target int64
	}
	var branches []branch
	for i := 0; i < len(code); {
		inst, err := decode(code[i:])
		if err != nil {
			// x86asm reports an instruction cut off by the end of the
			// buffer as truncated or unknown: see whether it decodes
			// with more bytes, i.e. runs past the function's end.
			padded := append(bytes.Clone(code[i:]), make([]byte, 16)...)
			if pi, perr := decode(padded); perr == nil && pi.Len > len(code)-i {
				inst, err = pi, nil
			}
		}
		if err != nil {
			if end < 0 {
				return fail(i, "cannot decode the instruction at the entry (%v)", err)
			}
			return fail(i, "cannot decode the function (%v), so branches into the jump cannot be ruled out", err)
		}
		if i+inst.Len > len(code) {
			if end < 0 {
				return fail(i, "the overwritten bytes would end inside an instruction that runs past the function's end")
			}
			return fail(i, "instruction runs past the function's end")
		}
		for _, a := range inst.Args {
			if rel, ok := a.(x86asm.Rel); ok {
				branches = append(branches, branch{i, int64(i+inst.Len) + int64(rel)})
			}
		}
		i += inst.Len
		if end < 0 && i >= off+len(jmp) {
			end = i
		}
	}
	for _, b := range branches {
		if b.target > int64(off) && b.target < int64(end) {
			return fail(b.at, "a branch targets +%#x, inside the overwritten bytes [+%#x, +%#x)", b.target, off, end)
		}
	}
	nw := make([]byte, end-off)
	copy(nw, jmp)
	for i := len(jmp); i < len(nw); i++ {
		nw[i] = 0xcc
	}
	return &Site{Addr: addr, Orig: bytes.Clone(code[off:end]), New: nw}, nil
}
