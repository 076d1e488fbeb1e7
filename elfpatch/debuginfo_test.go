package elfpatch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// stripped copies path and removes its debug info the way production
// builds do (strip -g: DWARF and the STT_FILE symbols go, the rest of
// .symtab stays).
func stripped(t *testing.T, path string) *Binary {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(path)+"-stripped")
	if b, err := exec.Command("cp", path, out).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, b)
	}
	if b, err := exec.Command("strip", "-g", out).CombinedOutput(); err != nil {
		t.Fatalf("strip -g: %v\n%s", err, b)
	}
	b, err := Open(out)
	require.NoError(t, err)
	require.Nil(t, b.f.Section(".debug_info"), "strip -g left DWARF")
	require.False(t, b.hasFileSymbols(), "strip -g left STT_FILE symbols: the test no longer covers their loss")
	return b
}

func changeSet(r *Report) string {
	var out []string
	for _, f := range r.Changed {
		out = append(out, "changed "+f.Name)
	}
	for _, f := range r.Added {
		out = append(out, "added "+f.Name)
	}
	for _, f := range r.Removed {
		out = append(out, "removed "+f.Name)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestDebugInfoMismatch diffs every documented C pair of testprocs three
// more times, NEW stripped, OLD stripped and both: the functions changed,
// added and removed are those of the matched pair, a warning says types
// were not compared, and a patch can still be built whenever the matched
// pair's can.
func TestDebugInfoMismatch(t *testing.T) {
	for _, prog := range []string{"sshd", "ftpd", "handshake", "blockread"} {
		pairs := readVersions(t, filepath.Join(testutil.TestprocsDir(), prog, "VERSIONS.md"))
		require.NotEmpty(t, pairs, prog)
		for _, p := range pairs {
			t.Run(fmt.Sprintf("%s-v%d-v%d", prog, p.old, p.new), func(t *testing.T) {
				oldPath := testutil.Build(t, fmt.Sprintf("%s-v%d", prog, p.old))
				newPath := testutil.Build(t, fmt.Sprintf("%s-v%d", prog, p.new))
				old, err := Open(oldPath)
				require.NoError(t, err)
				new, err := Open(newPath)
				require.NoError(t, err)
				want, err := Diff(old, new)
				require.NoError(t, err)
				require.Empty(t, want.Warnings)
				_, wantPlanErr := BuildPatch(old, new, AllowRefused())

				sides := map[string][2]func() *Binary{
					"new-stripped": {func() *Binary { b, _ := Open(oldPath); return b }, func() *Binary { return stripped(t, newPath) }},
					"old-stripped": {func() *Binary { return stripped(t, oldPath) }, func() *Binary { b, _ := Open(newPath); return b }},
					"both":         {func() *Binary { return stripped(t, oldPath) }, func() *Binary { return stripped(t, newPath) }},
				}
				for name, mk := range sides {
					o, n := mk[0](), mk[1]()
					r, err := Diff(o, n)
					require.NoError(t, err, name)
					assert.Equal(t, changeSet(want), changeSet(r), "%s: change set differs from the matched pair's", name)
					require.NotEmpty(t, r.Warnings, name)
					assert.Contains(t, r.Warnings[0], "types, signatures and globals' types were not compared", name)
					_, err = BuildPatch(o, n, AllowRefused())
					if want.Verdict == VerdictAuto && wantPlanErr == nil {
						assert.NoError(t, err, "%s: the matched pair's patch builds, this one does not", name)
					} else {
						// What the diff refused for a type it can no
						// longer see, the planner must still refuse.
						assert.True(t, r.Verdict != VerdictAuto || err != nil, "%s: the matched pair is %s (plan: %v), this one is auto and plans", name, want.Verdict, wantPlanErr)
					}
				}
			})
		}
	}
}

// TestDebugInfoMismatchFixtures: the same on the fixtures whose symbols
// depend most on what strip -g removes: statics of one name in two files,
// renumbered function-local statics, clones and .cold parts, moved code.
func TestDebugInfoMismatchFixtures(t *testing.T) {
	for _, name := range []string{"static", "fnstatic", "clone", "moved", "tailmerge", "addrm"} {
		t.Run(name, func(t *testing.T) {
			oldPath, newPath := fixture(t, name, "v1"), fixture(t, name, "v2")
			old, err := Open(oldPath)
			require.NoError(t, err)
			new, err := Open(newPath)
			require.NoError(t, err)
			want, err := Diff(old, new)
			require.NoError(t, err)
			o, err := Open(oldPath)
			require.NoError(t, err)
			r, err := Diff(o, stripped(t, newPath))
			require.NoError(t, err)
			assert.Equal(t, changeSet(want), changeSet(r), "change set differs from the matched pair's")
			require.NotEmpty(t, r.Warnings)
		})
	}
}

// pc32Targets are the OLD addresses a patch's code fixups reach, by the
// NEW field they are in.
func pc32Targets(p *Patch) map[uint64]uint64 {
	out := map[uint64]uint64{}
	for _, f := range p.Image.Fixups {
		if f.Kind == FixupPC32 {
			out[f.Off] = f.Target
		}
	}
	return out
}

// TestStrippedStaticsOfOneName: two files each define a static count and
// NEW is stripped, so nothing in it says which count is b.c's. The patch
// must still point b_hit's new code at OLD's b.c:count, exactly as the
// patch from the unstripped NEW does; were it left unmatched, the new code
// would count in a copy of its own while the old count stayed behind. When
// the builds hold different numbers of such statics, the diff refuses.
func TestStrippedStaticsOfOneName(t *testing.T) {
	oldPath, newPath := fixture(t, "staticdata", "v1"), fixture(t, "staticdata", "v2")
	open := func(p string) *Binary {
		b, err := Open(p)
		require.NoError(t, err)
		return b
	}
	want, err := BuildPatch(open(oldPath), open(newPath))
	require.NoError(t, err)
	got, err := BuildPatch(open(oldPath), stripped(t, newPath))
	require.NoError(t, err)
	require.Equal(t, changeSet(want.Report), changeSet(got.Report))
	wt, gt := pc32Targets(want), pc32Targets(got)
	require.NotEmpty(t, wt)
	require.Equal(t, wt, gt, "stripped NEW's code reaches other OLD objects than the unstripped one's")

	r, err := Diff(open(fixture(t, "staticdata3", "v1")), stripped(t, fixture(t, "staticdata3", "v2")))
	require.NoError(t, err)
	require.Equal(t, VerdictRefused, r.Verdict)
	found := false
	for _, rs := range r.Reasons {
		if rs.Verdict == VerdictRefused && strings.Contains(rs.Message, "several files define a static count") {
			found = true
		}
	}
	require.True(t, found, "%+v", r.Reasons)
}

// TestSeparateDebugFile: a NEW stripped of its DWARF whose debug file is
// installed by build-id (as Debian's -dbgsym packages do) is diffed with
// that DWARF: the heap type change of the debug pair is found, without
// the warning; with no debug file installed it is not, and the warning
// says so.
func TestSeparateDebugFile(t *testing.T) {
	oldPath, newPath := fixture(t, "heaptype", "v1"), fixture(t, "heaptype", "v2")
	open := func(p string) *Binary {
		b, err := Open(p)
		require.NoError(t, err)
		return b
	}
	root := t.TempDir()
	saved := debugRoots
	debugRoots = []string{root}
	t.Cleanup(func() { debugRoots = saved })

	r, err := Diff(open(oldPath), stripped(t, newPath))
	require.NoError(t, err)
	require.Nil(t, findType(r.Types, "struct session"), "no debug file: the layout change is not seen")
	require.NotEmpty(t, r.Warnings)

	id := open(newPath).BuildID()
	require.NotEmpty(t, id)
	dbg := filepath.Join(root, ".build-id", id[:2], id[2:]+".debug")
	require.NoError(t, os.MkdirAll(filepath.Dir(dbg), 0o755))
	out, err := exec.Command("objcopy", "--only-keep-debug", newPath, dbg).CombinedOutput()
	require.NoError(t, err, "%s", out)

	r, err = Diff(open(oldPath), stripped(t, newPath))
	require.NoError(t, err)
	require.Empty(t, r.Warnings)
	tc := findType(r.Types, "struct session")
	require.NotNil(t, tc, "with the debug file the layout change is seen")
	require.Equal(t, TypeChanged, tc.Class)
	require.Equal(t, "heap", tc.Storage)
	require.Equal(t, VerdictRefused, r.Verdict)
}
