package graft

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"graft/internal/record"
	"graft/tracer"
)

// The in-target record ("graft-state").
//
// Every patch in effect is recorded inside the patched process itself, so a
// later graft invocation (status, revert, a stacked apply) learns what was
// done from the process and from nothing else. The record lives in a
// mapping of a memfd named "graft-state", which /proc/PID/maps shows as
// "/memfd:graft-state (deleted)"; that name is how it is found again. It is
// mapped PROT_READ and MAP_PRIVATE: the target cannot scribble on it by
// accident, graft writes it through /proc/PID/mem (which may write
// read-only private mappings), and a child forked by the target (ftpd forks
// a session process per client) keeps its own copy, which stays true for
// the child: the child keeps the patched text it inherited.
//
// Layout: a 64-byte header (magic, version, generation, length, CRC-32,
// capacity; internal/record frames and checks it) and a body that is a
// JSON document (State), the patches oldest first. Version 2, or 3 while a
// pending image is recorded; 1 is still read.
//
// The header and body are written with one pwrite on /proc/PID/mem while
// every thread of the target is stopped. A reader that does not stop the
// target (graft status) may race with that write; it checks the CRC and
// retries, so it never acts on a torn record.
//
// Version 2 added, per patch, what a later invocation needs to unwind
// through the patch's image and to stack a patch on it without the NEW
// binary (eh_frame*, symbols). A version-1 record (older graft) still
// reads: its patches lack those, and the NEW file is needed as before. A
// newer version is refused, never guessed at. Version 3 adds the pending
// images of reverted patches (pending.go); it is written only while there
// is one, so that an older graft refuses the record rather than take a
// pending image for an orphan. A patch's stay_at and carry (frames.go)
// are optional keys a version-2 reader ignores safely. Version 4 is the
// layout (internal/record): a record whose body lies in the mapping's
// second half (every other write, so that a killed writer leaves the
// previous record whole) is version 4, which an older graft refuses by
// name; the others keep 2 or 3.
//
// Bounds: the mapping is stateCapacity (1 MiB), a record half of it. A patch costs about 60
// bytes per recorded symbol and 200 per jump; an apply whose record would
// not fit is refused before its pause (nothing is changed), and reverting
// patches makes room.
const (
	stateName       = "graft-state"
	stateMapPrefix  = "/memfd:" + stateName
	stateVersion    = 3 // the newest content version; record.LayoutVersion above
	stateHeaderSize = record.HeaderSize
	// stateCapacity is the size of the mapping. memfd pages cost memory
	// only once written; a patch record is a few hundred bytes per
	// function, so 1 MiB holds thousands of patched functions.
	stateCapacity = record.Capacity
)

// State is everything graft has done to one process: the stack of patches
// in effect, oldest first.
type State struct {
	// Generation counts writes of the record.
	Generation uint64 `json:"-"`
	// Addr is where the record is mapped in the target (0: no record yet).
	Addr    uint64        `json:"-"`
	Patches []PatchRecord `json:"patches"`
	// Retained are reverted patches of a Go program whose images stay
	// mapped because their modules stay registered with the runtime.
	Retained []PatchRecord `json:"retained,omitempty"`
	// Pending are reverted patches whose image stays mapped while a
	// thread is still in it (pending.go); their jumps are gone.
	Pending []PatchRecord `json:"pending,omitempty"`
}

