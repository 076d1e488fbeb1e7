package elfpatch

// The operator's "sole home" declaration (issue 12, sshd v5 -> v6).
//
// A type whose layout changed and that functions reach through pointers
// lives, as far as graft can tell, in objects it cannot find (the heap),
// and is refused. Often every object of it lives in one global, though: an
// array of sessions, with functions passing `struct session *` into it.
// graft cannot prove that, so the operator declares it in the state
// description, on the global: `sole_home_of: ["struct session"]`. graft
// then checks what it can:
//
//   - the type must be the global's type or one held inside it (array
//     elements, members, recursively), in OLD's or NEW's layout;
//   - no function may hold one by value (a local, a parameter, a
//     function-local static): DWARF shows those, and such an object is not
//     in the global;
//   - OLD's functions reaching it through pointers are recorded on the
//     transfer (PointerUsers): apply waits until none of them is on a
//     stack, except the ones the patch replaces, whose waiting frames are
//     switched to NEW's code with their pointers relocated.
//
// Without the declaration, such a type inside a transferred global gets a
// TODO on the global, which says exactly what to add. A type inside a
// global that moves and keeps its layout needs no declaration (its objects
// elsewhere are fine), but its pointer users are recorded all the same: a
// pointer into the old object goes stale when it moves.

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// typesInside collects, by name, the aggregates t holds in its own storage:
// t itself, array elements and members, recursively (not through
// pointers).
func typesInside(t dwarf.Type, out map[string]dwarf.Type, depth int) {
	if t == nil || depth > 24 {
		return
	}
	if name, agg := aggName(t); agg != nil && name != "" {
		if _, seen := out[name]; seen {
			return
		}
		out[name] = agg
	}
	switch u := stripTypedefs(t).(type) {
	case *dwarf.ArrayType:
		typesInside(u.Type, out, depth+1)
	case *dwarf.StructType:
		for _, f := range u.Field {
			typesInside(f.Type, out, depth+1)
		}
	}
}

// soleHomes checks the operator's sole_home_of declarations on a
// transferred global and records the pointer users; without one, a
// changed type inside the global that functions reach through pointers
// becomes a TODO saying what to declare.
func (d *differ) soleHomes(t *Transfer, c xferCand, rules *Rules) {
	oldIn, newIn := map[string]dwarf.Type{}, map[string]dwarf.Type{}
	typesInside(c.ot, oldIn, 0)
	typesInside(c.nt, newIn, 0)
	declared := map[string]bool{}
	if rules != nil {
		for _, name := range rules.SoleHomeOf {
			_, o := oldIn[name]
			_, n := newIn[name]
			if !o && !n {
				d.soleErrs = append(d.soleErrs, fmt.Errorf("state description: global %s: sole_home_of %q: that is neither the type of %s (%s) nor a type held inside it (%s); name one of those, spelt as there",
					t.Name, name, t.Name, t.Type, strings.Join(sortedNames(newIn), ", ")))
				continue
			}
			if d.soleHome == nil {
				d.soleHome = map[string]string{}
			}
			if other := d.soleHome[name]; other != "" && other != t.Name {
				d.soleErrs = append(d.soleErrs, fmt.Errorf("state description: sole_home_of %q is declared on both %s and %s: every object of a type can live in one global only", name, other, t.Name))
				continue
			}
			d.soleHome[name] = t.Name
			declared[name] = true
		}
	}
	for _, name := range sortedNames(oldIn) {
		users := d.pointerUsers(name)
		if declared[name] {
			t.PointerUsers = append(t.PointerUsers, users...)
			if holders := d.localHolders(name); len(holders) > 0 {
				d.reason(VerdictRefused, name, "", "%s is declared to live only in %s (sole_home_of), but %s hold one by value (a local, a parameter or a function-local static), which is not in %s and which a patch cannot find and convert; remove the declaration, or change the program so it keeps no %s outside %s",
					name, t.Name, strings.Join(holders, ", "), t.Name, name, t.Name)
			}
			continue
		}
		nt, ok := newIn[name]
		if !ok || len(users) == 0 {
			continue
		}
		if class, _ := compareTypes(oldIn[name], nt); class != TypeChanged {
			// Same layout: objects elsewhere (the heap) are fine, but
			// a pointer into this global's old object goes stale when
			// it moves, so a function that may hold one counts in the
			// safety check; no declaration is needed for that.
			if !t.InPlace {
				t.PointerUsers = append(t.PointerUsers, users...)
				t.Notes = append(t.Notes, fmt.Sprintf("%s (inside %s, same layout) is reached through pointers by %s: as %s moves, apply waits until none of them that the patch does not replace is on a stack", name, t.Name, strings.Join(users, ", "), t.Name))
			}
			continue
		}
		what := "the type of " + t.Name
		if name != t.Type {
			what = "held inside " + t.Name
		}
		if d.soleTodo == nil {
			d.soleTodo = map[string]string{}
		}
		d.soleTodo[name] = t.Name
		t.Todo = append(t.Todo, fmt.Sprintf("%s (%s) changed layout and is also reached through pointers (by %s): graft cannot tell whether every %s in the process lives in %s. If it does (none on the heap, none in locals), declare it under rules: `sole_home_of: [%q]`; pointers held by waiting frames are then relocated, and apply waits until no other function using it is on a stack. If it does not, the patch cannot be applied live",
			name, what, strings.Join(users, ", "), name, t.Name, name))
	}
	sort.Strings(t.PointerUsers)
	t.PointerUsers = dedup(t.PointerUsers)
	t.NextAtEnd = d.old.nextAt(c.o.addr + c.o.size)
}

