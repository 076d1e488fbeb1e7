package safepoint

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	f := Range{Start: 0x1000, End: 0x1100, Name: "f"}
	g := Range{Start: 0x2000, End: 0x2080, Name: "g"}
	entryF := Range{Start: 0x1000, End: 0x1005, Name: "f"}
	outer := []Frame{{PC: 0x5000, Function: "main"}, {PC: 0x6000, Function: "_start"}}
	stack := func(fs ...Frame) []Frame { return append(fs, outer...) }
	cases := []struct {
		name   string
		stacks map[int][]Frame
		spec   Spec
		// want: "" safe, else the substring the error must contain
		want      string
		wantTid   int
		wantEntry bool
	}{
		{"nothing replaced", map[int][]Frame{1: stack(Frame{PC: 0x1050, Exact: true})}, Spec{}, "", 0, false},
		{"pc in f", map[int][]Frame{7: stack(Frame{PC: 0x1050, Exact: true, Function: "f"})},
			Spec{Functions: []Range{f}}, "thread 7 is inside f (frame #0", 7, false},
		{"return address in f", map[int][]Frame{3: stack(Frame{PC: 0x9000, Exact: true}, Frame{PC: 0x1010})},
			Spec{Functions: []Range{f}}, "thread 3 is inside f (frame #1", 3, false},
		// A call ending f (noreturn callee) returns to f's end: PC-1 is in f.
		{"return address at end of f", map[int][]Frame{3: stack(Frame{PC: 0x9000, Exact: true}, Frame{PC: 0x1100})},
			Spec{Functions: []Range{f}}, "inside f", 3, false},
		// An exact PC at f's end is the next function's first byte.
		{"exact pc at end of f", map[int][]Frame{3: stack(Frame{PC: 0x1100, Exact: true})},
			Spec{Functions: []Range{f}}, "", 0, false},
		{"allowed active", map[int][]Frame{3: stack(Frame{PC: 0x1050, Exact: true})},
			Spec{Functions: []Range{f}, AllowActive: []string{"f"}}, "", 0, false},
		{"entry bytes even when allowed", map[int][]Frame{4: stack(Frame{PC: 0x1002, Exact: true})},
			Spec{Functions: []Range{f}, Entries: []Range{entryF}, AllowActive: []string{"f"}}, "entry bytes of f", 4, true},
		{"return address inside entry bytes", map[int][]Frame{4: stack(Frame{PC: 0x9000, Exact: true}, Frame{PC: 0x1003})},
			Spec{Functions: []Range{f}, Entries: []Range{entryF}, AllowActive: []string{"f"}}, "entry bytes of f", 4, true},
		{"return address just after entry bytes, allowed", map[int][]Frame{4: stack(Frame{PC: 0x9000, Exact: true}, Frame{PC: 0x1005})},
			Spec{Functions: []Range{f}, Entries: []Range{entryF}, AllowActive: []string{"f"}}, "", 0, false},
		{"other function untouched", map[int][]Frame{1: stack(Frame{PC: 0x1050, Exact: true})},
			Spec{Functions: []Range{g}}, "", 0, false},
		{"incomplete stack", map[int][]Frame{2: {{PC: 0x7000, Exact: true, Incomplete: true, Reason: "no CFI for pc"}}},
			Spec{Functions: []Range{g}}, "could not be unwound to its end (no CFI for pc)", 2, false},
		{"definite activity named before incomplete", map[int][]Frame{
			2: {{PC: 0x7000, Exact: true, Incomplete: true, Reason: "no CFI"}},
			9: stack(Frame{PC: 0x2010, Exact: true, Function: "g"}),
		}, Spec{Functions: []Range{g}}, "thread 9 is inside g", 9, false},
		{"lowest tid first", map[int][]Frame{
			9: stack(Frame{PC: 0x2010, Exact: true}),
			5: stack(Frame{PC: 0x1010, Exact: true}),
		}, Spec{Functions: []Range{f, g}}, "thread 5 is inside f", 5, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Check(c.stacks, c.spec)
			if c.want == "" {
				if err != nil {
					t.Fatalf("want safe, got %v", err)
				}
				return
			}
			var ae *ActiveError
			if !errors.As(err, &ae) || !errors.Is(err, ErrActive) {
				t.Fatalf("want *ActiveError, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q lacks %q", err, c.want)
			}
			if ae.Tid != c.wantTid || ae.Entry != c.wantEntry {
				t.Errorf("tid %d entry %v, want %d %v", ae.Tid, ae.Entry, c.wantTid, c.wantEntry)
			}
			if !strings.Contains(err.Error(), "main <- _start") && !ae.Incomplete {
				t.Errorf("error %q does not show the stack", err)
			}
		})
	}
}