// PatchRecord is one applied patch as recorded in the target.
type PatchRecord struct {
	ID         string    `json:"id"`
	Applied    time.Time `json:"applied"`
	OldBuildID string    `json:"old_build_id"`
	NewBuildID string    `json:"new_build_id"`
	// Signer is who signed the patch file (principal and key
	// fingerprint), when a trust policy checked it.
	Signer *Signer `json:"signer,omitempty"`
	// Module is the build-id of the mapped module the patch redirects
	// functions of (the executable or a shared library), ModulePath its
	// path as mapped. Empty in records from before libraries could be
	// patched: those patched the executable.
	Module     string `json:"module,omitempty"`
	ModulePath string `json:"module_path,omitempty"`
	// NewPath is the NEW binary the patch came from, when it was on this
	// machine: what `graft apply --new` diffs a patch on top against, and
	// the fallback source of CFI and symbols for a patch recorded without
	// them (version-1 patch file).
	NewPath string `json:"new_path,omitempty"`
	// Base and Size are the mapping holding NEW's image in the target.
	Base uint64 `json:"base"`
	Size uint64 `json:"size"`
	// Exec are the executable ranges of the image (absolute addresses):
	// no thread may run there when the image is taken out.
	Exec []Range `json:"exec"`
	// Functions are the redirected functions and where their new
	// version lives.
	Functions []FuncRecord `json:"functions"`
	// Sites are the bytes graft overwrote: reverting writes Orig back.
	Sites []SiteRecord `json:"sites"`
	// Unloaded is set once every function of this patch was patched again
	// by a later patch and the image was unmapped (SupersededBy names the
	// patch that did it). Reverting that later patch then reverts this one
	// too: its code is gone.
	Unloaded bool `json:"unloaded,omitempty"`
	// Refs are the earlier patches whose images this patch's code points
	// into (their data or functions they added): those stay loaded.
	Refs         []string `json:"refs,omitempty"`
	SupersededBy string   `json:"superseded_by,omitempty"`
	// EhFrame, EhFrameSize, EhFrameHdr and EhFrameHdrSize locate NEW's
	// .eh_frame and .eh_frame_hdr in the image (link-time: add Base), so
	// any later invocation unwinds through the image from target memory.
	// Zero for a patch from a version-1 patch file.
	EhFrame        uint64 `json:"eh_frame,omitempty"`
	EhFrameSize    uint64 `json:"eh_frame_size,omitempty"`
	EhFrameHdr     uint64 `json:"eh_frame_hdr,omitempty"`
	EhFrameHdrSize uint64 `json:"eh_frame_hdr_size,omitempty"`
	// Symbols are NEW's symbols that live in the image: every function
	// that may run from it and every data object NEW added. A patch
	// stacked on this one finds them here by name; everything else NEW
	// refers to is the executable's. Empty for a patch from a version-1
	// patch file, whose NEW binary must then be on disk (NewPath).
	Symbols []SymRecord `json:"symbols,omitempty"`
	// GoModule is, for a patch of a Go program, the address of the
	// moduledata linked into the runtime's module list for the image:
	// the image stays mapped for good, even once reverted.
	GoModule uint64 `json:"go_module,omitempty"`
	// Transfers are the globals whose contents the patch converted
	// (transfer.go): what revert needs to convert them back.
	Transfers []TransferRecord `json:"transfers,omitempty"`
	// Switches are the frames the apply switched into the new code by
	// rewriting the return address their call will return to
	// (switchframes.go); revert puts back the ones still waiting.
	Switches []SwitchRecord `json:"switches,omitempty"`
	// SwitchArea is the image's room for switch code; Back the plans
	// that carry frames in the new code back to the old, per function
	// (link-time: From relative to Base, To to the set's Bias, where the
	// old copy of the function runs).
	SwitchArea *switchArea `json:"switch_area,omitempty"`
	Back       []BackSet   `json:"back,omitempty"`
	// StayAt are the resume addresses in the image's new code where a
	// frame may stay past a revert (proven by the resume analysis;
	// sorted, absolute).
	StayAt []uint64 `json:"stay_at,omitempty"`
	// Carry maps the proven return addresses of the copy of OLD this
	// patch was made from to the corresponding ones in its image: a
	// frame that stayed there is, for a later patch, a frame of NEW.
	Carry []CarryRecord `json:"carry,omitempty"`
}

// CarryRecord is one proven correspondence (absolute addresses).
type CarryRecord struct {
	From uint64 `json:"f"`
	To   uint64 `json:"t"`
}

// SymRecord is one NEW symbol living in a patch's image. The keys are
// short: a record holds many of them and has a fixed capacity.
type SymRecord struct {
	Name string `json:"n"`
	// File is a static's compile unit (STT_FILE base name).
	File string `json:"f,omitempty"`
	// Addr is the absolute address in the target.
	Addr uint64 `json:"a"`
	Size uint64 `json:"s"`
	// Data marks an object; otherwise a function.
	Data bool `json:"d,omitempty"`
}

// FuncRecord is one function a patch redirected.
type FuncRecord struct {
	Name string `json:"name"`
	// Entry is the function's entry in the running executable (0 for a
	// function that exists only in earlier patches' images).
	Entry uint64 `json:"entry"`
	// New and NewSize are this patch's version of the function.
	New     uint64 `json:"new"`
	NewSize uint64 `json:"new_size"`
}

// SiteRecord is one jump written by a patch.
type SiteRecord struct {
	Func string `json:"func"`
	Addr uint64 `json:"addr"`
	// Orig are the bytes at Addr before this patch wrote New: the
	// original code, or an earlier patch's jump.
	Orig HexBytes `json:"orig"`
	New  HexBytes `json:"new"`
	// Target is where the jump goes.
	Target uint64 `json:"target"`
}

// Range is a half-open address range [Start, End).
type Range struct {
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
}

// Contains reports whether addr is in r.
func (r Range) Contains(addr uint64) bool { return addr >= r.Start && addr < r.End }

// HexBytes marshals as a hex string, so records and --json output stay
// readable.
type HexBytes []byte

