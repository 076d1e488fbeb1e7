package elfpatch

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/go-delve/delve/pkg/dwarf/frame"
	"github.com/go-delve/delve/pkg/dwarf/godwarf"
	"github.com/go-delve/delve/pkg/dwarf/loclist"
)

// Where each variable of a function is at one PC, read from DWARF: the
// input of an on-stack replacement, which rebuilds a waiting frame of one
// build of a function as a frame of another build at a matching return
// address.
//
// The function's scopes are its DW_TAG_subprogram and, nested in it, the
// lexical blocks and inlined subroutines whose address ranges cover the PC
// (a block without any range attribute is transparent, as gdb treats it;
// an inlined subroutine without one is ignored). The variables and
// parameters directly in those scopes are in scope. Each is named by the
// chain of inlined subroutines it is in ("read_line/n"), its name, type
// and declaration found through DW_AT_abstract_origin. Its location at PC
// is its DW_AT_location expression or the entry of its location list
// (.debug_loclists for DWARF 5, .debug_loc before) with low <= PC < high,
// or DW_AT_const_value; the expression is then classified: a register, a
// slot of the frame relative to the CFA (DW_OP_fbreg with gcc's
// DW_OP_call_frame_cfa frame base; DW_OP_bregN, or DW_OP_fbreg with
// clang's register frame base, when N is the CFA rule's register at PC),
// the address of such a slot, a constant, or unknown with the reason
// (entry values, implicit pointers, pieces, computed values, no entry
// covering PC). The value of a register plus 0 (DW_OP_bregN 0;
// DW_OP_stack_value) counts as that register. Function-local statics
// (plain DW_OP_addr or DW_OP_addrx) are not frame state and are left out.
//
// PC is taken as it is: at a return address that is the state the code
// after the call expects, which the frame switch must rebuild; the
// variables in caller-saved registers there are the call's result (rax),
// or values gcc's -fipa-ra knows the callee leaves alone. gdb, showing a
// caller's frame, looks up PC-1 instead (inside the call), which differs
// exactly for locations that start at the return address.
//
// The comparison with gdb ("info scope", testdata/framevars/scope.py) at
// every call of several testprocs, gcc and clang builds, is in
// framevars_test.go.

// VarKind says where a variable's value is at a PC.
type VarKind uint8

const (
	VarUnknown VarKind = iota // no usable location at PC: Why says which
	VarReg                    // in register Reg (DWARF number 0..16)
	VarFrame                  // in frame memory at CFA+Off
	VarConst                  // the constant Value
	// VarFrameAddr: the value is the address CFA+Off, not stored
	// anywhere (DW_OP_fbreg Off; DW_OP_stack_value: a pointer to a local
	// of the same frame, e.g. an inlined callee's buffer argument).
	VarFrameAddr
)

func (k VarKind) String() string {
	switch k {
	case VarReg:
		return "reg"
	case VarFrame:
		return "frame"
	case VarConst:
		return "const"
	case VarFrameAddr:
		return "frame-address"
	}
	return "unknown"
}

// FrameVar is one variable in scope at a PC and where its value is.
type FrameVar struct {
	// Path is unique within the function: "s", or for a variable of an
	// inlined call "read_line/n" (the names of the inlined subroutines
	// it is nested in, outermost first); lexical blocks add nothing.
	Path    string
	Size    int64 // byte size of the type, 0 if unknown
	Pointer bool  // the type (typedefs and qualifiers removed) is a pointer
	Param   bool
	Kind    VarKind
	Reg     int    // VarReg: DWARF register number
	Off     int64  // VarFrame, VarFrameAddr: offset from the CFA
	Value   uint64 // VarConst
	// LinkAddr: Value is a link-time address (DW_OP_addr, DW_OP_addrx):
	// add the module's load bias to get the value in a running process.
	LinkAddr bool
	Why      string // VarUnknown: why there is no usable location
}

func (v FrameVar) String() string {
	switch v.Kind {
	case VarReg:
		return fmt.Sprintf("%s in %s", v.Path, dwarfRegName(v.Reg))
	case VarFrame:
		return fmt.Sprintf("%s at CFA%+d", v.Path, v.Off)
	case VarConst:
		if v.LinkAddr {
			return fmt.Sprintf("%s = link-time address %#x", v.Path, v.Value)
		}
		return fmt.Sprintf("%s = %#x", v.Path, v.Value)
	case VarFrameAddr:
		return fmt.Sprintf("%s = CFA%+d", v.Path, v.Off)
	}
	return fmt.Sprintf("%s unknown (%s)", v.Path, v.Why)
}

var x86DwarfRegs = [...]string{"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"}

func dwarfRegName(n int) string {
	switch {
	case n >= 0 && n < len(x86DwarfRegs):
		return x86DwarfRegs[n]
	case n >= 17 && n <= 32:
		return fmt.Sprintf("xmm%d", n-17)
	}
	return fmt.Sprintf("r%d(dwarf)", n)
}

// frameData is the raw debug sections location lists need (debug/dwarf
// does not expose them) and the CFI of .eh_frame, read on first use.
type frameData struct {
	info     []byte // .debug_info: unit headers give each unit's version
	loclists []byte
	loc      []byte
	addr     *godwarf.DebugAddrSection
	units    []unitVersion

	fdes   frame.FrameDescriptionEntries
	fdeErr error
}

type unitVersion struct {
	lo, hi  uint64 // offsets in .debug_info
	version int
}

