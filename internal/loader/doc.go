// Package loader maps a planned elfpatch.Image into a live process: it finds
// a free region within ±2 GiB of the running executable (so the image's
// 32-bit PC-relative fixups and the 5-byte jumps written later reach both
// ways), resolves the image's imports against the libraries the process
// has already loaded, links the image for that address (elfpatch.Image.Link,
// pure) and only then touches the process.
//
// Loading, step by step, with one thread of the target borrowed (tracer's
// Borrow: the others run on) from the first system call to the last, and
// never while graft computes (placing, linking):
//
//  1. FindHole over /proc/PID/maps: a page-aligned free range next to the
//     executable, keeping clear of the brk heap's growth (or Options.Base,
//     a range the caller picked the same way to plan its jumps first).
//  2. Borrow a thread (unless the caller stopped the process or borrowed
//     one already, and then keeps it); mmap an anonymous read-write
//     reservation there with MAP_FIXED_NOREPLACE (never clobbering a
//     mapping that appeared since maps was read, which the running
//     threads may do); write the name "graft-<id>" into it;
//     memfd_create(name); ftruncate(size).
//  3. graft writes the linked bytes into the memfd through
//     /proc/PID/fd/N (the thread stays borrowed: one stop, not two).
//  4. mmap each segment of the memfd MAP_PRIVATE|MAP_FIXED over the
//     reservation with its final protection, PROT_NONE between segments;
//     close the descriptor; give the thread back.
//
// A process that cannot lend a thread (no Borrow method) is stopped whole
// around the system calls instead.
//
// Pages inside NEW's PT_GNU_RELRO range (its GOT, .data.rel.ro) are mapped
// read-only, as ld.so would after relocating them.
//
// Imports are resolved by Resolver, from the target itself where possible:
// OLD's own GOT slot for the same symbol holds what the dynamic linker
// chose (an IFUNC's implementation, an interposed definition); otherwise
// the library's .dynsym gives the address, and for an IFUNC the library's
// own IRELATIVE field for the same resolver gives the choice. An IFUNC
// with neither is refused (ErrIFUNC): running its resolver in the target
// is not implemented.
//
// No page is ever writable and executable, and no mprotect adds PROT_EXEC,
// so a target under MemoryDenyWriteExecute (prctl PR_SET_MDWE) still loads.
// Mappings are private: a forked child (ftpd's sessions) gets its own copy
// of the new globals, exactly as with the executable's own data. When
// memfd_create is refused (seccomp), the image is loaded into anonymous
// private mappings mapped with their final protection and filled through
// /proc/PID/mem, which writes through page protections.
//
// Invariant: Load either returns a Loaded whose range holds the linked
// image, or leaves the target's address space as it found it (everything
// it mapped is unmapped, every descriptor it opened in the target closed).
//
// A Go patch's image (goimage.go, BuildGoImage) is an ordinary Image made
// from NEW, a Go PIE: its text, read-only data and RELRO are mapped, its
// writable data stays reserved but inaccessible, and one more page holds
// NEW's own moduledata, relocated with the image and marked bad, which
// the controller links into the running program's module list.
package loader
