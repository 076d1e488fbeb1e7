package elfpatch

// Planning the image (DESIGN.md, "Loading new code").
//
// NEW, a PIE, is mapped whole as a second image next to the running OLD.
// Code inside it keeps working untouched wherever it refers to NEW's own
// read-only bytes (string literals, jump and switch tables, constants,
// .data.rel.ro), to NEW's PLT and GOT, or to functions and globals only
// NEW has. Everything else must be redirected to OLD, because the process
// must keep one copy of its state and one address per function:
//
//   - the run set is the NEW functions that may execute: the changed and
//     added ones, their compiler-split .cold parts, and, transitively,
//     every NEW-only function they reach (new helpers, new .constprop or
//     .isra clones) by call, jump, address or data pointer;
//   - every instruction of the run set is decoded (x86asm); each rel32 or
//     RIP-relative disp32 whose target is a writable global OLD also has
//     (matched by name, and by compile unit for statics, via the STT_FILE
//     entries that precede them) becomes a FixupPC32 to OLD's copy at the
//     same offset; a differing size is refused (a layout change). A call
//     or jump to another run-set function stays in NEW; any other
//     function OLD has resolves to OLD's entry (one identity per function;
//     a changed one reaches NEW again through OLD's trampoline). A rel8
//     branch must stay within the run set;
//   - NEW's dynamic relocations: GOT slots and R_X86_64_64 fields for
//     symbols from libraries become Imports; RELATIVE relocations (and
//     slots for symbols NEW defines) become Relatives, unless they point
//     at something OLD has, which makes them Abs64 fixups to OLD's copy;
//     COPY relocations are dropped (code points at OLD's copy, the one
//     the libraries use); TLS and IRELATIVE relocations are refused.
//
// The result is sorted by address and depends on nothing but the two
// files and the function lists.

import (
	"debug/elf"
	"errors"
	"fmt"
	"sort"
)

// PlanFunc names one function of a plan: a changed function (both sides
// set) or an added one (OLD side zero). It carries what Diff reports.
type PlanFunc struct {
	Name string
	// File is the compile unit of a static function ("" for a global).
	File             string
	Local            bool
	OldAddr, OldSize uint64
	NewAddr, NewSize uint64
}

// ErrNotPIE is returned when NEW is not position independent.
var ErrNotPIE = errors.New("new build is not a position-independent executable (build it with -fPIE -pie, the gcc default)")

// ErrOldNotPIE is returned when OLD, the build that runs, is not position
// independent: graft patches PIE programs only.
var ErrOldNotPIE = errors.New("old build is not a position-independent executable")

// PlanError reports a reference the loader cannot make safe, naming the
// function it was found in and the symbol it reaches.
type PlanError struct {
	Func   string // NEW function holding the reference, "" for data
	Addr   uint64 // NEW vaddr of the reference
	Symbol string // what it refers to
	Reason string
}

func (e *PlanError) Error() string {
	where := fmt.Sprintf("new 0x%x", e.Addr)
	if e.Func != "" {
		where = fmt.Sprintf("%s (new 0x%x)", e.Func, e.Addr)
	}
	if e.Symbol != "" {
		return fmt.Sprintf("prepare the new code: %s: reference to %s: %s", where, e.Symbol, e.Reason)
	}
	return fmt.Sprintf("prepare the new code: %s: %s", where, e.Reason)
}

// planner holds the state of one PlanELF run.
type planner struct {
	old, new   *elf.File
	oldSyms    *symtab
	newSyms    *symtab
	sects      []*elf.Section // NEW's allocated sections, by address
	relroStart uint64
	relroEnd   uint64
	im         *Image
	// run is the set of NEW functions that may execute: changed, added,
	// their cold parts, and NEW-only functions they reach.
	run       map[*psym]bool
	queue     []*psym
	coldParts map[string][]*psym // parent name -> its .cold parts
	// copied holds NEW's R_X86_64_COPY destinations (libc data such as
	// stderr that the executable owns a copy of).
	copied map[uint64]string
	fixed  map[uint64]bool // fields already given a fixup
	// xfer are the globals whose contents a transformer converts, by
	// NEW address (transform.go): in place ones are reached at OLD's
	// address despite their new size, moved ones stay in NEW's image.
	xfer map[uint64]*Transfer
}

