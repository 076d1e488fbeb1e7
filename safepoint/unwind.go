package safepoint

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/go-delve/delve/pkg/dwarf/frame"

	"graft/internal/elfx"
	"graft/internal/symtab"
	"graft/tracer"
)

// Memory is the target's address space as the unwinder needs it.
// *tracer.Process satisfies it.
type Memory interface {
	ReadAt(b []byte, addr int64) (int, error)
}

// Frame is one frame of a thread's stack, innermost first.
type Frame struct {
	// PC is the thread's instruction pointer for frame 0 and for a frame
	// interrupted by a signal, and the return address for every other frame.
	PC uint64
	// CFA is the frame's canonical frame address (the caller's rsp after
	// the call returns), 0 when it could not be computed.
	CFA uint64
	// Function is the symbol containing the PC (PC-1 for return
	// addresses), "" when none is known.
	Function string
	// Module is the base name of the ELF file holding the PC, "" if none.
	Module string
	// Exact is true when PC is where the thread will resume in this frame
	// (frame 0, or a frame interrupted by a signal) rather than a return
	// address, which points after a call.
	Exact bool
	// Incomplete marks the last frame of a stack whose unwinding stopped
	// before the true end of the stack; Reason says why. Frames further
	// out are unknown, so such a stack never counts as safe.
	Incomplete bool
	Reason     string
	// InSyscall is set on frame 0 of a thread stopped inside a system
	// call; Syscall and SyscallArgs are then its number and arguments.
	InSyscall   bool
	Syscall     int64
	SyscallArgs [6]uint64
}

// lookupPC is the address that identifies the frame's function: a return
// address may point just past the function when the call was its last
// instruction (a call to a noreturn function), so use PC-1 for those.
func (f *Frame) lookupPC() uint64 {
	if f.Exact || f.PC == 0 {
		return f.PC
	}
	return f.PC - 1
}

// IncompleteError says that unwinding stopped before the end of the stack.
// Unwind returns it together with the frames it found.
type IncompleteError struct {
	PC     uint64
	Depth  int
	Reason string
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("unwind stopped at frame %d (pc %#x): %s", e.Depth, e.PC, e.Reason)
}

// cloneFuncs are glibc's names for clone and clone3 (see Unwind).
var cloneFuncs = map[string]bool{"clone": true, "__clone": true, "clone3": true, "__clone3": true}

// maxFrames bounds a walk through a corrupt or cyclic stack.
const maxFrames = 4096

// module is one mapped ELF file with its CFI and symbols.
type module struct {
	mod    tracer.Module
	name   string
	fdes   frame.FrameDescriptionEntries
	syms   *symtab.Table
	err    error // why CFI or symbols are missing, nil when loaded
	lazy   bool  // the vDSO or an Image: read from target memory on first use
	loaded bool
	image  *Image   // set for an Image: CFI from its mapped .eh_frame
	own    []Symbol // an Image's function names, by link-time address

	mu   sync.Mutex
	memo map[uint64]*frame.FrameContext // unwind rules by link-time pc; read-only once stored
}

// Unwinder unwinds threads of one process with the CFI of its modules. It
// is built from files while the target runs; Unwind then only reads the
// stack. It is safe for concurrent use.
type Unwinder struct {
	mods []*module
	mu   sync.Mutex // guards the lazy load of in-memory modules
	// returns maps return addresses a patch rewrote (a frame switch's
	// code) to the ones they replaced: the frame is unwound, and
	// judged, as the code it waits to return to.
	returns map[uint64]uint64
}

// MapReturns makes Unwind read a return address found in m as m's value.
func (u *Unwinder) MapReturns(m map[uint64]uint64) { u.returns = m }

// NewUnwinder loads .eh_frame, .debug_frame and symbols of every module
// (files opened by path). A module that cannot be read is not an error
// here: PCs inside it make their stacks incomplete (unsafe) with the reason.
func NewUnwinder(mods []tracer.Module) (*Unwinder, error) {
	return newUnwinder(0, mods)
}

// ForProcess lists the modules of pid and loads them through the target's
// own view of the file system (/proc/PID/root, /proc/PID/map_files), so
// containers and replaced or deleted files are handled. The vDSO is read
// from the process's memory.
func ForProcess(pid int) (*Unwinder, error) {
	mods, err := tracer.Modules(pid)
	if err != nil {
		return nil, fmt.Errorf("list modules of pid %d: %w", pid, err)
	}
	u, err := newUnwinder(pid, mods)
	if err != nil {
		return nil, err
	}
	return u, nil
}

