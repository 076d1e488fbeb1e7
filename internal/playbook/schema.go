package playbook

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Playbook is a parsed and validated playbook. Paths in it are absolute
// (relative ones are taken from the playbook's directory).
type Playbook struct {
	File    string
	Version int
	Name    string
	Vars    map[string]string
	Patch   PatchSpec
	Targets []Selector
	Rollout Rollout
	Checks  []Check
}

// PatchSpec is the patch: exactly one of New and File.
type PatchSpec struct {
	// New is a NEW build: the diff is made on the spot against what each
	// target runs (graft apply --new).
	New string
	// File is a patch file from `graft diff -o`.
	File string
	// Timeout bounds each target's wait for a safe point (graft apply
	// --timeout; default 5s).
	Timeout time.Duration
	// AllowActive are functions that may stay on a stack.
	AllowActive []string
	// AllowUncheckedTypes lets in a patch whose diff could not compare
	// types (a build without debug info), as apply --allow-unchecked-types.
	AllowUncheckedTypes bool
	// State is, with New, the operator's state description (graft diff
	// --state): the rules for globals whose layout changed.
	State string
	Pos   Pos
}

// Selector picks processes; the targets are the union of all selectors.
type Selector struct {
	// Kind is one of exe, pid, pidfile, name, unit, build_id.
	Kind  string
	Value string // the path, glob, unit or hex build-id
	Pid   int    // for pid
	Pos   Pos
}

func (s Selector) String() string {
	if s.Kind == "pid" {
		return fmt.Sprintf("pid: %d", s.Pid)
	}
	return s.Kind + ": " + s.Value
}

// Batch is one entry of rollout.batches: a count or a percentage.
type Batch struct {
	N       int
	Percent int // 1..100 when the entry was "N%"
}

func (b Batch) String() string {
	if b.Percent > 0 {
		return fmt.Sprintf("%d%%", b.Percent)
	}
	return strconv.Itoa(b.N)
}

// Size is the batch's number of targets out of total (Ansible's serial: a
// percentage rounds down, every batch takes at least one).
func (b Batch) Size(total int) int {
	n := b.N
	if b.Percent > 0 {
		n = total * b.Percent / 100
	}
	return max(n, 1)
}

// Rollout says how the patch goes out.
type Rollout struct {
	// Batches in Ansible's serial sense; the last repeats. Default: all
	// targets in one batch.
	Batches []Batch
	// OnFailure is "rollback" (revert every process this run patched) or
	// "stop" (leave them patched, touch nothing more).
	OnFailure string
	// Pause waits between batches.
	Pause time.Duration
	// Follow keeps watching this long after the last batch and patches
	// processes of the OLD build that start meanwhile.
	Follow time.Duration
}

// Check is a probe run on a target before (baseline) and after the patch.
type Check struct {
	Name string
	// When: "always" (before and after the patch), "before" or "after".
	When string
	// Exec runs a command; ExpectExit and ExpectStdout judge it.
	Exec         []string
	ExpectExit   int
	ExpectStdout *regexp.Regexp
	TCP          *TCPCheck
	HTTP         *HTTPCheck
	// Timeout bounds one attempt, Period separates attempts, and the check
	// fails after FailureThreshold consecutive failed attempts.
	Timeout          time.Duration
	Period           time.Duration
	FailureThreshold int
	Pos              Pos
}

// TCPCheck connects, optionally sends, optionally expects a reply: Expect
// is matched, in multi-line mode (^ and $ at every line), against all that
// was read so far, trailing newlines trimmed, until it matches or the
// timeout.
type TCPCheck struct {
	Host   string
	Port   string
	Send   string
	Expect *regexp.Regexp
}

// HTTPCheck sends a GET and judges status and body.
type HTTPCheck struct {
	URL string
	// Status is the status wanted; 0 means any from 200 to 399.
	Status int
	Body   *regexp.Regexp
}

// Pos is a place in the playbook.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Error is one mistake in a playbook, at its place.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrInvalid is what every playbook error matches with errors.Is.
var ErrInvalid = errors.New("invalid playbook")