func (b *Binary) frameData() *frameData {
	b.fvOnce.Do(func() {
		fd := &frameData{}
		src := b.f
		if src.Section(".debug_info") == nil {
			// The DWARF came from the separate debug file: its
			// location lists are there too.
			if _, path := separateDWARF(b.buildID); path != "" {
				if f, err := elf.Open(path); err == nil {
					defer f.Close()
					src = f
				}
			}
		}
		sec := func(name string) []byte {
			s := src.Section(name)
			if s == nil || s.Type == elf.SHT_NOBITS {
				return nil
			}
			d, _ := s.Data()
			return d
		}
		fd.info = sec(".debug_info")
		fd.loclists = sec(".debug_loclists")
		fd.loc = sec(".debug_loc")
		if a := sec(".debug_addr"); a != nil {
			fd.addr = godwarf.ParseAddr(a)
		}
		fd.units = readUnitVersions(fd.info)
		fd.fdes, fd.fdeErr = b.readEhFrame()
		b.fv = fd
	})
	return b.fv
}

func readUnitVersions(info []byte) []unitVersion {
	var out []unitVersion
	for off := uint64(0); off+6 < uint64(len(info)); {
		n := uint64(binary.LittleEndian.Uint32(info[off:]))
		hdr := uint64(4)
		if n == 0xffffffff {
			if off+14 > uint64(len(info)) {
				break
			}
			n, hdr = binary.LittleEndian.Uint64(info[off+4:]), 12
		}
		if n == 0 || off+hdr+n < off || off+hdr+2 > uint64(len(info)) {
			break
		}
		v := int(binary.LittleEndian.Uint16(info[off+hdr:]))
		out = append(out, unitVersion{off, off + hdr + n, v})
		off += hdr + n
	}
	return out
}

func (fd *frameData) version(cu dwarf.Offset) int {
	i := sort.Search(len(fd.units), func(i int) bool { return fd.units[i].hi > uint64(cu) })
	if i < len(fd.units) && fd.units[i].lo <= uint64(cu) {
		return fd.units[i].version
	}
	return 0
}

func (b *Binary) readEhFrame() (fdes frame.FrameDescriptionEntries, err error) {
	defer func() {
		if x := recover(); x != nil {
			fdes, err = nil, fmt.Errorf(".eh_frame: malformed CFI: %v", x)
		}
	}()
	s := b.f.Section(".eh_frame")
	if s == nil || s.Type == elf.SHT_NOBITS {
		return nil, errors.New("no .eh_frame section")
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf(".eh_frame: %w", err)
	}
	fdes, err = frame.Parse(data, binary.LittleEndian, 0, 8, s.Addr)
	if err != nil {
		return nil, fmt.Errorf(".eh_frame: %w", err)
	}
	sort.SliceStable(fdes, func(i, j int) bool { return fdes[i].Begin() < fdes[j].Begin() })
	return fdes, nil
}

// cfaRule returns the CFA rule at the link-time pc: CFA = reg + off.
func (b *Binary) cfaRule(pc uint64) (reg uint64, off int64, err error) {
	fc, err := b.unwindRules(pc)
	if err != nil {
		return 0, 0, err
	}
	if fc.CFA.Rule != frame.RuleCFA {
		return 0, 0, fmt.Errorf("the CFA at %#x is a DWARF expression, not register+offset", pc)
	}
	return fc.CFA.Reg, fc.CFA.Offset, nil
}

// unwindRules runs the .eh_frame program of the FDE covering pc up to pc.
func (b *Binary) unwindRules(pc uint64) (*frame.FrameContext, error) {
	fd := b.frameData()
	if fd.fdeErr != nil {
		return nil, fd.fdeErr
	}
	i := sort.Search(len(fd.fdes), func(i int) bool { return fd.fdes[i].Begin() > pc }) - 1
	for j := i; j >= 0 && j > i-4; j-- {
		if fd.fdes[j].Cover(pc) {
			return establishCFA(fd.fdes[j], pc)
		}
	}
	return nil, fmt.Errorf("no .eh_frame entry covers %#x", pc)
}

// FrameSaves gives, at the link-time address pc, where the function has
// saved its caller's registers so far: DWARF register number -> offset
// from the CFA (16, the return address, is at -8). A register the function
// has not saved (it still holds the caller's value, or the caller does not
// expect it kept) is absent. From .eh_frame; an error for a rule other
// than "saved at CFA+k" (kept in another register, an expression).
func (b *Binary) FrameSaves(pc uint64) (map[int]int64, error) {
	fc, err := b.unwindRules(pc)
	if err != nil {
		return nil, fmt.Errorf("frame saves: %w", err)
	}
	out := map[int]int64{}
	for r, rule := range fc.Regs {
		switch rule.Rule {
		case frame.RuleOffset:
			out[int(r)] = rule.Offset
		case frame.RuleUndefined, frame.RuleSameVal:
		default:
			return nil, fmt.Errorf("frame saves: at %#x register %s is not saved at CFA+k (rule %d)", pc, dwarfRegName(int(r)), rule.Rule)
		}
	}
	return out, nil
}

func establishCFA(fde *frame.FrameDescriptionEntry, pc uint64) (fc *frame.FrameContext, err error) {
	defer func() {
		if x := recover(); x != nil {
			fc, err = nil, fmt.Errorf("malformed CFI at %#x: %v", pc, x)
		}
	}()
	return fde.EstablishFrame(pc)
}