func newUnwinder(pid int, mods []tracer.Module) (*Unwinder, error) {
	if len(mods) == 0 {
		return nil, errors.New("new unwinder: no modules")
	}
	u := &Unwinder{}
	for _, md := range mods {
		m := &module{mod: md, name: filepath.Base(strings.TrimSuffix(md.Path, " (deleted)"))}
		if md.Path == "[vdso]" {
			m.name = "[vdso]"
			m.lazy = true
			if pid > 0 {
				m.load(tracer.ProcMem(pid))
			}
		} else {
			m.err = m.loadFile(pid)
			m.loaded = true
		}
		u.mods = append(u.mods, m)
	}
	return u, nil
}

// Problems lists the modules whose CFI or symbols could not be loaded.
func (u *Unwinder) Problems() []error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []error
	for _, m := range u.mods {
		if m.err != nil {
			out = append(out, m.err)
		}
	}
	return out
}

func (m *module) loadFile(pid int) error {
	var paths []string
	clean := strings.TrimSuffix(m.mod.Path, " (deleted)")
	if pid > 0 {
		paths = append(paths, tracer.ModulePaths(pid, &m.mod)...)
	}
	paths = append(paths, clean)
	var first error
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		err = m.loadELF(f)
		f.Close()
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return fmt.Errorf("load CFI of %s: %w", m.mod.Path, first)
}

// load reads an in-memory module (the vDSO) from the target.
func (m *module) load(mem Memory) {
	if m.loaded {
		return
	}
	m.loaded = true
	if m.image != nil {
		m.err = m.loadImage(mem)
		return
	}
	var lo, hi uint64
	for i, mp := range m.mod.Mappings {
		if i == 0 || mp.Start < lo {
			lo = mp.Start
		}
		if mp.End > hi {
			hi = mp.End
		}
	}
	if hi <= lo || hi-lo > 1<<20 {
		m.err = fmt.Errorf("load CFI of %s: bad image size %#x", m.mod.Path, hi-lo)
		return
	}
	b := make([]byte, hi-lo)
	if _, err := mem.ReadAt(b, int64(lo)); err != nil {
		m.err = fmt.Errorf("load CFI of %s: read image at %#x: %w", m.mod.Path, lo, err)
		return
	}
	if err := m.loadELF(bytes.NewReader(b)); err != nil {
		m.err = fmt.Errorf("load CFI of %s: %w", m.mod.Path, err)
	}
}

// loadELF parses the CFI sections and symbols. debug/elf and delve's
// parser may panic on malformed input; that must not take the tool (and
// the process it holds) down.
func (m *module) loadELF(r io.ReaderAt) (err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("malformed ELF or CFI: %v", x)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return err
	}
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("not an x86-64 ELF file (%v %v)", f.Class, f.Machine)
	}
	// A file replaced on disk since it was mapped (a package upgrade)
	// has other CFI: using it would unwind garbage that may look whole.
	if want := m.mod.BuildID; want != "" {
		if got := elfx.BuildID(f); got != "" && got != want {
			return fmt.Errorf("file is not the mapped one (build-id %s, mapped %s)", got, want)
		}
	}
	var fdes frame.FrameDescriptionEntries
	var perr []string
	if s := f.Section(".eh_frame"); s != nil && s.Type != elf.SHT_NOBITS && s.Addr != 0 {
		data, err := s.Data()
		if err == nil {
			var e frame.FrameDescriptionEntries
			e, err = parseEhFrame(data, s.Addr)
			fdes = append(fdes, e...)
		} else {
			err = fmt.Errorf(".eh_frame: %w", err)
		}
		if err != nil {
			perr = append(perr, err.Error())
		}
	}
	if s := f.Section(".debug_frame"); s != nil && s.Type != elf.SHT_NOBITS {
		data, err := s.Data()
		if err == nil {
			var e frame.FrameDescriptionEntries
			e, err = frame.Parse(data, binary.LittleEndian, 0, 8, 0)
			// .eh_frame entries come first, so Append's de-duplication
			// keeps them where both describe the same range.
			fdes = fdes.Append(e)
		}
		if err != nil {
			perr = append(perr, ".debug_frame: "+err.Error())
		}
	}
	sort.SliceStable(fdes, func(i, j int) bool { return fdes[i].Begin() < fdes[j].Begin() })
	m.fdes = fdes
	if syms, err := symtab.FromELF(f); err == nil {
		m.syms = syms
	}
	if f.Section(".symtab") == nil {
		// A stripped library (Debian's libc) names only its exports;
		// its detached debug file, when installed, names the statics
		// too (start_thread, clone3), so stacks read like gdb's.
		if syms := debugSymbols(m.mod.BuildID); syms != nil {
			m.syms = syms
		}
	}
	if len(fdes) == 0 {
		if len(perr) > 0 {
			return errors.New(strings.Join(perr, "; "))
		}
		return errors.New("no .eh_frame or .debug_frame")
	}
	return nil
}