func (h HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// Top returns the newest patch, or nil.
func (s *State) Top() *PatchRecord {
	if s == nil || len(s.Patches) == 0 {
		return nil
	}
	return &s.Patches[len(s.Patches)-1]
}

// Find returns the patch with the given id and its index, or -1.
func (s *State) Find(id string) (*PatchRecord, int) {
	for i := range s.Patches {
		if s.Patches[i].ID == id {
			return &s.Patches[i], i
		}
	}
	return nil, -1
}

// StateFormatError reports a graft-state mapping that does not hold a
// record this graft understands.
type StateFormatError struct {
	Pid  int
	Addr uint64
	Msg  string
}

func (e *StateFormatError) Error() string {
	return fmt.Sprintf("graft record at %#x in pid %d: %s", e.Addr, e.Pid, e.Msg)
}

// encodeState serialises s (header and body) for a write at its address.
func encodeState(s *State, gen uint64) ([]byte, error) {
	body, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode graft record: %w", err)
	}
	// Version 3 only when it matters, so an older graft still reads
	// what it can handle and refuses the rest: pending images and the
	// images of reverted Go patches (retained: their modules stay
	// registered with the runtime), which a version-2 reader would not
	// see and revert --all would unmap as orphans; and patches that
	// converted state or registered a Go module, which a version-2 graft
	// would revert by restoring the jumps alone.
	ver := uint32(2)
	if len(s.Pending) > 0 || len(s.Retained) > 0 || slices.ContainsFunc(s.Patches, func(r PatchRecord) bool {
		return len(r.Transfers) > 0 || r.GoModule != 0
	}) {
		ver = stateVersion
	}
	buf, err := record.Encode(body, ver, gen)
	if err != nil {
		return nil, fmt.Errorf("encode graft record: %w", err)
	}
	return buf, nil
}

// errTorn is a record caught mid-write; the caller retries.
var errTorn = record.ErrTorn

// decodeState reads the record at addr through r.
func decodeState(r io.ReaderAt, pid int, addr uint64) (*State, error) {
	body, gen, err := record.Decode(r, addr)
	var fe *record.FormatError
	var re *record.ReadError
	switch {
	case errors.Is(err, record.ErrNeverWritten):
		// Created but never written: an apply was cut off between
		// creating the mapping and its pause.
		return &State{Addr: addr}, nil
	case errors.As(err, &re) && re.Body:
		return nil, fmt.Errorf("read graft record body at %#x in pid %d: %w", addr, pid, re.Err)
	case errors.As(err, &re):
		return nil, fmt.Errorf("read graft record at %#x in pid %d: %w", addr, pid, re.Err)
	case errors.As(err, &fe):
		return nil, &StateFormatError{Pid: pid, Addr: addr, Msg: fe.Msg}
	case err != nil:
		return nil, err // errTorn: the caller reads again
	}
	s := &State{}
	if err := json.Unmarshal(body, s); err != nil {
		return nil, &StateFormatError{Pid: pid, Addr: addr, Msg: fmt.Sprintf("body: %v", err)}
	}
	s.Generation = gen
	s.Addr = addr
	return s, nil
}

// findStateMapping returns the address of the graft-state mapping in maps,
// or 0.
func findStateMapping(maps []tracer.Mapping) uint64 {
	for _, m := range maps {
		if strings.HasPrefix(m.Path, stateMapPrefix) && m.Offset == 0 {
			return m.Start
		}
	}
	return 0
}

// readState reads the record of pid through r (the target's memory), with
// retries for a record caught mid-write. A process without a record yields
// an empty State with Addr 0.
func readState(r io.ReaderAt, pid int, maps []tracer.Mapping) (*State, error) {
	addr := findStateMapping(maps)
	if addr == 0 {
		return &State{}, nil
	}
	var err error
	for range 50 {
		var s *State
		s, err = decodeState(r, pid, addr)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errTorn) {
			return nil, err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil, (&StateFormatError{Pid: pid, Addr: addr, Msg: "record keeps changing or its checksum is wrong"})
}

// procMem opens /proc/PID/mem for reading without attaching: enough for
// status, which must not stop the target.
func procMem(pid int) (*os.File, error) {
	f, err := tracer.OpenMem(pid)
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", pid, err)
	}
	return f, nil
}

// createStateMapping makes the graft-state memfd mapping in the target with
// remote syscalls: a scratch page for the name, memfd_create, ftruncate,
// mmap, close. On failure it leaves nothing behind. Precondition: stopped.
func createStateMapping(p proc) (addr uint64, err error) {
	const page = 4096
	scratch, err := p.Mmap(0, page, tracer.ProtRead|tracer.ProtWrite, tracer.MapPrivate|tracer.MapAnonymous, -1, 0)
	if err != nil {
		return 0, fmt.Errorf("create graft record: map scratch page: %w", err)
	}
	defer func() {
		if uerr := p.Munmap(scratch, page); uerr != nil && err == nil {
			err = fmt.Errorf("create graft record: unmap scratch page: %w", uerr)
		}
	}()
	if _, err := p.WriteAt(append([]byte(stateName), 0), int64(scratch)); err != nil {
		return 0, fmt.Errorf("create graft record: write name: %w", err)
	}
	fd, err := tracer.CreateMemfd(p, scratch, stateCapacity)
	if err != nil {
		return 0, fmt.Errorf("create graft record: %w", err)
	}
	defer func() {
		if cerr := tracer.CloseFD(p, fd); cerr != nil && err == nil {
			err = fmt.Errorf("create graft record: close memfd %d: %w", fd, cerr)
		}
	}()
	addr, err = p.Mmap(0, stateCapacity, tracer.ProtRead, tracer.MapPrivate, int64(fd), 0)
	if err != nil {
		return 0, fmt.Errorf("create graft record: mmap: %w", err)
	}
	return addr, nil
}