// FrameCFA gives CFA - rsp at the link-time address pc, from .eh_frame.
// It fails when the CFA rule at pc is not rsp+k (a frame-pointer frame, or
// an expression).
func (b *Binary) FrameCFA(pc uint64) (int64, error) {
	reg, off, err := b.cfaRule(pc)
	if err != nil {
		return 0, fmt.Errorf("frame CFA: %w", err)
	}
	if reg != 7 {
		return 0, fmt.Errorf("frame CFA: at %#x the CFA is %s%+d, not rsp-relative", pc, dwarfRegName(int(reg)), off)
	}
	return off, nil
}

var frameVarsMu sync.Mutex

// FrameVarsAt lists the variables of the function whose entry (link-time)
// is fn that are in scope at the link-time address pc, with their
// locations at pc, in DWARF order. Two variables with the same Path are
// both returned with Kind VarUnknown and Why "ambiguous".
func (b *Binary) FrameVarsAt(fn, pc uint64) (vars []FrameVar, err error) {
	if b.dw == nil {
		if b.dwErr != nil {
			return nil, fmt.Errorf("frame variables: no usable DWARF (%v): build with -g", b.dwErr)
		}
		return nil, errors.New("frame variables: the binary has no DWARF: build with -g or install its debug file")
	}
	defer func() {
		if !recoverPanics {
			return
		}
		if x := recover(); x != nil {
			vars, err = nil, fmt.Errorf("frame variables of %#x at %#x: malformed DWARF: %v", fn, pc, x)
		}
	}()
	// debug/dwarf caches parsed types in an unguarded map.
	frameVarsMu.Lock()
	defer frameVarsMu.Unlock()
	w := &varWalker{b: b, d: b.dw, fd: b.frameData(), pc: pc, types: map[dwarf.Offset]typeInfo{}}
	r := b.dw.Reader()
	cu, sp, err := findSubprogram(b.dw, r, fn)
	if err != nil {
		return nil, fmt.Errorf("frame variables: %w", err)
	}
	w.cu = cu
	rs, err := b.dw.Ranges(sp)
	if err != nil {
		return nil, fmt.Errorf("frame variables of %#x: ranges: %w", fn, err)
	}
	if !inRanges(rs, pc) {
		for _, rg := range rs {
			if pc == rg[1] {
				return nil, fmt.Errorf("frame variables: %#x is the end of the function at %#x: the call before it does not return", pc, fn)
			}
		}
		return nil, fmt.Errorf("frame variables: %#x is not inside the function at %#x", pc, fn)
	}
	w.frameBase, _ = sp.Val(dwarf.AttrFrameBase).([]byte)
	if err := w.walk(r, sp); err != nil {
		return nil, fmt.Errorf("frame variables of %#x at %#x: %w", fn, pc, err)
	}
	n := map[string]int{}
	for _, v := range w.out {
		n[v.Path]++
	}
	for i := range w.out {
		if n[w.out[i].Path] > 1 {
			v := &w.out[i]
			*v = FrameVar{Path: v.Path, Size: v.Size, Pointer: v.Pointer, Param: v.Param, Why: "ambiguous"}
		}
	}
	return w.out, nil
}

// findSubprogram returns the compile unit and the concrete subprogram
// whose code starts at fn (its low_pc, or the start of one of its ranges
// for a function split into hot and cold parts); r is left at the
// subprogram's first child.
func findSubprogram(d *dwarf.Data, r *dwarf.Reader, fn uint64) (cu, sp *dwarf.Entry, err error) {
	if e, err := r.SeekPC(fn); err == nil {
		if sp, err := scanUnit(d, r, fn); sp != nil || err != nil {
			return e, sp, err
		}
	}
	// The unit's ranges did not say (no aranges, or ranges that leave
	// out a cold part): look through every unit.
	r.Seek(0)
	for {
		e, err := r.Next()
		if err != nil {
			return nil, nil, err
		}
		if e == nil {
			return nil, nil, fmt.Errorf("no function in the DWARF starts at %#x: give the link-time address of the function's first instruction in this build", fn)
		}
		if e.Tag != dwarf.TagCompileUnit && e.Tag != dwarf.TagPartialUnit {
			r.SkipChildren()
			continue
		}
		if !e.Children {
			continue
		}
		if sp, err := scanUnit(d, r, fn); sp != nil || err != nil {
			return e, sp, err
		}
	}
}

// scanUnit reads the children of a unit (r is at the first) up to the
// subprogram starting at fn; nil if the unit has none. Nested scopes
// (namespaces, classes) are searched, subprograms' bodies are not.
func scanUnit(d *dwarf.Data, r *dwarf.Reader, fn uint64) (*dwarf.Entry, error) {
	depth := 1
	for depth > 0 {
		e, err := r.Next()
		if err != nil {
			return nil, err
		}
		if e == nil {
			return nil, nil
		}
		if e.Tag == 0 {
			depth--
			continue
		}
		if e.Tag == dwarf.TagSubprogram {
			if startsAt(d, e, fn) {
				return e, nil
			}
			if e.Children {
				r.SkipChildren()
			}
			continue
		}
		if e.Children {
			depth++
		}
	}
	return nil, nil
}

func startsAt(d *dwarf.Data, e *dwarf.Entry, fn uint64) bool {
	if lo, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
		return lo == fn
	}
	if e.Val(dwarf.AttrRanges) == nil {
		return false
	}
	rs, err := d.Ranges(e)
	if err != nil {
		return false
	}
	for _, rg := range rs {
		if rg[0] == fn {
			return true
		}
	}
	return false
}