// moduleFor returns the module mapping addr, loading an in-memory module
// on first use.
func (u *Unwinder) moduleFor(addr uint64, mem Memory) *module {
	for _, m := range u.mods {
		if m.mod.Contains(addr) {
			if m.lazy {
				u.mu.Lock()
				m.load(mem)
				u.mu.Unlock()
			}
			return m
		}
	}
	return nil
}

// Preload reads in-memory modules (the vDSO) now, so that the first
// Unwind during a pause does not have to. Safe while the target runs.
func (u *Unwinder) Preload(mem Memory) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, m := range u.mods {
		if m.lazy {
			m.load(mem)
		}
	}
}

// Symbolize names the function containing the runtime address addr.
func (u *Unwinder) Symbolize(addr uint64) (function, module string) {
	for _, m := range u.mods {
		if m.mod.Contains(addr) {
			return m.symbol(addr), m.name
		}
	}
	return "", ""
}

func (m *module) symbol(addr uint64) string {
	if m.own != nil {
		name, _ := m.ownSymbol(addr - m.mod.Bias)
		return name
	}
	if m.syms == nil {
		return ""
	}
	if f, ok := m.syms.Lookup(addr - m.mod.Bias); ok {
		return f.Name
	}
	return ""
}

// fde finds the FDE covering the link-time address pc.
func (m *module) fde(pc uint64) *frame.FrameDescriptionEntry {
	i := sort.Search(len(m.fdes), func(i int) bool { return m.fdes[i].Begin() > pc }) - 1
	// FDEs may nest or overlap slightly in hand-written CFI; look back a
	// few entries for one that covers pc.
	for j := i; j >= 0 && j > i-4; j-- {
		if m.fdes[j].Cover(pc) {
			return m.fdes[j]
		}
	}
	return nil
}

// rules returns the unwind rules at the link-time address pc, memoised:
// a pause unwinds the same few return addresses (start_thread, main, the
// blocking libc calls) on every thread and every retry, and running the
// CIE and FDE programs again each time is the larger part of the cost.
func (m *module) rules(fde *frame.FrameDescriptionEntry, pc uint64) (*frame.FrameContext, error) {
	m.mu.Lock()
	fc, ok := m.memo[pc]
	m.mu.Unlock()
	if ok {
		return fc, nil
	}
	fc, err := establish(fde, pc)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.memo == nil || len(m.memo) > 1<<16 {
		m.memo = map[uint64]*frame.FrameContext{}
	}
	m.memo[pc] = fc
	m.mu.Unlock()
	return fc, nil
}

// establish runs the FDE's CFA program up to pc; delve's interpreter
// panics on some malformed programs.
func establish(fde *frame.FrameDescriptionEntry, pc uint64) (fc *frame.FrameContext, err error) {
	defer func() {
		if x := recover(); x != nil {
			fc, err = nil, fmt.Errorf("malformed CFI: %v", x)
		}
	}()
	return fde.EstablishFrame(pc)
}

// regset is the DWARF register file of the frame being unwound
// (0-15 general purpose, 16 the return address column / rip).
type regset struct {
	v  [17]uint64
	ok [17]bool
}

func (r *regset) get(n int) (uint64, bool) {
	if n < 0 || n >= len(r.v) || !r.ok[n] {
		return 0, false
	}
	return r.v[n], true
}

// calleeSaved are the registers the System V ABI keeps across calls: a
// caller sees the same value unless CFI says where it was saved. All others
// are unknown in caller frames.
var calleeSaved = [17]bool{3: true, 6: true, 12: true, 13: true, 14: true, 15: true}

