package elfpatch

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func findFunc(fs []Func, name string) *Func {
	for i := range fs {
		if fs[i].Name == name {
			return &fs[i]
		}
	}
	return nil
}

func findGlobal(gs []GlobalChange, name string) *GlobalChange {
	for i := range gs {
		if gs[i].Name == name {
			return &gs[i]
		}
	}
	return nil
}

func findType(ts []TypeChange, name string) *TypeChange {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

// TestDiffFixtures runs Diff on each C fixture pair in testdata/diff and
// checks the exact sets of changed, added and removed functions (so a
// spurious change fails), the verdict and the case's specific finding.
func TestDiffFixtures(t *testing.T) {
	cases := []struct {
		name           string
		changed        []string
		added, removed []string
		verdict        Verdict
		check          func(t *testing.T, r *Report)
	}{
		{name: "body", changed: []string{"compute"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			f := findFunc(r.Changed, "compute")
			assert.True(t, f.Patchable, f.Why)
			assert.Equal(t, "main.c:3", f.Source)
			assert.NotZero(t, f.OldAddr)
			assert.NotZero(t, f.NewAddr)
		}},
		{name: "string", changed: []string{"banner"}, verdict: VerdictAuto},
		{name: "tailmerge", changed: []string{"banner", "release"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			// Meaningful only if the linker really stored the release
			// string inside the banner's tail in both builds.
			for _, v := range []string{"v1", "v2"} {
				b := openFixture(t, "tailmerge", v)
				ro := b.f.Section(".rodata")
				require.NotNil(t, ro)
				d, err := ro.Data()
				require.NoError(t, err)
				rel := "1." + v[1:]
				require.Equal(t, 1, strings.Count(string(d), rel+"\x00"), "%s: %q stored once", v, rel)
				require.Contains(t, string(d), "SRV-2.0-x_"+rel+"\x00", "%s: the release is the banner's tail", v)
			}
		}},
		{name: "enumgain", changed: []string{"show", "state_name"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			// enum state gains FAILED at the end: same size, old values
			// kept. Compatible wherever it is held (a global, a struct
			// on the heap, a parameter), and no signature change.
			assert.Empty(t, r.Signatures)
			require.NotEmpty(t, r.Types)
			for _, ty := range r.Types {
				assert.Equal(t, TypeCompatible, ty.Class, "%s via %v: %s", ty.Name, ty.UsedBy, ty.Detail)
				assert.Contains(t, ty.Detail, "gained enum state.FAILED")
			}
			g := findGlobal(r.Globals, "g_state")
			require.NotNil(t, g)
			assert.Equal(t, TypeCompatible, g.TypeClass)
			assert.NotNil(t, findType(r.Types, "struct job"), "the struct holding the enum was compared")
		}},
		{name: "retpoline", changed: []string{"grow"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			// Built with retpolines and return thunks: twice, apply and
			// main call or jump to the thunks, which moved when grow
			// grew; they are named, so only grow changed.
			o, n := openFixture(t, "retpoline", "v1"), openFixture(t, "retpoline", "v2")
			ol, nl := codeLabels(o), codeLabels(n)
			find := func(m map[uint64]string, name string) uint64 {
				for a, s := range m {
					if strings.HasSuffix(s, name) {
						return a
					}
				}
				return 0
			}
			for _, th := range []string{"__x86_return_thunk", "__x86_indirect_thunk_rax"} {
				oa, na := find(ol, th), find(nl, th)
				require.NotZero(t, oa, th)
				require.NotEqual(t, oa, na, "%s did not move; the fixture no longer tests moved thunks", th)
			}
			_, err := BuildPatch(o, n)
			require.NoError(t, err, "the new code's jumps to the thunks can be planned")
		}},
		{name: "bigconst", changed: []string{"fill", "main"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			// fill is the same in both builds, but its table has no
			// known end: it is in the patch, and the reason says why.
			found := false
			for _, rs := range r.Reasons {
				if rs.Symbol == "fill" && strings.Contains(rs.Message, "whose end is unknown") {
					found = true
				}
			}
			assert.True(t, found, "fill's reason names the unknown extent: %+v", r.Reasons)
		}},
		{name: "static", changed: []string{"helper"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			f := findFunc(r.Changed, "helper")
			assert.Equal(t, "b.c", f.File, "the helper that changed is b.c's, not a.c's")
			assert.True(t, f.Local)
		}},
		{name: "addrm", changed: []string{"main"}, added: []string{"new_fn"}, removed: []string{"old_fn"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			assert.Zero(t, r.Added[0].OldAddr)
			assert.NotZero(t, r.Added[0].NewAddr)
			assert.Zero(t, r.Removed[0].NewAddr)
		}},
		{name: "newglobal", changed: []string{"handle"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			g := findGlobal(r.Globals, "bytes_served")
			require.NotNil(t, g)
			assert.Equal(t, []string{"added"}, g.Changes)
			assert.Equal(t, "long int", g.NewType)
			assert.Len(t, r.Globals, 1)
		}},
		// main uses g_stats, whose new layout does not fit its old slot:
		// the object moves and main joins the patch (transform.go).
		{name: "globaltype", changed: []string{"hit", "main"}, verdict: VerdictTransformer, check: func(t *testing.T, r *Report) {
			g := findGlobal(r.Globals, "g_stats")
			require.NotNil(t, g)
			assert.Equal(t, TypeChanged, g.TypeClass)
			assert.Contains(t, g.Detail, "member bytes added")
			assert.Contains(t, g.Detail, "member misses: offset 4 -> 16")
			s := findGlobal(r.Globals, "got_signal")
			require.NotNil(t, s)
			assert.Equal(t, TypeCompatible, s.TypeClass)
			l := findGlobal(r.Globals, "limit")
			require.NotNil(t, l)
			assert.Equal(t, []string{"value"}, l.Changes)
			tc := findType(r.Types, "struct stats")
			require.NotNil(t, tc)
			assert.Equal(t, "global", tc.Storage)
			var transformer *Reason
			for i := range r.Reasons {
				if r.Reasons[i].Verdict == VerdictTransformer {
					transformer = &r.Reasons[i]
				}
			}
			require.NotNil(t, transformer)
			assert.Equal(t, "g_stats", transformer.Symbol)
			assert.Equal(t, "main.c:4", transformer.Source)
		}},
		{name: "heaptype", changed: []string{"main", "session_fd"}, verdict: VerdictRefused, check: func(t *testing.T, r *Report) {
			tc := findType(r.Types, "struct session")
			require.NotNil(t, tc)
			assert.Equal(t, TypeChanged, tc.Class)
			assert.Equal(t, "heap", tc.Storage)
			assert.Contains(t, tc.UsedBy, "session_fd")
			assert.Equal(t, int64(20), tc.OldSize)
			assert.Equal(t, int64(24), tc.NewSize)
		}},
		{name: "signature", changed: []string{"area", "room"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			require.Len(t, r.Signatures, 1)
			s := r.Signatures[0]
			assert.Equal(t, "area", s.Name)
			assert.Equal(t, "int area(int, int)", s.Old)
			assert.Equal(t, "long int area(long int, long int, long int)", s.New)
			assert.Equal(t, []string{"room"}, s.Callers)
			assert.Empty(t, s.LeftBehind)
		}},
		{name: "callerleft", changed: []string{"scaled"}, verdict: VerdictRefused, check: func(t *testing.T, r *Report) {
			require.Len(t, r.Signatures, 1)
			assert.Equal(t, []string{"caller"}, r.Signatures[0].LeftBehind)
			found := false
			for _, rs := range r.Reasons {
				if rs.Verdict == VerdictRefused && strings.Contains(rs.Message, "callers caller did not change") {
					found = true
				}
			}
			assert.True(t, found, "a refused reason names the caller left behind: %+v", r.Reasons)
		}},
		{name: "moved", changed: []string{"main"}, added: []string{"padding_fn"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			// The test means something only if the linker really moved
			// the unchanged functions, the string table and the
			// switch's jump table.
			o, n := openFixture(t, "moved", "v1"), openFixture(t, "moved", "v2")
			for _, name := range []string{"lookup", "name", "classify"} {
				oldSym, newSym := symByName(o, name), symByName(n, name)
				require.NotNil(t, oldSym, name)
				require.NotNil(t, newSym, name)
				assert.NotEqual(t, oldSym.addr, newSym.addr, "%s did not move; the fixture no longer tests moves", name)
			}
			// names[] holds relocated pointers to string literals that
			// moved: its bytes differ, its value (pointers compared by
			// what they point to) does not.
			oldNames, newNames := symByName(o, "names"), symByName(n, "names")
			require.NotNil(t, oldNames)
			require.NotNil(t, newNames)
			assert.NotEqual(t, o.read(oldNames.addr, oldNames.size), n.read(newNames.addr, newNames.size), "pointers in names[] did not move")
			assert.Empty(t, r.Globals)
		}},
		{name: "clone", changed: []string{"check", "scale.constprop.0"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			c := findFunc(r.Changed, "check")
			assert.Equal(t, []string{"check.cold"}, c.Parts, "the .cold part is folded into its function")
			s := findFunc(r.Changed, "scale.constprop.0")
			assert.Equal(t, "scale", s.Origin)
			assert.Equal(t, "main.c:4", s.Source)
		}},
		{name: "fnstatic", changed: []string{"main"}, added: []string{"first"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			// Renumbered counter.N are matched by their function: only
			// tock's changed (its initial value) and first's is new.
			require.Len(t, r.Globals, 2)
			byFn := map[string]GlobalChange{}
			for _, g := range r.Globals {
				assert.True(t, strings.HasPrefix(g.Name, "counter."), g.Name)
				byFn[g.Function] = g
			}
			assert.Equal(t, []string{"value"}, byFn["tock"].Changes)
			assert.Equal(t, []string{"added"}, byFn["first"].Changes)
		}},
		{name: "short", changed: []string{"flag"}, verdict: VerdictAuto, check: func(t *testing.T, r *Report) {
			f := findFunc(r.Changed, "flag")
			assert.Equal(t, uint64(3), f.OldSize)
			assert.True(t, f.Patchable, f.Why)
			assert.Equal(t, uint64(2), f.Pad, "the jump spills 2 bytes into the padding")
		}},
		{name: "layouts", changed: []string{"main", "touch"}, verdict: VerdictTransformer, check: func(t *testing.T, r *Report) {
			flags := findGlobal(r.Globals, "g_flags")
			require.NotNil(t, flags)
			assert.Equal(t, TypeChanged, flags.TypeClass)
			assert.Contains(t, flags.Detail, "member a: bits 3 -> 4")
			assert.Contains(t, flags.Detail, "member b: bit offset")
			state := findGlobal(r.Globals, "g_state")
			require.NotNil(t, state)
			assert.Equal(t, TypeChanged, state.TypeClass, "an enumerator's value changed")
			hits := findGlobal(r.Globals, "hits")
			require.NotNil(t, hits)
			assert.Equal(t, TypeCompatible, hits.TypeClass, "a renamed typedef of the same type")
		}},
		{name: "unpatchable", changed: []string{"count", "tiny"}, verdict: VerdictRefused, check: func(t *testing.T, r *Report) {
			c := findFunc(r.Changed, "count")
			assert.False(t, c.Patchable)
			assert.Contains(t, c.Why, "(entry+2), inside the 5 bytes")
			tiny := findFunc(r.Changed, "tiny")
			assert.False(t, tiny.Patchable)
			assert.Contains(t, tiny.Why, "3 bytes long with 0 bytes of padding")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := diffFixture(t, tc.name)
			if t.Failed() {
				return
			}
			nz := func(s []string) []string {
				if s == nil {
					return []string{}
				}
				return s
			}
			assert.Equal(t, nz(tc.changed), names(r.Changed), "changed")
			assert.Equal(t, nz(tc.added), names(r.Added), "added")
			assert.Equal(t, nz(tc.removed), names(r.Removed), "removed")
			assert.Equal(t, tc.verdict, r.Verdict, "verdict; reasons: %+v", r.Reasons)
			for _, rs := range r.Reasons {
				assert.NotEmpty(t, rs.Symbol)
				assert.NotEmpty(t, rs.Message)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func symByName(b *Binary, name string) *symbol {
	for _, s := range b.syms {
		if s.name == name {
			return s
		}
	}
	return nil
}

// TestDiffIdentical: a build diffed against itself, and against the same
// sources built again, has nothing to say.
func TestDiffIdentical(t *testing.T) {
	for _, name := range []string{"moved", "clone", "globaltype", "static"} {
		b := openFixture(t, name, "v2")
		r, err := Diff(b, b)
		require.NoError(t, err)
		assert.Empty(t, r.Changed, name)
		assert.Empty(t, r.Added, name)
		assert.Empty(t, r.Removed, name)
		assert.Empty(t, r.Globals, name)
		assert.Empty(t, r.Types, name)
		assert.Equal(t, VerdictAuto, r.Verdict)
		assert.Greater(t, r.Unchanged, 2)
	}
}

func TestDiffDeterministic(t *testing.T) {
	a, err := json.Marshal(diffFixture(t, "globaltype"))
	require.NoError(t, err)
	b, err := json.Marshal(diffFixture(t, "globaltype"))
	require.NoError(t, err)
	assert.Equal(t, string(a), string(b))
}

func TestReportJSONNames(t *testing.T) {
	r := diffFixture(t, "addrm")
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"changed", "added", "removed", "globals", "types", "verdict", "reasons"} {
		assert.Contains(t, m, k)
	}
	added := m["added"].([]any)
	assert.Equal(t, "new_fn", added[0].(map[string]any)["name"])
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "text")
	require.NoError(t, os.WriteFile(notELF, []byte("#!/bin/sh\necho hi\n"), 0o755))
	_, err := Open(notELF)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not an ELF file")

	_, err = Open(filepath.Join(dir, "missing"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist))

	stripped := filepath.Join(dir, "stripped")
	src, err := os.ReadFile(fixture(t, "body", "v1"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(stripped, src, 0o755))
	if out, err := runCmd("strip", stripped); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	_, err = Open(stripped)
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrNoSymbols), "%v", err)

	// A 32-bit x86 ELF header: right magic, wrong machine.
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x01\x01\x01")
	hdr[16], hdr[18] = 2, 3 // ET_EXEC, EM_386
	hdr[20] = 1
	i386 := filepath.Join(dir, "i386")
	require.NoError(t, os.WriteFile(i386, hdr, 0o644))
	_, err = Open(i386)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "only x86-64")
}

func TestBuildIDAndPath(t *testing.T) {
	p := fixture(t, "body", "v1")
	b, err := Open(p)
	require.NoError(t, err)
	assert.Len(t, b.BuildID(), 40, "gcc's default build-id is a 20-byte sha1")
	assert.Equal(t, p, b.Path())
	assert.NotNil(t, b.ELF())
}

// TestDiffWithoutDWARF: without -g the code comparison still works and the
// report says what it could not check.
func TestDiffWithoutDWARF(t *testing.T) {
	dir := t.TempDir()
	var bins [2]*Binary
	for i, v := range []string{"v1", "v2"} {
		out := filepath.Join(dir, v)
		if b, err := runCmd("gcc", "-O2", "-o", out, filepath.Join("testdata", "diff", "signature", v, "main.c")); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
		b, err := Open(out)
		require.NoError(t, err)
		bins[i] = b
	}
	r, err := Diff(bins[0], bins[1])
	require.NoError(t, err)
	assert.Equal(t, []string{"area", "room"}, names(r.Changed))
	assert.Empty(t, r.Signatures, "no DWARF, no signatures")
	require.NotEmpty(t, r.Warnings)
	assert.Contains(t, r.Warnings[0], "no usable DWARF")
	assert.Empty(t, r.Changed[0].Source)
}

// TestDiffCET: with -fcf-protection every function starts with endbr64,
// and the jump goes after it.
func TestDiffCET(t *testing.T) {
	dir := t.TempDir()
	var bins [2]*Binary
	for i, v := range []string{"v1", "v2"} {
		out := filepath.Join(dir, v)
		if b, err := runCmd("gcc", "-g", "-O2", "-fcf-protection=full", "-o", out, filepath.Join("testdata", "diff", "body", v, "main.c")); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
		b, err := Open(out)
		require.NoError(t, err)
		bins[i] = b
	}
	r, err := Diff(bins[0], bins[1])
	require.NoError(t, err)
	assert.Equal(t, []string{"compute"}, names(r.Changed))
	f := r.Changed[0]
	code := bins[0].read(f.OldAddr, 4)
	require.Equal(t, endbr64, code, "the fixture no longer starts with endbr64")
	// compute is endbr64 + lea + ret: exactly the 4+5 bytes needed, so
	// the jump after endbr64 fits without padding.
	assert.True(t, f.Patchable, f.Why)
	assert.Equal(t, uint64(9), f.OldSize)
	assert.Equal(t, uint64(0), f.Pad)
}

// TestDiffRemovedGlobalStillNamed: NEW drops its own optind and uses
// libc's through the GOT; the running process's state is in OLD's copy,
// which the new code would not see. Both builds use -fPIC so NEW keeps the
// GOT reference instead of a copy relocation.
func TestDiffRemovedGlobalStillNamed(t *testing.T) {
	dir := t.TempDir()
	var bins [2]*Binary
	for i, v := range []string{"v1", "v2"} {
		out := filepath.Join(dir, v)
		if b, err := runCmd("gcc", "-g", "-O2", "-fPIC", "-o", out, filepath.Join("testdata", "diff", "libglobal", v, "main.c")); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
		b, err := Open(out)
		require.NoError(t, err)
		bins[i] = b
	}
	r, err := Diff(bins[0], bins[1])
	require.NoError(t, err)
	assert.Equal(t, VerdictRefused, r.Verdict)
	g := findGlobal(r.Globals, "optind")
	require.NotNil(t, g)
	assert.Equal(t, []string{"removed"}, g.Changes)
	require.NotEmpty(t, r.Reasons)
	assert.Equal(t, "optind", r.Reasons[0].Symbol)
	assert.Contains(t, r.Reasons[0].Message, "new code (next_arg) still refers to it")
}
