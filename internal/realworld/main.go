// Command realworld measures graft's diff against ground truth on real
// source-level fixes of real C programs from Debian (`make realworld`).
//
// For each pair in pairs.go it fetches the Debian source package with
// apt-get source, makes the OLD and NEW trees (two versions, or one
// version without and with one of its debian/patches), builds both with
// -O2 -g (the distribution's gcc builds PIE and PIC by default) and then
// compares two sets of functions:
//
//   - by source diff: the functions whose code comes from a line the
//     source diff touches, from the DWARF line tables of both builds (a
//     deleted line in OLD's, an added one in NEW's). Rows of inlined code
//     carry the inlined function's lines at the caller's addresses, so
//     the functions a changed function was inlined into count too.
//   - by graft: the functions elfpatch.Diff reports changed, added or
//     removed.
//
// Recall (source-diff functions that graft reports) must be 100%: a miss
// is a change graft would leave out of a patch. Precision is reported.
// A function on touched lines whose machine code is the same in both
// builds (samecode.go, checked with objdump, not with graft) is listed
// apart and left out of the ground truth. Sources and builds are cached
// under $REALWORLD_CACHE (default /var/tmp/realworld), outside the
// repository. REALWORLD_WHY=NAME prints the line-table rows that put
// functions whose name contains NAME into the ground truth.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	only := flag.String("only", "", "run only the pair with this `name`")
	buildOnly := flag.Bool("build-only", false, "fetch and build, do not measure")
	verbose := flag.Bool("v", false, "list the functions behind every figure")
	out := flag.String("o", "", "also write the table to `FILE`")
	flag.Parse()
	cache := os.Getenv("REALWORLD_CACHE")
	if cache == "" {
		cache = "/var/tmp/realworld"
	}
	var rows []result
	failed := false
	for _, p := range pairs {
		if *only != "" && p.name != *only {
			continue
		}
		start := time.Now()
		oldBin, newBin, oldTree, newTree, err := prepare(cache, p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.name, err)
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "%s: built in %s\n", p.name, time.Since(start).Round(time.Second))
		if *buildOnly {
			continue
		}
		r, err := measure(p, oldTree, newTree, oldBin, newBin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.name, err)
			failed = true
			continue
		}
		if *verbose {
			r.explain(os.Stderr)
		}
		if len(r.missed) > 0 {
			failed = true
			fmt.Fprintf(os.Stderr, "%s: graft misses %d function(s) the source diff changes: %s\n", p.name, len(r.missed), strings.Join(r.missed, ", "))
		}
		rows = append(rows, r)
	}
	if *buildOnly {
		return
	}
	var sb strings.Builder
	table(&sb, rows)
	fmt.Print(sb.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(sb.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// result is one pair's figures.
type result struct {
	p             pair
	truth, graft  []string
	both          []string
	missed, extra []string
	verdict       string
	// strippedSame: with NEW run through strip -g, graft reports the
	// same functions.
	strippedSame    bool
	strippedVerdict string
	// sameCode are functions on lines the source diff touches whose
	// machine code is the same in both builds (sameCode): left out of
	// the ground truth.
	sameCode []string
	// unknownExtent are the functions graft counts as changed because
	// they refer to read-only data whose end it cannot know.
	unknownExtent []string
	files, hunks  int
	// switchable of returns: return addresses of the changed functions
	// (both ways) a frame could be switched at (elfpatch/switch.go).
	switchable, returns int
}

func (r result) recall() float64 {
	if len(r.truth) == 0 {
		return 1
	}
	return float64(len(r.both)) / float64(len(r.truth))
}

func (r result) precision() float64 {
	if len(r.graft) == 0 {
		return 1
	}
	return float64(len(r.both)) / float64(len(r.graft))
}

func (r result) explain(w io.Writer) {
	fmt.Fprintf(w, "%s: %d file(s), %d hunk(s); verdict %s\n", r.p.name, r.files, r.hunks, r.verdict)
	fmt.Fprintf(w, "  by source diff: %s\n", strings.Join(r.truth, " "))
	fmt.Fprintf(w, "  by graft:       %s\n", strings.Join(r.graft, " "))
	fmt.Fprintf(w, "  graft only:     %s\n", strings.Join(r.extra, " "))
	fmt.Fprintf(w, "  missed:         %s\n", strings.Join(r.missed, " "))
	fmt.Fprintf(w, "  touched lines, same code (not counted): %s\n", strings.Join(r.sameCode, " "))
	fmt.Fprintf(w, "  counted as changed for data of unknown extent: %s\n", strings.Join(r.unknownExtent, " "))
	fmt.Fprintf(w, "  frame switches: %d of %d return addresses of the changed functions (both ways)\n", r.switchable, r.returns)
}

func table(w io.Writer, rows []result) {
	fmt.Fprintln(w, "| pair | change | functions changed by source diff | by graft | both | recall | precision | verdict | NEW strip -g: same functions, verdict |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
	var t, g, b int
	for _, r := range rows {
		same := "yes"
		if !r.strippedSame {
			same = "NO"
		}
		fmt.Fprintf(w, "| %s %s | %s | %d | %d | %d | %d/%d = %.0f%% | %d/%d = %.0f%% | %s | %s |\n", r.p.pkg, r.p.oldVer, r.p.fix,
			len(r.truth), len(r.graft), len(r.both),
			len(r.both), len(r.truth), 100*r.recall(), len(r.both), len(r.graft), 100*r.precision(), r.verdict, same+", "+r.strippedVerdict)
		t, g, b = t+len(r.truth), g+len(r.graft), b+len(r.both)
	}
	if len(rows) > 1 {
		rc, pr := 100.0, 100.0
		if t > 0 {
			rc = 100 * float64(b) / float64(t)
		}
		if g > 0 {
			pr = 100 * float64(b) / float64(g)
		}
		fmt.Fprintf(w, "| all %d pairs | | %d | %d | %d | %d/%d = %.0f%% | %d/%d = %.0f%% | | |\n", len(rows), t, g, b, b, t, rc, b, g, pr)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
