package elfpatch

// The state description (issue 12): a YAML file `graft diff -o FILE` writes
// next to the patch (FILE.state.yaml) when globals changed layout. It
// shows, per global, the generated mapping and a TODO for every member it
// could not map, and holds the operator's decisions (rules), which `graft
// diff --state FILE.state.yaml` reads back to build a complete patch.
// Apply refuses a patch whose transformers still have TODOs.

import (
	"bytes"
	"fmt"
	"io"
	"sort"

	"go.yaml.in/yaml/v3"
)

// StateDesc is the document.
type StateDesc struct {
	Old     string        `yaml:"old_build_id"`
	New     string        `yaml:"new_build_id"`
	Globals []StateGlobal `yaml:"globals"`
}

// StateGlobal is one global whose layout changed.
type StateGlobal struct {
	Name  string `yaml:"name"`
	Type  string `yaml:"type,omitempty"`
	Where string `yaml:"placement,omitempty"`
	// Mapping is the generated conversion, one line per operation (for
	// people; the patch holds the operations).
	Mapping []string `yaml:"mapping,omitempty"`
	Notes   []string `yaml:"notes,omitempty"`
	// Todo is what the generator could not decide; each must be resolved
	// by a rule before apply accepts the patch.
	Todo         []string   `yaml:"todo,omitempty"`
	Irreversible string     `yaml:"irreversible,omitempty"`
	Rules        StateRules `yaml:"rules"`
}

// StateRules are the operator's decisions, by member path in NEW's layout
// ("io.dropped"; "drop" takes OLD paths).
type StateRules struct {
	From  map[string]string            `yaml:"from,omitempty"`
	Scale map[string]int64             `yaml:"scale,omitempty"`
	Init  map[string]int64             `yaml:"init,omitempty"`
	Enum  map[string]map[string]string `yaml:"enum,omitempty"`
	Drop  []string                     `yaml:"drop,omitempty"`
	Fresh bool                         `yaml:"fresh,omitempty"`
	Carry bool                         `yaml:"carry,omitempty"`
	// C names a C file defining xf_NAME (relative to the description).
	C string `yaml:"c,omitempty"`
	// SoleHomeOf names types (the global's own or one held inside it)
	// every object of which lives in this global (solehome.go).
	SoleHomeOf []string `yaml:"sole_home_of,omitempty"`
}

func (r StateRules) rules() *Rules {
	out := &Rules{From: r.From, Scale: r.Scale, Init: r.Init, Enum: r.Enum, Fresh: r.Fresh, Carry: r.Carry, C: r.C, SoleHomeOf: r.SoleHomeOf, Drop: map[string]bool{}}
	for _, d := range r.Drop {
		out.Drop[d] = true
	}
	return out
}

func (r StateRules) empty() bool {
	return len(r.From) == 0 && len(r.Scale) == 0 && len(r.Init) == 0 && len(r.Enum) == 0 && len(r.Drop) == 0 && !r.Fresh && !r.Carry && r.C == "" && len(r.SoleHomeOf) == 0
}

// NewStateDesc describes the transformers of r, keeping the rules they
// were generated with.
func NewStateDesc(r *Report, rules map[string]*Rules) *StateDesc {
	d := &StateDesc{Old: r.OldBuildID, New: r.NewBuildID}
	for _, t := range r.Transfers {
		g := StateGlobal{Name: t.Name, Type: t.Type, Notes: t.Notes, Todo: t.Todo, Irreversible: t.Irreversible}
		g.Where = "moved into the new image; users redirected"
		if t.InPlace {
			g.Where = "in place at the old address"
		}
		for _, op := range t.Ops {
			g.Mapping = append(g.Mapping, describeOp(op))
		}
		if rs := rules[t.Name]; rs != nil {
			g.Rules = StateRules{From: rs.From, Scale: rs.Scale, Init: rs.Init, Enum: rs.Enum, Fresh: rs.Fresh, Carry: rs.Carry, C: rs.C, SoleHomeOf: rs.SoleHomeOf}
			for k := range rs.Drop {
				g.Rules.Drop = append(g.Rules.Drop, k)
			}
			sort.Strings(g.Rules.Drop)
		}
		d.Globals = append(d.Globals, g)
	}
	return d
}

