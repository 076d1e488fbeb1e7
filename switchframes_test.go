package graft

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"graft/safepoint"
)

// When a waiting frame may be switched: only with the thread blocked in
// a system call that creates nothing and points into no moved global.
func TestSwitchableFrame(t *testing.T) {
	moved := []Range{{0x5000, 0x5000 + 7680}}
	read := safepoint.Frame{Function: "__libc_read", Module: "libc.so.6", InSyscall: true, Syscall: 0, SyscallArgs: [6]uint64{5, 0x7ffc0000, 1}}
	fn := safepoint.Frame{Function: "session_thread", Module: "sshd"}
	assert.Empty(t, switchable([]safepoint.Frame{read, fn}, 1, moved))

	running := read
	running.InSyscall = false
	assert.Contains(t, switchable([]safepoint.Frame{running, fn}, 1, moved), "running")

	clone := read
	clone.Syscall = 435
	assert.Contains(t, switchable([]safepoint.Frame{clone, fn}, 1, moved), "creating a thread")

	into := read
	into.SyscallArgs[1] = 0x5000 + 120*3 + 20 // read(fd, s->buf, n) into a moved session
	assert.Contains(t, switchable([]safepoint.Frame{into, fn}, 1, moved), "pointing into the global")
	end := read
	end.SyscallArgs[2] = 0x5000 + 7680 // one past the end counts
	assert.NotEmpty(t, switchable([]safepoint.Frame{end, fn}, 1, moved))
}

// A thread being started (its start routine's argument where no frame
// holds it) blocks a patch that moves a global; a started one does not.
func TestStartingThread(t *testing.T) {
	libc := func(fn string) safepoint.Frame { return safepoint.Frame{Function: fn, Module: "libc.so.6"} }
	assert.NotEmpty(t, startingThread([]safepoint.Frame{libc("__GI___clone3")}), "a child before start_thread")
	assert.NotEmpty(t, startingThread([]safepoint.Frame{libc("start_thread"), libc("__GI___clone3")}))
	assert.NotEmpty(t, startingThread([]safepoint.Frame{libc("__GI___pthread_sigmask"), libc("start_thread"), libc("__GI___clone3")}))
	started := []safepoint.Frame{libc("__libc_read"), {Function: "session_thread", Module: "sshd"}, libc("start_thread"), libc("__GI___clone3")}
	assert.Empty(t, startingThread(started))
	parent := []safepoint.Frame{libc("__GI___clone3"), libc("pthread_create"), {Function: "main", Module: "sshd"}}
	assert.Empty(t, startingThread(parent), "the parent, in pthread_create under main")
	helper := []safepoint.Frame{libc("__futex_wait"), libc("pthread_cond_wait"), libc("helper_loop"), libc("start_thread"), libc("__GI___clone3")}
	assert.Empty(t, startingThread(helper), "a C library helper thread parked for good")
}
