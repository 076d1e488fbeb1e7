package elfpatch

// State transformers (issue 12): converting the running contents of a
// global whose type layout changed between OLD and NEW.
//
// For every such global the diff generates, from OLD's and NEW's DWARF, a
// Transfer: a flat list of operations that build NEW's object from OLD's
// bytes. The operations are pure data (offsets, sizes, signedness, enum
// value pairs), so they travel in the patch file and run in graft, not in
// the target: in the pause, graft reads OLD's object, computes NEW's bytes
// and writes them, after every thread stopped and before any jump.
//
// What is generated:
//   - members matched by name (reordered, inserted, removed); a member NEW
//     added starts with NEW's initial value (zero in .bss);
//   - integers widened with the source's sign extension, narrowed or
//     changing signedness only if the live value fits (checked on the
//     live bytes, in the pause: a value that does not fit stops the apply);
//   - enums by enumerator name; float <-> double;
//   - arrays whose length changed: the overlap is converted element by
//     element, the rest keeps NEW's initial value;
//   - nested structs and arrays of structs, recursively;
//   - pointers (data and function) are carried; a pointer into a
//     transferred global is relocated to the new object at the remapped
//     offset. Function pointers keep OLD's entry: graft keeps one identity
//     per function and OLD's entry jumps to the newest version.
//
// What is not (a TODO the operator resolves in the state description, or
// a refusal): a member whose kind changed, a union or bitfield whose layout
// changed, an old enumerator NEW lacks, and a struct that lost members and
// gained others (maybe a rename, maybe a new meaning: the operator says).