// PlanELF computes the Image that loads NEW's changed and added functions
// into a process running OLD. It is pure: the same files and lists give
// the same Image, byte for byte.
func PlanELF(old, new *elf.File, changed, added []PlanFunc) (im *Image, err error) {
	return planELF(old, new, changed, added, nil)
}

func planELF(old, new *elf.File, changed, added []PlanFunc, xfer []Transfer) (im *Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			im, err = nil, fmt.Errorf("prepare the new code: malformed ELF: %v", r)
		}
	}()
	if new.Type != elf.ET_DYN {
		return nil, fmt.Errorf("prepare the new code: %w (ELF type %v)", ErrNotPIE, new.Type)
	}
	// A PIE NEW against a non-PIE OLD is not a patch of the same build
	// configuration: every function differs (_start, main, ...), so apply
	// would wait for a safe point that never comes, the process stopped
	// again and again meanwhile.
	if old.Type != elf.ET_DYN {
		return nil, fmt.Errorf("prepare the new code: %w: old build (the running program) has ELF type %v, new %v; rebuild both the same way", ErrOldNotPIE, old.Type, new.Type)
	}
	if new.Machine != elf.EM_X86_64 || old.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("prepare the new code: only x86-64 is supported (old %v, new %v)", old.Machine, new.Machine)
	}
	p := &planner{
		old: old, new: new,
		im:        &Image{},
		run:       map[*psym]bool{},
		coldParts: map[string][]*psym{},
		copied:    map[uint64]string{},
		fixed:     map[uint64]bool{},
		xfer:      map[uint64]*Transfer{},
	}
	for i := range xfer {
		p.xfer[xfer[i].NewAddr] = &xfer[i]
	}
	if p.oldSyms, err = newSymtab(old); err != nil {
		return nil, fmt.Errorf("prepare the new code: read old symbols: %w (a stripped build cannot be patched)", err)
	}
	if p.newSyms, err = newSymtab(new); err != nil {
		return nil, fmt.Errorf("prepare the new code: read new symbols: %w (a stripped build cannot be patched)", err)
	}
	if err := p.segments(); err != nil {
		return nil, err
	}
	if err := p.checkTLS(); err != nil {
		return nil, err
	}
	for _, s := range p.newSyms.syms {
		if isFuncSym(s) {
			if parent := coldParent(s.name); parent != "" {
				p.coldParts[parent] = append(p.coldParts[parent], s)
			}
		}
	}
	if err := p.seed(changed, added); err != nil {
		return nil, err
	}
	// Dynamic relocations first: a pointer in NEW's data to a NEW-only
	// function makes that function reachable, so it joins the run set
	// before the code walk.
	if err := p.dynamic(); err != nil {
		return nil, err
	}
	for len(p.queue) > 0 {
		f := p.queue[0]
		p.queue = p.queue[1:]
		if err := p.code(f); err != nil {
			return nil, err
		}
	}
	for f := range p.run {
		p.im.Runs = append(p.im.Runs, RunFunc{Name: f.name, File: f.key.cu, New: f.value, Size: f.size})
	}
	p.selfDescribe()
	p.sortImage()
	return p.im, nil
}

