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

func TestRoundTrip(t *testing.T) {
	body := []byte(`{"patches":[]}`)
	buf, err := Encode(body, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	got, gen, err := Decode(mem(buf), 0x7000)
	if err != nil || gen != 7 || !bytes.Equal(got, body) {
		t.Fatalf("Decode = %q, %d, %v; want %q, 7, nil", got, gen, err, body)
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
		_, _, err := Decode(mem(c.b), 0x7000)
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
	if _, err := Encode(make([]byte, Capacity-HeaderSize+1), 2, 1); err == nil {
		t.Fatal("a body over capacity encoded")
	}
	if _, err := Encode(make([]byte, Capacity-HeaderSize), 2, 1); err != nil {
		t.Fatalf("a body of exactly the capacity: %v", err)
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
