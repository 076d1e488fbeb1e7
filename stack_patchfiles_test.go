package graft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/safepoint"
	"graft/tracer"
)

// Patches applied from patch files alone, the production case: the NEW
// binaries are not on the machine. Unwinding through loaded images and
// stacking must then work from the patch files and the in-target record.

// patchFileWithoutNew writes the patch from build oldTarget to newTarget
// into dir, as `graft diff -o` on another machine would: the NEW path it
// names is a copy of NEW that is deleted before the patch is applied.
func patchFileWithoutNew(t *testing.T, dir, oldTarget, newTarget string) string {
	t.Helper()
	old, err := elfpatch.Open(testutil.Build(t, oldTarget))
	require.NoError(t, err)
	newCopy := filepath.Join(dir, "elsewhere", newTarget)
	require.NoError(t, os.MkdirAll(filepath.Dir(newCopy), 0o755))
	data, err := os.ReadFile(testutil.Build(t, newTarget))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(newCopy, data, 0o755))
	nb, err := elfpatch.Open(newCopy)
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb)
	require.NoError(t, err)
	require.NotZero(t, p.Image.EhFrameSize, "the image records NEW's .eh_frame")
	file := filepath.Join(dir, oldTarget+"-"+newTarget+".patch")
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Remove(newCopy))
	return file
}

// noNewSystem is the real system, except that reading the symbols of any
// file but the target's executable fails the test: nothing may need a
// NEW binary.
func noNewSystem(t *testing.T) *system {
	t.Helper()
	sys, err := defaultSystem()
	require.NoError(t, err)
	read := sys.symbols
	sys.symbols = func(path, buildID string) (*symbols, error) {
		if !strings.HasPrefix(path, "/proc/") || !strings.HasSuffix(path, "/exe") {
			t.Errorf("symbols of %s (build %s) read: a NEW binary was needed", path, buildID)
			return nil, fmt.Errorf("test: no NEW binary on this machine (%s)", path)
		}
		return read(path, buildID)
	}
	return sys
}

func applyFile(t *testing.T, sys *system, pid int, file string, opts ApplyOptions) (*ApplyResult, error) {
	t.Helper()
	pt, err := sys.readPatch(file)
	require.NoError(t, err)
	require.Empty(t, pt.NewPath, "NEW is not on this machine")
	return sys.apply(context.Background(), pid, pt, opts)
}

func TestStackedSSHDFromPatchFilesOnly(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	p12 := patchFileWithoutNew(t, dir, "sshd-v1", "sshd-v2")
	p23 := patchFileWithoutNew(t, dir, "sshd-v2", "sshd-v3")

	target, port := testutil.StartServer(t, "sshd-v1", "-u", sshUsers(t))
	defer testutil.RequireReleased(t, target.Pid)
	text := exeText(t, target.Pid)
	alice := sshDial(t, port)
	require.Equal(t, "OK welcome alice", alice.cmd("LOGIN alice wonderland"))
	idle := sshDial(t, port)
	sys := noNewSystem(t)

	r12, err := applyFile(t, sys, target.Pid, p12, ApplyOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"cmd_login"}, r12.Functions)
	require.Equal(t, "FAIL login incorrect", idle.cmd("LOGIN bob hunt"), "v2's cmd_login on a connection opened before")

	r23, err := applyFile(t, sys, target.Pid, p23, ApplyOptions{})
	require.NoError(t, err, "v2 -> v3 stacks on a patch whose NEW is gone")
	require.Equal(t, r12.PatchID, r23.OnTopOf)
	require.Equal(t, []string{"cmd_echo"}, r23.Functions)
	testutil.RequireReleased(t, target.Pid)

	// Both in effect on the open connections.
	require.Equal(t, "OK a b c", alice.cmd("ECHO a b c"))
	require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
	require.Equal(t, "FAIL login incorrect", idle.cmd("LOGIN bob hunt"))
	require.Equal(t, "OK welcome bob", idle.cmd("LOGIN bob hunter2"))
	require.Equal(t, "OK a b c", idle.cmd("ECHO a b c"))

	// The record carries what the next invocation needs.
	mem, err := procMem(target.Pid)
	require.NoError(t, err)
	maps, err := tracer.ReadMaps(target.Pid)
	require.NoError(t, err)
	st, err := readState(mem, target.Pid, maps)
	mem.Close()
	require.NoError(t, err)
	require.Len(t, st.Patches, 2)
	for _, r := range st.Patches {
		require.Empty(t, r.NewPath)
		require.NotZero(t, r.EhFrameSize, "patch %s records its CFI", r.ID)
		require.NotEmpty(t, r.Symbols, "patch %s records its image's symbols", r.ID)
	}

	stat, err := sys.status(target.Pid)
	require.NoError(t, err)
	require.Len(t, stat.Patches, 2, "status lists both patches")
	for _, p := range stat.Patches {
		require.True(t, p.SelfContained, p.ID)
		require.True(t, p.Intact, p.ID)
	}

	rr, err := sys.revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{r23.PatchID}, rr.Reverted)
	require.Equal(t, "OK a", alice.cmd("ECHO a b c"))
	require.Equal(t, "FAIL login incorrect", sshDial(t, port).cmd("LOGIN alice wonder"))
	rr, err = sys.revert(context.Background(), target.Pid, RevertOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{r12.PatchID}, rr.Reverted)
	require.Equal(t, "OK welcome bob", sshDial(t, port).cmd("LOGIN bob hunt"), "v1's bug is back")
	require.Equal(t, "OK alice", alice.cmd("WHOAMI"))
	require.Equal(t, text, exeText(t, target.Pid), "text byte-identical after both reverts")
	require.Empty(t, graftMappings(t, target.Pid))
}

