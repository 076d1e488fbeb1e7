// Package safepoint unwinds every thread of a stopped process with CFI and
// decides whether a patch may go in: no thread's PC or return address may
// lie inside a function being replaced or inside bytes a trampoline will
// overwrite.
package safepoint
