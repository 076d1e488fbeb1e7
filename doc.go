// Package graft is the controller that ties tracer, elfpatch, safepoint and
// trampoline together into apply, status and revert on a live process.
package graft
