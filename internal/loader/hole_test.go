package loader

import (
	"math/rand"
	"strings"
	"testing"

	"graft/tracer"
)

func exeMaps(base uint64) []tracer.Mapping {
	return []tracer.Mapping{
		{Start: base, End: base + 0x1000, Perms: "r--p", Path: "/usr/bin/tick"},
		{Start: base + 0x1000, End: base + 0x2000, Perms: "r-xp", Path: "/usr/bin/tick"},
		{Start: base + 0x2000, End: base + 0x3000, Perms: "r--p", Path: "/usr/bin/tick"},
		{Start: base + 0x3000, End: base + 0x5000, Perms: "rw-p", Path: "/usr/bin/tick"},
		{Start: base + 0x5000, End: base + 0x6000, Perms: "rw-p"}, // .bss beyond the file
	}
}

func libs() []tracer.Mapping {
	return []tracer.Mapping{
		{Start: 0x7f0000000000, End: 0x7f0000200000, Perms: "r-xp", Path: "/lib/libc.so.6"},
		{Start: 0x7ffff7fc0000, End: 0x7ffff7fc2000, Perms: "r-xp", Path: "[vdso]"},
		{Start: 0x7ffffffde000, End: 0x7ffffffff000, Perms: "rw-p", Path: "[stack]"},
	}
}

func span(maps []tracer.Mapping) Span {
	m := &tracer.Module{Mappings: maps[:4]}
	return ImageSpan(maps, m)
}

func checkHole(t *testing.T, maps []tracer.Mapping, old Span, addr, size uint64) {
	t.Helper()
	if addr%pageSize != 0 {
		t.Fatalf("hole 0x%x not page-aligned", addr)
	}
	for _, m := range maps {
		if addr < m.End && m.Start < addr+size {
			t.Fatalf("hole [0x%x,0x%x) overlaps %+v", addr, addr+size, m)
		}
	}
	lo, hi := min(addr, old.Start), max(addr+size, old.End)
	if hi-lo > 1<<31 {
		t.Fatalf("hole [0x%x,0x%x) and executable [0x%x,0x%x) span 0x%x > 2 GiB", addr, addr+size, old.Start, old.End, hi-lo)
	}
}

func TestImageSpanIncludesBss(t *testing.T) {
	maps := exeMaps(0x555555554000)
	if s := span(maps); s.Start != 0x555555554000 || s.End != 0x55555555a000 {
		t.Fatalf("span %#x-%#x", s.Start, s.End)
	}
}

func TestFindHoleAfterExecutable(t *testing.T) {
	const base = 0x555555554000
	maps := append(exeMaps(base), tracer.Mapping{Start: base + 0x2000000, End: base + 0x2021000, Perms: "rw-p", Path: "[heap]"})
	maps = append(maps, libs()...)
	old := span(maps)
	addr, err := FindHole(maps, old, 0x5000)
	if err != nil {
		t.Fatal(err)
	}
	checkHole(t, maps, old, addr, 0x5000)
	if addr != old.End+guard {
		t.Errorf("hole at 0x%x, want right after the executable at 0x%x", addr, old.End+guard)
	}
}

func TestFindHoleBeforeExecutableWhenHeapAdjacent(t *testing.T) {
	const base = 0x555555554000
	maps := exeMaps(base)
	maps = append(maps, tracer.Mapping{Start: base + 0x7000, End: base + 0x28000, Perms: "rw-p", Path: "[heap]"})
	maps = append(maps, libs()...)
	old := span(maps)
	addr, err := FindHole(maps, old, 0x5000)
	if err != nil {
		t.Fatal(err)
	}
	checkHole(t, maps, old, addr, 0x5000)
	if addr+0x5000+guard != base {
		t.Errorf("hole at 0x%x, want just below the executable (end at 0x%x)", addr, uint64(base-guard))
	}
}

func TestFindHoleNone(t *testing.T) {
	const base = 0x555555554000
	maps := exeMaps(base)
	// Fill everything within 2 GiB on both sides.
	maps = append(maps,
		tracer.Mapping{Start: base - 0x90000000, End: base - 0x1000, Perms: "rw-p"},
		tracer.Mapping{Start: base + 0x6000, End: base + 0x90000000, Perms: "rw-p"})
	maps = append(maps, libs()...)
	_, err := FindHole(maps, span(maps), 0x5000)
	if err == nil || !strings.Contains(err.Error(), "no free range") {
		t.Fatalf("want no-hole error, got %v", err)
	}
}

// Random layouts: whatever FindHole returns is free and within reach.
func TestFindHoleRandom(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	placed := 0
	for i := 0; i < 500; i++ {
		base := uint64(0x550000000000 + r.Int63n(0x10000000)*pageSize)
		maps := exeMaps(base)
		for j := 0; j < 30; j++ {
			s := base - 0x100000000 + uint64(r.Int63n(0x200000000/pageSize))*pageSize
			maps = append(maps, tracer.Mapping{Start: s, End: s + uint64(1+r.Intn(0x20000))*pageSize, Perms: "rw-p"})
		}
		// The executable's own mappings must stay where they are.
		clean := maps[:5]
		for _, m := range maps[5:] {
			if m.End <= base || m.Start >= base+0x6000 {
				clean = append(clean, m)
			}
		}
		old := span(clean)
		size := uint64(1+r.Intn(64)) * pageSize
		addr, err := FindHole(clean, old, size)
		if err != nil {
			continue // legitimately full
		}
		checkHole(t, clean, old, addr, size)
		placed++
	}
	if placed < 400 {
		t.Fatalf("only %d of 500 random layouts got a hole", placed)
	}
}

// TestFindHoleLowExecutableWithVsyscall: a non-PIE executable at 0x400000
// (the default Go build) in a process with the vsyscall page mapped. The
// gap after the maxAddr sentinel once wrapped around to 0x1000, which
// "fits" a low executable: the reservation then failed with EEXIST.
func TestFindHoleLowExecutableWithVsyscall(t *testing.T) {
	maps := append(exeMaps(0x400000), libs()...)
	maps = append(maps, tracer.Mapping{Start: 0x1e58c000, End: 0x1e5ad000, Perms: "rw-p", Path: "[heap]"},
		tracer.Mapping{Start: 0xffffffffff600000, End: 0xffffffffff601000, Perms: "--xp", Path: "[vsyscall]"})
	old := span(maps)
	addr, err := FindHole(maps, old, 0x2666000)
	if err != nil {
		t.Fatal(err)
	}
	if addr < old.End {
		t.Fatalf("hole at %#x, want after the executable (ends %#x)", addr, old.End)
	}
	checkHole(t, maps, old, addr, 0x2666000)
}
