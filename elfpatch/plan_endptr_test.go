package elfpatch

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// buildOrdered compiles src with -g -O2 -fno-toplevel-reorder (globals laid
// out in the order written, so one starts exactly where the other ends).
func buildOrdered(t *testing.T, src string) *Binary {
	t.Helper()
	dir := t.TempDir()
	c := filepath.Join(dir, "main.c")
	require.NoError(t, os.WriteFile(c, []byte(src), 0o644))
	out := filepath.Join(dir, "a.out")
	if b, err := exec.Command("gcc", "-g", "-O2", "-fno-toplevel-reorder", "-o", out, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	b, err := Open(out)
	require.NoError(t, err)
	return b
}

// endPtrSrc: a loop over FIRST bounded by its end pointer, which the
// inline asm takes as `lea FIRST+size(%rip)` (gcc's own form for sshd's
// sessions+64), next to SECOND, which starts exactly there. TAIL is
// what the function does after the loop.
const endPtrSrc = `#include <stdio.h>
struct item { int v; EXTRA };
DECLS
__attribute__((noinline)) int work(void)
{
	const void *end;
	int s = 0;
	__asm__("lea FIRST+%c1(%%rip), %0" : "=r"(end) : "i"(sizeof FIRST));
	for (const char *p = (const char *)FIRST; p != end; p += sizeof FIRST[0])
		s += *(const int *)p;
	TAIL
	return s;
}
int main(int argc, char **argv) { MAIN; printf("%d\n", work()); return 0; }
`

func endPtrPair(t *testing.T, decls, first, tail, main string) (old, new *Binary) {
	t.Helper()
	return endPtrPairNew(t, decls, "", first, tail, main)
}

// endPtrPairNew is endPtrPair with declarations only NEW has (after the
// others).
func endPtrPairNew(t *testing.T, decls, newDecls, first, tail, main string) (old, new *Binary) {
	t.Helper()
	src := strings.NewReplacer("FIRST", first, "TAIL", tail, "MAIN", main).Replace(endPtrSrc)
	old = buildOrdered(t, strings.NewReplacer("EXTRA", "", "DECLS", decls).Replace(src))
	new = buildOrdered(t, strings.NewReplacer("EXTRA", "int added;", "DECLS", decls+"\n"+newDecls).Replace(src))
	return old, new
}

// refAt finds, in NEW's function fn, the RIP-relative reference to addr
// made by a lea (lea true) or by another instruction.
func refAt(t *testing.T, b *Binary, fn string, addr uint64, lea bool) uint64 {
	t.Helper()
	for _, r := range refsTo(t, b.ELF(), addr) {
		f := symAt(t, b.ELF(), "", fn)
		if r.lea == lea && r.pc >= f.Value && r.pc < f.Value+f.Size {
			return r.field
		}
	}
	t.Fatalf("no %v reference to %#x in %s", lea, addr, fn)
	return 0
}

// The array grows and moves into the image; the next global starts right
// where it ends in NEW. The loop bound (lea, only compared) is the end of
// the moved array: it stays in the image. The load of the next global is
// the next global: OLD's copy.
func TestPlanEndPointerOfMovedArray(t *testing.T) {
	old, new := endPtrPair(t, "struct item items[16];\nint next_obj;", "items", "s += next_obj;", "items[1].v = argc; next_obj = 5")
	p, err := BuildPatch(old, new, WithRules(soleRules(t, "items", "struct item")))
	require.NoError(t, err)
	x := findTransfer(p.Report, "items")
	require.NotNil(t, x)
	require.False(t, x.InPlace, "items must move for the test to mean anything")
	ni, nn := symAt(t, new.ELF(), "", "items"), symAt(t, new.ELF(), "", "next_obj")
	require.Equal(t, ni.Value+ni.Size, nn.Value, "next_obj must start where items ends in NEW")
	on := symAt(t, old.ELF(), "", "next_obj")

	lea := refAt(t, new, "work", nn.Value, true)
	assert.Nil(t, fieldFixup(p.Image, lea), "the end pointer of the moved items stays in the image")
	load := refAt(t, new, "work", nn.Value, false)
	if f := fieldFixup(p.Image, load); assert.NotNil(t, f, "the load of next_obj") {
		assert.Equal(t, on.Value, f.Target, "the load of next_obj reaches OLD's next_obj")
		assert.Equal(t, FixupPC32, f.Kind)
	}
}

// The symmetric danger: the array does not move but the global after it
// does. The loop bound is the end of OLD's array (a fixup there), the
// access is the moved global's start (in the image).
func TestPlanEndPointerBeforeMovedGlobal(t *testing.T) {
	old, new := endPtrPair(t, "int plain[16];\nstruct item grown[4];", "plain", "s += grown[0].v;", "plain[1] = argc; grown[0].v = 3")
	p, err := BuildPatch(old, new, WithRules(soleRules(t, "grown", "struct item")))
	require.NoError(t, err)
	x := findTransfer(p.Report, "grown")
	require.NotNil(t, x)
	require.False(t, x.InPlace, "grown must move for the test to mean anything")
	np, ng := symAt(t, new.ELF(), "", "plain"), symAt(t, new.ELF(), "", "grown")
	require.Equal(t, np.Value+np.Size, ng.Value, "grown must start where plain ends in NEW")
	op := symAt(t, old.ELF(), "", "plain")

	lea := refAt(t, new, "work", ng.Value, true)
	if f := fieldFixup(p.Image, lea); assert.NotNil(t, f, "the end pointer of plain") {
		assert.Equal(t, op.Value+op.Size, f.Target, "the loop bound is the end of OLD's plain")
	}
	load := refAt(t, new, "work", ng.Value, false)
	assert.Nil(t, fieldFixup(p.Image, load), "the load of the moved grown stays in the image")
}

// An end pointer used otherwise than compared (here dereferenced after
// the loop) is refused, naming both objects.
func TestPlanEndPointerAmbiguousRefused(t *testing.T) {
	old, new := endPtrPair(t, "struct item items[16];\nint next_obj;", "items", "s += ((const int *)end)[-1];", "items[1].v = argc; next_obj = 5")
	_, err := BuildPatch(old, new, WithRules(soleRules(t, "items", "struct item")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ambiguous: end of moved items or start of next_obj")
	assert.Contains(t, err.Error(), "not only compared")
}

// A pointer in NEW's data holding that address has no instruction to tell
// its use by: refused.
func TestPlanEndPointerInDataRefused(t *testing.T) {
	old, new := endPtrPairNew(t, "struct item items[16];\nint next_obj;", "const void *items_end = items + 16;\n#define ITEMS_END items_end",
		"items", "\n#ifndef ITEMS_END\n#define ITEMS_END end\n#endif\n\ts += (ITEMS_END == end);", "items[1].v = argc; next_obj = 5")
	ni, nn := symAt(t, new.ELF(), "", "items"), symAt(t, new.ELF(), "", "next_obj")
	require.Equal(t, ni.Value+ni.Size, nn.Value, "next_obj must start where items ends in NEW")
	_, err := BuildPatch(old, new, WithRules(soleRules(t, "items", "struct item")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ambiguous: end of moved items or start of next_obj")
	assert.Contains(t, err.Error(), "a pointer in the new build's data holds that address")
}