// nextAt names the sized data object starting at addr ("" if none).
func (s *side) nextAt(addr uint64) string {
	for _, o := range s.b.syms {
		if o.addr == addr && o.size > 0 && !o.fn && !o.tls {
			return o.name
		}
	}
	return ""
}

// soleHomeReason replaces the refusal of a changed type reached through
// pointers (storage "heap") the operator declared to live in one global.
func (d *differ) soleHomeReason(tc *TypeChange) bool {
	g := d.soleHome[tc.Name]
	if tc.Storage != "heap" || g == "" {
		return false
	}
	in := map[string]bool{}
	for _, f := range d.r.Changed {
		in[f.Name] = true
	}
	var replaced, others []string
	for _, u := range d.pointerUsers(tc.Name) {
		if in[u] {
			replaced = append(replaced, u)
		} else {
			others = append(others, u)
		}
	}
	wait := "no other function uses it through pointers"
	if len(others) > 0 {
		wait = fmt.Sprintf("apply waits until none of the others using it through pointers (%s) is on a stack", strings.Join(others, ", "))
	}
	d.reason(VerdictAuto, tc.Name, "", "layout of %s changed (%s); the operator declared that every %s lives in %s (sole_home_of), which the transformer converts: pointers to it held by waiting frames of the functions the patch replaces (%s) are relocated when those frames are switched to the new code; %s",
		tc.Name, tc.Detail, tc.Name, g, strings.Join(replaced, ", "), wait)
	return true
}

// soleHint tells, in the refusal of a type reached through pointers that
// is held inside a transferred global, what the operator may declare.
func (d *differ) soleHint(tc *TypeChange) string {
	g := d.soleTodo[tc.Name]
	if tc.Storage != "heap" || g == "" {
		return ""
	}
	return fmt.Sprintf(", unless every %s lives in %s: then say so in the state description (rules of %s: `sole_home_of: [%q]`, see its TODO) and diff again with --state", tc.Name, g, g, tc.Name)
}

// pointerUsers are OLD's functions whose parameters or locals reach the
// type name through pointers.
func (d *differ) pointerUsers(name string) []string {
	if d.ptrUses == nil {
		d.ptrUses = map[string][]string{}
		for _, u := range d.old.units {
			_, heap := d.old.typeUses(u)
			for k := range heap {
				d.ptrUses[k] = append(d.ptrUses[k], u.sym.name)
			}
		}
		for k, v := range d.ptrUses {
			sort.Strings(v)
			d.ptrUses[k] = dedup(v)
		}
	}
	return d.ptrUses[name]
}

// localHolders are OLD's functions (inlined ones included, by their own
// name) with a parameter, local or function-local static holding the type
// name by value, directly or inside an array or struct.
func (d *differ) localHolders(name string) []string {
	x := d.old.dw
	if x == nil {
		return nil
	}
	var out []string
	for _, f := range x.subprogs {
		for _, use := range f.uses {
			in := map[string]dwarf.Type{}
			typesInside(x.typ(use.typ), in, 0)
			if _, ok := in[name]; ok {
				fn := x.funcName(f)
				if fn == "" {
					fn = "an unnamed function"
				}
				out = append(out, fn+" ("+use.name+")")
				break
			}
		}
	}
	sort.Strings(out)
	return dedup(out)
}

// soleHomeErr is the operator's declarations that do not hold, if any.
func (d *differ) soleHomeErr() error {
	names := make([]string, 0, len(d.rules))
	for g, r := range d.rules {
		if r != nil && len(r.SoleHomeOf) > 0 {
			names = append(names, g)
		}
	}
	sort.Strings(names)
	for _, g := range names {
		found := false
		for _, t := range d.r.Transfers {
			found = found || t.Name == g
		}
		if !found {
			d.soleErrs = append(d.soleErrs, fmt.Errorf("state description: global %s: sole_home_of is declared, but %s does not change layout between the builds (or is not a global of the old build): nothing is converted, so the declaration has nothing to apply to; remove it", g, g))
		}
	}
	if len(d.soleErrs) == 0 {
		return nil
	}
	return errors.Join(d.soleErrs...)
}

func sortedNames(m map[string]dwarf.Type) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
