package elfpatch

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
	"graft/internal/x86dec"
)

func openSSHD(t *testing.T) (old, new *Binary) {
	t.Helper()
	ob, err := Open(testutil.Build(t, "sshd-v5"))
	require.NoError(t, err)
	nb, err := Open(testutil.Build(t, "sshd-v6"))
	require.NoError(t, err)
	return ob, nb
}

// soleRules reads a state description declaring types on a global, as an
// operator writes it.
func soleRules(t *testing.T, global string, types ...string) map[string]*Rules {
	t.Helper()
	var b strings.Builder
	b.WriteString("globals:\n  - name: " + global + "\n    rules:\n      sole_home_of:\n")
	for _, ty := range types {
		b.WriteString("        - \"" + ty + "\"\n")
	}
	rules, err := ReadStateRules(strings.NewReader(b.String()))
	require.NoError(t, err)
	return rules
}

func refusedFor(r *Report, sym string) []string {
	var out []string
	for _, rs := range r.Reasons {
		if rs.Verdict == VerdictRefused && rs.Symbol == sym {
			out = append(out, rs.Message)
		}
	}
	return out
}

// sshd v5 -> v6 without the declaration: struct session stays refused and
// the state description carries a TODO on sessions saying exactly what to
// declare.
func TestSoleHomeSSHDTodo(t *testing.T) {
	old, new := openSSHD(t)
	r, err := Diff(old, new)
	require.NoError(t, err)
	assert.Equal(t, VerdictRefused, r.Verdict)
	ref := refusedFor(r, "struct session")
	require.Len(t, ref, 1, "%+v", r.Reasons)
	assert.Contains(t, ref[0], "heap objects")
	assert.Contains(t, ref[0], `sole_home_of: ["struct session"]`)
	x := findTransfer(r, "sessions")
	require.NotNil(t, x)
	assert.Empty(t, x.PointerUsers)
	require.Len(t, x.Todo, 1, "%q", x.Todo)
	assert.Contains(t, x.Todo[0], "struct session (held inside sessions) changed layout and is also reached through pointers")
	assert.Contains(t, x.Todo[0], "cmd_login")
	assert.Contains(t, x.Todo[0], "`sole_home_of: [\"struct session\"]`")

	var b bytes.Buffer
	require.NoError(t, NewStateDesc(r, nil).Write(&b))
	// (Asserted as booleans: the document is long.)
	assert.True(t, strings.Contains(b.String(), "declare it under rules: `sole_home_of: [\"struct session\"]`"), "the TODO in the YAML")
	assert.True(t, strings.Contains(b.String(), `#   sole_home_of: ["struct T"]`), "the header explains the rule")
}