func inRanges(rs [][2]uint64, pc uint64) bool {
	for _, rg := range rs {
		if rg[0] <= pc && pc < rg[1] {
			return true
		}
	}
	return false
}

type varWalker struct {
	b         *Binary
	d         *dwarf.Data
	fd        *frameData
	cu        *dwarf.Entry
	pc        uint64
	frameBase []byte
	types     map[dwarf.Offset]typeInfo
	out       []FrameVar
}

type typeInfo struct {
	size    int64
	pointer bool
}

// walk reads the children of the subprogram sp (r is at the first).
func (w *varWalker) walk(r *dwarf.Reader, sp *dwarf.Entry) error {
	if !sp.Children {
		return nil
	}
	// prefixes holds, per open DIE with children, the path prefix of the
	// scope it opens.
	prefixes := []string{""}
	for len(prefixes) > 0 {
		e, err := r.Next()
		if err != nil {
			return err
		}
		if e == nil {
			return errors.New("DWARF ends inside the subprogram")
		}
		if e.Tag == 0 {
			prefixes = prefixes[:len(prefixes)-1]
			continue
		}
		prefix := prefixes[len(prefixes)-1]
		switch e.Tag {
		case dwarf.TagLexDwarfBlock, dwarf.TagInlinedSubroutine:
			present := e.Val(dwarf.AttrLowpc) != nil || e.Val(dwarf.AttrRanges) != nil
			if present {
				rs, err := w.d.Ranges(e)
				if err != nil {
					return fmt.Errorf("ranges of the scope at DIE %#x: %w", e.Offset, err)
				}
				if !inRanges(rs, w.pc) {
					if e.Children {
						r.SkipChildren()
					}
					continue
				}
			} else if e.Tag == dwarf.TagInlinedSubroutine {
				// gdb ignores an inlined call without code.
				if e.Children {
					r.SkipChildren()
				}
				continue
			}
			if e.Tag == dwarf.TagInlinedSubroutine {
				name := w.name(e)
				if name == "" {
					name = fmt.Sprintf("inlined@%#x", uint64(e.Offset))
				}
				prefix += name + "/"
			}
		case dwarf.TagVariable, dwarf.TagFormalParameter:
			if v, ok := w.variable(e); ok {
				v.Path = prefix + v.Path
				w.out = append(w.out, v)
			}
		}
		if e.Children {
			switch e.Tag {
			case dwarf.TagLexDwarfBlock, dwarf.TagInlinedSubroutine:
				prefixes = append(prefixes, prefix)
			default:
				// A nested function, a call site, a local type: not a
				// scope of this function's variables.
				r.SkipChildren()
			}
		}
	}
	return nil
}

// origin follows DW_AT_abstract_origin and DW_AT_specification from e to
// the first DIE for which get returns ok.
func (w *varWalker) origin(e *dwarf.Entry, get func(*dwarf.Entry) bool) {
	for i := 0; e != nil && i < 8; i++ {
		if get(e) {
			return
		}
		o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
		if !ok {
			if o, ok = e.Val(dwarf.AttrSpecification).(dwarf.Offset); !ok {
				return
			}
		}
		r := w.d.Reader()
		r.Seek(o)
		n, err := r.Next()
		if err != nil {
			return
		}
		e = n
	}
}

func (w *varWalker) name(e *dwarf.Entry) (name string) {
	w.origin(e, func(e *dwarf.Entry) bool {
		name, _ = e.Val(dwarf.AttrName).(string)
		return name != ""
	})
	return name
}

func (w *varWalker) variable(e *dwarf.Entry) (FrameVar, bool) {
	if d, _ := e.Val(dwarf.AttrDeclaration).(bool); d {
		return FrameVar{}, false // an extern declared in a block
	}
	v := FrameVar{Path: w.name(e), Param: e.Tag == dwarf.TagFormalParameter}
	if v.Path == "" {
		v.Path = fmt.Sprintf("anon@%#x", uint64(e.Offset))
	}
	var typ dwarf.Offset
	w.origin(e, func(e *dwarf.Entry) bool {
		var ok bool
		typ, ok = e.Val(dwarf.AttrType).(dwarf.Offset)
		return ok
	})
	if typ != 0 {
		ti := w.typeInfo(typ)
		v.Size, v.Pointer = ti.size, ti.pointer
	}

	f := e.AttrField(dwarf.AttrLocation)
	if f == nil {
		if cv := e.AttrField(dwarf.AttrConstValue); cv != nil {
			return w.constValue(v, cv.Val), true
		}
		v.Why = "optimized out (no location)"
		return v, true
	}
	var expr []byte
	switch f.Class {
	case dwarf.ClassExprLoc, dwarf.ClassBlock:
		expr, _ = f.Val.([]byte)
	case dwarf.ClassLocListPtr, dwarf.ClassLocList:
		off, _ := asInt64(f.Val) // loclistx comes as uint64, sec_offset as int64
		x, found, err := w.locList(f.Class == dwarf.ClassLocList, off)
		if err != nil {
			v.Why = "location list: " + err.Error()
			return v, true
		}
		if !found {
			v.Why = "optimized out at this pc (no location list entry covers it)"
			return v, true
		}
		expr = x
	default:
		v.Why = fmt.Sprintf("location of class %v", f.Class)
		return v, true
	}
	if isStatic(expr) {
		return FrameVar{}, false
	}
	w.classify(&v, expr)
	return v, true
}