// blockreadTarget starts testprocs/blockread-v1 on a FIFO the test writes.
func blockreadTarget(t *testing.T) (*testutil.Proc, *os.File) {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "in")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	// O_RDWR never blocks on a FIFO, so the target's open finds a writer.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	target := testutil.Start(t, testutil.Build(t, "blockread-v1"), fifo)
	target.WaitLine(t, "ready", 10*time.Second)
	return target, w
}

func sendLine(t *testing.T, target *testutil.Proc, w *os.File, line, want string) {
	t.Helper()
	_, err := fmt.Fprintf(w, "%s\n", line)
	require.NoError(t, err)
	target.WaitLine(t, want, 10*time.Second)
}

// A thread blocked in read() inside patched code (NEW absent) unwinds to
// its end, with the frame in the image named; so a later patch and the
// revert of that patch need not wait for it.
func TestUnwindThroughImageWithoutNew(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	p12 := patchFileWithoutNew(t, dir, "blockread-v1", "blockread-v2")
	p23 := patchFileWithoutNew(t, dir, "blockread-v2", "blockread-v3")
	target, w := blockreadTarget(t)
	defer testutil.RequireReleased(t, target.Pid)
	sys := noNewSystem(t)

	// The worker sits in v1's handle; it may finish there.
	r12, err := applyFile(t, sys, target.Pid, p12, ApplyOptions{AllowActive: []string{"handle"}})
	require.NoError(t, err)
	sendLine(t, target, w, "a", "v1 a")
	sendLine(t, target, w, "b", "v2 b") // now blocked in read() in v2's handle

	// Unwind the way the controller does, from the record alone.
	mem, err := procMem(target.Pid)
	require.NoError(t, err)
	maps, err := tracer.ReadMaps(target.Pid)
	require.NoError(t, err)
	st, err := readState(mem, target.Pid, maps)
	mem.Close()
	require.NoError(t, err)
	mods, err := tracer.Modules(target.Pid)
	require.NoError(t, err)
	ck, err := newChecker(target.Pid, mods, loadedModules(st))
	require.NoError(t, err)
	u := ck.(*unwinder).u
	require.Empty(t, u.Problems())
	p, err := tracer.Attach(target.Pid)
	require.NoError(t, err)
	require.NoError(t, p.Stop())
	stacks, err := u.StacksOf(p)
	require.NoError(t, p.Resume())
	require.NoError(t, p.Close())
	require.NoError(t, err)
	img := Range{r12.Base, r12.Base + r12.Size}
	var worker []safepoint.Frame
	for _, frames := range stacks {
		for _, f := range frames {
			if img.Contains(f.PC - 1) {
				worker = frames
			}
		}
	}
	require.NotNil(t, worker, "a thread has a frame in the image: %v", stacks)
	var names []string
	for _, f := range worker {
		require.False(t, f.Incomplete, "frame %#x %s: %s (stack %v)", f.PC, f.Function, f.Reason, worker)
		names = append(names, f.Function)
		if img.Contains(f.PC - 1) {
			require.Equal(t, "handle", f.Function, "the image frame is named")
		}
	}
	require.Contains(t, names, "worker", "the walk continues into the executable: %v", names)

	// A patch on top (tick) and its revert go in while the worker stays
	// in the image: its stack is known to be elsewhere.
	r23, err := applyFile(t, sys, target.Pid, p23, ApplyOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{"tick"}, r23.Functions)
	rr, err := sys.revert(context.Background(), target.Pid, RevertOptions{Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{r23.PatchID}, rr.Reverted)
	sendLine(t, target, w, "c", "v2 c")

	// Taking out v1->v2 itself must wait: the worker's frame is in its
	// image. The refusal names the function, not an unknown stack.
	_, err = sys.revert(context.Background(), target.Pid, RevertOptions{Timeout: 300 * time.Millisecond})
	require.Error(t, err)
	var act *safepoint.ActiveError
	require.True(t, errors.As(err, &act), "%v", err)
	require.NotContains(t, err.Error(), "incomplete")
	testutil.RequireReleased(t, target.Pid)
	sendLine(t, target, w, "d", "v2 d")
}