// Errors are all the mistakes found in one playbook, in file order.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func (es Errors) Is(target error) bool { return target == ErrInvalid }

// Load reads and parses the playbook at path.
func Load(path string) (*Playbook, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read playbook: %w", err)
	}
	return Parse(path, b)
}

// Parse validates a playbook's text; file names it in errors and anchors
// relative paths. Every error found is returned (as Errors), not only the
// first.
func Parse(file string, src []byte) (*Playbook, error) {
	v := &validator{file: file, dir: filepath.Dir(file)}
	if abs, err := filepath.Abs(v.dir); err == nil {
		v.dir = abs
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, Errors{syntaxError(file, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, Errors{{Pos{file, 1, 1}, "empty playbook: it needs at least patch and targets"}}
	}
	pb := v.playbook(doc.Content[0])
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return pb, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError places the YAML parser's message. The parser gives a line but
// no column: column 1 stands for the whole line.
func syntaxError(file string, err error) *Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Pos{file, line, 1}, "YAML syntax: " + m[2]}
	}
	return &Error{Pos{file, 1, 1}, "YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

type validator struct {
	file string
	dir  string
	errs Errors
	vars map[string]string
}

func (v *validator) pos(n *yaml.Node) Pos { return Pos{v.file, n.Line, n.Column} }

func (v *validator) errorf(n *yaml.Node, format string, args ...any) {
	v.errs = append(v.errs, &Error{v.pos(n), fmt.Sprintf(format, args...)})
}

// field is one key of a mapping with its value.
type field struct {
	key, val *yaml.Node
}

// mapping checks that n is a mapping whose keys are all in allowed (no
// duplicates) and returns them by name. what names n in messages.
func (v *validator) mapping(n *yaml.Node, what string, allowed ...string) map[string]field {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		v.errorf(n, "%s must be a mapping (key: value lines), not %s", what, kindName(n))
		return nil
	}
	out := map[string]field{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], resolveAlias(n.Content[i+1])
		name := k.Value
		if k.Kind != yaml.ScalarNode {
			v.errorf(k, "%s: keys must be plain words", what)
			continue
		}
		if _, dup := out[name]; dup {
			v.errorf(k, "%s: key %q given twice", what, name)
			continue
		}
		if !contains(allowed, name) {
			v.errorf(k, "%s: unknown key %q (known: %s)", what, name, strings.Join(allowed, ", "))
			continue
		}
		out[name] = field{k, val}
	}
	return out
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func (v *validator) str(f field, what string) (string, bool) {
	if f.val.Kind != yaml.ScalarNode || f.val.Tag == "!!null" || f.val.Value == "" {
		v.errorf(f.val, "%s must be a non-empty string, not %s", what, kindName(f.val))
		return "", false
	}
	return f.val.Value, true
}

func (v *validator) integer(f field, what string, min int) (int, bool) {
	if f.val.Kind != yaml.ScalarNode || f.val.Tag != "!!int" {
		v.errorf(f.val, "%s must be a whole number, not %s", what, kindName(f.val))
		return 0, false
	}
	n, err := strconv.Atoi(f.val.Value)
	if err != nil || n < min {
		v.errorf(f.val, "%s must be a whole number of at least %d, not %s", what, min, f.val.Value)
		return 0, false
	}
	return n, true
}

func (v *validator) duration(f field, what string) (time.Duration, bool) {
	s, ok := v.str(f, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		v.errorf(f.val, "%s must be a duration such as 500ms, 2s or 1m, not %q", what, s)
		return 0, false
	}
	return d, true
}

func (v *validator) regex(f field, what string) *regexp.Regexp {
	s, ok := v.str(f, what)
	if !ok {
		return nil
	}
	re, err := regexp.Compile(s)
	if err != nil {
		v.errorf(f.val, "%s is not a valid regular expression (Go RE2 syntax): %v", what, err)
		return nil
	}
	return re
}

func (v *validator) path(f field, what string) string {
	s, ok := v.str(f, what)
	if !ok {
		return ""
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(v.dir, s)
	}
	return s
}

var placeholder = regexp.MustCompile(`\$\{([^}]*)\}`)

// template checks that every ${name} in a string that is substituted per
// target names pid, port or a var.
func (v *validator) template(f field, what string) (string, bool) {
	s, ok := v.str(f, what)
	if !ok {
		return "", false
	}
	return s, v.placeholders(f.val, s, what)
}

func (v *validator) placeholders(n *yaml.Node, s, what string) bool {
	ok := true
	for _, m := range placeholder.FindAllStringSubmatch(s, -1) {
		name := m[1]
		if name == "pid" || name == "port" {
			continue
		}
		if _, known := v.vars[name]; !known {
			v.errorf(n, "%s: unknown placeholder ${%s} (known: ${pid}, ${port} and the names under vars)", what, name)
			ok = false
		}
	}
	return ok
}

func (v *validator) playbook(root *yaml.Node) *Playbook {
	pb := &Playbook{File: v.file, Version: 1, Vars: map[string]string{}}
	top := v.mapping(root, "playbook", "version", "name", "vars", "patch", "targets", "rollout", "checks")
	if top == nil {
		return pb
	}
	if f, ok := top["version"]; ok {
		if n, ok := v.integer(f, "version", 1); ok && n != 1 {
			v.errorf(f.val, "version %d is not known to this graft (it reads version 1)", n)
		}
	}
	if f, ok := top["name"]; ok {
		pb.Name, _ = v.str(f, "name")
	}
	if f, ok := top["vars"]; ok {
		vars := v.mapping(f.val, "vars", v.anyKeys(f.val)...)
		for name, vf := range vars {
			if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) || name == "pid" || name == "port" {
				v.errorf(vf.key, "vars: %q cannot be a variable name (letters, digits, _; pid and port are set per target)", name)
				continue
			}
			if vf.val.Kind != yaml.ScalarNode || vf.val.Tag == "!!null" {
				v.errorf(vf.val, "vars: %s must be a string or number, not %s", name, kindName(vf.val))
				continue
			}
			pb.Vars[name] = vf.val.Value
		}
	}
	v.vars = pb.Vars
	if f, ok := top["patch"]; ok {
		pb.Patch = v.patch(f)
	} else {
		v.errorf(root, "playbook: no patch (patch: {new: NEWBIN} or patch: {file: FILE.graft})")
	}
	if f, ok := top["targets"]; ok {
		pb.Targets = v.targets(f)
	} else {
		v.errorf(root, "playbook: no targets (a list of exe:, pid:, pidfile:, name:, unit: or build_id: selectors)")
	}
	pb.Rollout = Rollout{OnFailure: "rollback"}
	if f, ok := top["rollout"]; ok {
		pb.Rollout = v.rollout(f)
	}
	if f, ok := top["checks"]; ok {
		pb.Checks = v.checks(f)
	}
	return pb
}