// isStatic reports whether a location is a plain DW_OP_addr or
// DW_OP_addrx: a function-local static, which lives in .data/.bss, not in
// the frame.
func isStatic(expr []byte) bool {
	if len(expr) > 1 && expr[0] == dwOpAddrx {
		rd := bytes.NewReader(expr[1:])
		_, ok := readULEB(rd)
		return ok && rd.Len() == 0
	}
	return len(expr) == 9 && expr[0] == dwOpAddr
}

func asInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		return int64(n), true
	}
	return 0, false
}

func (w *varWalker) constValue(v FrameVar, val any) FrameVar {
	switch c := val.(type) {
	case int64:
		v.Kind, v.Value = VarConst, uint64(c)
	case uint64:
		v.Kind, v.Value = VarConst, c
	case []byte:
		if len(c) > 8 {
			v.Why = fmt.Sprintf("constant of %d bytes (DW_AT_const_value block)", len(c))
			return v
		}
		var buf [8]byte
		copy(buf[:], c)
		v.Kind, v.Value = VarConst, binary.LittleEndian.Uint64(buf[:])
	default:
		v.Why = fmt.Sprintf("DW_AT_const_value of type %T", val)
	}
	return v
}

// locList returns the expression of the location list at off (an index
// for DW_FORM_loclistx) whose entry covers the pc.
func (w *varWalker) locList(indexed bool, off int64) ([]byte, bool, error) {
	base, _ := w.cu.Val(dwarf.AttrLowpc).(uint64)
	if w.fd.version(w.cu.Offset) >= 5 {
		data := w.fd.loclists
		if len(data) == 0 {
			return nil, false, errors.New("no .debug_loclists section")
		}
		if indexed {
			lb, ok := asInt64(w.cu.Val(dwarf.AttrLoclistsBase))
			if !ok {
				lb = 12 // just after the first (32-bit) list table header
			}
			at := lb + 4*off
			if at < 0 || at+4 > int64(len(data)) {
				return nil, false, fmt.Errorf("loclistx %d outside .debug_loclists", off)
			}
			off = lb + int64(binary.LittleEndian.Uint32(data[at:]))
		}
		if off < 0 || off >= int64(len(data)) {
			return nil, false, fmt.Errorf("offset %#x outside .debug_loclists", off)
		}
		e, err := loclist.NewDwarf5Reader(data).Find(int(off), 0, base, w.pc, w.addrTable())
		if err != nil || e == nil {
			return nil, false, err
		}
		return e.Instr, true, nil
	}
	if len(w.fd.loc) == 0 {
		return nil, false, errors.New("no .debug_loc section")
	}
	if off < 0 || off >= int64(len(w.fd.loc)) {
		return nil, false, fmt.Errorf("offset %#x outside .debug_loc", off)
	}
	e, err := loclist.NewDwarf2Reader(w.fd.loc, 8).Find(int(off), 0, base, w.pc, nil)
	if err != nil || e == nil {
		return nil, false, err
	}
	return e.Instr, true, nil
}

// addrTable is the unit's part of .debug_addr (DW_AT_addr_base), nil if
// the binary has none.
func (w *varWalker) addrTable() *godwarf.DebugAddr {
	if w.fd.addr == nil {
		return nil
	}
	ab, ok := asInt64(w.cu.Val(dwarf.AttrAddrBase))
	if !ok {
		ab = 8 // just after the first (32-bit) table header
	}
	return w.fd.addr.GetSubsection(uint64(ab))
}

// debugAddr reads entry idx of the unit's .debug_addr table.
func (w *varWalker) debugAddr(idx uint64) (uint64, bool) {
	t := w.addrTable()
	if t == nil {
		return 0, false
	}
	a, err := t.Get(idx)
	return a, err == nil
}

func (w *varWalker) typeInfo(off dwarf.Offset) typeInfo {
	if ti, ok := w.types[off]; ok {
		return ti
	}
	var ti typeInfo
	func() {
		defer func() { _ = recover() }()
		t, err := w.d.Type(off)
		if err != nil {
			return
		}
		if s := t.Size(); s > 0 {
			ti.size = s
		}
		for i := 0; i < 16; i++ {
			switch u := t.(type) {
			case *dwarf.TypedefType:
				t = u.Type
				continue
			case *dwarf.QualType:
				t = u.Type
				continue
			case *dwarf.PtrType:
				ti.pointer = true
			}
			break
		}
		if ti.size == 0 {
			ti.size = t.Size()
			if ti.size < 0 {
				ti.size = 0
			}
		}
	}()
	w.types[off] = ti
	return ti
}

// DWARF operations the classification understands; the rest make a
// variable unknown with the expression printed in Why.
const (
	dwOpAddr         = 0x03
	dwOpConst1u      = 0x08
	dwOpConst1s      = 0x09
	dwOpConst2u      = 0x0a
	dwOpConst2s      = 0x0b
	dwOpConst4u      = 0x0c
	dwOpConst4s      = 0x0d
	dwOpConst8u      = 0x0e
	dwOpConst8s      = 0x0f
	dwOpConstu       = 0x10
	dwOpConsts       = 0x11
	dwOpPlusUconst   = 0x23
	dwOpLit0         = 0x30
	dwOpLit31        = 0x4f
	dwOpReg0         = 0x50
	dwOpReg31        = 0x6f
	dwOpBreg0        = 0x70
	dwOpBreg31       = 0x8f
	dwOpRegx         = 0x90
	dwOpFbreg        = 0x91
	dwOpBregx        = 0x92
	dwOpPiece        = 0x93
	dwOpCallFrameCFA = 0x9c
	dwOpImplicitVal  = 0x9e
	dwOpStackValue   = 0x9f
	dwOpImplicitPtr  = 0xa0
	dwOpAddrx        = 0xa1
	dwOpEntryValue   = 0xa3
	dwOpGNUImplPtr   = 0xf2
	dwOpGNUEntryVal  = 0xf3
)