func describeOp(op XferOp) string {
	switch op.Op {
	case OpCopy:
		return fmt.Sprintf("%s: copy %d bytes, old +%d -> new +%d", op.Path, op.SrcSize, op.Src, op.Dst)
	case OpInt:
		s := fmt.Sprintf("%s: %s integer %d -> %d bytes, old +%d -> new +%d", op.Path, signWord(op.Signed), op.SrcSize, op.DstSize, op.Src, op.Dst)
		if op.Scale != 0 {
			s += fmt.Sprintf(", times %d", op.Scale)
		}
		return s
	case OpEnum:
		return fmt.Sprintf("%s: enum by enumerator name %v, old +%d -> new +%d", op.Path, op.Enum, op.Src, op.Dst)
	case OpPtr:
		return fmt.Sprintf("%s: pointer, relocated if it points into a transferred global, old +%d -> new +%d", op.Path, op.Src, op.Dst)
	case OpInit:
		return fmt.Sprintf("%s: set to %d", op.Path, op.Value)
	}
	return fmt.Sprintf("%s: %s old +%d -> new +%d", op.Path, op.Op, op.Src, op.Dst)
}

const stateHeader = `# State description for a live patch (graft diff -o).
#
# Each global below changed layout between the builds. "mapping" is what
# graft generated to carry its running contents; every "todo" needs your
# decision under "rules" (by member path in the new layout):
#   from:  {new_member: old_member}     a rename (the value is carried)
#   scale: {new_member: 1000}           multiply an integer carried with from
#   init:  {new_member: 0}              start a member at this value
#   enum:  {member: {OLD_NAME: NEW_NAME}} map renamed enumerators
#   drop:  [old_member]                 the old member is not carried
#   fresh: true                         take the new build's initial value
#   carry: true                         carry the running contents anyway
#   c: convert.c                        a C file defining xf_NAME(in, out),
#                                       run after the generated mapping
#                                       (types: FILE.NAME.xf_types.h)
#   sole_home_of: ["struct T"]          every struct T in the process lives
#                                       in this global (none on the heap,
#                                       none in locals): pointers to it are
#                                       then relocated with the global
# Then build the patch again: graft diff OLD NEW -o FILE --state THIS_FILE
# (apply refuses a patch with TODOs left).
`

// Write writes the document with its explanatory header.
func (d *StateDesc) Write(w io.Writer) error {
	var b bytes.Buffer
	b.WriteString(stateHeader)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(d); err != nil {
		return fmt.Errorf("write state description: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write state description: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ReadStateRules reads the operator's rules from a state description, by
// global name. Unknown keys are errors (a misspelt rule must not be
// silently ignored).
func ReadStateRules(r io.Reader) (map[string]*Rules, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var d StateDesc
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("read state description: %w", err)
	}
	out := map[string]*Rules{}
	for _, g := range d.Globals {
		if g.Name == "" {
			return nil, fmt.Errorf("read state description: a global without a name")
		}
		if _, dup := out[g.Name]; dup {
			return nil, fmt.Errorf("read state description: global %s listed twice", g.Name)
		}
		if g.Rules.Fresh && !g.Rules.empty() && (len(g.Rules.From)+len(g.Rules.Scale)+len(g.Rules.Init)+len(g.Rules.Enum)+len(g.Rules.Drop) > 0) {
			return nil, fmt.Errorf("read state description: global %s: fresh takes the new initial value whole, other rules make no sense with it", g.Name)
		}
		out[g.Name] = g.Rules.rules()
	}
	return out, nil
}

// WithRules makes BuildPatch generate the transformers with the operator's
// rules from a state description.
func WithRules(rules map[string]*Rules) BuildOption {
	return func(c *buildConfig) { c.rules = rules }
}