// With the declaration: no refusal for struct session, the pointer users
// recorded (unchanged cmd_login among them), and the patch plans:
// housekeeping_thread's `lea nusers(%rip)` is the end of the moved
// sessions, so it stays in the image, while main's loads of nusers reach
// OLD's nusers. The pointer users survive the patch file.
func TestSoleHomeSSHDDeclared(t *testing.T) {
	old, new := openSSHD(t)
	rules := soleRules(t, "sessions", "struct session")
	r, err := DiffRules(old, new, rules)
	require.NoError(t, err)
	assert.Empty(t, refusedFor(r, "struct session"))
	assert.NotEqual(t, VerdictRefused, r.Verdict, "%+v", r.Reasons)
	found := false
	for _, rs := range r.Reasons {
		if rs.Symbol == "struct session" {
			found = true
			assert.Equal(t, VerdictAuto, rs.Verdict)
			assert.Contains(t, rs.Message, "the operator declared that every struct session lives in sessions")
			assert.Contains(t, rs.Message, "relocated when those frames are switched")
			assert.Contains(t, rs.Message, "cmd_login")
		}
	}
	assert.True(t, found, "%+v", r.Reasons)
	x := findTransfer(r, "sessions")
	require.NotNil(t, x)
	assert.Empty(t, x.Todo)
	assert.False(t, x.InPlace)
	for _, fn := range []string{"cmd_login", "cmd_stats", "reply", "session_thread", "housekeeping_thread", "main"} {
		assert.Contains(t, x.PointerUsers, fn)
	}

	p, err := BuildPatch(old, new, WithRules(rules))
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = p.WriteTo(&buf)
	require.NoError(t, err)
	back, err := ReadPatch(&buf)
	require.NoError(t, err)
	bx := findTransfer(back.Report, "sessions")
	require.NotNil(t, bx)
	assert.Equal(t, x.PointerUsers, bx.PointerUsers)
	assert.Equal(t, "nusers", x.NextAtEnd, "OLD's nusers starts where OLD's sessions ends")
	assert.Equal(t, x.NextAtEnd, bx.NextAtEnd)

	// The references to the address where sessions ends and nusers
	// starts in NEW: objdump shows `lea nusers(%rip),%r15` in
	// housekeeping_thread (the loop bound) and loads of nusers in main.
	nf, of := openELF(t, testutil.Build(t, "sshd-v6")), openELF(t, testutil.Build(t, "sshd-v5"))
	nses, nnu := symAt(t, nf, "sshd.c", "sessions"), symAt(t, nf, "sshd.c", "nusers")
	onu := symAt(t, of, "sshd.c", "nusers")
	require.Equal(t, nses.Value+nses.Size, nnu.Value, "the test needs nusers right after sessions")
	hk, mn := symAt(t, nf, "sshd.c", "housekeeping_thread"), symAt(t, nf, "", "main")
	refs := refsTo(t, nf, nnu.Value)
	var lea, load int
	for _, rf := range refs {
		fix := fieldFixup(p.Image, rf.field)
		switch {
		case rf.lea && rf.pc >= hk.Value && rf.pc < hk.Value+hk.Size:
			lea++
			assert.Nil(t, fix, "the loop bound at new %#x is the end of the moved sessions: it stays in the image", rf.pc)
		case !rf.lea && rf.pc >= mn.Value && rf.pc < mn.Value+mn.Size:
			load++
			if assert.NotNil(t, fix, "load of nusers at new %#x", rf.pc) {
				assert.Equal(t, onu.Value, fix.Target, "load of nusers at new %#x reaches OLD's nusers", rf.pc)
			}
		}
	}
	assert.Equal(t, 1, lea, "lea nusers in housekeeping_thread: %+v", refs)
	assert.NotZero(t, load, "loads of nusers in main: %+v", refs)
}

type codeRefAt struct {
	pc, field uint64
	lea       bool
}

// refsTo lists NEW's RIP-relative references to addr, decoding .text.
func refsTo(t *testing.T, f *elf.File, addr uint64) []codeRefAt {
	t.Helper()
	sec := f.Section(".text")
	require.NotNil(t, sec)
	code, err := sec.Data()
	require.NoError(t, err)
	// Decode function by function, from each symbol (padding between
	// them need not decode).
	syms, err := f.Symbols()
	require.NoError(t, err)
	var out []codeRefAt
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value < sec.Addr || s.Value+s.Size > sec.Addr+sec.Size {
			continue
		}
		for off := s.Value - sec.Addr; off < s.Value+s.Size-sec.Addr; {
			in, err := decodeAt(code[off:], sec.Addr+off)
			if err != nil {
				break
			}
			if in.RelSize == 4 && in.Target == addr {
				out = append(out, codeRefAt{pc: sec.Addr + off, field: sec.Addr + off + uint64(in.RelOff), lea: in.Op.String() == "LEA"})
			}
			off += uint64(in.Len)
		}
	}
	return out
}

func fieldFixup(im *Image, off uint64) *Fixup {
	for i := range im.Fixups {
		if im.Fixups[i].Off == off {
			return &im.Fixups[i]
		}
	}
	return nil
}

