package graft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// The record is versioned: this graft writes version 2, or 3 while a
// reverted patch's image is pending (which a version-2 reader would not
// see), still reads a version-1 record (an older graft's, without CFI
// places and symbols), and refuses any other version by name instead of
// guessing.
func TestStateVersions(t *testing.T) {
	s := &State{Patches: []PatchRecord{{
		ID: "x", Base: 0x7f0000000000, Size: 0x5000, EhFrame: 0x2100, EhFrameSize: 0x300,
		Symbols: []SymRecord{{Name: "handle", File: "blockread.c", Addr: 0x7f0000001200, Size: 0x80}, {Name: "added", Addr: 0x7f0000004010, Size: 8, Data: true}},
	}}}
	buf, err := encodeState(s, 4)
	require.NoError(t, err)
	require.Equal(t, uint32(2), binary.LittleEndian.Uint32(buf[8:]))
	pend, err := encodeState(&State{Pending: s.Patches}, 4)
	require.NoError(t, err)
	require.Equal(t, uint32(3), binary.LittleEndian.Uint32(pend[8:]))
	// An odd generation's body goes in the second half: version 4, which
	// an older graft refuses by name.
	odd, err := encodeState(s, 5)
	require.NoError(t, err)
	require.Equal(t, uint32(4), binary.LittleEndian.Uint32(odd[8:]))
	go4, err := decodeState(bytes.NewReader(laidOut(odd)), 1, 0)
	require.NoError(t, err)
	require.Len(t, go4.Patches, 1)
	gp, err := decodeState(bytes.NewReader(laidOut(pend)), 1, 0)
	require.NoError(t, err)
	require.Len(t, gp.Pending, 1)
	require.Empty(t, gp.Patches)
	got, err := decodeState(bytes.NewReader(append(make([]byte, 0x1000), laidOut(buf)...)), 1, 0x1000)
	require.NoError(t, err)
	require.Equal(t, s.Patches[0].Symbols, got.Patches[0].Symbols)
	require.Equal(t, s.Patches[0].EhFrameSize, got.Patches[0].EhFrameSize)

	for _, v := range []uint32{1, 3, 4, 0, 5, 99} {
		b := laidOut(buf)
		binary.LittleEndian.PutUint32(b[8:], v)
		_, err := decodeState(bytes.NewReader(b), 1, 0)
		if v == 1 || v == 3 || v == 4 {
			require.NoError(t, err, "version %d reads", v)
			continue
		}
		var fe *StateFormatError
		require.ErrorAs(t, err, &fe, "version %d", v)
		require.Contains(t, err.Error(), fmt.Sprintf("record version %d", v))
		require.Contains(t, err.Error(), "reads versions 1 to 4")
	}
}

// The record's capacity is fixed: a record that would not fit is refused
// when encoded, which apply does before its pause.
func TestStateCapacityBound(t *testing.T) {
	var syms []SymRecord
	for i := range 20000 {
		syms = append(syms, SymRecord{Name: fmt.Sprintf("function_with_a_long_name_%d", i), File: "unit.c", Addr: 0x7f0000000000 + uint64(i)*64, Size: 64})
	}
	_, err := encodeState(&State{Patches: []PatchRecord{{ID: "big", Symbols: syms}}}, 1)
	require.Error(t, err)
	require.Contains(t, err.Error(), "capacity")
}

// laidOut is an encoded record as it lies in memory: the header, and the
// body at its offset (record.Write).
func laidOut(buf []byte) []byte {
	off := binary.LittleEndian.Uint64(buf[48:])
	m := make([]byte, off+uint64(len(buf)-64))
	copy(m, buf[:64])
	copy(m[off:], buf[64:])
	return m
}
