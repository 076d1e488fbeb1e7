package elfpatch

import (
	"bytes"
	"debug/dwarf"
	"fmt"
	"sort"
	"strings"
)

// objKey matches data objects between builds. A function-local static
// ("counter.0") is qualified by its function when DWARF says which, since
// GCC numbers them per file in an order that shifts between builds.
func (s *side) objKey(o *symbol) string {
	k := o.key()
	if s.dw != nil && !s.unqualified {
		if v := s.dw.vars[o.addr]; v != nil && v.parent != nil {
			if name := s.dw.funcName(v.parent); name != "" {
				k += "/" + name
			}
		}
	}
	return k
}

// funcName is a subprogram's name, through its abstract origin.
func (x *dwarfIndex) funcName(f *dwFunc) string {
	for i := 0; i < 4 && f != nil; i++ {
		if f.name != "" {
			return f.name
		}
		f = x.subprogs[f.origin]
	}
	return ""
}

func (s *side) objInfo(o *symbol) (t dwarf.Type, src, fn string) {
	if s.dw == nil {
		return nil, "", ""
	}
	v := s.dw.variable(o.addr)
	if v == nil {
		return nil, "", ""
	}
	if v.hasTyp {
		t = s.dw.typ(v.typ)
	}
	if v.parent != nil {
		fn = s.dw.funcName(v.parent)
	}
	return t, s.dw.source(v.cu, v.file, v.line), fn
}

func (s *side) objValue(o *symbol) []byte {
	if v, ok := s.values[o]; ok {
		return v
	}
	var v []byte
	if g := s.b.goImage(); g != nil {
		v = g.goValue(o)
	} else if d := s.b.read(o.addr, o.size); d != nil {
		v = s.b.objectValue(o, d)
	}
	s.values[o] = v
	return v
}

// globals compares the data objects: added, removed, type (through DWARF)
// and initial value (pointers compared by what they point to).
func (d *differ) globals() {
	okey := map[*symbol]string{}
	for _, o := range d.old.objs {
		okey[o] = "o" + d.old.objKey(o)
	}
	nkey := map[*symbol]string{}
	for _, n := range d.new.objs {
		nkey[n] = "o" + d.new.objKey(n)
	}
	key := func(s *symbol) string {
		if k, ok := okey[s]; ok {
			return k
		}
		return nkey[s]
	}
	name := func(s *symbol) string { return cloneKey(s.name) }
	same := func(a, b *symbol) bool {
		return a.size == b.size && bytes.Equal(d.old.objValue(a), d.new.objValue(b))
	}
	pairs, removed, added := pairUp(d.old.objs, d.new.objs, key, name, same)
	for _, p := range pairs {
		d.global(p[0], p[1])
	}
	for _, n := range added {
		t, src, fn := d.new.objInfo(n)
		g := GlobalChange{Name: n.name, File: n.file, Local: n.local, Source: src, Function: fn,
			Changes: []string{"added"}, NewAddr: n.addr, NewSize: n.size, ReadOnly: n.ro}
		if t != nil {
			g.NewType = t.String()
		}
		d.r.Globals = append(d.r.Globals, g)
		d.reason(VerdictAuto, n.name, src, "%s is new; it lives in the new image, initialised from the new build", n.name)
	}
	for _, o := range removed {
		t, src, fn := d.old.objInfo(o)
		g := GlobalChange{Name: o.name, File: o.file, Local: o.local, Source: src, Function: fn,
			Changes: []string{"removed"}, OldAddr: o.addr, OldSize: o.size, ReadOnly: o.ro}
		if t != nil {
			g.OldType = t.String()
		}
		d.r.Globals = append(d.r.Globals, g)
		// New code can still reach a name the executable no longer
		// defines if it now comes from a library (through the GOT):
		// the process's state stays in OLD's copy, the new code would
		// use another one.
		if users := d.newRefs["got:"+o.name]; !o.local && len(users) > 0 {
			d.reason(VerdictRefused, o.name, src, "%s was removed from the executable but new code (%s) still refers to it by name; it would not see the running process's copy",
				o.name, strings.Join(dedupSorted(users), ", "))
			continue
		}
		d.reason(VerdictAuto, o.name, src, "%s was removed; nothing in the new code refers to it", o.name)
	}
}

func dedupSorted(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return dedup(c)
}

func (d *differ) global(o, n *symbol) {
	ot, src, fn := d.old.objInfo(o)
	nt, nsrc, _ := d.new.objInfo(n)
	if nsrc != "" {
		src = nsrc
	}
	g := GlobalChange{Name: n.name, File: n.file, Local: n.local, Source: src, Function: fn,
		OldAddr: o.addr, NewAddr: n.addr, OldSize: o.size, NewSize: n.size, ReadOnly: n.ro}
	if ot != nil {
		g.OldType = ot.String()
	}
	if nt != nil {
		g.NewType = nt.String()
	}
	verdict := VerdictAuto
	var msgs []string
	if ot != nil && nt != nil {
		class, detail := compareTypes(ot, nt)
		if class != TypeIdentical {
			g.Changes = append(g.Changes, "type")
			g.TypeClass, g.Detail = class, detail
			tname, _ := aggName(nt)
			if tname == "" {
				tname = nt.String()
			}
			d.addType(tname, ot, nt, "global", n.name)
			if class == TypeChanged && d.new.b.inRelro(n.addr) {
				msgs = append(msgs, fmt.Sprintf("type of %s changed layout (%s), but it is read-only once relocated (RELRO): the new code uses the new build's copy", n.name, detail))
			} else if class == TypeChanged {
				d.xfer = append(d.xfer, xferCand{o: o, n: n, ot: ot, nt: nt, src: src})
				verdict = VerdictTransformer
				msgs = append(msgs, fmt.Sprintf("type of %s changed layout (%s): its running contents need a state transformer", n.name, detail))
			} else {
				msgs = append(msgs, fmt.Sprintf("type of %s changed without changing its layout (%s)", n.name, detail))
			}
		}
		// Aggregates this global reaches through pointers live on the
		// heap (or anywhere): compare them on their own.
		oh, nh := map[string]dwarf.Type{}, map[string]dwarf.Type{}
		pointees(ot, oh)
		pointees(nt, nh)
		d.compareSet(oh, nh, "heap", n.name)
	}
	if o.size != n.size {
		g.Changes = append(g.Changes, "size")
		if ot == nil || nt == nil {
			verdict = VerdictTransformer
			msgs = append(msgs, fmt.Sprintf("size of %s changed %d -> %d and without DWARF its layout is unknown: its contents need a state transformer", n.name, o.size, n.size))
		}
	}
	ov, nv := d.old.objValue(o), d.new.objValue(n)
	if o.size != n.size && allZero(ov) && allZero(nv) {
		ov, nv = nil, nil // a resized zero-initialised object: no value news
	}
	if !bytes.Equal(ov, nv) {
		g.Changes = append(g.Changes, "value")
		if n.ro {
			msgs = append(msgs, fmt.Sprintf("read-only %s changed; the new code uses the new build's copy", n.name))
		} else {
			msgs = append(msgs, fmt.Sprintf("initial value of %s changed; the running process keeps its current value", n.name))
		}
	}
	if len(g.Changes) == 0 {
		return
	}
	if len(msgs) == 0 {
		msgs = append(msgs, fmt.Sprintf("%s changed (%s)", n.name, strings.Join(g.Changes, ", ")))
	}
	d.r.Globals = append(d.r.Globals, g)
	d.reason(verdict, n.name, src, "%s", strings.Join(msgs, "; "))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
