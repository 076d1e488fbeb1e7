package elfpatch

import (
	"debug/dwarf"
	"fmt"
	"sort"
	"strings"
)

// signatureOf renders a function's DWARF signature: layout form for the
// comparison, C-like form for people. ok is false without DWARF for it.
func (s *side) signatureOf(u *unit) (layout, text string, ok bool) {
	if s.dw == nil {
		return "", "", false
	}
	_, a := s.dw.fn(u.sym.addr)
	if a == nil {
		return "", "", false
	}
	var ret dwarf.Type
	if a.hasRet {
		ret = s.dw.typ(a.ret)
	}
	var lay, txt []string
	for _, p := range a.params {
		t := s.dw.typ(p)
		lay = append(lay, typeDesc(t, false, 0))
		txt = append(txt, typeString(t))
	}
	name := a.name
	if name == "" {
		name = u.sym.name
	}
	return typeDesc(ret, false, 0) + "(" + strings.Join(lay, ",") + ")",
		typeString(ret) + " " + name + "(" + strings.Join(txt, ", ") + ")", true
}

// signature checks whether a changed function's parameters or return type
// changed; if so every caller in OLD must be replaced too, or it would
// call the new code the old way.
func (d *differ) signature(o, n *unit, f Func) {
	ol, ot, ok1 := d.old.signatureOf(o)
	nl, nt, ok2 := d.new.signatureOf(n)
	if !ok1 || !ok2 || ol == nl {
		return
	}
	if ok, _ := enumsOnlyGain(d.old.signatureTypes(o), d.new.signatureTypes(n)); ok {
		return // an enum gained values: OLD callers pass values it still means
	}
	sc := SignatureChange{Name: f.Name, Old: ot, New: nt}
	ref := "fn:" + o.key
	for _, c := range d.old.units {
		if c == o || !hasRef(c.refs, ref) {
			continue
		}
		sc.Callers = append(sc.Callers, c.sym.name)
		if d.status[c] == "unchanged" {
			sc.LeftBehind = append(sc.LeftBehind, c.sym.name)
		}
	}
	sort.Strings(sc.Callers)
	sort.Strings(sc.LeftBehind)
	d.r.Signatures = append(d.r.Signatures, sc)
	if len(sc.LeftBehind) > 0 {
		d.reason(VerdictRefused, f.Name, f.Source, "signature of %s changed (%s -> %s) but its callers %s did not change and would call it the old way",
			f.Name, ot, nt, strings.Join(sc.LeftBehind, ", "))
		return
	}
	callers := "it has no callers in the old build"
	if len(sc.Callers) > 0 {
		callers = "its callers " + strings.Join(sc.Callers, ", ") + " are in the patch"
	}
	d.reason(VerdictAuto, f.Name, f.Source, "signature of %s changed (%s -> %s); %s", f.Name, ot, nt, callers)
}

func hasRef(refs []string, ref string) bool {
	i := sort.SearchStrings(refs, ref)
	return i < len(refs) && refs[i] == ref
}

// typeUses collects the aggregates a function's parameters and locals hold
// by value (stack) and reach through pointers (heap).
func (s *side) typeUses(u *unit) (stack, heap map[string]dwarf.Type) {
	stack, heap = map[string]dwarf.Type{}, map[string]dwarf.Type{}
	if s.dw == nil {
		return
	}
	c, a := s.dw.fn(u.sym.addr)
	if c == nil {
		return
	}
	var uses []dwTypeUse
	uses = append(uses, c.uses...)
	if a != c {
		uses = append(uses, a.uses...)
	}
	if a.hasRet {
		uses = append(uses, dwTypeUse{"return", a.ret})
	}
	seen := map[dwarf.Offset]bool{}
	for _, use := range uses {
		if seen[use.typ] {
			continue
		}
		seen[use.typ] = true
		t := s.dw.typ(use.typ)
		if t == nil {
			continue
		}
		if name, agg := aggName(t); agg != nil {
			stack[name] = agg
		}
		pointees(t, heap)
	}
	return
}

