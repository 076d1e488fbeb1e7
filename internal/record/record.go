// Package record is the envelope of the in-target record ("graft-state"):
// a fixed header that frames a body, so a reader that does not stop the
// target can tell a whole record from a torn one and a version it reads
// from one it must refuse. It is pure: bytes in, bytes out; where the
// record lives and what the body says (a JSON State) are the
// controller's.
//
// Layout (little-endian):
//
//	off  size  field
//	  0     8  magic "GRAFTST\x00"
//	  8     4  version
//	 12     4  header size (64)
//	 16     8  generation: +1 on every write
//	 24     8  body length in bytes
//	 32     4  CRC-32 (IEEE) of the body
//	 36     4  reserved (0)
//	 40     8  capacity: size of the mapping
//	 48     8  body offset from the record's start (0: right after the
//	           header, as records before this field)
//	 56     8  reserved (0)
//
// The body goes in one of two halves of the mapping, by the generation's
// parity (BodyOffset), and a writer writes it before the header (Write's
// order): a writer killed mid-write leaves the header of the previous
// record, whose body, in the other half, is whole. The header is 64
// bytes at a page boundary, so its own write is never torn.
//
// The header lives in the target's memory, which the target can scribble
// on: every length in it is checked against Capacity before anything is
// allocated, and a body whose CRC does not match is reported as torn (the
// caller reads again) rather than trusted.
package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	Magic      = "GRAFTST\x00"
	HeaderSize = 64
	// Capacity is the size of the mapping graft creates for the record.
	Capacity = 1 << 20
	// MinVersion and MaxVersion bound the versions this graft reads.
	MinVersion = 1
	MaxVersion = 4
	// LayoutVersion is the first version whose body may lie elsewhere
	// than right after the header (at the offset the header names):
	// Encode writes it for a record whose body goes in the second half,
	// so an older graft refuses it by name instead of reading it as torn.
	LayoutVersion = 4
)

// ErrTorn is a record caught mid-write (length or CRC do not match); the
// caller reads again.
var ErrTorn = errors.New("record changed while read")

// ErrNeverWritten is a record mapping that is all zeros: created, then
// the apply was cut off before its pause wrote it.
var ErrNeverWritten = errors.New("record created but never written")

// FormatError is a record this graft does not understand.
type FormatError struct{ Msg string }

func (e *FormatError) Error() string { return e.Msg }

// ReadError is a failure to read the record's memory; Body tells whether
// it was the body (else the header).
type ReadError struct {
	Body bool
	Err  error
}

func (e *ReadError) Error() string { return e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// BodyOffset is where generation gen's body goes: right after the
// header for an even generation, in the second half for an odd one.
func BodyOffset(gen uint64) uint64 {
	if gen%2 == 1 {
		return Capacity / 2
	}
	return HeaderSize
}

// MaxBody is the largest body a record holds (a half, less the header).
const MaxBody = Capacity/2 - HeaderSize

// Encode frames body as record version ver, generation gen: the header
// followed by the body, which Write puts at BodyOffset(gen).
func Encode(body []byte, ver uint32, gen uint64) ([]byte, error) {
	if len(body) > MaxBody {
		return nil, fmt.Errorf("%d bytes exceed the record's capacity of %d (revert some patches)", len(body), MaxBody)
	}
	if BodyOffset(gen) != HeaderSize && ver < LayoutVersion {
		ver = LayoutVersion
	}
	buf := make([]byte, HeaderSize+len(body))
	copy(buf, Magic)
	le := binary.LittleEndian
	le.PutUint32(buf[8:], ver)
	le.PutUint32(buf[12:], HeaderSize)
	le.PutUint64(buf[16:], gen)
	le.PutUint64(buf[24:], uint64(len(body)))
	le.PutUint32(buf[32:], crc32.ChecksumIEEE(body))
	le.PutUint64(buf[40:], Capacity)
	le.PutUint64(buf[48:], BodyOffset(gen))
	copy(buf[HeaderSize:], body)
	return buf, nil
}

// WriterAt writes into the target's memory.
type WriterAt interface {
	WriteAt(b []byte, off int64) (int, error)
}

// Write puts an encoded record (Encode's bytes) at addr: the body at its
// offset first, then the header.
func Write(w WriterAt, addr uint64, buf []byte) error {
	if len(buf) < HeaderSize {
		return fmt.Errorf("record of %d bytes has no header", len(buf))
	}
	off := binary.LittleEndian.Uint64(buf[48:])
	if off < HeaderSize || off+uint64(len(buf)-HeaderSize) > Capacity {
		return fmt.Errorf("record body at offset %d does not fit", off)
	}
	if _, err := w.WriteAt(buf[HeaderSize:], int64(addr+off)); err != nil {
		return err
	}
	_, err := w.WriteAt(buf[:HeaderSize], int64(addr))
	return err
}

// Decode reads the record at addr through r and returns its body and
// generation.
func Decode(r io.ReaderAt, addr uint64) (body []byte, gen uint64, err error) {
	hdr := make([]byte, HeaderSize)
	if _, err := r.ReadAt(hdr, int64(addr)); err != nil {
		return nil, 0, &ReadError{Err: err}
	}
	ferr := func(format string, args ...any) error {
		return &FormatError{Msg: fmt.Sprintf(format, args...)}
	}
	if !bytes.Equal(hdr[:8], []byte(Magic)) {
		if bytes.Equal(hdr[:8], make([]byte, 8)) {
			return nil, 0, ErrNeverWritten
		}
		return nil, 0, ferr("bad magic %q", hdr[:8])
	}
	le := binary.LittleEndian
	if v := le.Uint32(hdr[8:]); v < MinVersion || v > MaxVersion {
		return nil, 0, ferr("record version %d, this graft reads versions %d to %d (written by a newer graft? use that one)", v, MinVersion, MaxVersion)
	}
	if hs := le.Uint32(hdr[12:]); hs != HeaderSize {
		return nil, 0, ferr("header size %d, want %d", hs, HeaderSize)
	}
	gen = le.Uint64(hdr[16:])
	n := le.Uint64(hdr[24:])
	capacity := le.Uint64(hdr[40:])
	if capacity < HeaderSize || capacity > Capacity {
		return nil, 0, ferr("capacity %d, records are %d to %d bytes", capacity, HeaderSize, Capacity)
	}
	off := le.Uint64(hdr[48:])
	if off == 0 {
		off = HeaderSize
	}
	if off < HeaderSize || off > capacity || n > capacity-off {
		return nil, 0, ErrTorn
	}
	body = make([]byte, n)
	if _, err := r.ReadAt(body, int64(addr+off)); err != nil {
		return nil, 0, &ReadError{Body: true, Err: err}
	}
	if crc32.ChecksumIEEE(body) != le.Uint32(hdr[32:]) {
		return nil, 0, ErrTorn
	}
	return body, gen, nil
}