// selfDescribe records what a process running the image needs to know of
// NEW without NEW's file: where NEW's CFI lies in the image (to unwind
// through the loaded code), which data objects live only in the image, and
// the OLD symbol behind every fixup (so a patch stacked on this one can
// reach them by name). See Image.EhFrame, Image.Objects, Fixup.Name.
func (p *planner) selfDescribe() {
	inSegment := func(addr, size uint64) bool {
		for _, seg := range p.im.Segments {
			if addr >= seg.Vaddr && addr+size <= seg.Vaddr+uint64(len(seg.Data)) {
				return true
			}
		}
		return false
	}
	sect := func(name string) (uint64, uint64) {
		s := p.new.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 || !inSegment(s.Addr, s.Size) {
			return 0, 0
		}
		return s.Addr, s.Size
	}
	p.im.EhFrame, p.im.EhFrameSize = sect(".eh_frame")
	p.im.EhFrameHdr, p.im.EhFrameHdrSize = sect(".eh_frame_hdr")

	seen := map[uint64]bool{}
	for _, s := range p.newSyms.syms {
		if s.typ != elf.STT_OBJECT || s.size == 0 || seen[s.value] {
			continue
		}
		if sec := p.section(s.value); sec == nil || sec.Flags&elf.SHF_WRITE == 0 || sec.Flags&elf.SHF_TLS != 0 || p.readOnly(s.value) {
			continue
		}
		if matchOld(p.oldSyms, p.newSyms, s) != nil && !p.moved(s) {
			continue
		}
		seen[s.value] = true
		p.im.Objects = append(p.im.Objects, Object{Name: s.key.name, File: s.key.cu, New: s.value, Size: s.size})
	}
	sort.Slice(p.im.Objects, func(i, j int) bool { return p.im.Objects[i].New < p.im.Objects[j].New })

	for i := range p.im.Fixups {
		f := &p.im.Fixups[i]
		if o := oldSymbolAt(p.oldSyms, f.Target); o != nil {
			f.Name, f.File, f.SymAddr = o.key.name, o.key.cu, o.value
		}
	}
}

// oldSymbolAt returns OLD's function or object holding addr, or the sized
// object ending exactly at addr (a one-past-the-end pointer), nil if none.
func oldSymbolAt(t *symtab, addr uint64) *psym {
	named := func(s *psym) bool {
		switch s.typ {
		case elf.STT_FUNC, elf.STT_GNU_IFUNC, elf.STT_OBJECT:
			return true
		}
		return false
	}
	for _, s := range t.containing(addr) {
		if named(s) {
			return s
		}
	}
	if addr > 0 {
		for _, s := range t.containing(addr - 1) {
			if named(s) && s.size > 0 && s.value+s.size == addr {
				return s
			}
		}
	}
	return nil
}

func isFuncSym(s *psym) bool { return s.typ == elf.STT_FUNC || s.typ == elf.STT_GNU_IFUNC }

// segments copies NEW's PT_LOAD segments and finds its RELRO range.
func (p *planner) segments() error {
	var end uint64
	for _, prog := range p.new.Progs {
		switch prog.Type {
		case elf.PT_LOAD:
			if prog.Filesz > prog.Memsz || prog.Memsz > 1<<32 {
				return fmt.Errorf("prepare the new code: new PT_LOAD at 0x%x: bad sizes filesz 0x%x memsz 0x%x", prog.Vaddr, prog.Filesz, prog.Memsz)
			}
			data := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(data, 0); err != nil {
				return fmt.Errorf("prepare the new code: read new segment at 0x%x: %w", prog.Vaddr, err)
			}
			prot := 0
			if prog.Flags&elf.PF_R != 0 {
				prot |= 1
			}
			if prog.Flags&elf.PF_W != 0 {
				prot |= 2
			}
			if prog.Flags&elf.PF_X != 0 {
				prot |= 4
			}
			p.im.Segments = append(p.im.Segments, Segment{Vaddr: prog.Vaddr, Memsz: prog.Memsz, Prot: prot, Data: data})
			end = max(end, prog.Vaddr+prog.Memsz)
		case elf.PT_GNU_RELRO:
			p.relroStart, p.relroEnd = prog.Vaddr, prog.Vaddr+prog.Memsz
			p.im.RelroStart, p.im.RelroEnd = p.relroStart, p.relroEnd
		}
	}
	if len(p.im.Segments) == 0 {
		return fmt.Errorf("prepare the new code: new build has no PT_LOAD segment")
	}
	sort.Slice(p.im.Segments, func(i, j int) bool { return p.im.Segments[i].Vaddr < p.im.Segments[j].Vaddr })
	p.im.Size = (end + planPageSize - 1) &^ (planPageSize - 1)
	for _, s := range p.new.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Size > 0 {
			p.sects = append(p.sects, s)
		}
	}
	sort.Slice(p.sects, func(i, j int) bool { return p.sects[i].Addr < p.sects[j].Addr })
	return nil
}

