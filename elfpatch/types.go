package elfpatch

import (
	"debug/dwarf"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// TypeClass is the result of comparing one type between OLD and NEW.
type TypeClass string

const (
	// TypeIdentical: same names, qualifiers and layout.
	TypeIdentical TypeClass = "identical"
	// TypeCompatible: same layout, different spelling (int ->
	// volatile sig_atomic_t, a renamed typedef or member type name).
	TypeCompatible TypeClass = "compatible"
	// TypeChanged: size, member offsets, member types or enumerators differ.
	TypeChanged TypeClass = "changed"
)

// TypeChange is a type used by a changed function or a global whose
// definition differs between OLD and NEW.
type TypeChange struct {
	Name    string    `json:"name"`
	Class   TypeClass `json:"class"`
	OldSize int64     `json:"old_size"`
	NewSize int64     `json:"new_size"`
	// Detail is the first difference found ("member len: offset 4 -> 8").
	Detail string `json:"detail,omitempty"`
	// Storage says where objects of the type live as far as the diff can
	// see: "global" (in a global's own storage, which a transformer can
	// rewrite), "heap" (reached through a pointer) or "stack" (a local or
	// parameter of a changed function).
	Storage string `json:"storage"`
	// UsedBy names the globals and functions through which the type was
	// reached.
	UsedBy []string `json:"used_by"`
}

// typeDesc renders a type canonically. With exact false it renders only
// what decides memory layout: typedefs and qualifiers are looked through
// and base types are reduced to encoding and size, so "int" and
// "volatile sig_atomic_t" render the same. Pointers render their target's
// name only; aggregates behind pointers are compared on their own
// (pointees), because they live in heap objects rather than in the
// storage of the object being compared.
func typeDesc(t dwarf.Type, exact bool, depth int) string {
	var sb strings.Builder
	(&typeWriter{exact: exact}).write(&sb, t, depth)
	return sb.String()
}

// typeWriter renders types for typeDesc. With looseEnums (layout form
// only) an enum renders as its size alone and is collected in enums, in
// the order met, for enumsOnlyGain to compare their enumerators.
type typeWriter struct {
	exact      bool
	looseEnums bool
	enums      []*dwarf.EnumType
}

func (w *typeWriter) write(sb *strings.Builder, t dwarf.Type, depth int) {
	exact := w.exact
	if depth > 12 {
		sb.WriteString("...")
		return
	}
	switch t := t.(type) {
	case nil:
		sb.WriteString("void")
	case *dwarf.QualType:
		if exact {
			sb.WriteString(t.Qual + " ")
		}
		w.write(sb, t.Type, depth+1)
	case *dwarf.TypedefType:
		if exact {
			sb.WriteString("typedef " + t.Name + "=")
		}
		w.write(sb, t.Type, depth+1)
	case *dwarf.PtrType:
		sb.WriteString("*")
		sb.WriteString(w.pointeeName(t.Type))
	case *dwarf.StructType:
		sb.WriteString(t.Kind + " " + t.StructName)
		if t.Incomplete {
			sb.WriteString("<incomplete>")
			return
		}
		sb.WriteString("{")
		for _, f := range t.Field {
			sb.WriteString(f.Name + "@" + strconv.FormatInt(f.ByteOffset, 10))
			if f.BitSize != 0 {
				fmt.Fprintf(sb, ":%d/%d", f.BitOffset+f.DataBitOffset, f.BitSize)
			}
			sb.WriteString("=")
			w.write(sb, f.Type, depth+1)
			sb.WriteString(";")
		}
		sb.WriteString("}" + strconv.FormatInt(t.ByteSize, 10))
	case *dwarf.ArrayType:
		fmt.Fprintf(sb, "[%d]", t.Count)
		w.write(sb, t.Type, depth+1)
	case *dwarf.EnumType:
		if w.looseEnums && !exact {
			w.enums = append(w.enums, t)
			sb.WriteString("enum" + strconv.FormatInt(t.ByteSize, 10))
			return
		}
		sb.WriteString("enum")
		if exact {
			sb.WriteString(" " + t.EnumName)
		}
		sb.WriteString("{")
		for _, v := range t.Val {
			sb.WriteString(v.Name + "=" + strconv.FormatInt(v.Val, 10) + ",")
		}
		sb.WriteString("}" + strconv.FormatInt(t.ByteSize, 10))
	case *dwarf.FuncType:
		sb.WriteString("func")
		if exact {
			sb.WriteString(t.String())
		}
	case *dwarf.VoidType:
		sb.WriteString("void")
	default:
		if exact {
			sb.WriteString(t.String())
		} else {
			sb.WriteString(baseLayout(t))
		}
	}
}

// baseLayout reduces a base type to its encoding class and size.
func baseLayout(t dwarf.Type) string {
	c := "?"
	switch t := t.(type) {
	case *dwarf.IntType, *dwarf.CharType:
		c = "s"
	case *dwarf.UintType, *dwarf.UcharType, *dwarf.BoolType:
		c = "u"
		if _, ok := t.(*dwarf.BoolType); ok {
			c = "b"
		}
	case *dwarf.FloatType:
		c = "f"
	case *dwarf.ComplexType:
		c = "c"
	case *dwarf.AddrType:
		c = "a"
	case *dwarf.UnspecifiedType:
		c = "x"
	}
	return c + strconv.FormatInt(t.Size(), 10)
}

// pointeeName names what a pointer points to without descending into it.
func (w *typeWriter) pointeeName(t dwarf.Type) string {
	exact := w.exact
	for {
		switch u := t.(type) {
		case *dwarf.QualType:
			t = u.Type
			continue
		case *dwarf.TypedefType:
			if exact {
				return u.Name
			}
			t = u.Type
			continue
		case *dwarf.StructType:
			return u.Kind + " " + u.StructName
		case *dwarf.PtrType:
			return "*" + w.pointeeName(u.Type)
		case nil:
			return "void"
		case *dwarf.FuncType:
			return "func"
		case *dwarf.ArrayType:
			return fmt.Sprintf("[%d]%s", u.Count, w.pointeeName(u.Type))
		case *dwarf.EnumType:
			var sb strings.Builder
			w.write(&sb, u, 0)
			return sb.String()
		default:
			if exact {
				return t.String()
			}
			return baseLayout(t)
		}
	}
}

// aggName is the name an aggregate is matched by between builds: its tag,
// or for an anonymous one the typedef that names it.
func aggName(t dwarf.Type) (string, dwarf.Type) {
	named := ""
	for {
		switch u := t.(type) {
		case *dwarf.QualType:
			t = u.Type
			continue
		case *dwarf.TypedefType:
			if named == "" {
				named = u.Name
			}
			t = u.Type
			continue
		case *dwarf.StructType:
			if u.StructName != "" {
				return u.Kind + " " + u.StructName, u
			}
			if named != "" {
				return named, u
			}
			return "", nil
		case *dwarf.EnumType:
			if u.EnumName != "" {
				return "enum " + u.EnumName, u
			}
			if named != "" {
				return named, u
			}
			return "", nil
		}
		return "", nil
	}
}

// pointees collects the named aggregates reachable from t through
// pointers (and, once behind a pointer, through members of any kind):
// objects of those types live wherever the pointers lead, typically the
// heap. Aggregates t holds by value are part of t's own layout instead.
func pointees(t dwarf.Type, out map[string]dwarf.Type) {
	var walk func(t dwarf.Type, behind bool, depth int)
	walk = func(t dwarf.Type, behind bool, depth int) {
		if depth > 16 {
			return
		}
		switch u := t.(type) {
		case *dwarf.QualType:
			walk(u.Type, behind, depth+1)
		case *dwarf.TypedefType:
			if behind {
				if name, agg := aggName(u); agg != nil {
					if _, seen := out[name]; seen {
						return
					}
					out[name] = agg
				}
			}
			walk(u.Type, behind, depth+1)
		case *dwarf.PtrType:
			walk(u.Type, true, depth+1)
		case *dwarf.ArrayType:
			walk(u.Type, behind, depth+1)
		case *dwarf.StructType:
			if behind {
				name, _ := aggName(u)
				if name != "" {
					if _, seen := out[name]; seen {
						return
					}
					out[name] = u
				}
			}
			for _, f := range u.Field {
				walk(f.Type, behind, depth+1)
			}
		case *dwarf.EnumType:
			if behind && u.EnumName != "" {
				out["enum "+u.EnumName] = u
			}
		}
	}
	walk(t, false, 0)
}

// compareTypes classifies old against new and explains the first
// difference.
func compareTypes(old, new dwarf.Type) (TypeClass, string) {
	if typeDesc(old, true, 0) == typeDesc(new, true, 0) {
		return TypeIdentical, ""
	}
	if typeDesc(old, false, 0) == typeDesc(new, false, 0) {
		return TypeCompatible, fmt.Sprintf("%s -> %s, same layout", typeString(old), typeString(new))
	}
	if ok, gained := enumsOnlyGain([]dwarf.Type{old}, []dwarf.Type{new}); ok {
		return TypeCompatible, fmt.Sprintf("%s -> %s, same layout; gained %s", typeString(old), typeString(new), strings.Join(gained, ", "))
	}
	return TypeChanged, layoutDetail(old, new)
}

func typeString(t dwarf.Type) string {
	if t == nil {
		return "void"
	}
	return t.String()
}

func typeSize(t dwarf.Type) int64 {
	if t == nil {
		return 0
	}
	return t.Size()
}

func stripTypedefs(t dwarf.Type) dwarf.Type {
	for i := 0; i < 32; i++ {
		switch u := t.(type) {
		case *dwarf.QualType:
			t = u.Type
		case *dwarf.TypedefType:
			t = u.Type
		default:
			return t
		}
	}
	return t
}

// layoutDetail names the first layout difference between two types.
func layoutDetail(old, new dwarf.Type) string {
	o, n := stripTypedefs(old), stripTypedefs(new)
	if ao, ok := o.(*dwarf.ArrayType); ok {
		if an, ok := n.(*dwarf.ArrayType); ok {
			if ao.Count != an.Count {
				return fmt.Sprintf("element count %d -> %d", ao.Count, an.Count)
			}
			return "element " + typeString(an.Type) + ": " + layoutDetail(ao.Type, an.Type)
		}
	}
	os, ns := typeSize(o), typeSize(n)
	so, okO := o.(*dwarf.StructType)
	sn, okN := n.(*dwarf.StructType)
	if !okO || !okN || so.Incomplete || sn.Incomplete {
		if os != ns {
			return fmt.Sprintf("%s -> %s (size %d -> %d)", typeString(old), typeString(new), os, ns)
		}
		return fmt.Sprintf("%s -> %s", typeString(old), typeString(new))
	}
	var parts []string
	nf := map[string]*dwarf.StructField{}
	for _, f := range sn.Field {
		nf[f.Name] = f
	}
	seen := map[string]bool{}
	for _, f := range so.Field {
		seen[f.Name] = true
		g, ok := nf[f.Name]
		if !ok {
			parts = append(parts, "member "+f.Name+" removed")
			continue
		}
		var moved []string
		if f.ByteOffset != g.ByteOffset {
			moved = append(moved, fmt.Sprintf("offset %d -> %d", f.ByteOffset, g.ByteOffset))
		}
		if fb, gb := f.BitOffset+f.DataBitOffset, g.BitOffset+g.DataBitOffset; fb != gb {
			moved = append(moved, fmt.Sprintf("bit offset %d -> %d", fb, gb))
		}
		if f.BitSize != g.BitSize {
			moved = append(moved, fmt.Sprintf("bits %d -> %d", f.BitSize, g.BitSize))
		}
		if len(moved) > 0 {
			parts = append(parts, "member "+f.Name+": "+strings.Join(moved, ", "))
		}
		if typeDesc(f.Type, false, 0) != typeDesc(g.Type, false, 0) {
			parts = append(parts, fmt.Sprintf("member %s: type %s -> %s", f.Name, typeString(f.Type), typeString(g.Type)))
		}
	}
	var added []string
	for _, f := range sn.Field {
		if !seen[f.Name] {
			added = append(added, f.Name)
		}
	}
	sort.Strings(added)
	for _, a := range added {
		parts = append(parts, "member "+a+" added")
	}
	if os != ns {
		parts = append(parts, fmt.Sprintf("size %d -> %d", os, ns))
	}
	if len(parts) == 0 {
		return "layout differs"
	}
	if len(parts) > 4 {
		parts = append(parts[:4], fmt.Sprintf("and %d more", len(parts)-4))
	}
	return strings.Join(parts, "; ")
}
