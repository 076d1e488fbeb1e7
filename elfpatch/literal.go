package elfpatch

import (
	"bytes"
	"debug/elf"
	"fmt"
	"sort"
)

// maxLiteral bounds the bytes of one anonymous object that are compared.
// An object that reaches it without a known end has an unknown extent.
const maxLiteral = 4096

// isGoBinary reports whether b was linked by the Go linker, whose string
// literals carry no NUL and are laid out back to back in go:string.*.
func (b *Binary) isGoBinary() bool {
	for _, s := range b.secs {
		if s.Name == ".go.buildinfo" || s.Name == ".gopclntab" {
			return true
		}
	}
	return false
}

// objectStarts are the addresses where anonymous read-only objects are
// known to begin: every address code refers to (a lea, a load, a jump
// table), every target of a relocated pointer (a string in a table of
// messages) and every symbol's start. Sorted, without duplicates.
func (n *normaliser) objectStarts() []uint64 {
	starts := append([]uint64(nil), n.anonSeen...)
	for _, off := range n.b.relocOffs {
		r := n.b.relocs[off]
		if r.typ == elf.R_X86_64_RELATIVE && r.addend > 0 {
			starts = append(starts, uint64(r.addend))
		}
	}
	for _, s := range n.b.syms {
		starts = append(starts, s.addr)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	out := starts[:0]
	for i, a := range starts {
		if i == 0 || a != starts[i-1] {
			out = append(out, a)
		}
	}
	return out
}

// cObject returns the bytes that stand for the anonymous read-only object
// code takes the address of in a C program, and false when its extent
// cannot be known.
//
// The object is compared from addr to whichever ends later: its
// terminating NUL, or the next address where another object is known to
// begin (objectStarts), less the zeros that pad it to that start. The NUL keeps a string whole when the linker
// merged another literal into its tail or code points into its middle
// (the tail's start is a referenced address but not the string's end);
// the next start covers data that holds NULs of its own (a compound
// literal, a string with an embedded NUL used with a length). An object
// that reaches neither within maxLiteral bytes, nor the end of its
// section, has no known end: the caller counts the function as changed.
func (n *normaliser) cObject(addr uint64, starts []uint64) ([]byte, bool) {
	sec := n.b.section(addr)
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil, false
	}
	d, err := n.b.sectionData(sec)
	if err != nil || addr-sec.Addr >= uint64(len(d)) {
		return nil, false
	}
	secEnd := sec.Addr + uint64(len(d))
	limit := min(secEnd, addr+maxLiteral)
	next := limit
	known := limit == secEnd
	if i := sort.Search(len(starts), func(i int) bool { return starts[i] > addr }); i < len(starts) && starts[i] < limit {
		next, known = starts[i], true
	}
	obj := d[addr-sec.Addr : next-sec.Addr]
	// Zeros at the end are alignment padding before the next object as
	// far as anyone can tell; their count changes with the layout.
	end := addr + uint64(len(bytes.TrimRight(obj, "\x00")))
	if z := bytes.IndexByte(d[addr-sec.Addr:limit-sec.Addr], 0); z >= 0 {
		end = max(end, addr+uint64(z)+1)
		known = true
	}
	return d[addr-sec.Addr : end-sec.Addr], known
}

// doubtWhy says why a pair of units whose code may be the same counts as
// changed, "" when it does not.
func doubtWhy(o, n *unit) string {
	switch {
	case n.doubt != 0:
		return fmt.Sprintf("NEW's code refers to read-only data at %#x whose end is unknown, so it was not compared", n.doubt)
	case o.doubt != 0:
		return fmt.Sprintf("OLD's code refers to read-only data at %#x whose end is unknown, so it was not compared", o.doubt)
	}
	return ""
}
