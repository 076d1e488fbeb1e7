package elfpatch

import (
	"debug/dwarf"
	"fmt"
	"path/filepath"
)

// dwarfIndex is what the diff needs from DWARF, read in one pass over the
// debugging entries: subprograms by entry address (their signature and the
// types of their parameters and locals) and variables with a static
// address (their type, and the function a function-local static is in).
// Types themselves are parsed lazily by debug/dwarf when compared.
type dwarfIndex struct {
	d        *dwarf.Data
	funcs    map[uint64]*dwFunc       // concrete subprograms by low_pc
	subprogs map[dwarf.Offset]*dwFunc // every subprogram DIE
	vars     map[uint64]*dwVar        // variables with DW_OP_addr, by address
	varDIEs  map[dwarf.Offset]*dwVar  // declarations a definition may refer to
	cus      map[dwarf.Offset]*dwarf.Entry
	files    map[dwarf.Offset][]*dwarf.LineFile
}

type dwFunc struct {
	name     string
	cu       dwarf.Offset
	file     int64
	line     int64
	ret      dwarf.Offset
	hasRet   bool
	params   []dwarf.Offset
	hasProto bool // has parameter children (or is known to have none)
	origin   dwarf.Offset
	// uses are the types of the subprogram's parameters and locals.
	uses []dwTypeUse
}

type dwTypeUse struct {
	name string
	typ  dwarf.Offset
}

type dwVar struct {
	name   string
	cu     dwarf.Offset
	file   int64
	line   int64
	typ    dwarf.Offset
	hasTyp bool
	spec   dwarf.Offset
	parent *dwFunc // enclosing function of a function-local static
}

// dwarfIdx builds the index on first use (once, even when both sides of a
// Diff are one Binary); nil if the binary has no usable DWARF.
func (b *Binary) dwarfIdx() *dwarfIndex {
	b.dwOnce.Do(func() {
		if b.dw == nil {
			return
		}
		idx, err := buildDwarfIndex(b.dw)
		if err != nil {
			b.dwErr = err
			return
		}
		b.dwIdx = idx
	})
	return b.dwIdx
}

