package safepoint

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// DWARF expression opcodes that appear in x86-64 CFI in practice: glibc's
// signal trampoline (__restore_rt) describes every register as
// DW_OP_breg7 <off> and its CFA as DW_OP_breg7 <off>; DW_OP_deref, and the
// PLT's CFA expression is rsp+8 plus 8 more once rip has passed the push
// inside the 16-byte PLT slot:
//
//	DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11;
//	DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus
//
// The evaluator below is a plain stack machine over the opcodes needed for
// those and similar hand-written CFI; anything else is an error, which makes
// the stack incomplete (never silently safe).
const (
	opAddr       = 0x03
	opDeref      = 0x06
	opConst1u    = 0x08
	opConst1s    = 0x09
	opConst2u    = 0x0a
	opConst2s    = 0x0b
	opConst4u    = 0x0c
	opConst4s    = 0x0d
	opConst8u    = 0x0e
	opConst8s    = 0x0f
	opConstu     = 0x10
	opConsts     = 0x11
	opDup        = 0x12
	opDrop       = 0x13
	opOver       = 0x14
	opSwap       = 0x16
	opAnd        = 0x1a
	opMinus      = 0x1c
	opMul        = 0x1e
	opNeg        = 0x1f
	opNot        = 0x20
	opOr         = 0x21
	opPlus       = 0x22
	opPlusUconst = 0x23
	opShl        = 0x24
	opShr        = 0x25
	opShra       = 0x26
	opXor        = 0x27
	opEq         = 0x29
	opGe         = 0x2a
	opGt         = 0x2b
	opLe         = 0x2c
	opLt         = 0x2d
	opNe         = 0x2e
	opLit0       = 0x30
	opLit31      = 0x4f
	opReg0       = 0x50
	opReg31      = 0x6f
	opBreg0      = 0x70
	opBreg31     = 0x8f
	opBregx      = 0x92
	opNop        = 0x96
)

var errExpr = errors.New("unsupported DWARF expression")

