package goruntime

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// Mem reads target memory (process_vm_readv, /proc/PID/mem, a fake).
type Mem interface {
	ReadAt(b []byte, addr int64) (int, error)
}

// Function flags (internal/abi.FuncFlag), stable since Go 1.21.
const (
	flagTopFrame = 1 << 0
	flagSPWrite  = 1 << 1
)

// maxModules bounds the walk of the next chain: a damaged or hostile
// chain must not loop forever.
const maxModules = 1024

// Module is one entry of the runtime's module list, with its pclntab read
// from the target.
type Module struct {
	// Addr is the moduledata's address; Next the next one's (0: last).
	Addr, Next uint64
	// MinPC, MaxPC bound the code the module describes; Text is the base
	// function entry offsets count from.
	MinPC, MaxPC, Text uint64
	// GoFunc is where the funcdata offsets count from.
	GoFunc uint64
	// Bad is the moduledata's bad flag (graft sets it on the modules it
	// registers, so the runtime keeps them out of type and GC-root lists).
	Bad bool

	l                                           *Layout
	funcnametab, cutab, filetab, pctab, functab []byte
	nftab                                       int
	// names caches function names by _func offset.
	names map[int]string
}

func le64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

// readSlice reads the []byte whose header is at off in md.
func readSlice(mem Mem, md []byte, off int, limit uint64) ([]byte, error) {
	ptr, n := le64(md, off), le64(md, off+8)
	if n > limit {
		return nil, fmt.Errorf("slice of %d bytes at %#x: implausible", n, ptr)
	}
	b := make([]byte, n)
	if n == 0 {
		return b, nil
	}
	if _, err := mem.ReadAt(b, int64(ptr)); err != nil {
		return nil, fmt.Errorf("read %d bytes at %#x: %w", n, ptr, err)
	}
	return b, nil
}

// ReadModuledata reads the raw moduledata at addr.
func (l *Layout) ReadModuledata(mem Mem, addr uint64) ([]byte, error) {
	md := make([]byte, l.ModuleSize)
	if _, err := mem.ReadAt(md, int64(addr)); err != nil {
		return nil, fmt.Errorf("read moduledata at %#x: %w", addr, err)
	}
	return md, nil
}

// LoadModule reads the moduledata at addr and its pclntab.
func (l *Layout) LoadModule(mem Mem, addr uint64) (*Module, error) {
	md, err := l.ReadModuledata(mem, addr)
	if err != nil {
		return nil, err
	}
	m := &Module{Addr: addr, l: l}
	o := l.Module
	m.Next = le64(md, o["next"])
	m.MinPC, m.MaxPC, m.Text = le64(md, o["minpc"]), le64(md, o["maxpc"]), le64(md, o["text"])
	m.Bad = md[o["bad"]] != 0
	m.GoFunc = le64(md, o["gofunc"])
	const limit = 1 << 30
	fail := func(what string, err error) error {
		return fmt.Errorf("read module at %#x: %s: %w", addr, what, err)
	}
	if m.funcnametab, err = readSlice(mem, md, o["funcnametab"], limit); err != nil {
		return nil, fail("funcnametab", err)
	}
	// cutab is a []uint32: its length counts elements.
	if n := le64(md, o["cutab"]+8); n > limit/4 {
		return nil, fail("cutab", fmt.Errorf("%d entries: implausible", n))
	} else {
		b := make([]byte, 4*n)
		if _, err := mem.ReadAt(b, int64(le64(md, o["cutab"]))); err != nil {
			return nil, fail("cutab", err)
		}
		m.cutab = b
	}
	if m.filetab, err = readSlice(mem, md, o["filetab"], limit); err != nil {
		return nil, fail("filetab", err)
	}
	if m.pctab, err = readSlice(mem, md, o["pctab"], limit); err != nil {
		return nil, fail("pctab", err)
	}
	// pclntable holds ftab (a []functab of 8-byte entries, the last one
	// a sentinel at the end of the text) followed by the _func records
	// that functab.funcoff points at, relative to pclntable's start.
	if m.functab, err = readSlice(mem, md, o["pclntable"], limit); err != nil {
		return nil, fail("pclntable", err)
	}
	nftab := le64(md, o["ftab"]+8)
	if le64(md, o["ftab"]) != le64(md, o["pclntable"]) || nftab == 0 || nftab*8 > uint64(len(m.functab)) {
		return nil, fail("ftab", fmt.Errorf("ftab (%d entries at %#x) is not at the start of pclntable (%d bytes at %#x)", nftab, le64(md, o["ftab"]), len(m.functab), le64(md, o["pclntable"])))
	}
	m.nftab = int(nftab) - 1 // without the sentinel
	if m.MaxPC <= m.MinPC || m.Text < m.MinPC {
		return nil, fail("bounds", fmt.Errorf("minpc %#x, maxpc %#x, text %#x", m.MinPC, m.MaxPC, m.Text))
	}
	return m, nil
}

