// Package trampoline encodes the jumps graft writes over the entry of a
// replaced function, and checks that writing them is safe: the overwritten
// bytes end on an instruction boundary, no branch in the function targets
// them, and the function is long enough.
//
// Plan keeps an endbr64 landing pad and writes after it; it prefers the
// 5-byte jmp rel32 and falls back to a 14-byte `jmp *0(%rip)` + address
// when the new code is beyond ±2 GB. The written bytes are padded with
// int3 up to the next instruction boundary, so the old code after them is
// still whole instructions. Decoding goes through internal/x86dec, as in
// the diff and the planner: x86asm plus what it gets wrong (endbr64 and
// endbr32, VZEROUPPER's length). The package is pure: it
// computes bytes, the caller writes them (and saves Site.Orig for revert).
// That no thread's PC or return address lies inside the written bytes is
// checked by package safepoint (Spec.Entries) at the time of writing.
//
// BuildFrameSwitch (frameswitch.go) generates the on-stack-replacement
// stub a waiting frame returns into: it saves the registers and a snapshot
// of the OLD frame in a caller-given scratch area (the first store is
// `mov moffs64, rax`, so no register or stack is needed), sets rsp to the
// NEW frame, runs the moves (register, slot of any size, constant; 8-byte
// values optionally relocated into a moved object by a small routine
// reached with lea r9/jmp, no call), loads every register and leaves by
// `jmp *[rip]`. It never stores below rsp, so a signal may land on any
// instruction; every read comes from the snapshot, so the frames may
// overlap. The code is position-independent and its length does not depend
// on the addresses. frameswitch_test.go runs stubs in a gcc-built harness
// (testdata/frameswitch_harness.c) and compares every register and every
// byte of the stack region with what the moves mean.
package trampoline
