package goruntime

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"strings"
)

// Layout is what graft needs of one Go runtime build: member offsets and
// constants from its DWARF, runtime symbols' link-time addresses from its
// symbol table. Add the module's load bias to the addresses.
type Layout struct {
	// G: runtime.g.
	G struct {
		StackLo, StackHi     int // g.stack.lo, g.stack.hi
		SchedSP, SchedPC     int // g.sched.sp, g.sched.pc
		SchedBP              int // g.sched.bp
		SyscallSP, SyscallPC int
		Status, Goid, M      int // atomicstatus, goid, m
		Size                 int
	}
	// M: runtime.m.
	M struct {
		Procid, Curg, G0, Gsignal int
		// VdsoSP/VdsoPC: where a goroutine that called into the vDSO
		// on the system stack left its own stack (0 when not in a
		// vDSO call).
		VdsoSP, VdsoPC int
	}
	// Module: runtime.moduledata member offsets by name, and its size.
	Module     map[string]int
	ModuleSize int
	// Func: runtime._func.
	Func struct {
		EntryOff, NameOff, Pcsp, Pcfile, Pcln, CuOffset int
		StartLine, FuncID, Flag, Npcdata, Nfuncdata     int
		Size                                            int
	}
	// Inl is runtime.inlinedCall (one entry of a function's inline
	// tree), and PCDataInlIndex/FuncDataInlTree the indexes of the
	// tables that locate it; Inl.Size is 0 when the DWARF lacks them
	// (inlined frames are then not shown).
	Inl struct {
		NameOff, ParentPc, Size int
	}
	PCDataInlIndex, FuncDataInlTree int
	// Status are the goroutine status constants (runtime._Grunning, ...)
	// by name without the "runtime._G" prefix ("running", "scan").
	Status map[string]uint32
	// Symbols, link-time addresses.
	AllGs, AllGLen, FirstModuledata, LastModuledatap uint64
}

// ErrNoDWARF means the binary carries no DWARF (built with -ldflags=-w or
// stripped): graft reads the runtime's layouts from it and cannot guess.
var ErrNoDWARF = errors.New("the Go binary has no DWARF (built with -ldflags=-w, or stripped): graft reads the Go runtime's layouts from it; rebuild without -w/-s")

// IsGo reports whether f is a Go program: it has a .go.buildinfo section
// (every Go build since 1.18, stripped or not) or a .gopclntab. No symbol
// table is read: this is asked of every target, C programs included.
func IsGo(f *elf.File) bool {
	return f.Section(".go.buildinfo") != nil || f.Section(".gopclntab") != nil
}

type member struct {
	off int
	typ dwarf.Offset
}

type structInfo struct {
	size    int
	members map[string]member
}