// evalExpr runs a DWARF expression. push, when set, is pushed first (the CFA
// for DW_CFA_expression and DW_CFA_val_expression rules). reg returns a
// register of the frame being unwound; read reads 8 bytes of target memory.
func evalExpr(expr []byte, push *uint64, reg func(int) (uint64, bool), read func(uint64) (uint64, error)) (uint64, error) {
	var st []uint64
	if push != nil {
		st = append(st, *push)
	}
	pop := func() (uint64, error) {
		if len(st) == 0 {
			return 0, fmt.Errorf("%w: stack underflow", errExpr)
		}
		v := st[len(st)-1]
		st = st[:len(st)-1]
		return v, nil
	}
	i := 0
	uleb := func() (uint64, error) {
		var v uint64
		var shift uint
		for i < len(expr) {
			b := expr[i]
			i++
			if shift < 64 {
				v |= uint64(b&0x7f) << shift
			}
			shift += 7
			if b&0x80 == 0 {
				return v, nil
			}
		}
		return 0, fmt.Errorf("%w: truncated LEB128", errExpr)
	}
	sleb := func() (int64, error) {
		var v int64
		var shift uint
		for i < len(expr) {
			b := expr[i]
			i++
			if shift < 64 {
				v |= int64(b&0x7f) << shift
			}
			shift += 7
			if b&0x80 == 0 {
				if shift < 64 && b&0x40 != 0 {
					v |= -1 << shift
				}
				return v, nil
			}
		}
		return 0, fmt.Errorf("%w: truncated LEB128", errExpr)
	}
	fixed := func(n int) (uint64, error) {
		if i+n > len(expr) {
			return 0, fmt.Errorf("%w: truncated operand", errExpr)
		}
		var b [8]byte
		copy(b[:], expr[i:i+n])
		i += n
		return binary.LittleEndian.Uint64(b[:]), nil
	}
	for steps := 0; i < len(expr); steps++ {
		if steps > 1000 {
			return 0, fmt.Errorf("%w: too long", errExpr)
		}
		op := expr[i]
		i++
		var err error
		switch {
		case op >= opLit0 && op <= opLit31:
			st = append(st, uint64(op-opLit0))
		case op >= opBreg0 && op <= opBreg31, op == opBregx:
			n := int(op - opBreg0)
			if op == opBregx {
				var u uint64
				if u, err = uleb(); err != nil {
					return 0, err
				}
				n = int(u)
			}
			off, err := sleb()
			if err != nil {
				return 0, err
			}
			v, ok := reg(n)
			if !ok {
				return 0, fmt.Errorf("%w: register %d unknown", errExpr, n)
			}
			st = append(st, v+uint64(off))
		case op >= opReg0 && op <= opReg31:
			// A register location, not a value: not meaningful in CFI.
			return 0, fmt.Errorf("%w: DW_OP_reg%d", errExpr, op-opReg0)
		default:
			switch op {
			case opNop:
			case opAddr, opConst8u, opConst8s:
				v, err := fixed(8)
				if err != nil {
					return 0, err
				}
				st = append(st, v)
			case opConst1u, opConst1s, opConst2u, opConst2s, opConst4u, opConst4s:
				n := map[byte]int{opConst1u: 1, opConst1s: 1, opConst2u: 2, opConst2s: 2, opConst4u: 4, opConst4s: 4}[op]
				v, err := fixed(n)
				if err != nil {
					return 0, err
				}
				if op == opConst1s || op == opConst2s || op == opConst4s {
					sh := uint(64 - 8*n)
					v = uint64(int64(v<<sh) >> sh)
				}
				st = append(st, v)
			case opConstu:
				v, err := uleb()
				if err != nil {
					return 0, err
				}
				st = append(st, v)
			case opConsts:
				v, err := sleb()
				if err != nil {
					return 0, err
				}
				st = append(st, uint64(v))
			case opPlusUconst:
				v, err := uleb()
				if err != nil {
					return 0, err
				}
				a, err := pop()
				if err != nil {
					return 0, err
				}
				st = append(st, a+v)
			case opDup, opDrop, opOver, opSwap:
				if len(st) < map[byte]int{opDup: 1, opDrop: 1, opOver: 2, opSwap: 2}[op] {
					return 0, fmt.Errorf("%w: stack underflow", errExpr)
				}
				n := len(st)
				switch op {
				case opDup:
					st = append(st, st[n-1])
				case opDrop:
					st = st[:n-1]
				case opOver:
					st = append(st, st[n-2])
				case opSwap:
					st[n-1], st[n-2] = st[n-2], st[n-1]
				}
			case opDeref:
				a, err := pop()
				if err != nil {
					return 0, err
				}
				v, err := read(a)
				if err != nil {
					return 0, err
				}
				st = append(st, v)
			case opNeg, opNot:
				a, err := pop()
				if err != nil {
					return 0, err
				}
				if op == opNeg {
					st = append(st, -a)
				} else {
					st = append(st, ^a)
				}
			case opAnd, opMinus, opMul, opOr, opPlus, opShl, opShr, opShra, opXor,
				opEq, opGe, opGt, opLe, opLt, opNe:
				b, err := pop()
				if err != nil {
					return 0, err
				}
				a, err := pop()
				if err != nil {
					return 0, err
				}
				st = append(st, binop(op, a, b))
			default:
				return 0, fmt.Errorf("%w: opcode %#x", errExpr, op)
			}
		}
	}
	if len(st) == 0 {
		return 0, fmt.Errorf("%w: empty result", errExpr)
	}
	return st[len(st)-1], nil
}

// binop applies a binary operator; comparisons are signed, as DWARF says.
func binop(op byte, a, b uint64) uint64 {
	bool2 := func(c bool) uint64 {
		if c {
			return 1
		}
		return 0
	}
	switch op {
	case opAnd:
		return a & b
	case opMinus:
		return a - b
	case opMul:
		return a * b
	case opOr:
		return a | b
	case opPlus:
		return a + b
	case opShl:
		return a << (b & 63)
	case opShr:
		return a >> (b & 63)
	case opShra:
		return uint64(int64(a) >> (b & 63))
	case opXor:
		return a ^ b
	case opEq:
		return bool2(a == b)
	case opGe:
		return bool2(int64(a) >= int64(b))
	case opGt:
		return bool2(int64(a) > int64(b))
	case opLe:
		return bool2(int64(a) <= int64(b))
	case opLt:
		return bool2(int64(a) < int64(b))
	case opNe:
		return bool2(a != b)
	}
	return 0
}
