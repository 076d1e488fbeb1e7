package elfpatch

import (
	"fmt"
	"sort"
	"strings"
)

// Verdict says how a change can be applied to a running process.
type Verdict string

const (
	// VerdictAuto: apply as is (function bodies, read-only data, new
	// globals, signature changes whose callers are all in the patch).
	VerdictAuto Verdict = "auto"
	// VerdictTransformer: a global's layout changed; its running contents
	// must be carried over by a state transformer.
	VerdictTransformer Verdict = "transformer"
	// VerdictRefused: cannot be applied safely (a changed type in heap or
	// stack objects, an unpatchable function, a caller left behind).
	VerdictRefused Verdict = "refused"
)

func (v Verdict) rank() int {
	switch v {
	case VerdictAuto:
		return 0
	case VerdictTransformer:
		return 1
	}
	return 2
}

// Reason is one decision behind the verdict, naming the symbol and, where
// DWARF has it, its declaration.
type Reason struct {
	Verdict Verdict `json:"verdict"`
	Symbol  string  `json:"symbol"`
	Source  string  `json:"source,omitempty"`
	Message string  `json:"message"`
}

// Func is a function of the diff. Addresses are link-time vaddrs; OLD's are
// zero for an added function, NEW's for a removed one.
type Func struct {
	Name string `json:"name"`
	// OldName is OLD's symbol when it differs (a clone renumbered).
	OldName string `json:"old_name,omitempty"`
	// File is the STT_FILE of a static function, "" for a global one.
	File  string `json:"file,omitempty"`
	Local bool   `json:"local,omitempty"`
	// Source is the declaration's file:line from DWARF.
	Source string `json:"source,omitempty"`
	// Origin is the function a compiler clone (.constprop, .isra, .part)
	// was made from.
	Origin string `json:"origin,omitempty"`
	// Parts are the out-of-line parts (foo.cold) compared and replaced
	// together with the function; they get no jump of their own.
	Parts   []string `json:"parts,omitempty"`
	OldAddr uint64   `json:"old_addr"`
	NewAddr uint64   `json:"new_addr"`
	OldSize uint64   `json:"old_size"`
	NewSize uint64   `json:"new_size"`
	// Patchable says whether OLD's entry can take a 5-byte jmp (changed
	// functions only); Why explains a false.
	Patchable bool   `json:"patchable"`
	Why       string `json:"why,omitempty"`
	// Pad is how many bytes of the alignment padding after OLD's function
	// the jump overwrites, for a function shorter than the jump.
	Pad uint64 `json:"pad,omitempty"`
	// Resume says where a frame may stay in OLD's code during an apply
	// and in NEW's during a revert (changed functions; resume.go).
	Resume *Resume `json:"resume,omitempty"`
}

