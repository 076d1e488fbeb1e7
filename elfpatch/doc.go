// Package elfpatch is graft's offline half: it reads two builds of a program
// (ELF symbols, code, DWARF), decides what changed between them and whether
// the change can be applied live, and writes the result as a self-contained
// patch file. Nothing here sees a process; every function is deterministic
// on its input files.
//
// # Diff
//
// Open reads a build into memory (no descriptor stays open) with its sized
// function and data symbols, each static one qualified by the STT_FILE
// entry it follows, its dynamic relocations and an index of its DWARF.
//
// Functions are compared in a normal form, not byte for byte. Every
// instruction is decoded with x86asm; its PC-relative field (RIP-relative
// operand, call or jump displacement) is masked and replaced by a token for
// what it reaches: an offset inside the function itself (or its .cold
// part), a function or data symbol by key and offset, a PLT stub or GOT slot
// by the dynamic symbol it is bound to, a read-only data symbol together
// with a hash of its value, and anonymous read-only data by its bytes: a
// jump table by the offsets it leads to, a load by the bytes it loads, an
// address (a string literal) by the whole object there: in a C program up
// to its NUL or to where the next object is known to begin (an address
// code takes, a relocated pointer's target, a symbol), whichever is later,
// so a string another literal was merged into the tail of compares whole;
// an object with no known end makes the function count as changed. (In a
// Go program, up to the NUL or the next address code takes, whichever is
// first.) So a function the
// linker only moved compares equal, and one whose code is the same but
// whose string literal changed does not. Padding between functions lies
// outside their symbol sizes and is never compared.
//
// Symbols are matched by key: the name for globals, file:name for statics,
// with the numbers GCC appends dropped (f.constprop.3 -> f.constprop,
// counter.1 -> counter; a function-local static is further qualified by
// its function from DWARF). Several symbols with one key pair identical
// code first, then in order; leftovers pair by plain name when that is
// unambiguous. A .cold part is folded into the function it was split from
// and never gets a jump of its own.
//
// For each changed function the diff checks OLD's entry: it must hold a
// 5-byte jmp rel32 after any endbr64 (using alignment padding after a short
// function), and no branch or jump-table entry of the function may target
// the overwritten bytes past the entry. Its DWARF signature is compared
// (layouts of return and parameter types); if it changed, every OLD caller
// must be in the patch. The aggregates its parameters and locals hold by
// value (stack) or reach through pointers (heap) are compared by name.
//
// Data objects are compared by type (DWARF) and initial value (relocated
// pointers replaced by what they point to). Type layouts are rendered
// twice: exactly, and with typedefs, qualifiers and base-type names reduced
// to encoding and size, which separates identical, compatible (int ->
// volatile sig_atomic_t) and changed types. An enum that only gained
// enumerators (same size, every old one keeps its value) is compatible,
// also inside other types and in signatures (enums.go).
//
// Code compares the same whether or not a build kept its debug info: a
// build run through `strip -g` lost its DWARF and its STT_FILE symbols, so
// its statics borrow their file from the other build where that is
// unambiguous, and function-local statics are qualified by function only
// when both builds have DWARF (debuginfo.go); the report then warns that
// types were not compared, and the warning travels with the patch to
// apply. A build without DWARF whose separate debug file is installed by
// build-id (/usr/lib/debug/.build-id/xx/yyyy.debug, as Debian's -dbgsym
// packages install it) is read with that file's DWARF (debugfile.go).
//
// NEW must be a build of OLD's program: it is refused, with the figures,
// when more than half of OLD's own functions (the toolchain's crt code
// left aside) are not in NEW, and for Go when the main module path in the
// build info differs (sameprog.go).
//
// The verdict is the worst of the per-symbol reasons: auto (bodies,
// literals, new globals, signature changes with their callers), transformer
// (a global's own layout changed: its contents must be converted) or
// refused (a changed type in heap or stack objects, an unpatchable entry, a
// caller left behind, a removed global that new code still names).
//
// # State transformers
//
// For a transformer verdict the diff generates, per global, the operations
// that build NEW's object from OLD's (transform.go: members by name,
// integer widening and checked narrowing, enums by name, resized arrays,
// nested aggregates, pointers), their reverse for revert, and where NEW's
// object lives (transfer_plan.go: in place when it fits OLD's slot, else in
// the image with every OLD user of the global made part of the patch).
// What cannot be generated is a TODO resolved by the operator's Rules from
// the state description (statedesc.go). A changed type that lives only in
// locals of functions the patch replaces needs nothing: none may be on a
// stack in the pause. One reached through pointers is refused unless the
// operator declares it lives only in a transferred global (sole_home_of,
// solehome.go); its pointer users then count in apply's safety check. The
// planner tells a moved object's end pointer from the next object's start
// by the instruction's use (plan_endptr.go).
//
// # Frames that never leave
//
// For every changed function, Func.Resume (resume.go, resume_flow.go) says,
// for each return address of OLD, whether a frame waiting there may finish
// in OLD's code while the patch goes in, and for each of NEW's whether a
// frame in the new code may finish there after a revert: the two versions
// are aligned instruction by instruction, everything reachable from the
// address is followed and must be the same in both, and every register and
// stack slot it may read must be set by aligned instructions on both sides.
// Where it cannot prove it, it says why; the controller then blocks.
//
// A frame that must instead continue in NEW's code (on-stack replacement
// at a return address) is rebuilt from where each variable is: FrameVarsAt
// (framevars.go) lists the variables in scope at a return address, inlined
// callees' included ("read_line/n"), each in a register, a frame slot
// relative to the CFA, a constant, or unknown with the reason, from the
// DWARF location lists; FrameCFA gives CFA-rsp there and FrameSaves where
// the caller's registers are saved, from .eh_frame.
//
// # Go programs
//
// A Go build (one with .go.buildinfo) is compared by identity, not by
// address: a default Go build keeps no relocations, so read-only data
// holding absolute addresses (itabs, dictionaries, funcvals, type
// descriptors, static string headers) would differ whenever code moved.
// goImage (goident.go) knows the Go linker's groups (type descriptors,
// packed string literals, funcvals, GC masks and content-addressed
// constants) and names each reference by what it denotes: a function by
// name, a type by its abi.Type content (name, kind, size, hash, flags, GC
// mask, element types), a string by the bytes over the length the code
// loads or the header gives, a funcval by its function, a cache by its
// content, a value by the size of the type or itab named next to it, a
// jump table by its targets, other read-only data by its value with every
// pointer denoted, transitively. Which words are pointers comes from the
// relocations of a PIE and, in a default build, from the .data GC mask
// (runtime.gcdata) or, in read-only data, from what a word would reach.
// The linker's own tables (firstmoduledata, typelinks, inittasks) are not
// compared. Diff also refuses another toolchain or other build settings
// (CheckGoBuilds) and names what a live patch could not do.
//
// PlanGo (goplan.go) turns a Go diff into the plan of a live patch:
// which functions of the loaded NEW (a PIE) replace which of OLD, and for
// every rel32 and RIP-relative field of their code whether it stays in
// NEW's image, is redirected to OLD's object of the same identity, or is
// refused with a reason naming the symbol.
//
// # Patch files
//
// BuildPatch adds the loader's Image (PlanImage) to the Report; WriteTo and
// ReadPatch implement the format in FORMAT.md: magic, version, SHA-256 of
// the payload, a JSON metadata record and one record per segment.
// ReadPatch never panics and reports malformed input as *FormatError.
package elfpatch
