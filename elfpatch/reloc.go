package elfpatch

import (
	"encoding/binary"
	"fmt"
	"math"
)

// LinkError reports a field Link could not fill.
type LinkError struct {
	Off    uint64 // NEW's vaddr of the field
	Symbol string
	Err    error
}

func (e *LinkError) Error() string {
	if e.Symbol != "" {
		return fmt.Sprintf("link image: field at new 0x%x (%s): %v", e.Off, e.Symbol, e.Err)
	}
	return fmt.Sprintf("link image: field at new 0x%x: %v", e.Off, e.Err)
}

func (e *LinkError) Unwrap() error { return e.Err }

// Link returns the final bytes of every segment (in im.Segments order,
// each Memsz long: file bytes, then the zeroed .bss tail) for an image
// mapped so that NEW's vaddr 0 is at newBase, in a process whose OLD
// executable has load bias oldBias. resolve gives the runtime address of
// an imported symbol (0 for an absent weak one). Link is pure: it never
// touches a process, so the controller can run it, and fail, before
// anything is written.
func (im *Image) Link(newBase, oldBias uint64, resolve func(Import) (uint64, error)) ([][]byte, error) {
	if newBase%planPageSize != 0 {
		return nil, fmt.Errorf("link image: base 0x%x is not page-aligned", newBase)
	}
	if err := im.Check(); err != nil {
		return nil, fmt.Errorf("link image: %w", err)
	}
	out := make([][]byte, len(im.Segments))
	for i, s := range im.Segments {
		b := make([]byte, s.Memsz)
		copy(b, s.Data)
		out[i] = b
	}
	field := func(off uint64, n uint64, sym string) ([]byte, error) {
		for i, s := range im.Segments {
			if off >= s.Vaddr && off+n <= s.Vaddr+s.Memsz && off+n > off {
				return out[i][off-s.Vaddr : off-s.Vaddr+n], nil
			}
		}
		return nil, &LinkError{Off: off, Symbol: sym, Err: fmt.Errorf("%d-byte field lies outside every segment", n)}
	}
	for _, r := range im.Relatives {
		b, err := field(r.Off, 8, "")
		if err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint64(b, newBase+r.Addend)
	}
	for _, f := range im.Fixups {
		switch f.Kind {
		case FixupPC32:
			b, err := field(f.Off, 4, f.Symbol)
			if err != nil {
				return nil, err
			}
			d := int64(oldBias+f.Target) - int64(newBase+f.PCNext)
			if d < math.MinInt32 || d > math.MaxInt32 {
				return nil, &LinkError{Off: f.Off, Symbol: f.Symbol, Err: fmt.Errorf("old 0x%x is %d bytes from the new code: beyond the ±2 GiB a 32-bit displacement reaches", oldBias+f.Target, d)}
			}
			binary.LittleEndian.PutUint32(b, uint32(int32(d)))
		case FixupAbs64:
			b, err := field(f.Off, 8, f.Symbol)
			if err != nil {
				return nil, err
			}
			binary.LittleEndian.PutUint64(b, oldBias+f.Target)
		default:
			return nil, &LinkError{Off: f.Off, Symbol: f.Symbol, Err: fmt.Errorf("unknown fixup kind %q", f.Kind)}
		}
	}
	for _, imp := range im.Imports {
		b, err := field(imp.Off, 8, imp.Symbol)
		if err != nil {
			return nil, err
		}
		if resolve == nil {
			return nil, &LinkError{Off: imp.Off, Symbol: imp.Symbol, Err: fmt.Errorf("no resolver for imported symbols")}
		}
		addr, err := resolve(imp)
		if err != nil {
			return nil, &LinkError{Off: imp.Off, Symbol: imp.Symbol, Err: err}
		}
		v := addr
		if addr != 0 || !imp.Weak {
			v = addr + uint64(imp.Addend)
		}
		binary.LittleEndian.PutUint64(b, v)
	}
	return out, nil
}

// MaxImageSize bounds Image.Size: an image comes from a patch file, which
// may be damaged or hostile, and sizes drive allocations.
const MaxImageSize = 1 << 30

// Check reports whether the image is self-consistent: a page-rounded Size
// within MaxImageSize, every segment inside it with no more file bytes
// than memory, no two segments overlapping.
func (im *Image) Check() error {
	if im.Size == 0 || im.Size%planPageSize != 0 || im.Size > MaxImageSize {
		return fmt.Errorf("bad image size 0x%x", im.Size)
	}
	for i, s := range im.Segments {
		if s.Memsz == 0 || s.Vaddr > im.Size || s.Memsz > im.Size-s.Vaddr {
			return fmt.Errorf("segment %d at 0x%x (0x%x bytes) outside the image of 0x%x bytes", i, s.Vaddr, s.Memsz, im.Size)
		}
		if uint64(len(s.Data)) > s.Memsz {
			return fmt.Errorf("segment at 0x%x: %d file bytes exceed memsz 0x%x", s.Vaddr, len(s.Data), s.Memsz)
		}
		if s.Prot&^7 != 0 {
			return fmt.Errorf("segment at 0x%x: bad protection %d", s.Vaddr, s.Prot)
		}
		for _, t := range im.Segments[:i] {
			if s.Vaddr < t.Vaddr+t.Memsz && t.Vaddr < s.Vaddr+s.Memsz {
				return fmt.Errorf("segments at 0x%x and 0x%x overlap", t.Vaddr, s.Vaddr)
			}
		}
	}
	return nil
}

// Pages returns the page-aligned span [start, end) of NEW's vaddrs the
// segment occupies. Two segments never share a page in ld's default
// layout; a loader that meets one that does must merge protections.
func (s Segment) Pages() (start, end uint64) {
	return s.Vaddr &^ (planPageSize - 1), (s.Vaddr + s.Memsz + planPageSize - 1) &^ (planPageSize - 1)
}