// classify sets v's location from the expression valid at the pc.
func (w *varWalker) classify(v *FrameVar, expr []byte) {
	unknown := func(why string) {
		v.Kind = VarUnknown
		v.Why = why + " (" + prettyExpr(expr) + ")"
	}
	if len(expr) == 0 {
		v.Why = "optimized out at this pc (empty location)"
		return
	}
	if hasPieces(expr) {
		unknown("in pieces")
		return
	}
	switch expr[0] {
	case dwOpEntryValue, dwOpGNUEntryVal:
		unknown("value the caller passed in a register, no longer held anywhere")
		return
	case dwOpImplicitPtr, dwOpGNUImplPtr:
		unknown("implicit pointer to an optimized-out object")
		return
	}
	rd := bytes.NewReader(expr)
	code, _ := rd.ReadByte()
	// uleb and sleb read an operand; ok is false on a truncated expression.
	uleb := func() (uint64, bool) { return readULEB(rd) }
	sleb := func() (int64, bool) { return readSLEB(rd) }
	rest := func() []byte { b := make([]byte, rd.Len()); rd.Read(b); return b }
	switch {
	case code >= dwOpReg0 && code <= dwOpReg31 || code == dwOpRegx:
		n := uint64(code - dwOpReg0)
		if code == dwOpRegx {
			var ok bool
			if n, ok = uleb(); !ok {
				unknown("truncated expression")
				return
			}
		}
		if rd.Len() != 0 {
			unknown("register with more operations (pieces?)")
			return
		}
		if n > 16 {
			unknown(fmt.Sprintf("in vector register %s", dwarfRegName(int(n))))
			return
		}
		v.Kind, v.Reg = VarReg, int(n)
		return
	case code == dwOpFbreg:
		off, ok := sleb()
		if !ok {
			unknown("truncated expression")
			return
		}
		value := false
		if t := rest(); len(t) != 0 {
			if len(t) != 1 || t[0] != dwOpStackValue {
				unknown("computed from the frame base")
				return
			}
			value = true
		}
		fb := w.frameBase
		switch {
		case bytes.Equal(fb, []byte{dwOpCallFrameCFA}): // gcc
			v.Kind, v.Off = VarFrame, off
			if value {
				v.Kind = VarFrameAddr
			}
			return
		case len(fb) == 1 && fb[0] >= dwOpReg0 && fb[0] <= dwOpReg0+16: // clang: DW_OP_reg7 (rsp) or reg6 (rbp)
			if why := w.regRelative(v, uint64(fb[0]-dwOpReg0), off, value); why != "" {
				unknown(why)
			}
			return
		}
		if fb == nil {
			unknown("the function has no DW_AT_frame_base expression (none, or a location list)")
		} else {
			unknown("frame base " + prettyExpr(fb) + " is neither the CFA nor a register")
		}
		return
	case code == dwOpCallFrameCFA:
		var off uint64
		if rd.Len() > 0 {
			c, _ := rd.ReadByte()
			var ok bool
			if off, ok = uleb(); c != dwOpPlusUconst || !ok || rd.Len() != 0 {
				unknown("computed from the CFA")
				return
			}
		}
		v.Kind, v.Off = VarFrame, int64(off)
		return
	case code >= dwOpBreg0 && code <= dwOpBreg31 || code == dwOpBregx:
		n := uint64(code - dwOpBreg0)
		if code == dwOpBregx {
			var ok bool
			if n, ok = uleb(); !ok {
				unknown("truncated expression")
				return
			}
		}
		off, ok := sleb()
		if !ok {
			unknown("truncated expression")
			return
		}
		value := false
		if t := rest(); len(t) != 0 {
			if len(t) != 1 || t[0] != dwOpStackValue {
				unknown(fmt.Sprintf("computed from %s", dwarfRegName(int(n))))
				return
			}
			value = true
		}
		if why := w.regRelative(v, n, off, value); why != "" {
			unknown(why)
		}
		return
	case code == dwOpImplicitVal:
		n, ok := uleb()
		if !ok || uint64(rd.Len()) != n {
			unknown("malformed DW_OP_implicit_value")
			return
		}
		if n > 8 {
			unknown(fmt.Sprintf("constant of %d bytes", n))
			return
		}
		var buf [8]byte
		copy(buf[:], rest())
		v.Kind, v.Value = VarConst, binary.LittleEndian.Uint64(buf[:])
		return
	}
	// A constant: one literal then DW_OP_stack_value.
	if expr[len(expr)-1] != dwOpStackValue {
		unknown("unsupported location")
		return
	}
	var val uint64
	ok, linkAddr := true, false
	switch {
	case code >= dwOpLit0 && code <= dwOpLit31:
		val = uint64(code - dwOpLit0)
	case code == dwOpAddr:
		var b [8]byte
		_, err := rd.Read(b[:])
		ok = err == nil
		val = binary.LittleEndian.Uint64(b[:])
		linkAddr = true
	case code == dwOpConst1u, code == dwOpConst1s:
		val, ok = fixedOperand(rd, 1, code == dwOpConst1s)
	case code == dwOpConst2u, code == dwOpConst2s:
		val, ok = fixedOperand(rd, 2, code == dwOpConst2s)
	case code == dwOpConst4u, code == dwOpConst4s:
		val, ok = fixedOperand(rd, 4, code == dwOpConst4s)
	case code == dwOpConst8u, code == dwOpConst8s:
		val, ok = fixedOperand(rd, 8, false)
	case code == dwOpAddrx:
		var idx uint64
		if idx, ok = uleb(); ok {
			val, ok = w.debugAddr(idx)
			linkAddr = true
		}
	case code == dwOpConstu:
		val, ok = uleb()
	case code == dwOpConsts:
		var s int64
		s, ok = sleb()
		val = uint64(s)
	default:
		ok = false
	}
	if !ok || rd.Len() != 1 {
		unknown("computed value or pieces")
		return
	}
	v.Kind, v.Value, v.LinkAddr = VarConst, val, linkAddr
}