// Unwind walks the stack of one stopped thread with CFI. Frame 0 is the
// thread's PC, every further frame a return address. The walk ends cleanly
// where the CFI marks the outermost frame (return address undefined: _start,
// clone/clone3's child) or at a zero return address. If it stops anywhere
// else (no module or CFI for a PC, unreadable stack, unsupported rule) the
// last frame is marked Incomplete and an *IncompleteError is returned along
// with the frames found so far.
func (u *Unwinder) Unwind(regs tracer.Regs, mem Memory) ([]Frame, error) {
	var r regset
	for n := 0; n <= 16; n++ {
		r.v[n], r.ok[n] = regs.DWARF(n)
	}
	c := &memCache{mem: mem}
	var frames []Frame
	exact := true
	stop := func(f Frame, reason string) ([]Frame, error) {
		f.Incomplete, f.Reason = true, reason
		frames = append(frames, f)
		return frames, &IncompleteError{PC: f.PC, Depth: len(frames) - 1, Reason: reason}
	}
	for {
		pc := r.v[16]
		if len(frames) > 0 && pc == 0 {
			return frames, nil
		}
		if o, ok := u.returns[pc]; ok && len(frames) > 0 {
			pc = o
			r.v[16] = o
		}
		f := Frame{PC: pc, Exact: exact}
		lpc := f.lookupPC()
		m := u.moduleFor(lpc, mem)
		if m != nil {
			f.Module = m.name
			f.Function = m.symbol(lpc)
		}
		if len(frames) >= maxFrames {
			return stop(f, fmt.Sprintf("more than %d frames", maxFrames))
		}
		if m == nil {
			return stop(f, "pc is in no mapped module")
		}
		if m.err != nil && len(m.fdes) == 0 {
			return stop(f, m.err.Error())
		}
		fde := m.fde(lpc - m.mod.Bias)
		var fc *frame.FrameContext
		signal := false
		switch {
		case fde != nil:
			signal = strings.ContainsRune(fde.CIE.Augmentation, 'S')
			if signal && f.Function == "" {
				// A signal trampoline's FDE starts one byte early so
				// that PC-1 finds it; its symbol starts at the PC.
				f.Function = m.symbol(pc)
			}
			var err error
			if fc, err = m.rules(fde, lpc-m.mod.Bias); err != nil {
				return stop(f, fmt.Sprintf("CFI for pc in %s: %v", m.name, err))
			}
		case len(frames) == 0 && cloneFuncs[f.Function]:
			// glibc's clone and clone3 leave the instructions right
			// after the syscall without CFI. A thread stopped there
			// is either the new child (rax 0), which has no caller
			// at all yet, or the parent, and clone pushes nothing
			// on its own stack: the return address is at rsp.
			if r.ok[0] && r.v[0] == 0 {
				f.CFA = r.v[7]
				return append(frames, f), nil
			}
			fc = &frame.FrameContext{
				CFA:        frame.DWRule{Rule: frame.RuleCFA, Reg: 7, Offset: 8},
				Regs:       map[uint64]frame.DWRule{16: {Rule: frame.RuleOffset, Offset: -8}},
				RetAddrReg: 16,
			}
		default:
			return stop(f, fmt.Sprintf("no CFI for pc in %s", m.name))
		}
		cfa, err := r.cfa(fc, c)
		if err != nil {
			return stop(f, err.Error())
		}
		f.CFA = cfa
		next, end, err := r.caller(fc, cfa, c)
		if err != nil {
			return stop(f, err.Error())
		}
		frames = append(frames, f)
		if end {
			return frames, nil
		}
		// The innermost frame may keep its return address in a register
		// with nothing pushed, its CFA then equal to rsp: glibc's vfork
		// pops it into rdi around the syscall (the parent thread stops
		// there as vfork returns).
		raInReg := len(frames) == 1 && fc.Regs[fc.RetAddrReg].Rule == frame.RuleRegister
		if !signal && r.ok[7] && (cfa < r.v[7] || cfa == r.v[7] && !raInReg) {
			// A call frame's CFA lies above its rsp; anything else is a
			// corrupt stack or a loop.
			frames = frames[:len(frames)-1]
			return stop(f, fmt.Sprintf("CFA %#x not above rsp %#x", cfa, r.v[7]))
		}
		r = next
		exact = signal
	}
}

