package graft

import (
	"testing"

	"graft/tracer"
)

// Patches stack per module: the newest patch of a library is not the top of
// the executable's stack, and a record from before modules were recorded
// belongs to the executable.
func TestTopForAndPatchedModule(t *testing.T) {
	mods := []tracer.Module{
		{Path: "/srv/app", Main: true, BuildID: "exe1"},
		{Path: "/usr/lib/libkv.so.1 (deleted)", BuildID: "lib1"},
	}
	exe, lib := &mods[0], &mods[1]
	st := &State{Patches: []PatchRecord{
		{ID: "old-exe", OldBuildID: "exe1", NewBuildID: "exe2"},               // no Module: the executable
		{ID: "lib-a", OldBuildID: "lib1", NewBuildID: "lib2", Module: "lib1"}, // the library
		{ID: "lib-b", OldBuildID: "lib2", NewBuildID: "lib3", Module: "lib1"}, // stacked on lib-a
		{ID: "exe-b", OldBuildID: "exe2", NewBuildID: "exe3", Module: "exe1"}, // stacked on old-exe
	}}
	if got := st.TopFor(lib); got == nil || got.ID != "lib-b" {
		t.Fatalf("TopFor(lib) = %v, want lib-b", got)
	}
	if got := st.TopFor(exe); got == nil || got.ID != "exe-b" {
		t.Fatalf("TopFor(exe) = %v, want exe-b", got)
	}
	if got := (&State{}).TopFor(lib); got != nil {
		t.Fatalf("TopFor on an empty record = %v", got)
	}
	for _, c := range []struct{ old, want string }{
		{"lib1", "/usr/lib/libkv.so.1 (deleted)"}, // the mapped build
		{"lib3", "/usr/lib/libkv.so.1 (deleted)"}, // on top of lib-b
		{"exe3", "/srv/app"},                      // on top of exe-b
		{"exe1", "/srv/app"},
		{"nothing", "/srv/app"}, // unknown: the executable, whose check then names the mismatch
	} {
		if got := patchedModule(mods, st, c.old); got == nil || got.Path != c.want {
			t.Errorf("patchedModule(%s) = %v, want %s", c.old, got, c.want)
		}
	}
}
