package elfpatch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Patch is what `graft diff -o` writes and `graft apply` reads: everything
// needed to update a process running OLD, without NEW at hand. The file
// layout is documented in FORMAT.md.
type Patch struct {
	// Version is the format version the patch was read with or will be
	// written as (PatchVersion).
	Version int `json:"version"`
	// OldBuildID binds the patch to the build it applies to; apply checks
	// it against /proc/PID/exe.
	OldBuildID string `json:"old_build_id"`
	NewBuildID string `json:"new_build_id"`
	// OldPath and NewPath are where the builds were read from, for people.
	OldPath string  `json:"old_path,omitempty"`
	NewPath string  `json:"new_path,omitempty"`
	Report  *Report `json:"report"`
	// Image is NEW's code and data with the relocation plan.
	Image *Image `json:"image"`
}

// PatchVersion is the format version WriteTo writes. Version 2 added the
// image's self-description (Image.EhFrame*, Image.Objects, Fixup.Name,
// File, SymAddr), keys a version-1 reader would reject; ReadPatch still
// reads version 1, whose images simply lack them.
//
// Version 3 added the state transformers (Report.Transfers, PtrSites) for
// globals whose layout changed, and each changed function's resume
// analysis (Func.Resume: where a frame may stay in OLD's code during an
// apply, in NEW's during a revert); a version-2 reader would reject the
// keys, and a version-2 file's frames in changed functions simply block.
const PatchVersion = 3

// minPatchVersion is the oldest format version ReadPatch reads.
const minPatchVersion = 1

// patchMagic starts every patch file.
var patchMagic = [8]byte{'G', 'R', 'A', 'F', 'T', 'P', 'C', 'H'}

const (
	headerSize = 8 + 4 + 4 + 8 + 32 // magic, version, flags, payload length, sha256
	// maxPayload bounds what ReadPatch accepts, so a corrupt length can
	// neither exhaust memory nor make it wait for data that never comes.
	maxPayload = 1 << 32

	recMeta    = 1 // JSON of Patch, segment data left out
	recSegment = 2 // one segment's file bytes, in Image.Segments order
)

// FormatError reports a malformed patch file with the offset of the
// problem.
type FormatError struct {
	Off int64
	Msg string
	Val any
}

func (e *FormatError) Error() string {
	msg := e.Msg
	if e.Val != nil {
		msg += fmt.Sprintf(" '%v'", e.Val)
	}
	return fmt.Sprintf("patch file: %s at offset %d", msg, e.Off)
}

// ErrRefused is returned (wrapped in a *RefusedError) by BuildPatch when
// the diff's verdict is refused and AllowRefused was not given.
var ErrRefused = errors.New("patch refused")

// RefusedError carries the report of a refused diff.
type RefusedError struct {
	Report *Report
}

func (e *RefusedError) Error() string {
	for _, r := range e.Report.Reasons {
		if r.Verdict == VerdictRefused {
			return fmt.Sprintf("build patch: refused: %s: %s", r.Symbol, r.Message)
		}
	}
	return "build patch: refused"
}

func (e *RefusedError) Unwrap() error { return ErrRefused }

// BuildOption changes what BuildPatch accepts.
type BuildOption func(*buildConfig)

type buildConfig struct {
	allowRefused bool
	rules        map[string]*Rules // operator's transformer rules (WithRules)
}

// AllowRefused makes BuildPatch return a patch even when the verdict is
// refused (to inspect it; apply still refuses it).
func AllowRefused() BuildOption { return func(c *buildConfig) { c.allowRefused = true } }

// BuildPatch diffs OLD and NEW and packs the result with NEW's image.
func BuildPatch(old, new *Binary, opts ...BuildOption) (*Patch, error) {
	var cfg buildConfig
	for _, o := range opts {
		o(&cfg)
	}
	r, err := DiffRules(old, new, cfg.rules)
	if err != nil {
		return nil, fmt.Errorf("build patch: %w", err)
	}
	if old.buildID == "" {
		return nil, fmt.Errorf("build patch: %s has no GNU build-id note; a patch must be bound to the build it applies to (link with -Wl,--build-id)", old.path)
	}
	if r.Verdict == VerdictRefused && !cfg.allowRefused {
		return nil, &RefusedError{Report: r}
	}
	im, err := PlanImage(old, new, r)
	if err != nil {
		if r.Verdict != VerdictRefused {
			return nil, fmt.Errorf("build patch: %w", err)
		}
		// A forced refused patch is for inspection: keep the report
		// and say why it carries no code.
		r.Warnings = append(r.Warnings, "no image: "+err.Error())
		im = &Image{}
	}
	p := &Patch{
		Version:    PatchVersion,
		OldBuildID: old.buildID,
		NewBuildID: new.buildID,
		OldPath:    old.path,
		NewPath:    new.path,
		Report:     r,
		Image:      im,
	}
	return p, nil
}

