package main

import (
	"os"
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