// anyKeys lists the keys of a mapping, for free-form mappings (vars).
func (v *validator) anyKeys(n *yaml.Node) []string {
	n = resolveAlias(n)
	var ks []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			ks = append(ks, n.Content[i].Value)
		}
	}
	return ks
}

func (v *validator) patch(f field) PatchSpec {
	ps := PatchSpec{Pos: v.pos(f.val), Timeout: 5 * time.Second}
	m := v.mapping(f.val, "patch", "new", "file", "timeout", "allow_active", "allow_unchecked_types", "state")
	if m == nil {
		return ps
	}
	nf, hasNew := m["new"]
	ff, hasFile := m["file"]
	switch {
	case hasNew && hasFile:
		v.errorf(ff.key, "patch: give new (a NEW binary to diff against each target) or file (a patch file), not both")
	case hasNew:
		ps.New = v.path(nf, "patch.new")
	case hasFile:
		ps.File = v.path(ff, "patch.file")
	default:
		v.errorf(f.val, "patch: needs new: NEWBIN or file: FILE.graft")
	}
	if sf, ok := m["state"]; ok {
		if hasFile {
			v.errorf(sf.key, "patch.state goes with patch.new: a patch file carries the rules it was made with (graft diff --state)")
		} else {
			ps.State = v.path(sf, "patch.state")
		}
	}
	if tf, ok := m["timeout"]; ok {
		if d, ok := v.duration(tf, "patch.timeout"); ok {
			ps.Timeout = d
		}
	}
	if af, ok := m["allow_active"]; ok {
		ps.AllowActive = v.stringList(af, "patch.allow_active")
	}
	if uf, ok := m["allow_unchecked_types"]; ok {
		switch n := resolveAlias(uf.val); {
		case n.Kind == yaml.ScalarNode && (n.Value == "true" || n.Value == "false"):
			ps.AllowUncheckedTypes = n.Value == "true"
		default:
			v.errorf(uf.val, "patch.allow_unchecked_types must be true or false")
		}
	}
	return ps
}

