// Package graft is the controller that ties tracer, elfpatch, safepoint and
// trampoline together into apply, status and revert on a live process.
//
// # Apply
//
// Everything that needs no stopped target happens first, while it runs:
//
//  1. read the target's graft record (below) and its modules; pick the
//     patched module (module.go): the executable or the shared library
//     whose build-id is the patch's OLD build-id, or whose newest patch's
//     NEW build-id it is (patches stack per module); a patch the diff
//     refused (a global whose layout changed) stops here;
//  2. attach (PTRACE_SEIZE: the target keeps running);
//  3. map and link NEW's image near the patched module (loader; it stops the
//     target briefly around its injected mmap calls only);
//  4. plan every jump: for each redirected function, the bytes to write
//     over each live copy's entry and the bytes they replace;
//  5. build the unwinder (CFI of every module and of every loaded image);
//  6. create the record mapping if the process has none yet.
//
// Then one pause: stop every thread, wait for a safe point (no PC or return
// address inside a function being replaced, unless the patch's resume
// analysis proved that frame finishes as the new version would, or the
// operator allowed it to stay active, and never inside the bytes a jump
// overwrites; the check may resume, back off and retry up to --timeout,
// then names every frame in the way: frames.go), write the record, then
// the jumps, resume. The pause holds no computation that could have been
// done before it: the jumps and the record are encoded beforehand (both
// versions of the record when the image below may be unloaded, see
// stacking; the pause then unwinds the stacks once more to decide).
//
// The pause is one transaction (pause.go): stopAll, waitSafe, then the
// writes in their order, each pushing its undo (applyInPause: converted
// state, the record, the Go module link, the jumps; revertInPause:
// converted state back, the original bytes, the record); a failure aborts
// (undo newest first, resume), and end lets the threads go. The jumps are
// written and restored by one loop (putSites/takeSites). What comes
// before the pause (planJumps, newPatchRecord, unloadCandidates;
// revertPlan, checkTopJumps) and after it (unmapping) are functions of
// their own.
//
// # Where the seams are
//
// The controller reaches the process only through tracer: ptrace, remote
// system calls (tracer.CreateMemfd, CloseFD) and every /proc path
// (tracer/procfs.go: the executable, a module's file, memory, tasks,
// descriptors). It imports neither syscall nor x/sys/unix. ELF basics
// shared with elfpatch, safepoint and tracer (safe open, build-id,
// .symtab with statics) are internal/elfx; the record's envelope (header,
// version, CRC, bounds) is internal/record, the body (State) stays here.
//
// Invariant: the target is either exactly as before or fully patched, and
// always detached. SIGKILL to graft is the one thing no program can
// handle: killed before the pause it leaves an unused image mapped (no jump
// leads there); killed inside the pause, after the record was written
// (record first, then the jumps), it may leave some jumps unwritten: graft
// status shows the patch as not intact and graft revert cleans it up. The
// kernel detaches and resumes the threads either way. Not covered: killed
// while a borrowed thread single-steps an injected system call (the
// loader's mmap calls, the record's creation), the thread is released with
// graft's registers and the trap flag, and the target dies of SIGTRAP.
//
// # The record
//
// The patches in effect are recorded in the target itself, in a MAP_PRIVATE
// mapping of a memfd named "graft-state" (/proc/PID/maps shows
// "/memfd:graft-state (deleted)"), so any later invocation, from any shell,
// sees them. Layout: a 64-byte versioned header (magic, version, generation,
// body length, CRC-32) and a JSON body; see state.go. Each patch record
// holds its id, time, OLD and NEW build-ids, the NEW binary's path (when it
// is on this machine), the image's base, size and executable ranges, the
// redirected functions, for every jump its address, the bytes it replaced
// and the bytes written, and what makes the image self-describing: the
// link-time place of NEW's .eh_frame and .eh_frame_hdr inside the image,
// and NEW's symbols that live in the image (the functions that run from it,
// the data objects only NEW has, with the compile unit of statics). graft
// status reads it through /proc/PID/mem without stopping the target. The
// record is versioned (2; version 1, without the self-description, still
// reads; others are refused) and bounded by its 1 MiB mapping: an apply
// whose record would not fit is refused before its pause.
//
// # Unwinding through loaded images
//
// Every check (apply, revert) unwinds threads that may be inside loaded
// images. An image's CFI is read from the target, at its base plus the
// recorded .eh_frame place (safepoint.Image), and its frames are named from
// the recorded symbols: NEW's file is never opened, so a patch applied
// from a file on a machine without NEW, or whose NEW was deleted since,
// unwinds like any library. Only a patch recorded without that (from a
// version-1 patch file) falls back to NEW's file at the recorded path;
// without it such stacks are incomplete, which never counts as safe.
//
// # Stacking
//
// A patch from v2 to v3 applies to a process running v1 plus the v1->v2
// patch. Its OLD symbols (v2's) are mapped to their live copies by name:
// the lowest layer (executable first, then each loaded image) that defines
// a name holds the copy every later image was linked against, so v3 uses
// v1's globals and v2's added ones. The patch file names, for each fixup,
// OLD's symbol (name, compile unit of a static, address); the executable's
// layer comes from /proc/PID/exe, each image's layer from its record. So
// stacking needs the record and the new patch file only, never an earlier
// patch's NEW binary (that is read only for a patch recorded or made by the
// version-1 formats, which lack the names). Each redirected function gets a jump
// at every live copy's entry (v1's, and v2's image copy), each straight to
// v3: a function patched twice jumps straight to its newest version.
//
// The image of the patch directly below, when the new patch redirects
// again every function it redirected, the new code does not point into it,
// and no thread has a frame in it during the pause, is unmapped after the
// pause and marked unloaded: a long-running process can take many patches
// without growing (v2->v3, v3->v2, ... keeps one image mapped). Reverting
// the patch that superseded it reverts it too: its code is gone. Only the
// patch directly below qualifies, so that this never skips a patch in
// between; an image superseded while a frame was in it stays mapped.
//
// # Revert
//
// Revert takes the newest patch out (patches are bound to the one below,
// so only the top can go, or all of them): one pause with the same check
// (no thread in the image's code or in the jump bytes), the saved bytes
// written back newest first, the record updated; then the image unmapped,
// and the record mapping too when no patch is left. A thread waiting in
// the image's code does not block when its frame was proven to finish as
// the old version would (or the operator names its function): the jumps
// go, the image stays mapped as a pending entry of the record, and the
// next apply or revert that finds no frame in it unmaps it (pending.go).
//
// A frame let stay in old code is, for a later patch made from the new
// version, a frame of the new version: each patch records which of the old
// copy's return addresses it proved equivalent to which of its image's
// (PatchRecord.Carry), and a stacked apply judges such a frame at its
// equivalent (frames.go).
package graft