// regRelative locates a variable at register n + off: its memory, or
// with value set its value (DW_OP_stack_value). Relative to the CFA's
// register it is a frame slot (or a slot's address); the value of a
// register plus 0 is, for the frame switch, the register itself. It
// returns why not, "" when v is set.
func (w *varWalker) regRelative(v *FrameVar, n uint64, off int64, value bool) string {
	reg, k, err := w.b.cfaRule(w.pc)
	if err == nil && reg == n {
		v.Kind, v.Off = VarFrame, off-k
		if value {
			v.Kind = VarFrameAddr
		}
		return ""
	}
	if value && off == 0 && n <= 16 {
		v.Kind, v.Reg = VarReg, int(n)
		return ""
	}
	switch {
	case value:
		return fmt.Sprintf("the value of %s%+d", dwarfRegName(int(n)), off)
	case err != nil:
		return fmt.Sprintf("memory at %s%+d, CFA rule unknown: %v", dwarfRegName(int(n)), off, err)
	}
	return fmt.Sprintf("memory at %s%+d, and the CFA is %s%+d", dwarfRegName(int(n)), off, dwarfRegName(int(reg)), k)
}

func readULEB(r *bytes.Reader) (uint64, bool) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, false
		}
		v |= uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

func readSLEB(r *bytes.Reader) (int64, bool) {
	var v int64
	var shift uint
	for shift < 64 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, false
		}
		v |= int64(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			if shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return v, true
		}
	}
	return 0, false
}

// exprOp is one operation of a DWARF expression with its operands.
type exprOp struct {
	code  byte
	args  []int64
	block []byte // DW_OP_implicit_value, DW_OP_entry_value
}

// Operand layouts of the operations gcc and clang put in locations.
const (
	argNone = iota
	argU8
	argU16
	argU32
	argU64
	argULEB
	argSLEB
	argULEBSLEB // DW_OP_bregx
	argULEBULEB // DW_OP_bit_piece
	argBlock    // ULEB length, then that many bytes
	argRefSLEB  // DW_OP_implicit_pointer: 4-byte DIE offset, SLEB
)

func opLayout(c byte) (layout int, known bool) {
	switch {
	case c >= dwOpLit0 && c <= dwOpReg31:
		return argNone, true
	case c >= dwOpBreg0 && c <= dwOpBreg31:
		return argSLEB, true
	}
	switch c {
	case dwOpAddr, dwOpConst8u, dwOpConst8s:
		return argU64, true
	case dwOpConst1u, dwOpConst1s, 0x15, 0x94, 0x95: // pick, deref_size, xderef_size
		return argU8, true
	case dwOpConst2u, dwOpConst2s, 0x28, 0x2f, 0x98: // bra, skip, call2
		return argU16, true
	case dwOpConst4u, dwOpConst4s, 0x99: // call4
		return argU32, true
	case dwOpConstu, dwOpPlusUconst, dwOpRegx, dwOpPiece, dwOpAddrx, 0xa2, 0xa8, 0xa9: // constx, convert, reinterpret
		return argULEB, true
	case dwOpConsts, dwOpFbreg:
		return argSLEB, true
	case dwOpBregx:
		return argULEBSLEB, true
	case 0x9d: // DW_OP_bit_piece
		return argULEBULEB, true
	case dwOpImplicitVal, dwOpEntryValue, dwOpGNUEntryVal:
		return argBlock, true
	case dwOpImplicitPtr, dwOpGNUImplPtr:
		return argRefSLEB, true
	case 0x06, 0x12, 0x13, 0x14, 0x16, 0x17, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
		0x20, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e,
		0x96, 0x97, 0x9b, dwOpCallFrameCFA, dwOpStackValue, 0xe0: // deref, stack ops, arithmetic, comparisons, nop, push_object_address, form_tls_address, GNU_push_tls_address
		return argNone, true
	}
	return 0, false
}