func (v *validator) stringList(f field, what string) []string {
	if f.val.Kind != yaml.SequenceNode {
		v.errorf(f.val, "%s must be a list of strings, not %s", what, kindName(f.val))
		return nil
	}
	var out []string
	for _, it := range f.val.Content {
		it = resolveAlias(it)
		if s, ok := v.str(field{it, it}, what+" entry"); ok {
			out = append(out, s)
		}
	}
	return out
}

var selectorKinds = []string{"exe", "pid", "pidfile", "name", "unit", "build_id"}

var hexID = regexp.MustCompile(`^[0-9a-f]{8,128}$`)

func (v *validator) targets(f field) []Selector {
	if f.val.Kind != yaml.SequenceNode || len(f.val.Content) == 0 {
		v.errorf(f.val, "targets must be a non-empty list of selectors (- exe: PATH, - pid: N, ...), not %s", kindName(f.val))
		return nil
	}
	var out []Selector
	for _, it := range f.val.Content {
		it = resolveAlias(it)
		m := v.mapping(it, "target", selectorKinds...)
		if m == nil {
			continue
		}
		if len(m) != 1 {
			if len(m) > 1 {
				v.errorf(it, "target: one selector per list entry (%d given); the targets are the union of the entries", len(m))
			} else if len(it.Content) == 0 {
				v.errorf(it, "target: empty selector")
			}
			continue
		}
		for kind, sf := range m {
			s := Selector{Kind: kind, Pos: v.pos(sf.key)}
			switch kind {
			case "pid":
				n, ok := v.integer(sf, "pid", 1)
				if !ok {
					continue
				}
				s.Pid = n
			case "exe", "pidfile":
				if s.Value = v.path(sf, kind); s.Value == "" {
					continue
				}
			case "name":
				val, ok := v.str(sf, kind)
				if !ok {
					continue
				}
				if _, err := filepath.Match(val, ""); err != nil {
					v.errorf(sf.val, "name: %q is not a valid glob: %v", val, err)
					continue
				}
				s.Value = val
			case "unit":
				val, ok := v.str(sf, kind)
				if !ok {
					continue
				}
				s.Value = val
			case "build_id":
				val, ok := v.str(sf, kind)
				if !ok {
					continue
				}
				val = strings.ToLower(val)
				if !hexID.MatchString(val) {
					v.errorf(sf.val, "build_id: %q is not a hex build-id (graft inspect -p PID shows them)", val)
					continue
				}
				s.Value = val
			}
			out = append(out, s)
		}
	}
	return out
}

func (v *validator) rollout(f field) Rollout {
	r := Rollout{OnFailure: "rollback"}
	m := v.mapping(f.val, "rollout", "batches", "on_failure", "pause", "follow")
	if m == nil {
		return r
	}
	if bf, ok := m["batches"]; ok {
		r.Batches = v.batches(bf)
	}
	if of, ok := m["on_failure"]; ok {
		if s, ok := v.str(of, "rollout.on_failure"); ok {
			switch s {
			case "rollback", "stop":
				r.OnFailure = s
			default:
				v.errorf(of.val, "rollout.on_failure: %q is not rollback (revert every process this run patched) or stop (leave them patched, touch no more)", s)
			}
		}
	}
	if pf, ok := m["pause"]; ok {
		r.Pause, _ = v.duration(pf, "rollout.pause")
	}
	if ff, ok := m["follow"]; ok {
		r.Follow, _ = v.duration(ff, "rollout.follow")
	}
	return r
}

