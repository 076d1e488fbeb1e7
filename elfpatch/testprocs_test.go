package elfpatch

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"graft/internal/testutil"
)

// documentedPair is one row of a testprocs/<prog>/VERSIONS.md "Pairs"
// table: what the authors of the sample programs say changed.
type documentedPair struct {
	prog     string
	old, new int
	names    []string // the backticked names of the "changed" column
}

var (
	pairRow  = regexp.MustCompile(`^\|\s*v(\d+)\s*→\s*v(\d+)\s*\|[^|]*\|([^|]*)\|`)
	backtick = regexp.MustCompile("`([^`]+)`")
)

func readVersions(t *testing.T, path string) []documentedPair {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prog := filepath.Base(filepath.Dir(path))
	var out []documentedPair
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := pairRow.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		p := documentedPair{prog: prog}
		fmt.Sscan(m[1], &p.old)
		fmt.Sscan(m[2], &p.new)
		for _, b := range backtick.FindAllStringSubmatch(m[3], -1) {
			p.names = append(p.names, b[1])
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func symKind(b *Binary, name string) (fn, data bool) {
	for _, s := range b.syms {
		if s.name == name {
			if s.fn {
				fn = true
			} else {
				data = true
			}
		}
	}
	return
}

// TestTestprocsVersions diffs every adjacent pair documented in
// testprocs/*/VERSIONS.md and checks the result against the document: each
// documented function, global and type is reported, and nothing else is
// (no spurious changed function, global or type).
func TestTestprocsVersions(t *testing.T) {
	docs, _ := filepath.Glob(filepath.Join(testutil.TestprocsDir(), "*", "VERSIONS.md"))
	sort.Strings(docs)
	if len(docs) == 0 {
		t.Fatal("no testprocs/*/VERSIONS.md found")
	}
	for _, doc := range docs {
		for _, p := range readVersions(t, doc) {
			t.Run(fmt.Sprintf("%s-v%d-v%d", p.prog, p.old, p.new), func(t *testing.T) {
				old, err := Open(testutil.Build(t, fmt.Sprintf("%s-v%d", p.prog, p.old)))
				if err != nil {
					t.Fatal(err)
				}
				new, err := Open(testutil.Build(t, fmt.Sprintf("%s-v%d", p.prog, p.new)))
				if err != nil {
					t.Fatal(err)
				}
				r, err := Diff(old, new)
				if err != nil {
					t.Fatal(err)
				}
				checkDocumented(t, p, old, new, r)
			})
		}
	}
}

func checkDocumented(t *testing.T, p documentedPair, old, new *Binary, r *Report) {
	funcs, globals, types := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, n := range p.names {
		switch {
		case strings.HasPrefix(n, "struct ") || strings.HasPrefix(n, "union ") || strings.HasPrefix(n, "enum "):
			types[n] = true
			continue
		}
		of, od := symKind(old, n)
		nf, nd := symKind(new, n)
		switch {
		case of || nf:
			funcs[n] = true
		case od || nd:
			globals[n] = true
		default:
			t.Logf("%s: documented name %q has no symbol (inlined), not checked by name", p.prog, n)
		}
	}
	reported := map[string]bool{}
	for _, f := range append(append(append([]Func{}, r.Changed...), r.Added...), r.Removed...) {
		reported[f.Name] = true
		if !funcs[f.Name] {
			t.Errorf("spurious function change: %s (documented: %v)", f.Name, p.names)
		}
	}
	for f := range funcs {
		if !reported[f] {
			t.Errorf("documented function %s not reported as changed, added or removed", f)
		}
	}
	reportedG := map[string]bool{}
	for _, g := range r.Globals {
		reportedG[g.Name] = true
		if !globals[g.Name] {
			t.Errorf("spurious global change: %s %v", g.Name, g.Changes)
		}
	}
	for g := range globals {
		if !reportedG[g] {
			t.Errorf("documented global %s not reported", g)
		}
	}
	reportedT := map[string]bool{}
	for _, ty := range r.Types {
		// An array of a documented struct ("[64]struct session") is that
		// struct's change seen through a global.
		base := ty.Name
		if i := strings.Index(base, "]"); strings.HasPrefix(base, "[") && i > 0 {
			base = base[i+1:]
		}
		reportedT[base] = true
		if !types[base] && ty.Class == TypeChanged {
			t.Errorf("spurious type change: %s (%s)", ty.Name, ty.Detail)
		}
	}
	for ty := range types {
		if !reportedT[ty] {
			t.Errorf("documented type %s not reported", ty)
		}
	}
	t.Logf("%s v%d->v%d: verdict %s, changed %v, added %v, removed %v", p.prog, p.old, p.new, r.Verdict, names(r.Changed), names(r.Added), names(r.Removed))
}