// GlobalChange is a data object that was added, removed, or whose type or
// initial value changed.
type GlobalChange struct {
	Name   string `json:"name"`
	File   string `json:"file,omitempty"`
	Local  bool   `json:"local,omitempty"`
	Source string `json:"source,omitempty"`
	// Function is the function a function-local static belongs to.
	Function string `json:"function,omitempty"`
	// Changes lists what changed: "added", "removed", "type", "size",
	// "value".
	Changes   []string  `json:"changes"`
	OldAddr   uint64    `json:"old_addr"`
	NewAddr   uint64    `json:"new_addr"`
	OldSize   uint64    `json:"old_size"`
	NewSize   uint64    `json:"new_size"`
	OldType   string    `json:"old_type,omitempty"`
	NewType   string    `json:"new_type,omitempty"`
	TypeClass TypeClass `json:"type_class,omitempty"`
	ReadOnly  bool      `json:"read_only,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

// SignatureChange is a function whose parameters or return type changed.
type SignatureChange struct {
	Name string `json:"name"`
	Old  string `json:"old"`
	New  string `json:"new"`
	// Callers are OLD's callers (or address-takers) and whether each is
	// in the patch.
	Callers    []string `json:"callers"`
	LeftBehind []string `json:"left_behind,omitempty"`
}

// Report is the result of Diff.
type Report struct {
	OldBuildID string            `json:"old_build_id"`
	NewBuildID string            `json:"new_build_id"`
	Changed    []Func            `json:"changed"`
	Added      []Func            `json:"added"`
	Removed    []Func            `json:"removed"`
	Unchanged  int               `json:"unchanged"`
	Globals    []GlobalChange    `json:"globals"`
	Types      []TypeChange      `json:"types"`
	Signatures []SignatureChange `json:"signatures"`
	Verdict    Verdict           `json:"verdict"`
	Reasons    []Reason          `json:"reasons"`
	// Warnings are limits of the analysis (no DWARF, for instance).
	Warnings []string `json:"warnings,omitempty"`
	// TypesUnchecked: one of the builds had no usable DWARF, so type
	// layouts, signatures and globals' types were not compared (a
	// Warning says so). apply refuses such a patch unless the operator
	// accepts the risk explicitly.
	TypesUnchecked bool `json:"types_unchecked,omitempty"`
	// Transfers convert the globals whose layout changed (transform.go);
	// PtrSites are the pointer fields of OLD's other globals, rewritten
	// if they point into a transferred one.
	Transfers []Transfer `json:"transfers,omitempty"`
	PtrSites  []PtrSite  `json:"ptr_sites,omitempty"`
}

// side is one binary prepared for the diff.
type side struct {
	b     *Binary
	units []*unit
	byKey map[string]*unit
	objs  []*symbol
	dw    *dwarfIndex
	// values caches objValue: pairing may compare one object many times.
	values map[*symbol][]byte
	// unqualified: function-local statics are not named by their
	// function (the other build has no DWARF: qualifyStatics).
	unqualified bool
}

func prepare(b *Binary, qualify bool) *side {
	s := &side{b: b, byKey: map[string]*unit{}, dw: b.dwarfIdx(), values: map[*symbol][]byte{}, unqualified: !qualify}
	var cold []*symbol
	for _, sym := range b.syms {
		switch {
		case sym.fn && isColdPart(sym.name):
			cold = append(cold, sym)
		case sym.fn:
			u := &unit{sym: sym, key: sym.key()}
			if b.goBuild() != nil {
				u.key = goFuncKey(u.key)
			}
			s.units = append(s.units, u)
			if _, dup := s.byKey[u.key]; !dup {
				s.byKey[u.key] = u
			}
		case !sym.tls && dataSection(sym.sect) && !strings.HasPrefix(sym.name, "go:") && !goLinkerTable(sym.name):
			// ("go:func.*", "go:string.*": the Go linker's tables of
			// funcdata and literals, which change with any code change
			// and are reached through the code that uses them.)
			s.objs = append(s.objs, sym)
		}
	}
	for _, c := range cold {
		origin := strings.TrimSuffix(cloneKey(c.name), ".cold")
		u := s.byKey[c.file+":"+origin]
		if u == nil {
			u = s.byKey[origin]
		}
		if u == nil {
			u = &unit{sym: c, key: c.key()}
			s.units = append(s.units, u)
			continue
		}
		u.parts = append(u.parts, c)
	}
	n := newNormaliser(b)
	n.dataKey = s.objKey
	if g := b.goImage(); g != nil {
		n.goRef = g.codeRef
	}
	for _, u := range s.units {
		n.normalise(u)
	}
	n.finish(s.units)
	return s
}

// dataSection excludes the linker's own tables, whose contents are
// addresses that differ in every build and are not program state.
func dataSection(name string) bool {
	switch {
	case strings.HasPrefix(name, ".got"), name == ".dynamic",
		strings.HasPrefix(name, ".eh_frame"), strings.HasPrefix(name, ".note"),
		name == ".interp", strings.HasPrefix(name, ".gcc_except_table"),
		name == ".gopclntab", name == ".go.buildinfo", name == ".gosymtab":
		return false
	}
	return true
}

// pairUp matches items of OLD and NEW: first by key (several per key are
// paired identical-first, then in order), then leftovers by plain name
// when that is unambiguous (a function that became static).
func pairUp[T any](old, new []T, key, name func(T) string, same func(a, b T) bool) (pairs [][2]T, removed, added []T) {
	ok, nk := map[string][]T{}, map[string][]T{}
	var keys []string
	for _, o := range old {
		k := key(o)
		if _, seen := ok[k]; !seen {
			keys = append(keys, k)
		}
		ok[k] = append(ok[k], o)
	}
	for _, n := range new {
		k := key(n)
		nk[k] = append(nk[k], n)
	}
	var restO, restN []T
	for _, k := range keys {
		os, ns := ok[k], nk[k]
		usedO := make([]bool, len(os))
		usedN := make([]bool, len(ns))
		if len(os) > 1 || len(ns) > 1 {
			for i, o := range os {
				for j, n := range ns {
					if !usedN[j] && same(o, n) {
						pairs = append(pairs, [2]T{o, n})
						usedO[i], usedN[j] = true, true
						break
					}
				}
			}
		}
		j := 0
		for i, o := range os {
			if usedO[i] {
				continue
			}
			for j < len(ns) && usedN[j] {
				j++
			}
			if j < len(ns) {
				pairs = append(pairs, [2]T{o, ns[j]})
				usedN[j] = true
				continue
			}
			restO = append(restO, o)
		}
		for j, n := range ns {
			if !usedN[j] {
				restN = append(restN, n)
			}
		}
		delete(nk, k)
	}
	for _, n := range new {
		if _, left := nk[key(n)]; left {
			restN = append(restN, n)
		}
	}
	// Second chance by plain name, when exactly one on each side.
	cO, cN := map[string]int{}, map[string]int{}
	for _, o := range restO {
		cO[name(o)]++
	}
	for _, n := range restN {
		cN[name(n)]++
	}
	byName := map[string]T{}
	for _, n := range restN {
		if cO[name(n)] == 1 && cN[name(n)] == 1 {
			byName[name(n)] = n
		}
	}
	matched := map[string]bool{}
	for _, o := range restO {
		if n, ok := byName[name(o)]; ok {
			pairs = append(pairs, [2]T{o, n})
			matched[name(o)] = true
			continue
		}
		removed = append(removed, o)
	}
	for _, n := range restN {
		if !matched[name(n)] {
			added = append(added, n)
		}
	}
	return pairs, removed, added
}

// differ carries one Diff run.
type differ struct {
	old, new *side
	r        *Report
	// resumed are the changed pairs functions found, for resumeAll.
	resumed []resumedPair
	types   map[string]*TypeChange
	// status of each OLD unit: "changed", "unchanged" or "removed".
	status map[*unit]string
	// newRefs are the symbols referenced by NEW code that will run
	// (changed and added functions).
	newRefs map[string][]string
	// xfer are the globals whose layout changed; rules the operator's
	// decisions for their transformers, by global name.
	xfer  []xferCand
	rules map[string]*Rules
	// soleHome maps a type the operator declared to live only in one
	// global (sole_home_of) to that global; soleErrs are declarations
	// that do not hold (solehome.go).
	soleHome map[string]string
	soleErrs []error
	// soleTodo: type name -> the global whose TODO asks to declare it.
	soleTodo map[string]string
	// ptrUses: type name -> OLD functions reaching it through pointers.
	ptrUses map[string][]string
	// twins maps each paired NEW function (by symbol key) to OLD's
	// (the Go plan redirects calls by it: closures pair by code).
	twins map[string]*symbol
}

// Diff compares OLD and NEW and decides how NEW can be applied to a process
// running OLD. It is deterministic and reads nothing but the two binaries.
func Diff(old, new *Binary) (r *Report, err error) { return DiffRules(old, new, nil) }

// DiffRules is Diff with the operator's decisions for the state
// transformers (from a state description), by global name.
func DiffRules(old, new *Binary, rules map[string]*Rules) (r *Report, err error) {
	d, err := diff(old, new, rules)
	if err != nil {
		return nil, err
	}
	return d.r, nil
}

func diff(old, new *Binary, rules map[string]*Rules) (d *differ, err error) {
	if old == nil || new == nil {
		return nil, fmt.Errorf("diff: nil binary")
	}
	defer func() {
		if !recoverPanics {
			return
		}
		if p := recover(); p != nil {
			d, err = nil, fmt.Errorf("diff %s %s: malformed input: %v", old.path, new.path, p)
		}
	}()
	// Code compares the same whether or not a build kept its debug
	// info (debuginfo.go).
	unplaced := borrowFiles(old, new)
	qualify := qualifyStatics(old, new)
	// The two sides are independent until matched: prepare them at once.
	var oldSide *side
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		oldSide = prepare(old, qualify)
	}()
	newSide := prepare(new, qualify)
	if p := <-done; p != nil {
		panic(p) // re-raised on this goroutine, where Diff recovers it
	}
	d = &differ{
		old:     oldSide,
		new:     newSide,
		r:       &Report{OldBuildID: old.buildID, NewBuildID: new.buildID, Verdict: VerdictAuto},
		types:   map[string]*TypeChange{},
		status:  map[*unit]string{},
		newRefs: map[string][]string{},
		rules:   rules,
		twins:   map[string]*symbol{},
	}
	if d.old.dw == nil || d.new.dw == nil {
		d.r.TypesUnchecked = true
		d.r.Warnings = append(d.r.Warnings, "no usable DWARF in one of the builds: types, signatures and globals' types were not compared, so a changed struct layout or signature goes unnoticed (the verdict cannot refuse for it); diff against the build with debug info to check them")
	}
	d.functions()
	d.sameProgram()
	d.unplacedStatics(unplaced)
	d.globals()
	d.transfers()
	if err := d.soleHomeErr(); err != nil {
		return nil, err
	}
	d.resumeAll()
	d.goChecks()
	d.finish()
	return d, nil
}

func (d *differ) reason(v Verdict, sym, src, format string, args ...any) {
	d.r.Reasons = append(d.r.Reasons, Reason{Verdict: v, Symbol: sym, Source: src, Message: fmt.Sprintf(format, args...)})
}

func (s *side) funcSource(u *unit) string {
	if s.dw == nil {
		return ""
	}
	c, a := s.dw.fn(u.sym.addr)
	if c == nil {
		return ""
	}
	src := s.dw.source(a.cu, a.file, a.line)
	if src == "" {
		src = s.dw.source(c.cu, c.file, c.line)
	}
	return src
}

func (s *side) makeFunc(u *unit, old bool) Func {
	f := Func{Name: u.sym.name, File: u.sym.file, Local: u.sym.local, Origin: cloneOrigin(u.sym.name), Source: s.funcSource(u)}
	for _, p := range u.parts {
		f.Parts = append(f.Parts, p.name)
	}
	if old {
		f.OldAddr, f.OldSize = u.sym.addr, u.sym.size
	} else {
		f.NewAddr, f.NewSize = u.sym.addr, u.sym.size
	}
	return f
}

func (d *differ) functions() {
	key := func(u *unit) string { return u.key }
	name := func(u *unit) string { return cloneKey(u.sym.name) }
	same := func(a, b *unit) bool { return a.hash == b.hash }
	pairs, removed, added := pairUp(d.old.units, d.new.units, key, name, same)
	var changed [][2]*unit
	for _, p := range pairs {
		d.twins[p[1].sym.key()] = p[0].sym
		if p[0].hash == p[1].hash {
			d.r.Unchanged++
			d.status[p[0]] = "unchanged"
			continue
		}
		d.status[p[0]] = "changed"
		changed = append(changed, p)
	}
	for _, u := range removed {
		d.status[u] = "removed"
	}
	for _, p := range changed {
		o, n := p[0], p[1]
		f := d.new.makeFunc(n, false)
		f.OldAddr, f.OldSize = o.sym.addr, o.sym.size
		if o.sym.name != n.sym.name {
			f.OldName = o.sym.name
		}
		f.Pad, f.Patchable, f.Why = patchable(d.old.b, o)
		if isColdPart(o.sym.name) {
			// A cold part whose function was not found: it is entered
			// by jumps from inside that function, so a jump at its
			// start would run new code in the middle of an old frame.
			f.Pad, f.Patchable, f.Why = 0, false, "it is the out-of-line part of a function that was not found, entered mid-function, never called"
		}
		d.r.Changed = append(d.r.Changed, f)
		if !f.Patchable {
			d.reason(VerdictRefused, f.Name, f.Source, "%s changed but its entry cannot take a jump: %s", f.Name, f.Why)
		} else if why := doubtWhy(o, n); why != "" {
			d.reason(VerdictAuto, f.Name, f.Source, "%s counts as changed: %s; calls to it will jump to the new version", f.Name, why)
		} else {
			d.reason(VerdictAuto, f.Name, f.Source, "code of %s changed; calls to it will jump to the new version", f.Name)
		}
		d.signature(o, n, f)
		d.funcTypes(o, n, f.Name)
		for _, ref := range n.refs {
			d.newRefs[ref] = append(d.newRefs[ref], f.Name)
		}
	}
	// Analysed once the transfers are known (resumeAll).
	d.resumed = append(d.resumed, resumedPair{pair: changed, base: len(d.r.Changed) - len(changed)})
	for _, u := range added {
		f := d.new.makeFunc(u, false)
		d.r.Added = append(d.r.Added, f)
		for _, ref := range u.refs {
			d.newRefs[ref] = append(d.newRefs[ref], f.Name)
		}
		d.reason(VerdictAuto, f.Name, f.Source, "%s is new; it is loaded with the new code", f.Name)
	}
	for _, u := range removed {
		f := d.old.makeFunc(u, true)
		d.r.Removed = append(d.r.Removed, f)
		d.reason(VerdictAuto, f.Name, f.Source, "%s was removed; its old code stays for any frame still in it", f.Name)
	}
}

// finish sorts the report for stable output and sets the overall verdict,
// the worst of the reasons.
func (d *differ) finish() {
	d.typeReasons()
	r := d.r
	byName := func(fs []Func) {
		sort.SliceStable(fs, func(i, j int) bool {
			if fs[i].Name != fs[j].Name {
				return fs[i].Name < fs[j].Name
			}
			return fs[i].File < fs[j].File
		})
	}
	byName(r.Changed)
	byName(r.Added)
	byName(r.Removed)
	sort.SliceStable(r.Globals, func(i, j int) bool {
		if r.Globals[i].Name != r.Globals[j].Name {
			return r.Globals[i].Name < r.Globals[j].Name
		}
		return r.Globals[i].File < r.Globals[j].File
	})
	sort.SliceStable(r.Signatures, func(i, j int) bool { return r.Signatures[i].Name < r.Signatures[j].Name })
	sort.SliceStable(r.Reasons, func(i, j int) bool {
		a, b := r.Reasons[i], r.Reasons[j]
		if a.Verdict.rank() != b.Verdict.rank() {
			return a.Verdict.rank() > b.Verdict.rank()
		}
		if a.Symbol != b.Symbol {
			return a.Symbol < b.Symbol
		}
		return a.Message < b.Message
	})
	r.Verdict = VerdictAuto
	for _, rs := range r.Reasons {
		if rs.Verdict.rank() > r.Verdict.rank() {
			r.Verdict = rs.Verdict
		}
	}
	// Empty lists marshal as [], not null, for consumers of the JSON.
	for _, p := range []*[]Func{&r.Changed, &r.Added, &r.Removed} {
		if *p == nil {
			*p = []Func{}
		}
	}
	if r.Globals == nil {
		r.Globals = []GlobalChange{}
	}
	if r.Types == nil {
		r.Types = []TypeChange{}
	}
	if r.Signatures == nil {
		r.Signatures = []SignatureChange{}
	}
	if r.Reasons == nil {
		r.Reasons = []Reason{}
	}
}