func (v *validator) batches(f field) []Batch {
	items := []*yaml.Node{f.val}
	if f.val.Kind == yaml.SequenceNode {
		items = f.val.Content
		if len(items) == 0 {
			v.errorf(f.val, "rollout.batches: empty list (leave it out for one batch of every target)")
		}
	}
	var out []Batch
	for _, it := range items {
		it = resolveAlias(it)
		if it.Kind != yaml.ScalarNode {
			v.errorf(it, "rollout.batches: each batch is a number or a percentage such as \"25%%\", not %s", kindName(it))
			continue
		}
		if p, ok := strings.CutSuffix(it.Value, "%"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || n < 1 || n > 100 {
				v.errorf(it, "rollout.batches: %q is not a percentage from 1%% to 100%%", it.Value)
				continue
			}
			out = append(out, Batch{Percent: n})
			continue
		}
		n, err := strconv.Atoi(it.Value)
		if err != nil || n < 1 {
			v.errorf(it, "rollout.batches: %q is not a number of at least 1 or a percentage such as \"25%%\"", it.Value)
			continue
		}
		out = append(out, Batch{N: n})
	}
	return out
}

func (v *validator) checks(f field) []Check {
	if f.val.Kind != yaml.SequenceNode {
		v.errorf(f.val, "checks must be a list, not %s", kindName(f.val))
		return nil
	}
	var out []Check
	names := map[string]bool{}
	for i, it := range f.val.Content {
		it = resolveAlias(it)
		m := v.mapping(it, "check", "name", "exec", "expect", "tcp", "http", "when", "timeout", "period", "failure_threshold")
		if m == nil {
			continue
		}
		c := Check{
			Name: fmt.Sprintf("check %d", i+1), When: "always",
			Timeout: 2 * time.Second, Period: time.Second, FailureThreshold: 3,
			Pos: v.pos(it),
		}
		if nf, ok := m["name"]; ok {
			if s, ok := v.str(nf, "check name"); ok {
				if names[s] {
					v.errorf(nf.val, "check name %q used twice", s)
				}
				names[s] = true
				c.Name = s
			}
		}
		kinds := 0
		for _, k := range []string{"exec", "tcp", "http"} {
			if _, ok := m[k]; ok {
				kinds++
			}
		}
		if kinds != 1 {
			v.errorf(it, "check %q: needs exactly one of exec, tcp or http (%d given)", c.Name, kinds)
		}
		if ef, ok := m["exec"]; ok {
			c.Exec = v.execArgv(ef, c.Name)
		}
		if xf, ok := m["expect"]; ok {
			if _, isExec := m["exec"]; !isExec {
				v.errorf(xf.key, "check %q: expect (exit, stdout) belongs to exec checks; tcp and http take theirs inside", c.Name)
			} else {
				v.execExpect(xf, &c)
			}
		}
		if tf, ok := m["tcp"]; ok {
			c.TCP = v.tcp(tf, c.Name)
		}
		if hf, ok := m["http"]; ok {
			c.HTTP = v.http(hf, c.Name)
		}
		if wf, ok := m["when"]; ok {
			if s, ok := v.str(wf, "when"); ok {
				switch s {
				case "always", "before", "after":
					c.When = s
				default:
					v.errorf(wf.val, "check %q: when is always (before and after the patch), before (baseline only) or after (once patched), not %q", c.Name, s)
				}
			}
		}
		if tf, ok := m["timeout"]; ok {
			if d, ok := v.duration(tf, "timeout"); ok {
				if d == 0 {
					v.errorf(tf.val, "check %q: timeout must be more than 0", c.Name)
				}
				c.Timeout = d
			}
		}
		if pf, ok := m["period"]; ok {
			if d, ok := v.duration(pf, "period"); ok {
				c.Period = d
			}
		}
		if ff, ok := m["failure_threshold"]; ok {
			if n, ok := v.integer(ff, "failure_threshold", 1); ok {
				c.FailureThreshold = n
			}
		}
		out = append(out, c)
	}
	return out
}