// decodeExpr splits expr into operations; ok is false at the first
// operation it does not know or that is truncated: ops holds those before
// it, which end at byte n.
func decodeExpr(expr []byte) (ops []exprOp, n int, ok bool) {
	rd := bytes.NewReader(expr)
	fixed := func(n int) (int64, bool) {
		var b [8]byte
		if rd.Len() < n {
			return 0, false
		}
		rd.Read(b[:n])
		return int64(binary.LittleEndian.Uint64(b[:])), true
	}
	for rd.Len() > 0 {
		n = len(expr) - rd.Len()
		c, _ := rd.ReadByte()
		layout, known := opLayout(c)
		if !known {
			return ops, n, false
		}
		op := exprOp{code: c}
		ok := true
		var u uint64
		var sv int64
		switch layout {
		case argU8, argU16, argU32, argU64:
			n := map[int]int{argU8: 1, argU16: 2, argU32: 4, argU64: 8}[layout]
			sv, ok = fixed(n)
			op.args = []int64{sv}
		case argULEB:
			u, ok = readULEB(rd)
			op.args = []int64{int64(u)}
		case argSLEB:
			sv, ok = readSLEB(rd)
			op.args = []int64{sv}
		case argULEBSLEB, argULEBULEB:
			u, ok = readULEB(rd)
			if ok && layout == argULEBSLEB {
				sv, ok = readSLEB(rd)
			} else if ok {
				var u2 uint64
				u2, ok = readULEB(rd)
				sv = int64(u2)
			}
			op.args = []int64{int64(u), sv}
		case argBlock:
			u, ok = readULEB(rd)
			if ok && u <= uint64(rd.Len()) {
				op.block = make([]byte, u)
				rd.Read(op.block)
			} else {
				ok = false
			}
		case argRefSLEB:
			var ref int64
			ref, ok = fixed(4)
			if ok {
				sv, ok = readSLEB(rd)
			}
			op.args = []int64{ref, sv}
		}
		if !ok {
			return ops, n, false
		}
		ops = append(ops, op)
	}
	return ops, len(expr), true
}

var opNames = map[byte]string{
	dwOpAddr: "DW_OP_addr", 0x06: "DW_OP_deref", dwOpConst1u: "DW_OP_const1u", dwOpConst1s: "DW_OP_const1s",
	dwOpConst2u: "DW_OP_const2u", dwOpConst2s: "DW_OP_const2s", dwOpConst4u: "DW_OP_const4u",
	dwOpConst4s: "DW_OP_const4s", dwOpConst8u: "DW_OP_const8u", dwOpConst8s: "DW_OP_const8s",
	dwOpConstu: "DW_OP_constu", dwOpConsts: "DW_OP_consts", 0x1a: "DW_OP_and", 0x1c: "DW_OP_minus",
	0x1e: "DW_OP_mul", 0x1f: "DW_OP_neg", 0x20: "DW_OP_not", 0x21: "DW_OP_or", 0x22: "DW_OP_plus",
	dwOpPlusUconst: "DW_OP_plus_uconst", 0x24: "DW_OP_shl", 0x25: "DW_OP_shr", 0x26: "DW_OP_shra",
	0x27: "DW_OP_xor", dwOpRegx: "DW_OP_regx", dwOpFbreg: "DW_OP_fbreg", dwOpBregx: "DW_OP_bregx",
	dwOpPiece: "DW_OP_piece", 0x9d: "DW_OP_bit_piece", dwOpCallFrameCFA: "DW_OP_call_frame_cfa",
	dwOpImplicitVal: "DW_OP_implicit_value", dwOpStackValue: "DW_OP_stack_value",
	dwOpImplicitPtr: "DW_OP_implicit_pointer", dwOpAddrx: "DW_OP_addrx", dwOpEntryValue: "DW_OP_entry_value",
	dwOpGNUImplPtr: "DW_OP_GNU_implicit_pointer", dwOpGNUEntryVal: "DW_OP_GNU_entry_value",
}

// prettyExpr prints a DWARF expression for a Why, in readelf's words.
func prettyExpr(expr []byte) string {
	ops, n, ok := decodeExpr(expr)
	var parts []string
	for _, op := range ops {
		var p string
		switch c := op.code; {
		case c >= dwOpLit0 && c <= dwOpLit31:
			p = fmt.Sprintf("DW_OP_lit%d", c-dwOpLit0)
		case c >= dwOpReg0 && c <= dwOpReg31:
			p = fmt.Sprintf("DW_OP_reg%d (%s)", c-dwOpReg0, dwarfRegName(int(c-dwOpReg0)))
		case c >= dwOpBreg0 && c <= dwOpBreg31:
			p = fmt.Sprintf("DW_OP_breg%d (%s) %d", c-dwOpBreg0, dwarfRegName(int(c-dwOpBreg0)), op.args[0])
		default:
			p = opNames[c]
			if p == "" {
				p = fmt.Sprintf("DW_OP_%#x", c)
			}
			for _, a := range op.args {
				p += fmt.Sprintf(" %d", a)
			}
			if op.block != nil {
				p += " (" + prettyExpr(op.block) + ")"
			}
		}
		parts = append(parts, p)
	}
	if !ok {
		parts = append(parts, fmt.Sprintf("[undecoded: % x]", expr[n:]))
	}
	return strings.Join(parts, "; ")
}

// hasPieces reports whether expr describes its object in pieces
// (DW_OP_piece, DW_OP_bit_piece): parts in different places.
func hasPieces(expr []byte) bool {
	ops, _, _ := decodeExpr(expr)
	for _, op := range ops {
		if op.code == dwOpPiece || op.code == 0x9d {
			return true
		}
	}
	return false
}

// fixedOperand reads an n-byte little-endian operand, sign-extended when
// signed.
func fixedOperand(rd io.Reader, n int, signed bool) (uint64, bool) {
	var b [8]byte
	if _, err := io.ReadFull(rd, b[:n]); err != nil {
		return 0, false
	}
	v := binary.LittleEndian.Uint64(b[:])
	if signed && n < 8 && v&(1<<(8*n-1)) != 0 {
		v |= ^uint64(0) << (8 * n)
	}
	return v, true
}
