package elfpatch

import (
	"debug/dwarf"
	"strings"
)

// enumsOnlyGain reports whether new has old's layout exactly, apart from
// enums that only gained enumerators: every enum keeps its size and every
// OLD enumerator keeps its value in NEW. A value stored by OLD code then
// means the same to NEW code, and NEW's extra values are new states OLD
// never stores. It also returns the enumerators gained ("NAME=VALUE").
// An enumerator renamed, removed or renumbered is a change.
func enumsOnlyGain(old, new []dwarf.Type) (bool, []string) {
	if len(old) != len(new) {
		return false, nil
	}
	wo, wn := &typeWriter{looseEnums: true}, &typeWriter{looseEnums: true}
	for i := range old {
		var so, sn strings.Builder
		wo.write(&so, old[i], 0)
		wn.write(&sn, new[i], 0)
		if so.String() != sn.String() {
			return false, nil
		}
	}
	if len(wo.enums) != len(wn.enums) {
		return false, nil
	}
	var gained []string
	changed := false
	for i, oe := range wo.enums {
		ne := wn.enums[i]
		if oe.EnumName != ne.EnumName || oe.ByteSize != ne.ByteSize {
			return false, nil
		}
		vals := map[string]int64{}
		for _, v := range ne.Val {
			vals[v.Name] = v.Val
		}
		for _, v := range oe.Val {
			nv, ok := vals[v.Name]
			if !ok || nv != v.Val {
				return false, nil
			}
			delete(vals, v.Name)
		}
		for _, v := range ne.Val {
			if _, extra := vals[v.Name]; extra {
				gained = append(gained, enumLabel(ne)+"."+v.Name)
				changed = true
			}
		}
	}
	return changed, gained
}

func enumLabel(e *dwarf.EnumType) string {
	if e.EnumName != "" {
		return "enum " + e.EnumName
	}
	return "enum"
}

// signatureTypes are a function's return type (nil for void) and
// parameter types from DWARF, in order, as signatureOf renders them.
func (s *side) signatureTypes(u *unit) []dwarf.Type {
	if s.dw == nil {
		return nil
	}
	_, a := s.dw.fn(u.sym.addr)
	if a == nil {
		return nil
	}
	var ret dwarf.Type
	if a.hasRet {
		ret = s.dw.typ(a.ret)
	}
	out := []dwarf.Type{ret}
	for _, p := range a.params {
		out = append(out, s.dw.typ(p))
	}
	return out
}
