package loader

import (
	"fmt"
	"sort"

	"graft/tracer"
)

const (
	pageSize = 4096
	// reach is how far apart any byte of the new image and any byte of
	// the old executable may be: a rel32 reaches ±2 GiB from the end of
	// its instruction; 16 MiB of margin covers instruction lengths and
	// leaves room for a later image next to this one.
	reach = 1<<31 - 16<<20
	// minAddr keeps clear of vm.mmap_min_addr and the null page region.
	minAddr = 1 << 20
	// maxAddr is the top of the 47-bit user address space.
	maxAddr = 0x7ffffffff000
	// heapRoom is kept free above the brk heap so malloc can still grow it.
	heapRoom = 256 << 20
	// guard is left unmapped between the image and its neighbours, so a
	// neighbour's overrun faults instead of running into the image.
	guard = pageSize
)

// Span is an address range [Start, End).
type Span struct{ Start, End uint64 }

// ImageSpan returns the range an executable's mappings cover: from its
// lowest mapping to the end of its highest, including the anonymous .bss
// mapping that follows the last file-backed one.
func ImageSpan(maps []tracer.Mapping, m *tracer.Module) Span {
	s := Span{Start: ^uint64(0)}
	for _, mp := range m.Mappings {
		s.Start = min(s.Start, mp.Start)
		s.End = max(s.End, mp.End)
	}
	// The kernel maps the .bss beyond the file as an anonymous mapping
	// directly after the last file mapping; it is part of the image.
	for _, mp := range maps {
		if mp.Start == s.End && mp.Path == "" {
			s.End = mp.End
		}
	}
	return s
}

// FindHole returns a page-aligned address where size bytes are free in
// maps and every byte of [addr, addr+size) is within ±2 GiB (less a
// margin) of every byte of old. It prefers the nearest free range after
// the executable (between it and the heap), then the nearest before it.
func FindHole(maps []tracer.Mapping, old Span, size uint64) (uint64, error) {
	size = (size + pageSize - 1) &^ (pageSize - 1)
	if size == 0 {
		return 0, fmt.Errorf("find hole: empty image")
	}
	if old.End <= old.Start {
		return 0, fmt.Errorf("find hole: empty executable range [0x%x, 0x%x)", old.Start, old.End)
	}
	busy := make([]Span, 0, len(maps)+2)
	for _, m := range maps {
		end := m.End
		if m.Path == "[heap]" {
			end += heapRoom
		}
		busy = append(busy, Span{m.Start &^ (pageSize - 1), end})
	}
	busy = append(busy, Span{0, minAddr}, Span{maxAddr, ^uint64(0)})
	sort.Slice(busy, func(i, j int) bool { return busy[i].Start < busy[j].Start })

	fits := func(a uint64) bool {
		lo, hi := min(a, old.Start), max(a+size, old.End)
		return hi-lo <= reach
	}
	best, bestDist, found := uint64(0), uint64(0), false
	consider := func(a, dist uint64) {
		if fits(a) && (!found || dist < bestDist) {
			best, bestDist, found = a, dist, true
		}
	}
	var end uint64 // highest end seen so far: mappings may overlap in the list
	for i := 0; i < len(busy); i++ {
		end = max(end, busy[i].End)
		if i+1 == len(busy) || end >= maxAddr {
			// Past the user address space (the vsyscall page follows
			// the maxAddr sentinel): gs below would wrap around to 0.
			break
		}
		gs := (end + guard + pageSize - 1) &^ (pageSize - 1)
		next := busy[i+1].Start
		if next < guard || gs > next-guard || next-guard-gs < size {
			continue
		}
		ge := (next - guard) &^ (pageSize - 1)
		if ge < gs+size {
			continue
		}
		switch {
		case gs >= old.End:
			consider(gs, gs-old.End)
		case ge <= old.Start:
			// +1: on a tie, after the executable wins (below it, a
			// later image for the same process still has room).
			consider(ge-size, old.Start-ge+1)
		default:
			// A gap inside the executable's range (between segments).
			consider(gs, 0)
		}
	}
	if !found {
		return 0, fmt.Errorf("find hole: no free range of 0x%x bytes within ±2 GiB of the executable at [0x%x, 0x%x)", size, old.Start, old.End)
	}
	return best, nil
}