func (v *validator) execArgv(f field, name string) []string {
	if f.val.Kind != yaml.SequenceNode || len(f.val.Content) == 0 {
		v.errorf(f.val, "check %q: exec must be a non-empty list: the program and its arguments, e.g. [\"kvs-check\", \"${port}\"] (no shell)", name)
		return nil
	}
	var argv []string
	for _, it := range f.val.Content {
		it = resolveAlias(it)
		if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
			v.errorf(it, "check %q: exec argument must be a string, not %s", name, kindName(it))
			continue
		}
		v.placeholders(it, it.Value, fmt.Sprintf("check %q", name))
		argv = append(argv, it.Value)
	}
	return argv
}

func (v *validator) execExpect(f field, c *Check) {
	m := v.mapping(f.val, "expect", "exit", "stdout")
	if m == nil {
		return
	}
	if ef, ok := m["exit"]; ok {
		if n, ok := v.integer(ef, "expect.exit", 0); ok {
			if n > 255 {
				v.errorf(ef.val, "expect.exit: an exit status is 0 to 255, not %d", n)
			}
			c.ExpectExit = n
		}
	}
	if sf, ok := m["stdout"]; ok {
		c.ExpectStdout = v.regex(sf, "expect.stdout")
	}
}

func (v *validator) tcp(f field, name string) *TCPCheck {
	t := &TCPCheck{Host: "127.0.0.1", Port: "${port}"}
	m := v.mapping(f.val, "tcp", "host", "port", "send", "expect")
	if m == nil {
		return t
	}
	if hf, ok := m["host"]; ok {
		t.Host, _ = v.template(hf, fmt.Sprintf("check %q: tcp.host", name))
	}
	if pf, ok := m["port"]; ok {
		t.Port, _ = v.template(pf, fmt.Sprintf("check %q: tcp.port", name))
		if !strings.Contains(t.Port, "${") {
			if n, err := strconv.Atoi(t.Port); err != nil || n < 1 || n > 65535 {
				v.errorf(pf.val, "check %q: tcp.port %q is not a port number (1-65535) or a placeholder such as ${port}", name, t.Port)
			}
		}
	}
	if sf, ok := m["send"]; ok {
		t.Send, _ = v.template(sf, fmt.Sprintf("check %q: tcp.send", name))
	}
	if ef, ok := m["expect"]; ok {
		// A reply often follows a banner: ^ and $ match at every line.
		if re := v.regex(ef, "tcp.expect"); re != nil {
			t.Expect = regexp.MustCompile("(?m)" + re.String())
		}
	}
	return t
}

func (v *validator) http(f field, name string) *HTTPCheck {
	h := &HTTPCheck{}
	m := v.mapping(f.val, "http", "url", "status", "body")
	if m == nil {
		return h
	}
	if uf, ok := m["url"]; ok {
		if s, ok := v.template(uf, fmt.Sprintf("check %q: http.url", name)); ok {
			if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
				v.errorf(uf.val, "check %q: http.url must start with http:// or https://", name)
			}
			h.URL = s
		}
	} else {
		v.errorf(f.val, "check %q: http needs url (e.g. http://127.0.0.1:${port}/health)", name)
	}
	if sf, ok := m["status"]; ok {
		if n, ok := v.integer(sf, "http.status", 100); ok {
			if n > 599 {
				v.errorf(sf.val, "http.status: %d is not an HTTP status", n)
			}
			h.Status = n
		}
	}
	if bf, ok := m["body"]; ok {
		h.Body = v.regex(bf, "http.body")
	}
	return h
}

// Substitute replaces ${pid}, ${port} and the playbook's vars in s.
func Substitute(s string, vars map[string]string) string {
	return placeholder.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		if val, ok := vars[name]; ok {
			return val
		}
		return m
	})
}