// ReadLayout reads the runtime's layouts from f's DWARF and symbols.
func ReadLayout(f *elf.File) (*Layout, error) {
	d, err := f.DWARF()
	if err != nil {
		return nil, fmt.Errorf("read Go runtime layout: %w (%v)", ErrNoDWARF, err)
	}
	want := map[string]bool{
		"runtime.g": true, "runtime.gobuf": true, "runtime.stack": true,
		"runtime.m": true, "runtime.moduledata": true, "runtime._func": true,
		"runtime.inlinedCall": true,
	}
	abiConsts := map[string]int64{}
	structs := map[string]*structInfo{}
	consts := map[string]uint32{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read Go runtime layout: DWARF: %w", err)
		}
		if e == nil {
			break
		}
		switch e.Tag {
		case dwarf.TagCompileUnit:
			continue
		case dwarf.TagConstant:
			name, _ := e.Val(dwarf.AttrName).(string)
			if name == "internal/abi.PCDATA_InlTreeIndex" || name == "internal/abi.FUNCDATA_InlTree" {
				if v, ok := e.Val(dwarf.AttrConstValue).(int64); ok {
					abiConsts[name] = v
				}
			}
			if strings.HasPrefix(name, "runtime._G") {
				if v, ok := e.Val(dwarf.AttrConstValue).(int64); ok {
					consts[strings.ToLower(strings.TrimPrefix(name, "runtime._G"))] = uint32(v)
				}
			}
		case dwarf.TagStructType:
			name, _ := e.Val(dwarf.AttrName).(string)
			if want[name] && structs[name] == nil && e.Children {
				si := &structInfo{members: map[string]member{}}
				if sz, ok := e.Val(dwarf.AttrByteSize).(int64); ok {
					si.size = int(sz)
				}
				for {
					c, err := r.Next()
					if err != nil {
						return nil, fmt.Errorf("read Go runtime layout: DWARF: %w", err)
					}
					if c == nil || c.Tag == 0 {
						break
					}
					if c.Tag != dwarf.TagMember {
						if c.Children {
							r.SkipChildren()
						}
						continue
					}
					mn, _ := c.Val(dwarf.AttrName).(string)
					off, ok := c.Val(dwarf.AttrDataMemberLoc).(int64)
					if !ok {
						continue
					}
					t, _ := c.Val(dwarf.AttrType).(dwarf.Offset)
					si.members[mn] = member{int(off), t}
				}
				structs[name] = si
				continue
			}
		}
		if e.Children {
			r.SkipChildren()
		}
	}
	l := &Layout{Module: map[string]int{}, Status: consts}
	var missing []string
	get := func(st string, path ...string) int {
		si := structs[st]
		if si == nil {
			missing = append(missing, st)
			return 0
		}
		off := 0
		for i, p := range path {
			m, ok := si.members[p]
			if !ok {
				missing = append(missing, st+"."+strings.Join(path[:i+1], "."))
				return 0
			}
			off += m.off
			if i+1 < len(path) {
				// Nested: the member's type is one of the structs read.
				next := ""
				switch p {
				case "sched":
					next = "runtime.gobuf"
				case "stack":
					next = "runtime.stack"
				}
				si = structs[next]
				if si == nil {
					missing = append(missing, next)
					return 0
				}
			}
		}
		return off
	}
	g := &l.G
	g.StackLo = get("runtime.g", "stack", "lo")
	g.StackHi = get("runtime.g", "stack", "hi")
	g.SchedSP = get("runtime.g", "sched", "sp")
	g.SchedPC = get("runtime.g", "sched", "pc")
	g.SchedBP = get("runtime.g", "sched", "bp")
	g.SyscallSP = get("runtime.g", "syscallsp")
	g.SyscallPC = get("runtime.g", "syscallpc")
	g.Status = get("runtime.g", "atomicstatus")
	g.Goid = get("runtime.g", "goid")
	g.M = get("runtime.g", "m")
	if si := structs["runtime.g"]; si != nil {
		g.Size = si.size
	}
	l.M.Procid = get("runtime.m", "procid")
	l.M.Curg = get("runtime.m", "curg")
	l.M.G0 = get("runtime.m", "g0")
	l.M.Gsignal = get("runtime.m", "gsignal")
	l.M.VdsoSP = get("runtime.m", "vdsoSP")
	l.M.VdsoPC = get("runtime.m", "vdsoPC")
	if si := structs["runtime.moduledata"]; si != nil {
		l.ModuleSize = si.size
		for n, m := range si.members {
			l.Module[n] = m.off
		}
		for _, n := range []string{"pcHeader", "funcnametab", "cutab", "filetab", "pctab", "pclntable", "ftab", "minpc", "maxpc", "text", "etext", "next", "bad", "gofunc", "end", "typemap", "inittasks", "textsectmap"} {
			if _, ok := si.members[n]; !ok {
				missing = append(missing, "runtime.moduledata."+n)
			}
		}
	} else {
		missing = append(missing, "runtime.moduledata")
	}
	fn := &l.Func
	fn.EntryOff = get("runtime._func", "entryOff")
	fn.NameOff = get("runtime._func", "nameOff")
	fn.Pcsp = get("runtime._func", "pcsp")
	fn.Pcfile = get("runtime._func", "pcfile")
	fn.Pcln = get("runtime._func", "pcln")
	fn.CuOffset = get("runtime._func", "cuOffset")
	fn.StartLine = get("runtime._func", "startLine")
	fn.FuncID = get("runtime._func", "funcID")
	fn.Flag = get("runtime._func", "flag")
	fn.Npcdata = get("runtime._func", "npcdata")
	fn.Nfuncdata = get("runtime._func", "nfuncdata")
	if si := structs["runtime._func"]; si != nil {
		fn.Size = si.size
	}
	if si := structs["runtime.inlinedCall"]; si != nil {
		pi, ok1 := abiConsts["internal/abi.PCDATA_InlTreeIndex"]
		fi, ok2 := abiConsts["internal/abi.FUNCDATA_InlTree"]
		no, ok3 := si.members["nameOff"]
		pp, ok4 := si.members["parentPc"]
		if ok1 && ok2 && ok3 && ok4 {
			l.Inl.NameOff, l.Inl.ParentPc, l.Inl.Size = no.off, pp.off, si.size
			l.PCDataInlIndex, l.FuncDataInlTree = int(pi), int(fi)
		}
	}
	for _, c := range []string{"running", "syscall", "dead", "scan"} {
		if _, ok := consts[c]; !ok {
			missing = append(missing, "runtime._G"+c)
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("read Go runtime layout: symbol table: %w", err)
	}
	for _, s := range syms {
		switch s.Name {
		case "runtime.allgs":
			l.AllGs = s.Value
		case "runtime.allglen":
			l.AllGLen = s.Value
		case "runtime.firstmoduledata":
			l.FirstModuledata = s.Value
		case "runtime.lastmoduledatap":
			l.LastModuledatap = s.Value
		}
	}
	for n, v := range map[string]uint64{"runtime.allgs": l.AllGs, "runtime.allglen": l.AllGLen, "runtime.firstmoduledata": l.FirstModuledata, "runtime.lastmoduledatap": l.LastModuledatap} {
		if v == 0 {
			missing = append(missing, "symbol "+n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("read Go runtime layout: not in the binary's DWARF/symbols (an unsupported Go version?): %s", strings.Join(missing, ", "))
	}
	return l, nil
}