// fakeMem is a little-endian memory of 8-byte words.
type fakeMem map[uint64]uint64

func (m fakeMem) read8(a uint64) (uint64, error) {
	v, ok := m[a]
	if !ok {
		return 0, errors.New("unmapped")
	}
	return v, nil
}

func (m fakeMem) ReadAt(b []byte, addr int64) (int, error) {
	for i := 0; i < len(b); i += 8 {
		v, err := m.read8(uint64(addr) + uint64(i))
		if err != nil {
			return i, err
		}
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], v)
		copy(b[i:], w[:])
	}
	return len(b), nil
}

func TestEvalExpr(t *testing.T) {
	// The PLT's CFA: rsp+8, plus 8 once rip&15 >= 11 (after the push).
	plt := []byte{0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22}
	for _, c := range []struct{ rip, want uint64 }{
		{0x1020, 0x7f08}, {0x102a, 0x7f08}, {0x102b, 0x7f10}, {0x102f, 0x7f10},
	} {
		regs := func(n int) (uint64, bool) {
			switch n {
			case 7:
				return 0x7f00, true
			case 16:
				return c.rip, true
			}
			return 0, false
		}
		got, err := evalExpr(plt, nil, regs, nil)
		if err != nil || got != c.want {
			t.Errorf("PLT CFA at rip %#x: %#x, %v; want %#x", c.rip, got, err, c.want)
		}
	}
	// __restore_rt's CFA: DW_OP_breg7 160; DW_OP_deref (the saved rsp in
	// the ucontext).
	mem := fakeMem{0x8000 + 160: 0x9999}
	rsp := func(n int) (uint64, bool) { return 0x8000, n == 7 }
	got, err := evalExpr([]byte{0x77, 0xa0, 0x01, 0x06}, nil, rsp, mem.read8)
	if err != nil || got != 0x9999 {
		t.Errorf("restore_rt CFA: %#x, %v", got, err)
	}
	// DW_CFA_expression rules start with the CFA pushed.
	cfa := uint64(0x100)
	got, err = evalExpr([]byte{0x23, 0x10}, &cfa, rsp, mem.read8) // plus_uconst 16
	if err != nil || got != 0x110 {
		t.Errorf("plus_uconst on CFA: %#x, %v", got, err)
	}
	for _, bad := range [][]byte{
		{0x22},             // plus on an empty stack
		{0x77},             // truncated operand
		{0x50},             // DW_OP_reg0: a location, not a value
		{0xf3},             // unknown (GNU entry value)
		{0x75, 0x00, 0x06}, // breg5: register unknown
		{0x30, 0x06},       // deref of unmapped memory
	} {
		if v, err := evalExpr(bad, nil, rsp, mem.read8); err == nil {
			t.Errorf("expression % x: %#x, want an error", bad, v)
		}
	}
}

func TestMemCache(t *testing.T) {
	mem := fakeMem{}
	for a := uint64(0x10000); a < 0x12000; a += 8 {
		mem[a] = a * 3
	}
	c := &memCache{mem: mem}
	for _, a := range []uint64{0x10000, 0x10ff8, 0x11000, 0x11ff8} {
		if v, err := c.read8(a); err != nil || v != a*3 {
			t.Errorf("read8(%#x) = %#x, %v", a, v, err)
		}
	}
	// Straddling a page boundary, and an unaligned word in a page that is
	// not wholly readable, fall back to exact reads.
	if _, err := c.read8(0x11ffc); err == nil {
		t.Error("read8 across into unmapped memory succeeded")
	}
	if _, err := c.read8(0x12000); err == nil {
		t.Error("read8 of unmapped memory succeeded")
	}
}