// Func is one function of a module.
type Func struct {
	Entry uint64
	Name  string
	mod   *Module
	off   int // of its _func in functab
}

// FuncID and flags.
func (f Func) flag() uint8 { return f.mod.functab[f.off+f.mod.l.Func.Flag] }

// Module returns the module f belongs to.
func (f Func) Module() *Module { return f.mod }

// FindFunc returns the function holding pc, if the module describes it.
func (m *Module) FindFunc(pc uint64) (Func, bool) {
	if pc < m.MinPC || pc >= m.MaxPC {
		return Func{}, false
	}
	off := uint32(pc - m.Text)
	// First entry whose start is beyond off, minus one.
	i := sort.Search(m.nftab, func(i int) bool { return le32(m.functab, 8*i) > off }) - 1
	if i < 0 {
		return Func{}, false
	}
	if end := le32(m.functab, 8*(i+1)); off >= end {
		return Func{}, false
	}
	fo := int(le32(m.functab, 8*i+4))
	if fo < 0 || fo+m.l.Func.Size > len(m.functab) {
		return Func{}, false
	}
	f := Func{mod: m, off: fo}
	f.Entry = m.Text + uint64(le32(m.functab, fo+m.l.Func.EntryOff))
	name, ok := m.names[fo]
	if !ok {
		name = m.cstring(m.funcnametab, int(int32(le32(m.functab, fo+m.l.Func.NameOff))))
		if m.names == nil {
			m.names = map[int]string{}
		}
		m.names[fo] = name
	}
	f.Name = name
	return f, true
}

// End returns the end of f (the next function's entry).
func (f Func) End() uint64 {
	m := f.mod
	off := uint32(f.Entry - m.Text)
	i := sort.Search(m.nftab, func(i int) bool { return le32(m.functab, 8*i) > off })
	return m.Text + uint64(le32(m.functab, 8*i))
}

func (m *Module) cstring(tab []byte, off int) string {
	if off < 0 || off >= len(tab) {
		return ""
	}
	end := off
	for end < len(tab) && tab[end] != 0 {
		end++
	}
	return string(tab[off:end])
}

// pcvalue decodes the pc-value table at tab offset off of f for pc;
// ok false if pc is outside the table.
func (f Func) pcvalue(off uint32, pc uint64) (int32, bool) {
	if off == 0 {
		return 0, false
	}
	p := f.mod.pctab
	if int(off) >= len(p) {
		return 0, false
	}
	p = p[off:]
	val := int32(-1)
	cur := f.Entry
	first := true
	for len(p) > 0 {
		uv, n := uvarint(p)
		if n <= 0 || (uv == 0 && !first) {
			return 0, false
		}
		first = false
		p = p[n:]
		val += int32(-(uv & 1) ^ (uv >> 1))
		pd, n := uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		cur += uint64(pd) // PCQuantum is 1 on amd64
		if pc < cur {
			return val, true
		}
	}
	return 0, false
}

func uvarint(p []byte) (uint32, int) {
	var v uint32
	var shift uint
	for i, b := range p {
		if i >= 5 {
			return 0, -1
		}
		v |= uint32(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, i + 1
		}
		shift += 7
	}
	return 0, -1
}

// pcdata returns the value of f's pc-value table number i at pc.
func (f Func) pcdata(i int, pc uint64) (int32, bool) {
	m, l := f.mod, f.mod.l
	if i < 0 || i >= int(le32(m.functab, f.off+l.Func.Npcdata)) {
		return 0, false
	}
	at := f.off + l.Func.Size + 4*i
	if at+4 > len(m.functab) {
		return 0, false
	}
	return f.pcvalue(le32(m.functab, at), pc)
}

// funcdata returns the address of f's funcdata number i (0 if none).
func (f Func) funcdata(i int) uint64 {
	m, l := f.mod, f.mod.l
	if i < 0 || i >= int(m.functab[f.off+l.Func.Nfuncdata]) {
		return 0
	}
	at := f.off + l.Func.Size + 4*int(le32(m.functab, f.off+l.Func.Npcdata)) + 4*i
	if at+4 > len(m.functab) {
		return 0
	}
	off := le32(m.functab, at)
	if off == ^uint32(0) {
		return 0
	}
	return m.GoFunc + uint64(off)
}