// A declaration naming a type that is not the global's nor held inside it
// is an error, as is one on a global that does not change.
func TestSoleHomeDeclarationChecked(t *testing.T) {
	old, new := openSSHD(t)
	_, err := DiffRules(old, new, soleRules(t, "sessions", "struct user"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `sole_home_of "struct user": that is neither the type of sessions`)
	assert.Contains(t, err.Error(), "struct session")
	_, err = DiffRules(old, new, soleRules(t, "stats", "struct session"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stats does not change layout")
}

// buildBinary compiles one C file with -g -O2 and opens it.
func buildBinary(t *testing.T, src string) *Binary {
	t.Helper()
	dir := t.TempDir()
	c := filepath.Join(dir, "main.c")
	require.NoError(t, os.WriteFile(c, []byte(src), 0o644))
	out := filepath.Join(dir, "a.out")
	if b, err := exec.Command("gcc", "-g", "-O2", "-o", out, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	b, err := Open(out)
	require.NoError(t, err)
	return b
}

// A program that keeps a struct rec by value in a local: the declaration
// that every struct rec lives in recs is refused, naming the function.
func TestSoleHomeStackLocalRefused(t *testing.T) {
	src := `#include <stdio.h>
#include <string.h>
struct rec { int id; long seen; EXTRA };
static struct rec recs[8];
__attribute__((noinline)) static void touch(struct rec *r) { r->seen++; }
__attribute__((noinline)) static long snapshot(int i)
{
	struct rec copy;
	memcpy(&copy, &recs[i], sizeof copy);
	__asm__ volatile("" : : "r"(&copy) : "memory");
	return copy.seen;
}
int main(int argc, char **argv)
{
	for (int i = 0; i < 8; i++) { recs[i].id = i; touch(&recs[i]); }
	printf("%ld\n", snapshot(argc));
	return 0;
}
`
	old := buildBinary(t, strings.Replace(src, "EXTRA", "", 1))
	new := buildBinary(t, strings.Replace(src, "EXTRA", "long added;", 1))
	r, err := Diff(old, new)
	require.NoError(t, err)
	x := findTransfer(r, "recs")
	require.NotNil(t, x)
	require.NotEmpty(t, x.Todo)
	assert.Contains(t, x.Todo[len(x.Todo)-1], `sole_home_of: ["struct rec"]`)

	r, err = DiffRules(old, new, soleRules(t, "recs", "struct rec"))
	require.NoError(t, err)
	assert.Equal(t, VerdictRefused, r.Verdict)
	ref := refusedFor(r, "struct rec")
	require.NotEmpty(t, ref, "%+v", r.Reasons)
	joined := strings.Join(ref, "\n")
	assert.Contains(t, joined, "declared to live only in recs")
	assert.Contains(t, joined, "snapshot (copy)")
	assert.NotContains(t, joined, "touch", "touch only has a pointer")
	x = findTransfer(r, "recs")
	require.NotNil(t, x)
	assert.Contains(t, x.PointerUsers, "touch")
}

func decodeAt(code []byte, pc uint64) (x86dec.Inst, error) { return x86dec.Decode(code, pc) }

// An array that grows and moves, whose element type keeps its layout:
// objects of that type elsewhere are fine, so nothing is declared, but a
// function that may hold a pointer into the old array counts in apply's
// safety check all the same.
func TestSoleHomeSameLayoutMovedPointerUsers(t *testing.T) {
	src := `#include <stdio.h>
struct rec { int id; long seen; };
struct rec recs[N];
int after;
__attribute__((noinline)) static void touch(struct rec *r) { r->seen++; }
int main(int argc, char **argv)
{
	for (int i = 0; i < N; i++)
		touch(&recs[i]);
	after = argc;
	printf("%d\n", after);
	return 0;
}
`
	old := buildOrdered(t, strings.Replace(src, "N", "8", -1))
	new := buildOrdered(t, strings.Replace(src, "N", "16", -1))
	r, err := Diff(old, new)
	require.NoError(t, err)
	x := findTransfer(r, "recs")
	require.NotNil(t, x)
	require.False(t, x.InPlace, "recs must move (after follows it) for the test to mean anything")
	assert.Empty(t, x.Todo)
	assert.Contains(t, x.PointerUsers, "touch")
	assert.Empty(t, refusedFor(r, "struct rec"))
	assert.NotEqual(t, VerdictRefused, r.Verdict, "%+v", r.Reasons)
}
