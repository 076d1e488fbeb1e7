package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDiffFile: the hunks of a source diff become OLD's deleted and NEW's
// added line numbers (a pure insertion deletes nothing, a pure deletion
// adds nothing).
func TestDiffFile(t *testing.T) {
	dir := t.TempDir()
	old := "a\nb\nc\nd\ne\n"
	new := "a\nB\nc\nd\nx\ny\ne\n"
	op, np := filepath.Join(dir, "old.c"), filepath.Join(dir, "new.c")
	if err := os.WriteFile(op, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(np, []byte(new), 0o644); err != nil {
		t.Fatal(err)
	}
	del, add := lines{}, lines{}
	n, err := diffFile(op, np, "f.c", del, add)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d hunks, want 2", n)
	}
	want := func(l lines, exp ...int) {
		t.Helper()
		if len(l["f.c"]) != len(exp) {
			t.Errorf("lines %v, want %v", l["f.c"], exp)
		}
		for _, e := range exp {
			if !l["f.c"][e] {
				t.Errorf("line %d missing from %v", e, l["f.c"])
			}
		}
	}
	want(del, 2)
	want(add, 2, 5, 6)
}

func TestFnKey(t *testing.T) {
	for _, c := range []struct {
		name, file string
		local      bool
		want       string
	}{
		{"main", "", false, "main"},
		{"helper", "a.c", true, "a.c:helper"},
		{"scale.constprop.0", "a.c", true, "a.c:scale.constprop"},
		{"check.cold", "", false, "check"},
		{"check.part.0.cold", "b.c", true, "b.c:check.part"},
	} {
		if got := fnKey(c.name, c.file, c.local); got != c.want {
			t.Errorf("fnKey(%q, %q, %v) = %q, want %q", c.name, c.file, c.local, got, c.want)
		}
	}
}

// TestSameCode: the independent check that a touched function compiled to
// the same code says so only when it did: a moved function with the same
// code is the same, a changed immediate or a changed string literal is not.
func TestSameCode(t *testing.T) {
	dir := t.TempDir()
	build := func(name, src string) string {
		t.Helper()
		c := filepath.Join(dir, name+".c")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, name)
		if out, err := exec.Command("gcc", "-O2", "-g", "-o", bin, c).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
		return bin
	}
	const common = `#include <stdio.h>
__attribute__((noinline)) int scale(int x) { return x * %d; }
__attribute__((noinline)) void greet(void) { puts("%s"); }
int main(int argc, char **argv) { %s greet(); return scale(argc); }
`
	v1 := build("v1", fmt.Sprintf(common, 3, "hello", ""))
	// main grows, so greet and scale move; their code stays.
	v2 := build("v2", fmt.Sprintf(common, 3, "hello", `puts("more"); puts("code");`))
	v3 := build("v3", fmt.Sprintf(common, 4, "hullo", ""))
	if !sameCode(v1, v2, "greet") || !sameCode(v1, v2, "scale") {
		t.Error("functions that only moved are not the same code")
	}
	if sameCode(v1, v2, "main") {
		t.Error("main grew but is the same code")
	}
	if sameCode(v1, v3, "scale") {
		t.Error("a changed immediate is the same code")
	}
	if sameCode(v1, v3, "greet") {
		t.Error("a changed string literal is the same code")
	}
	if sameCode(v1, v2, "no_such_function") {
		t.Error("a function missing on both sides is the same code")
	}
}
