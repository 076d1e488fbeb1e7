// Package elfpatch is graft's offline half: it reads two builds of a program
// (ELF symbols, code, DWARF), decides what changed between them and whether
// the change can be applied live, and writes the result as a self-contained
// patch file. Nothing here sees a process; every function is deterministic
// on its input files.
package elfpatch
