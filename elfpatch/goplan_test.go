package elfpatch

import (
	"debug/elf"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"graft/internal/testutil"
)

// goserverChanged is what testprocs/goserver/VERSIONS.md documents as the
// functions each pair changes (an inlined helper names the functions it
// is inlined into).
var goserverChanged = map[int][]string{
	2:  {"main.handleKV"},
	3:  {"main.handleCount"},
	4:  {"main.handleVersion"},
	5:  {"main.handleVersion"},
	6:  {"main.handleHello", "main.handleHello.func1", "unicode.ToUpper"},
	7:  {"main.handleHello.func1"},
	8:  {"main.handleKV"},
	10: {"main.(*plainGreeter).greet", "main.plainGreeter.greet"},
}

func openBuild(t *testing.T, target string) *Binary {
	t.Helper()
	b, err := Open(testutil.Build(t, target))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoPlanGoserver plans every goserver pair in both build modes (a
// default OLD with the PIE of NEW loaded; a PIE OLD) and checks the plan:
// exactly the documented functions, nothing refused, every redirect
// lands on the OLD symbol or type descriptor of the same identity, and no
// kept reference reaches NEW's runtime, NEW's functions outside the plan
// or NEW's writable data.
func TestGoPlanGoserver(t *testing.T) {
	for n := 2; n <= 10; n++ {
		if goserverChanged[n] == nil {
			continue
		}
		for _, mode := range []string{"default", "pie"} {
			t.Run(fmt.Sprintf("v%d-v%d-%s", n-1, n, mode), func(t *testing.T) {
				oldT, newT := fmt.Sprintf("goserver-v%d", n-1), fmt.Sprintf("goserver-v%d", n)
				if mode == "pie" {
					oldT += "-pie"
					newT += "-pie"
				}
				old, diffed, load := openBuild(t, oldT), openBuild(t, newT), openBuild(t, fmt.Sprintf("goserver-v%d-pie", n))
				if mode == "pie" {
					load = diffed
				}
				p, err := PlanGo(old, diffed, load)
				if err != nil {
					t.Fatalf("PlanGo: %v", err)
				}
				var got []string
				for _, f := range p.Funcs {
					got = append(got, f.Name)
				}
				want := goserverChanged[n]
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("functions %v, want %v", got, want)
				}
				checkGoPlan(t, p, old, load)
				t.Logf("%d functions, %d redirects, %d kept", len(p.Funcs), len(p.Redirects), len(p.Kept))
			})
		}
	}
}

func checkGoPlan(t *testing.T, p *GoPlan, old, load *Binary) {
	t.Helper()
	og, lg := old.goImage(), load.goImage()
	kinds := map[string]int{}
	for _, r := range p.Redirects {
		kinds[r.Kind]++
		if r.End != r.Field+4 && (r.End < r.Field+4 || r.End > r.Field+12) {
			t.Errorf("redirect %+v: field not inside its instruction", r)
		}
		switch r.Kind {
		case "type":
			want := lg.typeIdent(loadTarget(t, load, r), 0)
			if got := og.typeIdent(r.Target, 0); got == "" || got != want {
				t.Errorf("type redirect %s: OLD %#x is %q, NEW's is %q", r.What, r.Target, got, want)
			}
		default:
			s := old.symbolAt(r.Target)
			if s == nil && r.Kind == "funcval" && og.inFuncdesc(r.Target) {
				continue
			}
			if s == nil {
				t.Errorf("redirect %+v: OLD has no symbol at the target", r)
				continue
			}
			name, _, _ := strings.Cut(r.What, "+")
			if s.name != name && !goNumbered.MatchString(s.name) {
				t.Errorf("redirect %+v lands in OLD's %s", r, s.name)
			}
		}
	}
	var must []string
	for _, f := range p.Funcs {
		must = append(must, f.Name)
	}
	for _, r := range p.Kept {
		sec := load.section(r.Target)
		if sec == nil {
			t.Errorf("kept %+v: outside NEW's sections", r)
			continue
		}
		if sec.Flags&elf.SHF_WRITE != 0 && !strings.HasPrefix(sec.Name, ".data.rel.ro") {
			t.Errorf("kept %+v: in NEW's writable %s", r, sec.Name)
		}
		if s := load.symbolAt(r.Target); s != nil && s.fn {
			in := false
			for _, f := range p.Funcs {
				in = in || f.Name == s.name
			}
			if !in || strings.HasPrefix(s.name, "runtime.") {
				t.Errorf("kept %+v: NEW's %s, which the patch does not run", r, s.name)
			}
		}
	}
	// The references every handler makes: the runtime's stack check.
	if kinds["function"] == 0 {
		t.Errorf("no function redirected (morestack at least): %v", kinds)
	}
	var ks []string
	for k, v := range kinds {
		ks = append(ks, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(ks)
	t.Logf("redirects by kind: %s", strings.Join(ks, " "))
}

// loadTarget finds the NEW target of a redirect again by decoding its
// instruction.
func loadTarget(t *testing.T, load *Binary, r GoRedirect) uint64 {
	d := load.read(r.Field, 4)
	if d == nil {
		t.Fatalf("field %#x unreadable", r.Field)
	}
	disp := int32(uint32(d[0]) | uint32(d[1])<<8 | uint32(d[2])<<16 | uint32(d[3])<<24)
	return uint64(int64(r.End) + int64(disp))
}

// TestGoPlanRefusesMismatch: a default-mode NEW as the loaded build is
// refused with the exact instruction, and so is a pair of different
// modes diffed directly.
func TestGoPlanRefusesMismatch(t *testing.T) {
	old, new := openBuild(t, "goserver-v2"), openBuild(t, "goserver-v3")
	_, err := PlanGo(old, new, new)
	if !errors.Is(err, ErrGoNewNotPIE) || !strings.Contains(err.Error(), "-buildmode=pie") {
		t.Errorf("default-mode NEW loaded: %v, want ErrGoNewNotPIE", err)
	}
	pie := openBuild(t, "goserver-v3-pie")
	if _, err := PlanGo(old, pie, pie); err == nil || !strings.Contains(err.Error(), "built the way OLD was") {
		t.Errorf("default OLD diffed against a PIE: %v", err)
	}
}

// TestGoPlanRefusesNewGlobal: goserver v8 -> v9 routes the greeting
// through an interface value in a new global; the plan names it.
func TestGoPlanRefusesNewGlobal(t *testing.T) {
	old, new, load := openBuild(t, "goserver-v8"), openBuild(t, "goserver-v9"), openBuild(t, "goserver-v9-pie")
	p, err := PlanGo(old, new, load)
	if !errors.Is(err, ErrGoPlanRefused) || p == nil {
		t.Fatalf("PlanGo v8->v9: %v, want a refusal", err)
	}
	found := false
	for _, r := range p.Refusals {
		found = found || r.Symbol == "main.defaultGreeter"
	}
	if !found {
		t.Errorf("refusals %+v do not name main.defaultGreeter", p.Refusals)
	}
}