// WriteTo writes the patch file. Its output is a function of p alone.
func (p *Patch) WriteTo(w io.Writer) (int64, error) {
	var payload bytes.Buffer
	meta := *p
	meta.Version = PatchVersion
	var blobs [][]byte
	if p.Image != nil {
		im := *p.Image
		im.Segments = make([]Segment, len(p.Image.Segments))
		for i, s := range p.Image.Segments {
			blobs = append(blobs, s.Data)
			s.Data = nil
			im.Segments[i] = s
		}
		meta.Image = &im
	}
	js, err := json.Marshal(&meta)
	if err != nil {
		return 0, fmt.Errorf("write patch: encode metadata: %w", err)
	}
	writeRecord(&payload, recMeta, js)
	for _, b := range blobs {
		writeRecord(&payload, recSegment, b)
	}
	var hdr [headerSize]byte
	copy(hdr[:8], patchMagic[:])
	binary.LittleEndian.PutUint32(hdr[8:], PatchVersion)
	binary.LittleEndian.PutUint32(hdr[12:], 0)
	binary.LittleEndian.PutUint64(hdr[16:], uint64(payload.Len()))
	sum := sha256.Sum256(payload.Bytes())
	copy(hdr[24:], sum[:])
	n, err := w.Write(hdr[:])
	if err != nil {
		return int64(n), fmt.Errorf("write patch: %w", err)
	}
	m, err := w.Write(payload.Bytes())
	if err != nil {
		return int64(n + m), fmt.Errorf("write patch: %w", err)
	}
	return int64(n + m), nil
}

func writeRecord(w *bytes.Buffer, tag uint32, data []byte) {
	var h [12]byte
	binary.LittleEndian.PutUint32(h[0:], tag)
	binary.LittleEndian.PutUint64(h[4:], uint64(len(data)))
	w.Write(h[:])
	w.Write(data)
}

// ReadPatch reads and verifies a patch file: magic, version, the sha256 of
// the payload, the records and the metadata. Malformed input gives a
// *FormatError, never a panic.
func ReadPatch(r io.Reader) (p *Patch, err error) {
	defer func() {
		if rec := recover(); rec != nil {
			p, err = nil, &FormatError{Off: -1, Msg: fmt.Sprintf("malformed: %v", rec)}
		}
	}()
	var hdr [headerSize]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, &FormatError{Off: 0, Msg: "empty file"}
		}
		if n >= 8 && !bytes.Equal(hdr[:8], patchMagic[:]) {
			return nil, &FormatError{Off: 0, Msg: "bad magic (not a graft patch)", Val: fmt.Sprintf("%q", hdr[:8])}
		}
		return nil, &FormatError{Off: int64(n), Msg: "truncated header"}
	}
	if !bytes.Equal(hdr[:8], patchMagic[:]) {
		return nil, &FormatError{Off: 0, Msg: "bad magic (not a graft patch)", Val: fmt.Sprintf("%q", hdr[:8])}
	}
	version := binary.LittleEndian.Uint32(hdr[8:])
	if version < minPatchVersion || version > PatchVersion {
		return nil, &FormatError{Off: 8, Msg: fmt.Sprintf("unsupported format version (this graft reads %d to %d)", minPatchVersion, PatchVersion), Val: version}
	}
	if flags := binary.LittleEndian.Uint32(hdr[12:]); flags != 0 {
		return nil, &FormatError{Off: 12, Msg: "unknown flags", Val: flags}
	}
	size := binary.LittleEndian.Uint64(hdr[16:])
	if size > maxPayload {
		return nil, &FormatError{Off: 16, Msg: "payload length too large", Val: size}
	}
	// ReadAll grows the buffer as data arrives, so a lying length cannot
	// make us allocate it up front.
	payload, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	if uint64(len(payload)) != size {
		return nil, &FormatError{Off: headerSize + int64(len(payload)), Msg: fmt.Sprintf("truncated payload (%d of %d bytes)", len(payload), size)}
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], hdr[24:56]) {
		return nil, &FormatError{Off: 24, Msg: "sha256 mismatch (file corrupted)", Val: hex.EncodeToString(sum[:])}
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n > 0 {
		return nil, &FormatError{Off: headerSize + int64(size), Msg: "trailing data after payload"}
	}
	return parsePayload(payload, int(version))
}