const planPageSize = 4096

// section returns NEW's allocated section holding addr, or nil.
func (p *planner) section(addr uint64) *elf.Section {
	i := sort.Search(len(p.sects), func(i int) bool { return p.sects[i].Addr > addr }) - 1
	if i >= 0 && addr < p.sects[i].Addr+p.sects[i].Size {
		return p.sects[i]
	}
	return nil
}

// readOnly reports whether NEW's addr holds data that never changes after
// load: a section without SHF_WRITE, or the RELRO range (.data.rel.ro,
// which the dynamic linker write-protects once relocated).
func (p *planner) readOnly(addr uint64) bool {
	if addr >= p.relroStart && addr < p.relroEnd {
		return true
	}
	s := p.section(addr)
	return s != nil && s.Flags&elf.SHF_WRITE == 0
}

// bytesAt returns NEW's file bytes at vaddr [addr, addr+n).
func (p *planner) bytesAt(addr, n uint64) ([]byte, error) {
	for _, s := range p.im.Segments {
		if addr >= s.Vaddr && addr+n <= s.Vaddr+uint64(len(s.Data)) && addr+n >= addr {
			return s.Data[addr-s.Vaddr : addr-s.Vaddr+n], nil
		}
	}
	return nil, fmt.Errorf("no file bytes at new 0x%x+%d", addr, n)
}

// checkTLS refuses NEW code whose thread-local variables sit elsewhere
// than OLD's: the executable's TLS block is allocated once per thread at
// start-up, and local-exec accesses (%fs:-N) hard-code the layout.
func (p *planner) checkTLS() error {
	tls := func(f *elf.File) *elf.Prog {
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_TLS {
				return prog
			}
		}
		return nil
	}
	nt, ot := tls(p.new), tls(p.old)
	if nt == nil {
		return nil
	}
	if ot == nil || nt.Memsz != ot.Memsz || nt.Align != ot.Align {
		return fmt.Errorf("prepare the new code: thread-local storage layout differs between old and new builds: unsupported")
	}
	for _, s := range p.newSyms.syms {
		if s.typ != elf.STT_TLS {
			continue
		}
		o := matchOld(p.oldSyms, p.newSyms, s)
		if o == nil || o.value != s.value || o.size != s.size {
			return fmt.Errorf("prepare the new code: thread-local variable %s is new or moved: unsupported", s.label())
		}
	}
	return nil
}

// findNew resolves a PlanFunc to NEW's symbol.
func (p *planner) findNew(f PlanFunc) (*psym, error) {
	for _, s := range p.newSyms.containing(f.NewAddr) {
		if s.value == f.NewAddr && isFuncSym(s) && s.key.name == stripVersion(f.Name) {
			return s, nil
		}
	}
	k := symKey{name: stripVersion(f.Name)}
	if f.Local {
		k.cu = f.File
	}
	if s := p.newSyms.lookupKey(k); s != nil && isFuncSym(s) {
		return s, nil
	}
	return nil, fmt.Errorf("prepare the new code: function %s not found in new build at 0x%x", f.Name, f.NewAddr)
}