import (
	"debug/dwarf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// Transfer converts one global whose layout changed.
type Transfer struct {
	Name   string `json:"name"`
	File   string `json:"file,omitempty"`
	Local  bool   `json:"local,omitempty"`
	Source string `json:"source,omitempty"`
	// Type is NEW's type name, for messages ("struct ftpd_stats").
	Type string `json:"type"`
	// OldAddr and NewAddr are link-time: OLD's relative to its load bias,
	// NEW's relative to the image base.
	OldAddr uint64 `json:"old_addr"`
	OldSize uint64 `json:"old_size"`
	NewAddr uint64 `json:"new_addr"`
	NewSize uint64 `json:"new_size"`
	// InPlace: NEW's object is written over OLD's, at OLD's address (it
	// fits in OLD's slot, up to the next object). Functions whose code
	// is the same in both builds address it exactly as NEW's copies would,
	// so only the changed functions move. Otherwise NEW's object lives in
	// the image and every OLD function referring to the global (Users) is
	// redirected to NEW's copy, which uses it.
	InPlace bool `json:"in_place,omitempty"`
	// Users are OLD's functions whose code refers to the global.
	Users []string `json:"users,omitempty"`
	// PointerUsers are OLD's functions that reach a type the operator
	// declared to live only in this global (sole_home_of) through
	// pointers: a frame of one may hold a pointer into OLD's object, so
	// apply waits until none is on a stack (solehome.go).
	PointerUsers []string `json:"pointer_users,omitempty"`
	// NextAtEnd names OLD's object that starts exactly where OLD's
	// object ends (sshd's nusers after sessions): a pointer holding that
	// address may mean either, so apply refuses to relocate one found in
	// data (plan_endptr.go decides NEW's code by use).
	NextAtEnd string `json:"next_at_end,omitempty"`
	// Init is NEW's initial value of the object (nil: zero).
	Init HexBytes `json:"init,omitempty"`
	// Ops build NEW's object from OLD's; Reverse OLD's from NEW's (for
	// revert), nil when Irreversible says why not.
	Ops          []XferOp `json:"ops"`
	Reverse      []XferOp `json:"reverse,omitempty"`
	Irreversible string   `json:"irreversible,omitempty"`
	// Notes say what the generated mapping does, member by member, for
	// people ("files_received: new, starts at 0").
	Notes []string `json:"notes,omitempty"`
	// Todo lists what could not be generated; apply refuses while any
	// remains.
	Todo []string `json:"todo,omitempty"`
	// Program is the operator's C transformer, compiled (xfprog.go): run
	// by apply after Ops, on the apply machine. ProgramPath is where
	// apply put it to run it; CHeader the generated types, for the
	// operator writing one (neither is carried).
	Program     HexBytes `json:"program,omitempty"`
	ProgramPath string   `json:"-"`
	CHeader     string   `json:"-"`
}

// HexBytes marshals as a hex string.
type HexBytes []byte

func (h HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	if len(v) == 0 {
		v = nil
	}
	*h = v
	return nil
}

// Op kinds.
const (
	OpCopy  = "copy"  // Size bytes as they are
	OpInt   = "int"   // an integer, SrcSize -> DstSize, sign from Signed (source) and DstSigned
	OpEnum  = "enum"  // an enum, values mapped by enumerator name
	OpFloat = "float" // float <-> double
	OpPtr   = "ptr"   // an 8-byte pointer, relocated if it points into a transferred global
	OpInit  = "init"  // an operator's value for the destination (Value)
)

// XferOp is one step of a transformer. Offsets are within the objects.
type XferOp struct {
	Op      string `json:"op"`
	Path    string `json:"path"`
	Src     uint64 `json:"src"`
	Dst     uint64 `json:"dst"`
	SrcSize uint64 `json:"src_size"`
	DstSize uint64 `json:"dst_size"`
	// Signed is the source integer's signedness, DstSigned the
	// destination's (narrowing and sign changes are checked with both).
	Signed    bool `json:"signed,omitempty"`
	DstSigned bool `json:"dst_signed,omitempty"`
	// Enum pairs OLD's value with NEW's, by enumerator name; Unmapped are
	// source enumerators with no counterpart: a live value among them
	// stops the conversion.
	Enum     [][2]int64 `json:"enum,omitempty"`
	Unmapped []int64    `json:"unmapped,omitempty"`
	// Scale multiplies an integer (an operator's unit change).
	Scale int64 `json:"scale,omitempty"`
	// Value is an operator's initial value (OpInit).
	Value int64 `json:"value,omitempty"`
	// Pointee is the size of what a pointer (OpPtr) points to in the
	// source build (0: void or unknown): a pointer to a whole
	// transferred object stays at its start, one to its first member
	// follows the member.
	Pointee uint64 `json:"pointee,omitempty"`
}

// Relocator maps a pointer value from OLD's world to NEW's: a pointer into
// a transferred global's old object comes back pointing into its new one.
// ok false leaves the value as it is; an error stops the transfer.
type Relocator func(v, pointee uint64) (nv uint64, ok bool, err error)

// Run builds the destination object from src (the live bytes of the
// source object) with ops, over init (the destination's initial bytes, or
// zero). Every value is checked: a narrowing that loses bits, an enum
// value or pointer with no counterpart, stops it with the member named.
func RunOps(ops []XferOp, name string, src, init []byte, dstSize uint64, reloc Relocator) ([]byte, error) {
	dst := make([]byte, dstSize)
	copy(dst, init)
	le := binary.LittleEndian
	for _, op := range ops {
		if op.Src+op.SrcSize > uint64(len(src)) || op.Dst+op.DstSize > dstSize {
			return nil, fmt.Errorf("%s.%s: operation outside the object (src %d+%d of %d, dst %d+%d of %d)", name, op.Path, op.Src, op.SrcSize, len(src), op.Dst, op.DstSize, dstSize)
		}
		in := src[op.Src : op.Src+op.SrcSize]
		out := dst[op.Dst : op.Dst+op.DstSize]
		switch op.Op {
		case OpCopy:
			copy(out, in)
		case OpInt, OpEnum:
			v, neg := readInt(in, op.Signed)
			if op.Op == OpEnum {
				found := false
				for _, p := range op.Enum {
					if p[0] == v {
						v, neg, found = p[1], p[1] < 0, true
						break
					}
				}
				if !found && slices.Contains(op.Unmapped, v) {
					return nil, fmt.Errorf("%s.%s holds enumerator value %d, which the other build's enum lacks: nothing was changed", name, op.Path, v)
				}
				// A value no enumerator names (flags, a sentinel)
				// keeps its number if the new type holds it.
			}
			if op.Scale != 0 {
				r := v * op.Scale
				if r/op.Scale != v {
					return nil, fmt.Errorf("%s.%s holds %d: times %d overflows", name, op.Path, v, op.Scale)
				}
				v, neg = r, r < 0
			}
			if !fits(v, neg, op.DstSize, op.DstSigned) {
				if neg {
					return nil, fmt.Errorf("%s.%s holds %d, which does not fit its new %d-byte %s type: nothing was changed", name, op.Path, v, op.DstSize, signWord(op.DstSigned))
				}
				return nil, fmt.Errorf("%s.%s holds %d, which does not fit its new %d-byte %s type: nothing was changed", name, op.Path, uint64(v), op.DstSize, signWord(op.DstSigned))
			}
			writeInt(out, v)
		case OpFloat:
			var f float64
			switch op.SrcSize {
			case 4:
				f = float64(math.Float32frombits(le.Uint32(in)))
			case 8:
				f = math.Float64frombits(le.Uint64(in))
			default:
				return nil, fmt.Errorf("%s.%s: %d-byte float unsupported", name, op.Path, op.SrcSize)
			}
			switch op.DstSize {
			case 4:
				le.PutUint32(out, math.Float32bits(float32(f)))
			case 8:
				le.PutUint64(out, math.Float64bits(f))
			default:
				return nil, fmt.Errorf("%s.%s: %d-byte float unsupported", name, op.Path, op.DstSize)
			}
		case OpPtr:
			if op.SrcSize != 8 || op.DstSize != 8 {
				return nil, fmt.Errorf("%s.%s: pointer of %d bytes", name, op.Path, op.SrcSize)
			}
			v := le.Uint64(in)
			if reloc != nil && v != 0 {
				nv, ok, err := reloc(v, op.Pointee)
				if err != nil {
					return nil, fmt.Errorf("%s.%s: %w", name, op.Path, err)
				}
				if ok {
					v = nv
				}
			}
			le.PutUint64(out, v)
		case OpInit:
			writeInt(out, op.Value)
		default:
			return nil, fmt.Errorf("%s.%s: unknown operation %q", name, op.Path, op.Op)
		}
	}
	return dst, nil
}

func signWord(signed bool) string {
	if signed {
		return "signed"
	}
	return "unsigned"
}

// readInt reads a little-endian integer of len(b) bytes; neg reports a
// negative signed value.
func readInt(b []byte, signed bool) (v int64, neg bool) {
	var u uint64
	for i := len(b) - 1; i >= 0; i-- {
		u = u<<8 | uint64(b[i])
	}
	n := uint(len(b)) * 8
	if signed && n < 64 && u&(1<<(n-1)) != 0 {
		u |= ^uint64(0) << n // sign extension
	}
	v = int64(u)
	return v, signed && v < 0
}

func writeInt(b []byte, v int64) {
	u := uint64(v)
	for i := range b {
		b[i] = byte(u)
		u >>= 8
	}
}

// fits reports whether v (negative only if neg) is representable in size
// bytes of the given signedness.
func fits(v int64, neg bool, size uint64, signed bool) bool {
	if size >= 8 {
		if signed {
			return neg || v >= 0 // an unsigned value above MaxInt64 does not fit
		}
		return !neg
	}
	bits := size * 8
	if signed {
		lo, hi := -(int64(1) << (bits - 1)), int64(1)<<(bits-1)-1
		if !neg && v < 0 {
			return false // huge unsigned
		}
		return v >= lo && v <= hi
	}
	if neg {
		return false
	}
	return uint64(v) <= (uint64(1)<<bits)-1
}

// OffsetMap maps an offset inside the source object to the destination:
// the innermost operation covering it (a pointer to a member follows the
// member), or the end of the object for a one-past-the-end pointer. ok is
// false for an offset inside a member that has no counterpart. pointee is
// the size of what the pointer points to (0: unknown): at offset 0, a
// pointer to something as big as the object, or to void, means the whole
// object, which starts at 0 in both layouts.
func OffsetMap(ops []XferOp, srcSize, dstSize, off, pointee uint64) (uint64, bool) {
	if off == srcSize {
		return dstSize, true
	}
	if off == 0 && (pointee == 0 || pointee >= srcSize) {
		return 0, true
	}
	best := -1
	for i, op := range ops {
		if op.Op == OpInit || off < op.Src || off >= op.Src+op.SrcSize {
			continue
		}
		if best < 0 || op.SrcSize < ops[best].SrcSize {
			best = i
		}
	}
	if best < 0 {
		// The start of an aggregate member whose first bytes map:
		// pointers to members are what this is for.
		return 0, off == 0
	}
	op := ops[best]
	d := off - op.Src
	if op.Op == OpCopy {
		return op.Dst + d, true
	}
	if d == 0 {
		return op.Dst, true
	}
	return 0, false
}

// Rules are the operator's decisions for one global, from the state
// description: by member path in NEW's layout ("a.b" for nested members).
type Rules struct {
	// From renames: NEW member path -> OLD member path.
	From map[string]string
	// Scale multiplies an integer carried with From.
	Scale map[string]int64
	// Init sets a NEW member to a value.
	Init map[string]int64
	// Enum maps OLD enumerator names to NEW ones, for members whose
	// enumerators were renamed (NEW member path -> old name -> new name).
	Enum map[string]map[string]string
	// Drop accepts that an OLD member (OLD path) is not carried.
	Drop map[string]bool
	// Fresh takes NEW's initial value for the whole object and carries
	// nothing (a table whose contents are constants in practice).
	Fresh bool
	// Carry confirms the generated mapping for a global whose initial
	// value changed too.
	Carry bool
	// C is a C file defining xf_NAME (xfprog.go), run after the
	// generated operations; it takes over what they leave as TODO.
	C string
	// SoleHomeOf are type names ("struct session") the operator declares
	// live only inside this global (solehome.go).
	SoleHomeOf []string
}

type gen struct {
	ops   []XferOp
	notes []string
	todo  []string
	rules *Rules
	n     int
	// reverse: generating a revert's operations.
	reverse bool
}

const maxOps = 1 << 16

// genTransfer generates the operations building NEW's type from OLD's.
func genTransfer(ot, nt dwarf.Type, rules *Rules) (ops []XferOp, notes, todo []string) {
	return genOps(ot, nt, rules, false)
}

// genOps generates forward operations, or with reverse those of a revert:
// there an old enumerator with no counterpart is checked on the live value
// instead of being a TODO.
func genOps(ot, nt dwarf.Type, rules *Rules, reverse bool) (ops []XferOp, notes, todo []string) {
	g := &gen{rules: rules, reverse: reverse}
	if g.rules == nil {
		g.rules = &Rules{}
	}
	if g.rules.Fresh {
		return nil, []string{"the running contents are not carried: NEW's initial value (operator)"}, nil
	}
	g.walk(ot, nt, 0, 0, "", 0)
	if len(g.ops) > maxOps {
		return nil, nil, []string{fmt.Sprintf("the object needs more than %d operations to convert", maxOps)}
	}
	return g.ops, g.notes, g.todo
}

func label(path string) string {
	if path == "" {
		return "the object"
	}
	return path
}

func join(path, m string) string {
	if path == "" {
		return m
	}
	return path + "." + m
}

// hasPointer reports whether t holds a pointer anywhere in its own storage.
func hasPointer(t dwarf.Type, depth int) bool {
	if depth > 16 {
		return true
	}
	switch u := stripTypedefs(t).(type) {
	case *dwarf.PtrType:
		return true
	case *dwarf.StructType:
		for _, f := range u.Field {
			if hasPointer(f.Type, depth+1) {
				return true
			}
		}
	case *dwarf.ArrayType:
		return hasPointer(u.Type, depth+1)
	}
	return false
}

func intKind(t dwarf.Type) (signed, ok bool) {
	switch t.(type) {
	case *dwarf.IntType, *dwarf.CharType:
		return true, true
	case *dwarf.UintType, *dwarf.UcharType, *dwarf.BoolType:
		return false, true
	}
	return false, false
}

func (g *gen) add(op XferOp) {
	g.n++
	if g.n <= maxOps+1 {
		g.ops = append(g.ops, op)
	}
}

func (g *gen) walk(ot, nt dwarf.Type, so, do uint64, path string, depth int) {
	if depth > 24 {
		g.todo = append(g.todo, label(path)+": types nest too deep to convert")
		return
	}
	o, n := stripTypedefs(ot), stripTypedefs(nt)
	// Identical layout without pointers: one copy.
	if typeDesc(o, false, 0) == typeDesc(n, false, 0) && !hasPointer(o, 0) {
		if sz := typeSize(o); sz > 0 {
			g.add(XferOp{Op: OpCopy, Path: label(path), Src: so, Dst: do, SrcSize: uint64(sz), DstSize: uint64(sz)})
		}
		return
	}
	switch a := o.(type) {
	case *dwarf.StructType:
		b, ok := n.(*dwarf.StructType)
		if !ok || a.Kind != b.Kind {
			break
		}
		if a.Kind == "union" {
			g.todo = append(g.todo, fmt.Sprintf("%s: union %s changed layout: which member is live cannot be told from DWARF", label(path), a.StructName))
			return
		}
		g.structs(a, b, so, do, path, depth)
		return
	case *dwarf.ArrayType:
		b, ok := n.(*dwarf.ArrayType)
		if !ok {
			break
		}
		os, ns := typeSize(a.Type), typeSize(b.Type)
		cnt := min(a.Count, b.Count)
		if a.Count != b.Count {
			g.notes = append(g.notes, fmt.Sprintf("%s: %d -> %d elements; the first %d are carried, the rest keep their initial value", label(path), a.Count, b.Count, cnt))
		}
		if cnt <= 0 {
			return
		}
		if typeDesc(a.Type, false, 0) == typeDesc(b.Type, false, 0) && !hasPointer(a.Type, 0) {
			g.add(XferOp{Op: OpCopy, Path: label(path), Src: so, Dst: do, SrcSize: uint64(cnt * os), DstSize: uint64(cnt * os)})
			return
		}
		for i := int64(0); i < cnt && g.n <= maxOps; i++ {
			g.walk(a.Type, b.Type, so+uint64(i*os), do+uint64(i*ns), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
		return
	case *dwarf.EnumType:
		b, ok := n.(*dwarf.EnumType)
		if !ok {
			break
		}
		g.enum(a, b, so, do, path)
		return
	case *dwarf.PtrType:
		if _, ok := n.(*dwarf.PtrType); ok && a.ByteSize == 8 {
			g.add(XferOp{Op: OpPtr, Path: label(path), Src: so, Dst: do, SrcSize: 8, DstSize: 8, Pointee: pointeeSize(a)})
			return
		}
	case *dwarf.FloatType:
		if b, ok := n.(*dwarf.FloatType); ok {
			g.add(XferOp{Op: OpFloat, Path: label(path), Src: so, Dst: do, SrcSize: uint64(a.ByteSize), DstSize: uint64(b.ByteSize)})
			return
		}
	}
	if ss, ok := intKind(o); ok {
		if ds, ok := intKind(n); ok {
			op := XferOp{Op: OpInt, Path: label(path), Src: so, Dst: do, SrcSize: uint64(o.Size()), DstSize: uint64(n.Size()), Signed: ss, DstSigned: ds}
			if e, ok := n.(*dwarf.EnumType); ok {
				op.DstSigned = enumSigned(e)
			}
			g.add(op)
			if o.Size() != n.Size() || ss != ds {
				g.notes = append(g.notes, fmt.Sprintf("%s: %s -> %s (%s)", label(path), o.String(), n.String(), widenWord(o.Size(), n.Size(), ss)))
			}
			return
		}
	}
	g.todo = append(g.todo, fmt.Sprintf("%s: %s -> %s: the kind changed, no conversion can be generated (give `from`, `init` or `drop`)", label(path), typeString(ot), typeString(nt)))
}

func widenWord(os, ns int64, signed bool) string {
	switch {
	case ns > os && signed:
		return "widened, sign-extended"
	case ns > os:
		return "widened, zero-extended"
	case ns < os:
		return "narrowed: every live value is checked to fit"
	}
	return "signedness changed: every live value is checked to fit"
}

func enumSigned(e *dwarf.EnumType) bool {
	for _, v := range e.Val {
		if v.Val < 0 {
			return true
		}
	}
	return false
}

func (g *gen) enum(a, b *dwarf.EnumType, so, do uint64, path string) {
	byName := map[string]int64{}
	for _, v := range b.Val {
		byName[v.Name] = v.Val
	}
	ren := g.rules.Enum[path]
	op := XferOp{Op: OpEnum, Path: label(path), Src: so, Dst: do, SrcSize: uint64(a.ByteSize), DstSize: uint64(b.ByteSize), Signed: enumSigned(a), DstSigned: enumSigned(b)}
	for _, v := range a.Val {
		name := v.Name
		if r, ok := ren[name]; ok {
			name = r
		}
		nv, ok := byName[name]
		if !ok && g.reverse {
			op.Unmapped = append(op.Unmapped, v.Val)
			continue
		}
		if !ok {
			g.todo = append(g.todo, fmt.Sprintf("%s: enumerator %s of enum %s has no counterpart in the new enum (map it: enum: {%s: NEW_NAME})", label(path), v.Name, a.EnumName, v.Name))
			continue
		}
		if name != v.Name {
			g.notes = append(g.notes, fmt.Sprintf("%s: enumerator %s -> %s (operator)", label(path), v.Name, name))
		}
		op.Enum = append(op.Enum, [2]int64{v.Val, nv})
	}
	g.add(op)
}

func (g *gen) structs(a, b *dwarf.StructType, so, do uint64, path string, depth int) {
	for _, f := range append(append([]*dwarf.StructField(nil), a.Field...), b.Field...) {
		if f.BitSize != 0 {
			if typeDesc(a, false, 0) != typeDesc(b, false, 0) {
				g.todo = append(g.todo, fmt.Sprintf("%s: %s %s has bitfields and changed layout: bitfields are not converted", label(path), a.Kind, a.StructName))
				return
			}
		}
	}
	of := map[string]*dwarf.StructField{}
	for _, f := range a.Field {
		of[f.Name] = f
	}
	used := map[string]bool{}
	var added []*dwarf.StructField
	for _, f := range b.Field {
		p := join(path, f.Name)
		if v, ok := g.rules.Init[p]; ok {
			sz := typeSize(f.Type)
			g.add(XferOp{Op: OpInit, Path: p, Dst: do + uint64(f.ByteOffset), DstSize: uint64(sz), Value: v})
			g.notes = append(g.notes, fmt.Sprintf("%s: set to %d (operator)", p, v))
			continue
		}
		src := f.Name
		if r, ok := g.rules.From[p]; ok {
			src = r
			if i := strings.LastIndex(r, "."); i >= 0 {
				src = r[i+1:]
			}
		}
		o, ok := of[src]
		if !ok {
			added = append(added, f)
			continue
		}
		used[src] = true
		if src != f.Name {
			g.notes = append(g.notes, fmt.Sprintf("%s: from %s (operator)", p, join(path, src)))
		}
		if sc, ok := g.rules.Scale[p]; ok {
			ot, nt := stripTypedefs(o.Type), stripTypedefs(f.Type)
			ss, ok1 := intKind(ot)
			ds, ok2 := intKind(nt)
			if !ok1 || !ok2 {
				g.todo = append(g.todo, fmt.Sprintf("%s: scale applies to integers, not %s -> %s", p, typeString(o.Type), typeString(f.Type)))
				continue
			}
			g.add(XferOp{Op: OpInt, Path: p, Src: so + uint64(o.ByteOffset), Dst: do + uint64(f.ByteOffset),
				SrcSize: uint64(ot.Size()), DstSize: uint64(nt.Size()), Signed: ss, DstSigned: ds, Scale: sc})
			g.notes = append(g.notes, fmt.Sprintf("%s: times %d (operator)", p, sc))
			continue
		}
		g.walk(o.Type, f.Type, so+uint64(o.ByteOffset), do+uint64(f.ByteOffset), p, depth+1)
	}
	var removed []string
	for _, f := range a.Field {
		if !used[f.Name] {
			p := join(path, f.Name)
			if g.rules.Drop[p] {
				g.notes = append(g.notes, fmt.Sprintf("%s: dropped (operator)", p))
				continue
			}
			removed = append(removed, f.Name)
		}
	}
	for _, f := range added {
		p := join(path, f.Name)
		if len(removed) > 0 {
			g.todo = append(g.todo, fmt.Sprintf("%s: new member, while %s lost %s: a rename or a new meaning? (say `from: {NEW: OLD}`, `init: {NEW: N}`, or list the old ones under `drop`)", p, label(path), strings.Join(removed, ", ")))
			continue
		}
		g.notes = append(g.notes, fmt.Sprintf("%s: new, starts at its initial value", p))
	}
	if len(added) == 0 {
		for _, r := range removed {
			g.notes = append(g.notes, fmt.Sprintf("%s: removed, not carried", join(path, r)))
		}
	} else {
		for _, r := range removed {
			g.todo = append(g.todo, fmt.Sprintf("%s: removed while new members appeared (list it under `drop` if it is not carried)", join(path, r)))
		}
	}
}

// Complete reports whether t can run: every TODO resolved.
func (t *Transfer) Complete() bool { return len(t.Todo) == 0 && len(t.Ops) > 0 }

// pointeeSize is the size of what p points to (0 for void or unknown).
func pointeeSize(p *dwarf.PtrType) uint64 {
	t := stripTypedefs(p.Type)
	if t == nil {
		return 0
	}
	if _, ok := t.(*dwarf.FuncType); ok {
		return 0
	}
	if s := t.Size(); s > 0 {
		return uint64(s)
	}
	return 0
}

// ptrFields lists the pointer fields in t's own storage: offset and the
// size of what each points to.
func ptrFields(t dwarf.Type, base uint64, out *[][2]uint64, depth int) {
	if depth > 16 || len(*out) > 4096 {
		return
	}
	switch u := stripTypedefs(t).(type) {
	case *dwarf.PtrType:
		*out = append(*out, [2]uint64{base, pointeeSize(u)})
	case *dwarf.StructType:
		if u.Kind == "union" {
			return
		}
		for _, f := range u.Field {
			ptrFields(f.Type, base+uint64(f.ByteOffset), out, depth+1)
		}
	case *dwarf.ArrayType:
		if !hasPointer(u.Type, 0) {
			return
		}
		for i := int64(0); i < u.Count; i++ {
			ptrFields(u.Type, base+uint64(i*typeSize(u.Type)), out, depth+1)
		}
	}
}

// PtrSite is a pointer field in an OLD global that is not itself
// transferred: if it points into a transferred global when the patch is
// applied, it is rewritten to point into the new object.
type PtrSite struct {
	Global string `json:"global"`
	// File is the global's unit for a static and GlobalAddr its OLD
	// link-time address (to find the field by name in a process already
	// patched; zero in patches made before graft stacked transfers).
	File       string `json:"file,omitempty"`
	GlobalAddr uint64 `json:"global_addr,omitempty"`
	// Addr is link-time, in OLD.
	Addr uint64 `json:"addr"`
	// Pointee is the size of what the field points to (XferOp.Pointee).
	Pointee uint64 `json:"pointee,omitempty"`
}

// sortTransfers orders transfers by OLD address.
func sortTransfers(ts []Transfer) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].OldAddr < ts[j].OldAddr })
}
