package elfpatch

// Image is the part of NEW that apply maps into the target, together with
// the relocation plan that makes the new code use the target's existing
// state (one copy of every global) instead of NEW's own copies.
//
// Addresses here are link-time virtual addresses: "new" ones are NEW's
// (a PIE linked at 0), "old" ones are OLD's. Apply adds the chosen mapping
// base of the new image and OLD's load bias in the target.
//
// The scheme (DESIGN.md, "Loading new code"): NEW's loadable segments are
// mapped whole as a second image, so its string literals, jump tables and
// calls between new functions work untouched. Every reference from code
// that may run (changed and added functions) to a symbol that also exists
// in OLD is rewritten to OLD's copy: globals, .bss, COPY-relocated libc
// data, and unchanged functions (which keeps function-pointer identity and
// makes a call to a function patched again later reach its newest version
// through OLD's trampoline). NEW's GOT entries are resolved against the
// libraries already loaded in the target.
type Image struct {
	// Segments are NEW's PT_LOAD segments.
	Segments []Segment `json:"segments"`
	// Size is the span to reserve: the end of the highest segment,
	// rounded up to the page size.
	Size uint64 `json:"size"`
	// Redirects are the jumps to write: OLD's entry to NEW's function.
	Redirects []Redirect `json:"redirects"`
	// Fixups are fields in NEW that must point at OLD's copy of a symbol.
	Fixups []Fixup `json:"fixups"`
	// Imports are NEW's GOT slots to fill with addresses of symbols from
	// the target's loaded libraries.
	Imports []Import `json:"imports"`
	// Relatives are NEW's R_X86_64_RELATIVE relocations (pointers inside
	// NEW's data to NEW's own addresses).
	Relatives []Relative `json:"relatives"`
	// Runs are all NEW functions that may execute from the image: the
	// redirected and added ones, their .cold parts, and the NEW copies
	// of functions they reach directly (a new clone, a neighbour reached
	// by a 2-byte tail jump). A later patch that replaces one of these by
	// name must redirect this copy too.
	Runs []RunFunc `json:"runs,omitempty"`
	// RelroStart and RelroEnd are NEW's PT_GNU_RELRO range (zero if none):
	// data the dynamic linker write-protects once relocated (.got,
	// .data.rel.ro, .init_array). The loader maps its whole pages
	// read-only, as ld.so does.
	RelroStart uint64 `json:"relro_start,omitempty"`
	RelroEnd   uint64 `json:"relro_end,omitempty"`
	// EhFrame and EhFrameSize are NEW's .eh_frame section (link-time
	// vaddr and size; zero if NEW has none), EhFrameHdr and
	// EhFrameHdrSize its .eh_frame_hdr. Both lie inside NEW's PT_LOAD
	// segments, so they are mapped with the image: an unwinder reads the
	// CFI of the loaded code from the target's memory, without NEW's file.
	EhFrame        uint64 `json:"eh_frame,omitempty"`
	EhFrameSize    uint64 `json:"eh_frame_size,omitempty"`
	EhFrameHdr     uint64 `json:"eh_frame_hdr,omitempty"`
	EhFrameHdrSize uint64 `json:"eh_frame_hdr_size,omitempty"`
	// Objects are NEW's writable data objects that OLD does not have
	// (globals and statics NEW added): they live in the image,
	// initialised from NEW's data. Together with Runs they are every NEW
	// symbol a later patch (built against NEW) may have to reach in the
	// image.
	Objects []Object `json:"objects,omitempty"`
}

// Object is one NEW data object that lives in the image.
type Object struct {
	Name string `json:"name"`
	// File is the compile unit of a static ("" for a global).
	File string `json:"file,omitempty"`
	New  uint64 `json:"new"`
	Size uint64 `json:"size"`
}

// RunFunc is one NEW function that may execute from the image.
type RunFunc struct {
	Name string `json:"name"`
	// File is the compile unit of a static function ("" for a global).
	File string `json:"file,omitempty"`
	New  uint64 `json:"new"`
	Size uint64 `json:"size"`
}

// Segment is one PT_LOAD segment of NEW.
type Segment struct {
	Vaddr uint64 `json:"vaddr"`
	Memsz uint64 `json:"memsz"`
	// Prot is PROT_READ(1)|PROT_WRITE(2)|PROT_EXEC(4) from the segment flags.
	Prot int `json:"prot"`
	// Data is the segment's file contents (p_filesz bytes); the rest up to
	// Memsz is zero (.bss).
	Data []byte `json:"data"`
}

// Redirect replaces the function at OLD's Old by NEW's function at New.
type Redirect struct {
	Name    string `json:"name"`
	Old     uint64 `json:"old"`
	OldSize uint64 `json:"old_size"`
	New     uint64 `json:"new"`
	NewSize uint64 `json:"new_size"`
}

// FixupKind says how a Fixup's field is encoded.
type FixupKind string

const (
	// FixupPC32 is a 32-bit signed displacement relative to the end of the
	// instruction (RIP-relative operand, call/jmp rel32):
	// field = (oldBias + Target) - (newBase + PCNext).
	FixupPC32 FixupKind = "pc32"
	// FixupAbs64 is an absolute 64-bit address: field = oldBias + Target.
	FixupAbs64 FixupKind = "abs64"
)

// Fixup is one field in NEW rewritten to point into OLD.
type Fixup struct {
	// Off is NEW's vaddr of the field.
	Off  uint64    `json:"off"`
	Kind FixupKind `json:"kind"`
	// PCNext is NEW's vaddr of the end of the instruction (FixupPC32 only).
	PCNext uint64 `json:"pc_next,omitempty"`
	// Target is OLD's vaddr the field must reach (symbol plus addend).
	Target uint64 `json:"target"`
	// Symbol names what the field refers to, for messages.
	Symbol string `json:"symbol"`
	// Name, File and SymAddr identify OLD's symbol holding Target: its
	// bare name, its compile unit for a static, and its link-time
	// address (Target-SymAddr is the offset into it). A patch stacked on
	// an earlier one (OLD is then that patch's NEW, partly living in its
	// image) maps Target to the live copy by this name alone, without
	// OLD's file. Empty when no OLD symbol holds Target.
	Name    string `json:"name,omitempty"`
	File    string `json:"file,omitempty"`
	SymAddr uint64 `json:"sym_addr,omitempty"`
}

// Import is one 8-byte slot in NEW (GOT entry) to fill at apply time with
// the address of a symbol exported by a library loaded in the target.
type Import struct {
	Off     uint64 `json:"off"`
	Symbol  string `json:"symbol"`
	Version string `json:"version,omitempty"`
	Addend  int64  `json:"addend,omitempty"`
	Weak    bool   `json:"weak,omitempty"`
	// Call is set for a PLT slot (R_X86_64_JUMP_SLOT): the program only
	// ever calls through it, so any entry that ends up in the function
	// will do, including OLD's own PLT stub that resolves lazily.
	Call bool `json:"call,omitempty"`
	// TLSModule marks a field (R_X86_64_DTPMOD64) that must hold OLD's
	// own TLS module ID, which the dynamic linker chose at load time; the
	// loader reads it from one of OLD's fields of the same kind. Symbol
	// is empty. (A reader that does not know the field sees an import of
	// no symbol and refuses it: never a wrong value.)
	TLSModule bool `json:"tls_module,omitempty"`
}

// Relative is an R_X86_64_RELATIVE relocation in NEW:
// *(newBase+Off) = newBase + Addend.
type Relative struct {
	Off    uint64 `json:"off"`
	Addend uint64 `json:"addend"`
}