func buildDwarfIndex(d *dwarf.Data) (idx *dwarfIndex, err error) {
	defer func() {
		if r := recover(); r != nil {
			idx, err = nil, fmt.Errorf("read DWARF: malformed: %v", r)
		}
	}()
	idx = &dwarfIndex{
		d:        d,
		funcs:    map[uint64]*dwFunc{},
		subprogs: map[dwarf.Offset]*dwFunc{},
		vars:     map[uint64]*dwVar{},
		varDIEs:  map[dwarf.Offset]*dwVar{},
		cus:      map[dwarf.Offset]*dwarf.Entry{},
		files:    map[dwarf.Offset][]*dwarf.LineFile{},
	}
	r := d.Reader()
	var cu dwarf.Offset
	// stack holds, per open DIE with children, the subprogram it is in.
	var stack []*dwFunc
	cur := func() *dwFunc {
		if len(stack) == 0 {
			return nil
		}
		return stack[len(stack)-1]
	}
	for {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("read DWARF: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		in := cur()
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			cu = e.Offset
			idx.cus[cu] = e
			stack = stack[:0]
			in = nil
		case dwarf.TagSubprogram:
			fn := &dwFunc{cu: cu}
			fn.name, _ = e.Val(dwarf.AttrName).(string)
			fn.file, _ = e.Val(dwarf.AttrDeclFile).(int64)
			fn.line, _ = e.Val(dwarf.AttrDeclLine).(int64)
			if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
				fn.ret, fn.hasRet = t, true
			}
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
				fn.origin = o
			} else if o, ok := e.Val(dwarf.AttrSpecification).(dwarf.Offset); ok {
				fn.origin = o
			}
			if p, ok := e.Val(dwarf.AttrPrototyped).(bool); ok && p {
				fn.hasProto = true
			}
			idx.subprogs[e.Offset] = fn
			if lo, ok := e.Val(dwarf.AttrLowpc).(uint64); ok && lo != 0 {
				if _, dup := idx.funcs[lo]; !dup {
					idx.funcs[lo] = fn
				}
			} else if e.Val(dwarf.AttrRanges) != nil {
				// A function split into hot and cold parts has ranges
				// instead of low_pc; its entry is one of their starts.
				if rs, err := d.Ranges(e); err == nil {
					for _, rg := range rs {
						if _, dup := idx.funcs[rg[0]]; !dup && rg[0] != 0 {
							idx.funcs[rg[0]] = fn
						}
					}
				}
			}
			if e.Children {
				stack = append(stack, fn)
			}
			continue
		case dwarf.TagFormalParameter, dwarf.TagVariable:
			name, _ := e.Val(dwarf.AttrName).(string)
			t, hasT := e.Val(dwarf.AttrType).(dwarf.Offset)
			// A parameter with its own type belongs to the subprogram
			// itself; those of inlined calls and of out-of-line copies
			// only point at their abstract origin.
			if e.Tag == dwarf.TagFormalParameter && in != nil && hasT && in.origin == 0 {
				in.params = append(in.params, t)
			}
			if in != nil && hasT {
				in.uses = append(in.uses, dwTypeUse{name, t})
			}
			if e.Tag == dwarf.TagVariable {
				v := &dwVar{name: name, cu: cu, typ: t, hasTyp: hasT, parent: in}
				v.file, _ = e.Val(dwarf.AttrDeclFile).(int64)
				v.line, _ = e.Val(dwarf.AttrDeclLine).(int64)
				if s, ok := e.Val(dwarf.AttrSpecification).(dwarf.Offset); ok {
					v.spec = s
				} else if s, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
					v.spec = s
				}
				if in == nil {
					idx.varDIEs[e.Offset] = v
				}
				if loc, ok := e.Val(dwarf.AttrLocation).([]byte); ok && len(loc) == 9 && loc[0] == 0x03 { // DW_OP_addr
					addr := uint64(0)
					for i := 8; i >= 1; i-- {
						addr = addr<<8 | uint64(loc[i])
					}
					if _, dup := idx.vars[addr]; !dup && addr != 0 {
						idx.vars[addr] = v
					}
				}
			}
		}
		if e.Children {
			stack = append(stack, in)
		}
	}
	return idx, nil
}

// fn returns the subprogram whose code starts at addr, with its abstract
// origin (which holds name, declaration and parameters of a clone or an
// out-of-line copy of an inline function).
func (x *dwarfIndex) fn(addr uint64) (concrete, abstract *dwFunc) {
	f := x.funcs[addr]
	if f == nil {
		return nil, nil
	}
	a := f
	for i := 0; i < 4 && a.origin != 0; i++ {
		o := x.subprogs[a.origin]
		if o == nil {
			break
		}
		a = o
	}
	return f, a
}

// variable returns the variable at addr with its declaration resolved.
func (x *dwarfIndex) variable(addr uint64) *dwVar {
	v := x.vars[addr]
	if v == nil {
		return nil
	}
	if (!v.hasTyp || v.name == "") && v.spec != 0 {
		if s := x.varDIEs[v.spec]; s != nil {
			c := *v
			if !c.hasTyp {
				c.typ, c.hasTyp = s.typ, s.hasTyp
			}
			if c.name == "" {
				c.name = s.name
			}
			if c.line == 0 {
				c.file, c.line = s.file, s.line
			}
			return &c
		}
	}
	return v
}

// source formats a declaration's file:line, "" if unknown.
func (x *dwarfIndex) source(cu dwarf.Offset, file, line int64) string {
	if line == 0 {
		return ""
	}
	files, ok := x.files[cu]
	if !ok {
		if e := x.cus[cu]; e != nil {
			if lr, err := x.d.LineReader(e); err == nil && lr != nil {
				files = lr.Files()
			}
		}
		x.files[cu] = files
	}
	name := "?"
	if file >= 0 && file < int64(len(files)) && files[file] != nil {
		name = filepath.Base(files[file].Name)
	}
	return fmt.Sprintf("%s:%d", name, line)
}

// typ parses the type at off, nil if it cannot.
func (x *dwarfIndex) typ(off dwarf.Offset) (t dwarf.Type) {
	defer func() {
		if recover() != nil {
			t = nil
		}
	}()
	t, err := x.d.Type(off)
	if err != nil {
		return nil
	}
	return t
}
