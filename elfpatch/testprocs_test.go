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
	// pairHeading is the other layout: one "### v1 -> v2: ..." section per
	// pair, in prose.
	pairHeading = regexp.MustCompile(`^###\s*v(\d+)\s*->\s*v(\d+)`)
)

// proseChanges transcribes the pairs that VERSIONS.md describes in prose
// rather than in a table (testprocs/ftpd): functions whose code changes,
// globals and types, as listed under each "### vA -> vB" heading there.
var proseChanges = map[string][]string{
	"ftpd v1->v2": {"session_main"}, // through its read-only literal only
	"ftpd v2->v3": {"cmd_size"},
	"ftpd v3->v4": {"path_normalize"},
	"ftpd v4->v5": {"data_start", "send_listing", "cmd_retr", "cmd_stor"},
	"ftpd v5->v6": {"ftpd_files_sent", "cmd_retr", "cmd_stat"},
	"ftpd v6->v7": {"struct ftpd_stats", "ftpd_stats", "cmd_stor", "cmd_stat"},
	"ftpd v7->v8": {"accept_loop"},
}

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
		if h := pairHeading.FindStringSubmatch(sc.Text()); h != nil {
			p := documentedPair{prog: prog}
			fmt.Sscan(h[1], &p.old)
			fmt.Sscan(h[2], &p.new)
			key := fmt.Sprintf("%s v%d->v%d", prog, p.old, p.new)
			names, ok := proseChanges[key]
			if !ok {
				t.Errorf("%s: pair %s is documented in prose but not transcribed in proseChanges", path, key)
				continue
			}
			p.names = names
			out = append(out, p)
			continue
		}
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
		pairs := readVersions(t, doc)
		requireEveryAdjacentPair(t, doc, pairs)
		for _, p := range pairs {
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
				want := VerdictAuto
				if v, ok := expectedVerdict[fmt.Sprintf("%s v%d->v%d", p.prog, p.old, p.new)]; ok {
					want = v
				}
				if r.Verdict != want {
					t.Errorf("verdict %s, want %s; reasons: %+v", r.Verdict, want, r.Reasons)
				}
			})
		}
	}
}

// requireEveryAdjacentPair fails unless the pairs read from doc are
// exactly v1->v2, v2->v3, ... up to the newest version directory next to
// it: a VERSIONS.md whose layout the parser no longer recognises, or a new
// version nobody documented, must not leave a program's diffs unchecked.
func requireEveryAdjacentPair(t *testing.T, doc string, pairs []documentedPair) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(filepath.Dir(doc), "v*"))
	if err != nil {
		t.Fatal(err)
	}
	newest := 0
	for _, d := range dirs {
		var n int
		if _, err := fmt.Sscanf(filepath.Base(d), "v%d", &n); err == nil && n > newest {
			newest = n
		}
	}
	if newest < 2 {
		t.Fatalf("%s: fewer than two version directories next to it", doc)
	}
	got := map[[2]int]bool{}
	for _, p := range pairs {
		got[[2]int{p.old, p.new}] = true
	}
	for v := 1; v < newest; v++ {
		if !got[[2]int{v, v + 1}] {
			t.Errorf("%s: pair v%d->v%d not documented (or not parsed); pairs read: %d", doc, v, v+1, len(pairs))
		}
	}
	if len(got) != newest-1 {
		t.Errorf("%s: %d distinct pairs read, want the %d adjacent ones of v1..v%d", doc, len(got), newest-1, newest)
	}
}

// expectedVerdict lists the pairs whose verdict is not auto, as their
// VERSIONS.md describes them: ftpd v6->v7 "must carry the two old members
// over" (a transformer for the global ftpd_stats); sshd v5->v6 changes
// struct session, which running threads hold pointers into.
var expectedVerdict = map[string]Verdict{
	"ftpd v6->v7": VerdictTransformer,
	"sshd v5->v6": VerdictRefused,
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