// funcTypes compares every aggregate a changed function uses. A changed
// one lives in stack or heap objects the patch cannot find and convert.
func (d *differ) funcTypes(o, n *unit, name string) {
	os, oh := d.old.typeUses(o)
	ns, nh := d.new.typeUses(n)
	d.compareSet(os, ns, "stack", name)
	d.compareSet(oh, nh, "heap", name)
}

func (d *differ) compareSet(old, new map[string]dwarf.Type, storage, user string) {
	names := make([]string, 0, len(old))
	for k := range old {
		if _, ok := new[k]; ok {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		d.addType(k, old[k], new[k], storage, user)
	}
}

// addType records the comparison of one type reached through user.
func (d *differ) addType(name string, old, new dwarf.Type, storage, user string) TypeClass {
	class, detail := compareTypes(old, new)
	if class == TypeIdentical {
		return class
	}
	key := name + "\x00" + storage
	tc := d.types[key]
	if tc == nil {
		tc = &TypeChange{Name: name, Class: class, OldSize: typeSize(old), NewSize: typeSize(new), Detail: detail, Storage: storage}
		d.types[key] = tc
	}
	for _, u := range tc.UsedBy {
		if u == user {
			return class
		}
	}
	tc.UsedBy = append(tc.UsedBy, user)
	return class
}

// typeReasons turns the changed types into verdicts: one in a global's
// own storage needs a transformer (reported with the global), one that
// lives on the heap or stack cannot be converted.
func (d *differ) typeReasons() {
	keys := make([]string, 0, len(d.types))
	for k := range d.types {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tc := d.types[k]
		sort.Strings(tc.UsedBy)
		d.r.Types = append(d.r.Types, *tc)
		if tc.Class != TypeChanged || tc.Storage == "global" || d.stackOnlyInPatch(tc) || d.soleHomeReason(tc) {
			continue
		}
		where := "heap objects reached through pointers"
		if tc.Storage == "stack" {
			where = "locals and parameters on running stacks"
		}
		d.reason(VerdictRefused, tc.Name, "", "layout of %s changed (%s); it lives in %s (used by %s), which a patch cannot find and convert%s",
			tc.Name, tc.Detail, where, strings.Join(tc.UsedBy, ", "), d.soleHint(tc))
	}
}

// patchable decides whether OLD's entry of u can be overwritten by a 5-byte
// jmp rel32 (after endbr64, which stays so indirect calls still land on a
// valid target): the function must be long enough, the entry's
// instructions must decode, and no branch inside the function may target
// the overwritten bytes, which would then execute half a jump.
//
// A function shorter than the jump may still take it when the alignment
// padding after it (nops or int3 up to the next symbol) makes up the
// difference: no code ever reaches those bytes. Func.Pad reports how many
// the jump spills into.
func patchable(b *Binary, u *unit) (pad uint64, ok bool, why string) {
	prefix := uint64(0)
	if u.endbr {
		prefix = 4
	}
	need := prefix + 5
	if u.sym.size < need {
		avail := b.padding(u.sym)
		if u.sym.size+avail < need {
			return 0, false, fmt.Sprintf("%d bytes long with %d bytes of padding after it, shorter than the %d-byte jump", u.sym.size, avail, need)
		}
		pad = need - u.sym.size
	}
	if u.badEntry {
		return 0, false, "its first instructions do not decode, so the jump's end cannot be put on an instruction boundary"
	}
	if u.undecoded != 0 {
		return 0, false, fmt.Sprintf("the instruction at 0x%x does not decode, so branches into the jump cannot be ruled out", u.undecoded)
	}
	// The jump ends inside the instruction covering byte need-1; the rest
	// of that instruction is dead, and must not be a branch target either.
	end := u.sym.size
	for _, off := range u.bounds {
		if off >= need {
			end = off
			break
		}
	}
	// A branch to the entry itself (after endbr64) is a self tail call
	// or a loop whose state is the function's inputs: reaching the new
	// function there is a call like any other.
	for _, t := range u.targets {
		if t.to > u.sym.addr+prefix && t.to < u.sym.addr+end {
			return 0, false, fmt.Sprintf("branch at 0x%x targets 0x%x (entry+%d), inside the %d bytes the jump overwrites",
				t.from, t.to, t.to-u.sym.addr, end)
		}
	}
	return pad, true, ""
}