// cfa computes the frame's canonical frame address.
func (r *regset) cfa(fc *frame.FrameContext, c *memCache) (uint64, error) {
	switch fc.CFA.Rule {
	case frame.RuleCFA:
		v, ok := r.get(int(fc.CFA.Reg))
		if !ok {
			return 0, fmt.Errorf("CFA register %d unknown", fc.CFA.Reg)
		}
		return v + uint64(fc.CFA.Offset), nil
	case frame.RuleExpression:
		v, err := evalExpr(fc.CFA.Expression, nil, r.get, c.read8)
		if err != nil {
			return 0, fmt.Errorf("CFA expression: %w", err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("unsupported CFA rule %d", fc.CFA.Rule)
}

// caller computes the registers of the calling frame. end is true when the
// return address rule is "undefined": the CFI's way of marking the
// outermost frame.
func (r *regset) caller(fc *frame.FrameContext, cfa uint64, c *memCache) (next regset, end bool, err error) {
	for n := range next.v {
		if calleeSaved[n] {
			next.v[n], next.ok[n] = r.v[n], r.ok[n]
		}
	}
	next.v[7], next.ok[7] = cfa, true
	ra := fc.RetAddrReg
	if ra > 16 {
		return next, false, fmt.Errorf("return address column %d", ra)
	}
	if rule, ok := fc.Regs[ra]; !ok {
		return next, false, errors.New("no rule for the return address")
	} else if rule.Rule == frame.RuleUndefined {
		return next, true, nil
	}
	for n, rule := range fc.Regs {
		if n > 16 {
			continue // vector registers etc.: not needed to walk the stack
		}
		v, ok, err := r.apply(rule, n, cfa, c)
		if err != nil {
			if n == ra {
				return next, false, fmt.Errorf("return address: %w", err)
			}
			// A register we cannot recover is unknown in the caller; it
			// matters only if a later CFA rule needs it.
			next.ok[n] = false
			continue
		}
		next.v[n], next.ok[n] = v, ok
		if n == ra && ra != 16 {
			next.v[16], next.ok[16] = v, ok
		}
	}
	if !next.ok[16] {
		return next, false, errors.New("return address unknown")
	}
	return next, false, nil
}

func (r *regset) apply(rule frame.DWRule, n uint64, cfa uint64, c *memCache) (uint64, bool, error) {
	switch rule.Rule {
	case frame.RuleUndefined:
		return 0, false, nil
	case frame.RuleSameVal:
		v, ok := r.get(int(n))
		return v, ok, nil
	case frame.RuleOffset:
		v, err := c.read8(cfa + uint64(rule.Offset))
		return v, err == nil, err
	case frame.RuleValOffset:
		return cfa + uint64(rule.Offset), true, nil
	case frame.RuleRegister:
		v, ok := r.get(int(rule.Reg))
		return v, ok, nil
	case frame.RuleExpression:
		a, err := evalExpr(rule.Expression, &cfa, r.get, c.read8)
		if err != nil {
			return 0, false, err
		}
		v, err := c.read8(a)
		return v, err == nil, err
	case frame.RuleValExpression:
		v, err := evalExpr(rule.Expression, &cfa, r.get, c.read8)
		return v, err == nil, err
	}
	return 0, false, fmt.Errorf("unsupported register rule %d for register %d", rule.Rule, n)
}

// memCache reads the stack a page at a time: one process_vm_readv per
// page instead of one per saved register keeps the pause short.
type memCache struct {
	mem   Memory
	pages map[uint64][]byte
}

const cachePage = 4096

func (c *memCache) read8(addr uint64) (uint64, error) {
	page := addr &^ (cachePage - 1)
	if addr-page <= cachePage-8 {
		b, ok := c.pages[page]
		if !ok {
			buf := make([]byte, cachePage)
			if n, err := c.mem.ReadAt(buf, int64(page)); err == nil && n == cachePage {
				b = buf
			}
			if c.pages == nil {
				c.pages = map[uint64][]byte{}
			}
			c.pages[page] = b // nil: page not wholly readable, read exactly
		}
		if b != nil {
			return binary.LittleEndian.Uint64(b[addr-page:]), nil
		}
	}
	var b [8]byte
	if _, err := c.mem.ReadAt(b[:], int64(addr)); err != nil {
		return 0, fmt.Errorf("read stack at %#x: %w", addr, err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// debugDir is where distributions install detached debug files by build ID.
var debugDir = "/usr/lib/debug/.build-id"

// debugSymbols reads the symbols of the detached debug file for a build
// ID, nil if there is none.
func debugSymbols(buildID string) *symtab.Table {
	if len(buildID) < 3 {
		return nil
	}
	t, err := symtab.Open(filepath.Join(debugDir, buildID[:2], buildID[2:]+".debug"))
	if err != nil || len(t.Funcs()) == 0 {
		return nil
	}
	return t
}
