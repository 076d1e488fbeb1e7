// Package trampoline encodes the jumps graft writes over the entry of a
// replaced function, and checks that writing them is safe: the overwritten
// bytes end on an instruction boundary, no branch in the function targets
// them, and the function is long enough.
package trampoline
