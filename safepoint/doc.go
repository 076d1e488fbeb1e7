// Package safepoint unwinds every thread of a stopped process with CFI and
// decides whether a patch may go in: no thread's PC or return address may
// lie inside a function being replaced or inside bytes a trampoline will
// overwrite.
//
// # Unwinding
//
// NewUnwinder (or ForProcess) loads, while the target still runs, the
// .eh_frame and .debug_frame of every mapped module (parsed with delve's
// pkg/dwarf/frame) and its symbols (the detached debug file by build ID
// when the module itself is stripped). The vDSO's image is read from target
// memory. So is the CFI of an Image (NewUnwinderImages): code graft mapped
// without a file of its own, a patch's NEW image, whose NEW binary need not
// be on this machine. Its .eh_frame lies inside NEW's loadable segments,
// so it is mapped with the image; the patch records its link-time place,
// the unwinder reads those bytes from the target (first checking that the
// mapped .eh_frame_hdr points at them, so bytes from a wrong base are never
// used) and parses them as it parses a file's .eh_frame. Frames in an image
// are named from the symbols the patch lists (its functions), not from a
// symbol table. Unwind then starts from the thread's registers and, per frame:
// finds the module and FDE for the PC (the PC itself for frame 0 and for a
// frame interrupted by a signal, PC-1 for a return address, because a call
// that ends a noreturn function returns past its end); runs the FDE's CFA
// program to that PC (FDE addresses are link-time: subtract Module.Bias);
// computes the CFA and the caller's registers (register rules: offset,
// val_offset, register, same value, expression, val_expression — the
// expressions cover glibc's __restore_rt, which restores from the
// ucontext, and the PLT's CFA expression); and continues with the return
// address. Callee-saved registers without a rule keep their value, the
// others become unknown.
//
// The walk ends cleanly where the CFI marks the outermost frame (the
// return-address rule is "undefined", as in _start and the child side of
// clone/clone3) or at a zero return address. Anywhere else (a PC in no
// module or without CFI, an unreadable stack slot, an unknown register a
// rule needs, a CFA that does not grow) it stops and marks the last frame
// Incomplete. There is deliberately no frame-pointer guess: Check treats an
// incomplete stack as unsafe, so a missing frame can never make a patch go
// in while a replaced function is still running.
//
// # Activeness
//
// Check looks at every frame of every thread: a PC (or PC-1 for a return
// address) inside Spec.Functions is active unless the function is in
// AllowActive (by its name or its Range.Allow, the operator's name for a
// clone) or Spec.Stay proves the frame may finish in its code (the
// controller asks the patch's resume analysis); a PC inside Spec.Entries
// (the bytes the jump overwrites) is refused always. Judge (judge.go) gives
// every frame's verdict: every blocker, with why and the name that would
// allow it, and every frame let stay; WaitSafe's error names them all
// (*BlockedError). WaitSafe repeats stop/unwind/check with the whole process
// resumed between attempts (bounded exponential backoff) until it is safe,
// and returns with the process still stopped so the caller writes in the
// same pause. WaitSafeStacks also returns the stacks of that last check,
// so a caller deciding more in the same pause (may an image below be
// unmapped?) does not unwind twice.
//
// # Go programs
//
// In a Go process the stacks that matter are the goroutines', most of
// which have no thread (gostacks.go). GoUnwinder reads runtime.allgs and
// unwinds every goroutine with the pclntab (internal/goruntime), from its
// thread's registers when it runs on it, from syscallpc/sp in a system
// call, from its saved state otherwise; every thread's stack is added as
// informational (its frames are checked, its end is not: a Go thread's
// system stack ends in runtime.mcall or runtime.mstart without a CFI
// terminator, and only runtime or C code runs there). Stacks are a list,
// each with a kind ("goroutine" or "thread") and an ID; CheckStacks runs
// Check over them and names the goroutine that blocks (id, status, stack);
// WaitSafeGo is WaitSafeStacks for them.
package safepoint
