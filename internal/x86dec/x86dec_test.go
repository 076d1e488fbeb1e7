package x86dec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
)

// TestDecode covers what x86asm gets wrong for the diff and the
// planner: endbr64 as a 4-byte instruction, and RIP-relative operands of
// VEX/EVEX instructions, whose displacement must be masked and fixed up
// like any other.
func TestDecode(t *testing.T) {
	in, err := Decode([]byte{0xf3, 0x0f, 0x1e, 0xfa, 0x55}, 0x1000)
	require.NoError(t, err)
	assert.Equal(t, 4, in.Len)
	assert.Zero(t, in.RelSize)

	for _, tc := range []struct {
		name string
		code []byte
		off  int
	}{
		{"sse movdqa", []byte{0x66, 0x0f, 0x6f, 0x05, 0x10, 0x00, 0x00, 0x00}, 4},
		{"vex2 vmovdqa", []byte{0xc5, 0xf9, 0x6f, 0x05, 0x10, 0x00, 0x00, 0x00}, 4},
		{"vex3 vmovdqu", []byte{0xc4, 0xe1, 0x7a, 0x6f, 0x05, 0x10, 0x00, 0x00, 0x00}, 5},
		{"evex vmovdqa32", []byte{0x62, 0xf1, 0x7d, 0x48, 0x6f, 0x05, 0x10, 0x00, 0x00, 0x00}, 6},
	} {
		in, err := Decode(tc.code, 0x1000)
		require.NoError(t, err, tc.name)
		assert.Equal(t, 4, in.PCRel, tc.name)
		assert.Equal(t, tc.off, in.PCRelOff, tc.name)
		assert.Equal(t, 4, in.RelSize, tc.name)
		assert.Equal(t, tc.off, in.RelOff, tc.name)
		assert.Equal(t, uint64(0x1000+len(tc.code)+0x10), in.Target, tc.name)
		var m x86asm.Mem
		for _, a := range in.Args {
			if mm, ok := a.(x86asm.Mem); ok {
				m = mm
			}
		}
		assert.Equal(t, x86asm.RIP, m.Base, tc.name)
		assert.Equal(t, int64(0x10), m.Disp, tc.name)
	}

	// A VEX operand that is not RIP-relative stays as it is.
	code := []byte{0xc5, 0xf9, 0x6f, 0x07} // vmovdqa (%rdi), %xmm0
	in, err = Decode(code, 0x1000)
	require.NoError(t, err)
	assert.Zero(t, in.PCRel)
	assert.Zero(t, in.RelSize)
}

// TestDecodeTargets checks the field and the target Decode reports
// against hand-assembled encodings, including an immediate after the
// displacement (the target is relative to the end of the instruction, not
// of the field).
func TestDecodeTargets(t *testing.T) {
	const pc = 0x4000
	for _, tc := range []struct {
		name         string
		code         []byte
		off, size    int
		target       uint64
		wantNoPCRel  bool
		wantBadInstr bool
	}{
		{name: "jmp rel8 to itself", code: []byte{0xeb, 0xfe}, off: 1, size: 1, target: pc},
		{name: "jne rel8 back", code: []byte{0x75, 0xf0}, off: 1, size: 1, target: pc + 2 - 0x10},
		{name: "call rel32", code: []byte{0xe8, 0x00, 0x01, 0x00, 0x00}, off: 1, size: 4, target: pc + 5 + 0x100},
		{name: "addl $1, disp(%rip)", code: []byte{0x83, 0x05, 0x10, 0x00, 0x00, 0x00, 0x01}, off: 2, size: 4, target: pc + 7 + 0x10},
		{name: "mov %rdi, -disp(%rip)", code: []byte{0x48, 0x89, 0x3d, 0xf0, 0xff, 0xff, 0xff}, off: 3, size: 4, target: pc + 7 - 0x10},
		{name: "vpshufd $0x1b, disp(%rip), %xmm0", code: []byte{0xc5, 0xf9, 0x70, 0x05, 0x20, 0x00, 0x00, 0x00, 0x1b}, off: 4, size: 4, target: pc + 9 + 0x20},
		{name: "vmovdqa %ymm0, disp(%rip)", code: []byte{0xc5, 0xfd, 0x7f, 0x05, 0x00, 0x10, 0x00, 0x00}, off: 4, size: 4, target: pc + 8 + 0x1000},
		{name: "vpaddd (%rax,%rbx,4), %ymm0, %ymm0", code: []byte{0xc5, 0xfd, 0xfe, 0x04, 0x98}, wantNoPCRel: true},
		{name: "ret", code: []byte{0xc3}, wantNoPCRel: true},
		{name: "endbr32", code: []byte{0xf3, 0x0f, 0x1e, 0xfb}, wantNoPCRel: true},
		{name: "vzeroupper", code: []byte{0xc5, 0xf8, 0x77}, wantNoPCRel: true},
		{name: "vzeroall", code: []byte{0xc5, 0xfc, 0x77}, wantNoPCRel: true},
		{name: "vzeroupper, 3-byte VEX", code: []byte{0xc4, 0xe1, 0x78, 0x77}, wantNoPCRel: true},
		{name: "truncated call", code: []byte{0xe8, 0x00}, wantBadInstr: true},
	} {
		in, err := Decode(tc.code, pc)
		if tc.wantBadInstr {
			assert.Error(t, err, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		assert.Equal(t, len(tc.code), in.Len, tc.name)
		if tc.wantNoPCRel {
			assert.Zero(t, in.RelSize, tc.name)
			continue
		}
		assert.Equal(t, tc.off, in.RelOff, tc.name)
		assert.Equal(t, tc.size, in.RelSize, tc.name)
		assert.Equal(t, tc.target, in.Target, tc.name)
	}
}

// x86asm reads a byte past VZEROUPPER as its ModRM; gcc puts one before
// every return and tail call from AVX code, so the jump after it must come
// out whole.
func TestDecodeVzeroupperThenJump(t *testing.T) {
	const pc = 0x2000
	code := []byte{0xc5, 0xf8, 0x77, 0xe9, 0x00, 0x01, 0x00, 0x00, 0xc3}
	var got []string
	for off := 0; off < len(code); {
		in, err := Decode(code[off:], pc+uint64(off))
		require.NoError(t, err, "at +%d", off)
		got = append(got, in.Op.String())
		if in.Op == x86asm.JMP {
			assert.Equal(t, uint64(pc+8+0x100), in.Target)
			assert.Equal(t, 1, in.RelOff)
		}
		off += in.Len
	}
	assert.Equal(t, []string{"VZEROUPPER", "JMP", "RET"}, got)
}