// seed puts changed and added functions (and their cold parts) into the
// run set and records the redirects.
func (p *planner) seed(changed, added []PlanFunc) error {
	for _, c := range changed {
		s, err := p.findNew(c)
		if err != nil {
			return err
		}
		if c.OldAddr == 0 {
			return fmt.Errorf("prepare the new code: changed function %s has no old address", c.Name)
		}
		p.im.Redirects = append(p.im.Redirects, Redirect{
			Name: c.Name, Old: c.OldAddr, OldSize: c.OldSize,
			New: s.value, NewSize: s.size,
		})
		p.addRun(s)
	}
	for _, a := range added {
		s, err := p.findNew(a)
		if err != nil {
			return err
		}
		p.addRun(s)
	}
	return nil
}

func (p *planner) addRun(s *psym) {
	if p.run[s] {
		return
	}
	p.run[s] = true
	p.queue = append(p.queue, s)
	for _, c := range p.coldParts[s.key.name] {
		// A cold part is always a local of its parent's unit; a global
		// parent has no unit in its key, so accept any.
		if s.key.cu == "" || c.key.cu == s.key.cu {
			p.addRun(c)
		}
	}
}

// isColdOfRun reports whether s is the split-off cold part of a function
// that runs in NEW: NEW's parent jumps to NEW's cold part, never OLD's.
func (p *planner) isColdOfRun(s *psym) bool {
	parent := coldParent(s.name)
	if parent == "" {
		return false
	}
	for r := range p.run {
		if r.key.name == parent && (r.key.cu == "" || r.key.cu == s.key.cu) {
			return true
		}
	}
	return false
}

func (p *planner) addFixup(f Fixup) error {
	if p.fixed[f.Off] {
		return fmt.Errorf("prepare the new code: two fixups at new 0x%x (%s)", f.Off, f.Symbol)
	}
	p.fixed[f.Off] = true
	p.im.Fixups = append(p.im.Fixups, f)
	return nil
}

func (p *planner) sortImage() {
	im := p.im
	sort.Slice(im.Redirects, func(i, j int) bool { return im.Redirects[i].Old < im.Redirects[j].Old })
	sort.Slice(im.Fixups, func(i, j int) bool { return im.Fixups[i].Off < im.Fixups[j].Off })
	sort.Slice(im.Imports, func(i, j int) bool { return im.Imports[i].Off < im.Imports[j].Off })
	sort.Slice(im.Relatives, func(i, j int) bool { return im.Relatives[i].Off < im.Relatives[j].Off })
	sort.Slice(im.Runs, func(i, j int) bool {
		a, b := im.Runs[i], im.Runs[j]
		if a.New != b.New {
			return a.New < b.New
		}
		return a.Name < b.Name
	})
}

// PlanImage plans the Image for a Diff report: every changed function gets
// a redirect from OLD's entry, changed and added functions (with their
// cold parts and the NEW-only functions they reach) run from NEW's image,
// and every reference they make to state OLD also has is pointed at OLD's
// copy. It refuses what it cannot make safe (a referenced global whose
// size changed, TLS, unsupported relocations) with a *PlanError.
func PlanImage(old, new *Binary, r *Report) (*Image, error) {
	if old == nil || new == nil || r == nil {
		return nil, fmt.Errorf("prepare the new code: missing binary or report")
	}
	conv := func(fs []Func) []PlanFunc {
		out := make([]PlanFunc, 0, len(fs))
		for _, f := range fs {
			out = append(out, PlanFunc{
				Name: f.Name, File: f.File, Local: f.Local,
				OldAddr: f.OldAddr, OldSize: f.OldSize,
				NewAddr: f.NewAddr, NewSize: f.NewSize,
			})
		}
		return out
	}
	var xfer []Transfer
	// Incomplete transformers are planned too (where the object lives
	// does not depend on them): the patch file then carries them with
	// their TODOs, and apply refuses it until they are resolved.
	xfer = append(xfer, r.Transfers...)
	return planELF(old.ELF(), new.ELF(), conv(r.Changed), conv(r.Added), xfer)
}
