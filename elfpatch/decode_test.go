package elfpatch

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
)

// TestDecodeOne covers what x86asm gets wrong for the diff: endbr64 as a
// 4-byte instruction, and RIP-relative operands of VEX/EVEX instructions,
// whose displacement must be masked like any other.
func TestDecodeOne(t *testing.T) {
	inst, err := decodeOne([]byte{0xf3, 0x0f, 0x1e, 0xfa, 0x55})
	require.NoError(t, err)
	assert.Equal(t, 4, inst.Len)

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
		inst, err := decodeOne(tc.code)
		require.NoError(t, err, tc.name)
		if inst.PCRel == 0 {
			fixVEXRIP(&inst, tc.code[:inst.Len])
		}
		assert.Equal(t, 4, inst.PCRel, tc.name)
		assert.Equal(t, tc.off, inst.PCRelOff, tc.name)
		var m x86asm.Mem
		for _, a := range inst.Args {
			if mm, ok := a.(x86asm.Mem); ok {
				m = mm
			}
		}
		assert.Equal(t, x86asm.RIP, m.Base, tc.name)
		assert.Equal(t, int64(0x10), m.Disp, tc.name)
	}

	// A VEX operand that is not RIP-relative stays as it is.
	code := []byte{0xc5, 0xf9, 0x6f, 0x07} // vmovdqa (%rdi), %xmm0
	inst, err = decodeOne(code)
	require.NoError(t, err)
	fixVEXRIP(&inst, code[:inst.Len])
	assert.Zero(t, inst.PCRel)
}
