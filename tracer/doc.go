// Package tracer controls one live process through ptrace: it seizes every
// thread, stops and resumes them together, reads and writes registers and
// memory, runs system calls inside the target on a borrowed thread, and
// lists the modules mapped into it.
//
// It is the only package that touches a live process. Everything else in
// graft works on files (elfpatch) or on the data tracer hands out
// (safepoint, trampoline).
package tracer