func parsePayload(payload []byte, version int) (*Patch, error) {
	var meta []byte
	var segs [][]byte
	haveMeta := false
	for off := 0; off < len(payload); {
		recOff := int64(headerSize + off)
		if len(payload)-off < 12 {
			return nil, &FormatError{Off: recOff, Msg: "truncated record header"}
		}
		tag := binary.LittleEndian.Uint32(payload[off:])
		n := binary.LittleEndian.Uint64(payload[off+4:])
		off += 12
		if n > uint64(len(payload)-off) {
			return nil, &FormatError{Off: recOff, Msg: "record longer than payload", Val: n}
		}
		data := payload[off : off+int(n)]
		off += int(n)
		switch tag {
		case recMeta:
			if haveMeta {
				return nil, &FormatError{Off: recOff, Msg: "second metadata record"}
			}
			haveMeta, meta = true, data
		case recSegment:
			if !haveMeta {
				return nil, &FormatError{Off: recOff, Msg: "segment before metadata"}
			}
			segs = append(segs, data)
		default:
			return nil, &FormatError{Off: recOff, Msg: "unknown record", Val: tag}
		}
	}
	if !haveMeta {
		return nil, &FormatError{Off: headerSize, Msg: "no metadata record"}
	}
	var p Patch
	dec := json.NewDecoder(bytes.NewReader(meta))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, &FormatError{Off: headerSize + 12, Msg: "bad metadata: " + err.Error()}
	}
	if err := p.validate(version, segs); err != nil {
		return nil, err
	}
	return &p, nil
}

// validate checks what apply relies on, so a file that passes is safe to
// act on structurally (sizes, counts, ids); semantics are apply's.
func (p *Patch) validate(version int, segs [][]byte) error {
	bad := func(msg string, val any) error { return &FormatError{Off: headerSize + 12, Msg: msg, Val: val} }
	if p.Version != version {
		return bad("metadata version differs from header", p.Version)
	}
	if p.OldBuildID == "" {
		return bad("no old build-id", nil)
	}
	if _, err := hex.DecodeString(p.OldBuildID); err != nil {
		return bad("old build-id is not hex", p.OldBuildID)
	}
	if p.Report == nil {
		return bad("no report", nil)
	}
	switch p.Report.Verdict {
	case VerdictAuto, VerdictTransformer, VerdictRefused:
	default:
		return bad("unknown verdict", p.Report.Verdict)
	}
	if p.Image == nil {
		p.Image = &Image{}
	}
	if len(segs) != len(p.Image.Segments) {
		return bad(fmt.Sprintf("%d segment records for %d segments", len(segs), len(p.Image.Segments)), nil)
	}
	for i := range p.Image.Segments {
		s := &p.Image.Segments[i]
		if s.Data != nil {
			return bad("segment data inside metadata", i)
		}
		if uint64(len(segs[i])) > s.Memsz {
			return bad(fmt.Sprintf("segment %d: %d bytes of data for memsz %d", i, len(segs[i]), s.Memsz), nil)
		}
		if s.Vaddr+s.Memsz < s.Vaddr || (p.Image.Size > 0 && s.Vaddr+s.Memsz > p.Image.Size) {
			return bad(fmt.Sprintf("segment %d: [0x%x, +0x%x) outside the image size 0x%x", i, s.Vaddr, s.Memsz, p.Image.Size), nil)
		}
		if s.Prot&^7 != 0 {
			return bad(fmt.Sprintf("segment %d: bad protection", i), s.Prot)
		}
		s.Data = segs[i]
	}
	im := p.Image
	for _, r := range [][3]any{{"eh_frame", im.EhFrame, im.EhFrameSize}, {"eh_frame_hdr", im.EhFrameHdr, im.EhFrameHdrSize}} {
		name, addr, size := r[0].(string), r[1].(uint64), r[2].(uint64)
		if addr+size < addr || (size > 0 && addr+size > im.Size) {
			return bad(fmt.Sprintf("%s [0x%x, +0x%x) outside the image size 0x%x", name, addr, size, im.Size), nil)
		}
	}
	if version < 2 && (im.EhFrameSize > 0 || len(im.Objects) > 0) {
		return bad("version-1 patch with version-2 image keys", version)
	}
	if version < 3 && (len(p.Report.Transfers) > 0 || len(p.Report.PtrSites) > 0) {
		return bad("version-2 patch with state transformers (version-3 keys)", version)
	}
	for _, t := range p.Report.Transfers {
		if t.OldSize == 0 || t.NewSize == 0 || t.OldSize > 1<<30 || t.NewSize > 1<<30 {
			return bad("transfer "+t.Name+": implausible object size", t.NewSize)
		}
		for _, ops := range [][]XferOp{t.Ops, t.Reverse} {
			for _, op := range ops {
				if op.Src+op.SrcSize < op.Src || op.Dst+op.DstSize < op.Dst || op.SrcSize > 1<<30 || op.DstSize > 1<<30 {
					return bad("transfer "+t.Name+": operation out of range", op.Path)
				}
			}
		}
	}
	return nil
}
