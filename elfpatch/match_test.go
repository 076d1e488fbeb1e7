package elfpatch

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCloneKey(t *testing.T) {
	for in, want := range map[string]string{
		"foo":                    "foo",
		"foo.constprop.0":        "foo.constprop",
		"foo.constprop.12":       "foo.constprop",
		"foo.isra.3":             "foo.isra",
		"foo.part.0":             "foo.part",
		"foo.cold":               "foo.cold",
		"foo.part.0.cold":        "foo.part.cold",
		"counter.1":              "counter",
		"main.handleKV":          "main.handleKV",
		"main.main.Printf.func1": "main.main.Printf.func1",
		"foo.constprop.0.isra.1": "foo.constprop.isra",
	} {
		assert.Equal(t, want, cloneKey(in), in)
	}
	assert.Equal(t, "foo", cloneOrigin("foo.constprop.3"))
	assert.Equal(t, "foo", cloneOrigin("foo.cold"))
	assert.Equal(t, "", cloneOrigin("foo"))
	assert.True(t, isColdPart("foo.part.0.cold"))
	assert.False(t, isColdPart("foo.part.0"))
}

// TestPairUpClones: clones renumbered between builds pair with the clone
// that has the same code first, then in order; leftovers are added or
// removed; a function that became static pairs by plain name.
func TestPairUpClones(t *testing.T) {
	type item struct{ name, file, code string }
	key := func(i item) string { return i.file + ":" + cloneKey(i.name) }
	name := func(i item) string { return cloneKey(i.name) }
	same := func(a, b item) bool { return a.code == b.code }
	old := []item{
		{"f.constprop.0", "a.c", "A"}, {"f.constprop.1", "a.c", "B"},
		{"g", "", "G"}, {"gone", "", "X"},
	}
	new := []item{
		{"f.constprop.3", "a.c", "B"}, {"f.constprop.2", "a.c", "A2"},
		{"g", "b.c", "G"}, {"fresh", "", "Y"},
	}
	pairs, removed, added := pairUp(old, new, key, name, same)
	got := map[string]string{}
	for _, p := range pairs {
		got[p[0].name] = p[1].name
	}
	assert.Equal(t, map[string]string{
		"f.constprop.1": "f.constprop.3", // same code
		"f.constprop.0": "f.constprop.2", // the one left
		"g":             "g",             // global became static in b.c
	}, got)
	assert.Equal(t, []item{{"gone", "", "X"}}, removed)
	assert.Equal(t, []item{{"fresh", "", "Y"}}, added)
}
