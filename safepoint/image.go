package safepoint

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/go-delve/delve/pkg/dwarf/frame"

	"graft/tracer"
)

// Image is code mapped into the target that has no file of its own to
// read CFI from: a patch's NEW image, loaded by graft, whose NEW binary
// need not exist on this machine. Its CFI is NEW's .eh_frame, which lies
// inside NEW's loadable segments and so is mapped with the image; the
// unwinder reads it from the target's memory, the way it reads the vDSO.
type Image struct {
	// Name is what frames in the image show as their Module.
	Name string
	// Base is where link-time address 0 is mapped (NEW is PIE), Size the
	// length of the mapping.
	Base, Size uint64
	// EhFrame and EhFrameSize locate .eh_frame (link-time); EhFrameHdr and
	// EhFrameHdrSize locate .eh_frame_hdr, used only to check that the
	// bytes read really are that image's CFI (zero: no check).
	EhFrame, EhFrameSize       uint64
	EhFrameHdr, EhFrameHdrSize uint64
	// Symbols name the image's functions (link-time addresses): the
	// patch's functions are all a frame in the image can be in.
	Symbols []Symbol
}

// Symbol is one named function at a link-time address.
type Symbol struct {
	Name string
	Addr uint64
	Size uint64
}

// maxEhFrame bounds what is read from the target for one image.
const maxEhFrame = 64 << 20

// NewUnwinderImages is NewUnwinder plus images mapped without a file: their
// CFI is read from the target's memory on first use, or at once by Preload
// (call it before a pause, while the target runs). An image without
// .eh_frame makes stacks passing through it incomplete, never safe.
func NewUnwinderImages(mods []tracer.Module, images []Image) (*Unwinder, error) {
	return ForProcessImages(0, mods, images)
}

// ForProcessImages is NewUnwinderImages for the modules of pid, opened
// through the target's own view of the file system as ForProcess does
// (pid 0: by path, as NewUnwinder does).
func ForProcessImages(pid int, mods []tracer.Module, images []Image) (*Unwinder, error) {
	u := &Unwinder{}
	if len(mods) > 0 || len(images) == 0 {
		var err error
		if u, err = newUnwinder(pid, mods); err != nil {
			return nil, err
		}
	}
	for _, im := range images {
		md := tracer.Module{
			Path: im.Name, Base: im.Base, Bias: im.Base,
			Mappings: []tracer.Mapping{{Start: im.Base, End: im.Base + im.Size, Perms: "r-xp", Path: im.Name}},
		}
		m := &module{mod: md, name: im.Name, lazy: true}
		img := im
		m.image = &img
		if len(im.Symbols) > 0 {
			m.own = append([]Symbol(nil), im.Symbols...)
			sort.Slice(m.own, func(i, j int) bool { return m.own[i].Addr < m.own[j].Addr })
		}
		// Images are searched first: an image mapped over a hole of a
		// module's span (it never is, but the loader picks the place)
		// must not be taken for that module.
		u.mods = append([]*module{m}, u.mods...)
	}
	return u, nil
}

// loadImage reads an image's .eh_frame from target memory and parses it
// like a file's (parseEhFrame).
func (m *module) loadImage(mem Memory) error {
	im := m.image
	if im.EhFrameSize == 0 {
		return fmt.Errorf("load CFI of image %s at %#x: the patch records no .eh_frame (a version-1 patch file?)", im.Name, im.Base)
	}
	if im.EhFrameSize > maxEhFrame || im.EhFrame+im.EhFrameSize > im.Size || im.EhFrame+im.EhFrameSize < im.EhFrame {
		return fmt.Errorf("load CFI of image %s at %#x: .eh_frame [%#x, +%#x) outside the image", im.Name, im.Base, im.EhFrame, im.EhFrameSize)
	}
	if im.EhFrameHdrSize >= 8 && im.EhFrameHdr+8 <= im.Size {
		var hdr [8]byte
		if _, err := mem.ReadAt(hdr[:], int64(im.Base+im.EhFrameHdr)); err != nil {
			return fmt.Errorf("load CFI of image %s: read .eh_frame_hdr at %#x: %w", im.Name, im.Base+im.EhFrameHdr, err)
		}
		// version 1, eh_frame_ptr encoded DW_EH_PE_pcrel|sdata4: it must
		// point at the recorded .eh_frame, else the bytes are not this
		// image's (wrong base, or the image was replaced).
		if hdr[0] == 1 && hdr[1] == 0x1b {
			ptr := im.EhFrameHdr + 4 + uint64(int64(int32(binary.LittleEndian.Uint32(hdr[4:]))))
			if ptr != im.EhFrame {
				return fmt.Errorf("load CFI of image %s: .eh_frame_hdr at %#x points at %#x, not at .eh_frame %#x", im.Name, im.Base+im.EhFrameHdr, ptr, im.EhFrame)
			}
		}
	}
	data := make([]byte, im.EhFrameSize)
	if _, err := mem.ReadAt(data, int64(im.Base+im.EhFrame)); err != nil {
		return fmt.Errorf("load CFI of image %s: read .eh_frame at %#x: %w", im.Name, im.Base+im.EhFrame, err)
	}
	fdes, err := parseEhFrame(data, im.EhFrame)
	if err != nil {
		return fmt.Errorf("load CFI of image %s at %#x: %w", im.Name, im.Base, err)
	}
	if len(fdes) == 0 {
		return fmt.Errorf("load CFI of image %s at %#x: .eh_frame holds no FDE", im.Name, im.Base)
	}
	sort.SliceStable(fdes, func(i, j int) bool { return fdes[i].Begin() < fdes[j].Begin() })
	m.fdes = fdes
	return nil
}

// parseEhFrame parses .eh_frame bytes found at link-time address addr (for
// pc-relative pointers). delve's parser may panic on malformed input.
func parseEhFrame(data []byte, addr uint64) (fdes frame.FrameDescriptionEntries, err error) {
	defer func() {
		if x := recover(); x != nil {
			fdes, err = nil, fmt.Errorf(".eh_frame: malformed CFI: %v", x)
		}
	}()
	fdes, err = frame.Parse(data, binary.LittleEndian, 0, 8, addr)
	if err != nil {
		return nil, fmt.Errorf(".eh_frame: %w", err)
	}
	return fdes, nil
}

// ownSymbol names the link-time address addr from an image's own list.
func (m *module) ownSymbol(addr uint64) (string, bool) {
	i := sort.Search(len(m.own), func(i int) bool { return m.own[i].Addr > addr }) - 1
	for ; i >= 0; i-- {
		s := m.own[i]
		if addr >= s.Addr && (addr < s.Addr+s.Size || s.Size == 0 && addr == s.Addr) {
			return s.Name, true
		}
		if addr-s.Addr > 1<<24 {
			break
		}
	}
	return "", false
}
