package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// at places a record at a nonzero address, as in target memory.
type at struct {
	base uint64
	b    []byte
}

func (m at) ReadAt(p []byte, off int64) (int, error) {
	o := uint64(off) - m.base
	if uint64(off) < m.base || o+uint64(len(p)) > uint64(len(m.b)) {
		return 0, errors.New("unmapped")
	}
	return copy(p, m.b[o:]), nil
}

func mem(b []byte) at {
	buf := make([]byte, Capacity)
	copy(buf, b)
	return at{0x7000, buf}
}

func (m at) WriteAt(p []byte, off int64) (int, error) {
	o := uint64(off) - m.base
	if uint64(off) < m.base || o+uint64(len(p)) > uint64(len(m.b)) {
		return 0, errors.New("unmapped")
	}
	return copy(m.b[o:], p), nil
}

// placed is target memory holding the encoded record buf, as Write puts
// it (header, and body at its generation's offset).
func placed(t testing.TB, buf []byte) at {
	m := at{0x7000, make([]byte, Capacity)}
	if err := Write(m, 0x7000, buf); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	body := []byte(`{"patches":[]}`)
	buf, err := Encode(body, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	got, gen, err := Decode(placed(t, buf), 0x7000)
	if err != nil || gen != 7 || !bytes.Equal(got, body) {
		t.Fatalf("Decode = %q, %d, %v; want %q, 7, nil", got, gen, err, body)
	}
	// A record written before the body offset existed (offset 0, body
	// right after the header) still reads.
	old := bytes.Clone(buf)
	binary.LittleEndian.PutUint64(old[48:], 0)
	if got, _, err := Decode(mem(old), 0x7000); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("old layout: %q, %v", got, err)
	}
}

// A writer cut off anywhere before its header is written leaves the
// previous record whole: the new body goes to the other half.
func TestTornWriteKeepsPrevious(t *testing.T) {
	first := []byte(`{"patches":["a"]}`)
	b1, _ := Encode(first, 3, 4)
	m := placed(t, b1)
	second := bytes.Repeat([]byte("x"), 3*4096+100) // several pages
	b2, _ := Encode(second, 3, 5)
	off := BodyOffset(5)
	for _, cut := range []int{0, 1, 4096, 8191, len(second)} {
		copy(m.b[off:], b2[HeaderSize:HeaderSize+cut]) // the body, cut short
		got, gen, err := Decode(m, 0x7000)
		if err != nil || gen != 4 || !bytes.Equal(got, first) {
			t.Fatalf("cut at %d: %q, %d, %v; want the previous record", cut, got, gen, err)
		}
	}
	if err := Write(m, 0x7000, b2); err != nil {
		t.Fatal(err)
	}
	if got, gen, err := Decode(m, 0x7000); err != nil || gen != 5 || !bytes.Equal(got, second) {
		t.Fatalf("after the header: %d, %v", gen, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := Encode([]byte(`{}`), 3, 1)
	mod := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		b    []byte
		is   error
		fmt  bool
	}{
		{"never written", make([]byte, HeaderSize), ErrNeverWritten, false},
		{"bad magic", mod(func(b []byte) { b[0] = 'X' }), nil, true},
		{"newer version", mod(func(b []byte) { le.PutUint32(b[8:], MaxVersion+1) }), nil, true},
		{"version 0", mod(func(b []byte) { le.PutUint32(b[8:], 0) }), nil, true},
		{"header size", mod(func(b []byte) { le.PutUint32(b[12:], 32) }), nil, true},
		{"capacity too big", mod(func(b []byte) { le.PutUint64(b[40:], Capacity+1) }), nil, true},
		{"length past capacity", mod(func(b []byte) { le.PutUint64(b[24:], Capacity) }), ErrTorn, false},
		{"crc", mod(func(b []byte) { b[HeaderSize] ^= 1 }), ErrTorn, false},
	} {
		m := mem(c.b)
		if len(c.b) > HeaderSize {
			m = at{0x7000, make([]byte, Capacity)}
			copy(m.b, c.b[:HeaderSize])
			copy(m.b[BodyOffset(1):], c.b[HeaderSize:])
		}
		_, _, err := Decode(m, 0x7000)
		var fe *FormatError
		switch {
		case c.is != nil && !errors.Is(err, c.is):
			t.Errorf("%s: err %v, want %v", c.name, err, c.is)
		case c.fmt && !errors.As(err, &fe):
			t.Errorf("%s: err %v, want a FormatError", c.name, err)
		}
	}
	if _, _, err := Decode(at{0x7000, good[:10]}, 0x7000); !errors.As(err, new(*ReadError)) {
		t.Errorf("unreadable header: err %v, want a ReadError", err)
	}
}

func TestEncodeCapacity(t *testing.T) {
	if _, err := Encode(make([]byte, MaxBody+1), 2, 1); err == nil {
		t.Fatal("a body over capacity encoded")
	}
	for gen := uint64(1); gen <= 2; gen++ {
		buf, err := Encode(make([]byte, MaxBody), 2, gen)
		if err != nil {
			t.Fatalf("a body of exactly the capacity: %v", err)
		}
		if _, _, err := Decode(placed(t, buf), 0x7000); err != nil {
			t.Fatalf("generation %d at full size: %v", gen, err)
		}
	}
}

// Whatever the target's memory holds, Decode returns an error or a body
// whose CRC matches; it never panics or allocates past Capacity.
func FuzzDecode(f *testing.F) {
	good, _ := Encode([]byte(`{"patches":[]}`), 2, 1)
	f.Add(good)
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		body, _, err := Decode(mem(b), 0x7000)
		if err == nil && len(body) > Capacity-HeaderSize {
			t.Fatalf("body of %d bytes", len(body))
		}
	})
}