// Inlined returns the calls inlined at pc in f, innermost first: each
// inlined function's name and its file:line (the last entry is f itself,
// at the line of the outermost call). With no inlining at pc it returns f
// alone.
func (f Func) Inlined(mem Mem, pc uint64) []Frame {
	l := f.mod.l
	var out []Frame
	tree := uint64(0)
	if l.Inl.Size > 0 {
		tree = f.funcdata(l.FuncDataInlTree)
	}
	for n := 0; n < 64 && tree != 0; n++ {
		idx, ok := f.pcdata(l.PCDataInlIndex, pc)
		if !ok || idx < 0 {
			break
		}
		ent := make([]byte, l.Inl.Size)
		if _, err := mem.ReadAt(ent, int64(tree)+int64(idx)*int64(l.Inl.Size)); err != nil {
			break
		}
		fr := Frame{Func: f.mod.cstring(f.mod.funcnametab, int(int32(le32(ent, l.Inl.NameOff)))), Inlined: true}
		fr.File, fr.Line = f.Line(pc)
		out = append(out, fr)
		pc = f.Entry + uint64(int32(le32(ent, l.Inl.ParentPc)))
	}
	fr := Frame{Func: f.Name}
	fr.File, fr.Line = f.Line(pc)
	return append(out, fr)
}

// SPDelta is the frame size of f at pc (bytes below the return address).
func (f Func) SPDelta(pc uint64) (int32, bool) {
	return f.pcvalue(le32(f.mod.functab, f.off+f.mod.l.Func.Pcsp), pc)
}

// Line returns the file and line of pc in f ("", 0 if unknown).
func (f Func) Line(pc uint64) (string, int) {
	m, l := f.mod, f.mod.l
	line, ok := f.pcvalue(le32(m.functab, f.off+l.Func.Pcln), pc)
	if !ok {
		return "", 0
	}
	fileno, ok := f.pcvalue(le32(m.functab, f.off+l.Func.Pcfile), pc)
	if !ok || fileno < 0 {
		return "", int(line)
	}
	cu := int(le32(m.functab, f.off+l.Func.CuOffset))
	i := 4 * (cu + int(fileno))
	if i < 0 || i+4 > len(m.cutab) {
		return "", int(line)
	}
	return m.cstring(m.filetab, int(le32(m.cutab, i))), int(line)
}

// Modules is the runtime's module list of one process, cached: a module's
// pclntab never changes once registered, so only the chain is re-read.
type Modules struct {
	L    *Layout
	Bias uint64 // the executable's load bias
	// Lines makes Unwind fill in each frame's file and line (for
	// display; the activeness check does without).
	Lines bool
	List  []*Module
	byAd  map[uint64]*Module
	// buf is reused for reading stacks.
	buf []byte
	// facts caches unwinding facts by PC (unwind.go). Only PCs found in
	// a registered module are cached, and a module is never taken out,
	// so a cached answer stays true.
	facts map[[2]uint64]frameFacts
}

// NewModules returns an empty cache for a process whose executable has
// layout l and load bias bias.
func NewModules(l *Layout, bias uint64) *Modules {
	return &Modules{L: l, Bias: bias, byAd: map[uint64]*Module{}}
}

// Refresh walks firstmoduledata's next chain and loads modules not seen.
func (ms *Modules) Refresh(mem Mem) error {
	var list []*Module
	next := ms.Bias + ms.L.FirstModuledata
	for next != 0 {
		if len(list) == maxModules {
			return fmt.Errorf("Go module list longer than %d entries (damaged?)", maxModules)
		}
		m := ms.byAd[next]
		if m == nil {
			var err error
			m, err = ms.L.LoadModule(mem, next)
			if err != nil {
				return err
			}
			ms.byAd[next] = m
		} else {
			// The next pointer of the last module changes when a
			// module is appended.
			var b [8]byte
			if _, err := mem.ReadAt(b[:], int64(next)+int64(ms.L.Module["next"])); err != nil {
				return fmt.Errorf("read moduledata at %#x: %w", next, err)
			}
			m.Next = binary.LittleEndian.Uint64(b[:])
		}
		list = append(list, m)
		next = m.Next
	}
	ms.List = list
	return nil
}

// FindFunc looks pc up in every module.
func (ms *Modules) FindFunc(pc uint64) (Func, bool) {
	for _, m := range ms.List {
		if f, ok := m.FindFunc(pc); ok {
			return f, true
		}
	}
	return Func{}, false
}
