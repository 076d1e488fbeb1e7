// Package goruntime reads the Go runtime's own bookkeeping out of a live Go
// process from outside: the list of goroutines (runtime.allgs), each one's
// saved registers and stack bounds, and the module list
// (runtime.firstmoduledata and its next chain) with each module's pclntab,
// which names every function and says how big each frame is at each PC.
//
// Nothing is hard-coded per Go version: the offsets of every struct member
// used (runtime.g, gobuf, stack, m, moduledata, _func, functab) and the
// goroutine status constants come from the target's own DWARF (ReadLayout),
// the addresses of runtime.allgs, allglen, firstmoduledata and
// lastmoduledatap from its symbol table. A target without DWARF is refused
// with that reason.
//
// The pclntab is read from target memory through each module's moduledata,
// not from a file: a module graft registered (a patch's NEW image) is found
// and described the same way as the executable, and what is read is what
// the runtime itself uses.
//
// Unwinding (Unwind) follows the runtime's traceback for amd64: the frame
// size at a PC is the pcsp table's value there (looked up at the PC for the
// innermost frame and after an asynchronous preemption or a signal panic,
// at PC-1 for a return address); the return address sits at sp+framesize
// and the caller's sp is 8 above it. The walk ends at a function the
// runtime marks as a top frame (goexit, mstart, rt0_go, mcall, ...); a
// function that writes SP arbitrarily (FuncFlagSPWrite) anywhere else, a PC
// in no module or an unreadable slot ends it as incomplete, never as safe.
package goruntime
