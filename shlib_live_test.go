package graft

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/tracer"
)

// kvConn is one connection to kvd (testprocs/libkv): one thread of the
// server serves it for its whole life.
type kvConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialKV(t *testing.T, port int) *kvConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &kvConn{c: c, r: bufio.NewReader(c)}
}

func (k *kvConn) do(t *testing.T, cmd string) string {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := fmt.Fprintf(k.c, "%s\n", cmd)
	require.NoError(t, err)
	l, err := k.r.ReadString('\n')
	require.NoError(t, err, "kvd: %s", cmd)
	return strings.TrimSpace(l)
}

func (k *kvConn) ops(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(k.do(t, "OPS"), "OPS "))
	require.NoError(t, err)
	return n
}

// kvstatAsk sends one request to kvstat (one a connection).
func kvstatAsk(t *testing.T, port int, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s\n", cmd)
	l, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err, "kvstat: %s", cmd)
	return strings.TrimSpace(l)
}

func writeLibPatch(t *testing.T, dir, oldPath, newPath, name string) string {
	t.Helper()
	old, err := elfpatch.Open(oldPath)
	require.NoError(t, err)
	nb, err := elfpatch.Open(newPath)
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb)
	require.NoError(t, err)
	file := filepath.Join(dir, name)
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return file
}

// A function inside a shared library, patched live in two processes that
// map it: kvd (threaded) and kvstat (a poll loop), both running libkv v1
// from a file that a "package upgrade" then deletes. The library's own
// state (its table, its operation counter, a thread-local counter the new
// code reaches through the library's TLS block) carries on through two
// stacked patches (v1→v2 from a patch file, v2→v3 with --new: an exported
// function, a static helper and string constants) and back through the
// revert, on a connection held open the whole time.
func TestSharedLibraryLive(t *testing.T) {
	requirePtrace(t)
	v1 := testutil.Build(t, "libkv-v1")
	v2 := testutil.Build(t, "libkv-v2")
	v3 := testutil.Build(t, "libkv-v3")
	testutil.Build(t, "kvstat")
	dir := t.TempDir()
	libdir := filepath.Join(dir, "lib")
	require.NoError(t, os.Mkdir(libdir, 0o755))
	b, err := os.ReadFile(v1)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(libdir, "libkv.so.1"), b, 0o755))
	t.Setenv("LD_LIBRARY_PATH", libdir)

	kvd, port := testutil.StartServer(t, "kvd")
	defer testutil.RequireReleased(t, kvd.Pid)
	kvs, sport := testutil.StartServer(t, "kvstat")
	defer testutil.RequireReleased(t, kvs.Pid)

	held := dialKV(t, port)
	require.Equal(t, "OK", held.do(t, "PUT a 1"))
	require.Equal(t, "a=1", held.do(t, "FMT a"))
	require.Equal(t, "a=1", held.do(t, "FMT a"))
	require.Equal(t, "TCALLS 2", held.do(t, "TCALLS"))
	require.Equal(t, "OK", held.do(t, "PUTRAW x%20y 2"), "v1 accepts a key with a space")
	require.Equal(t, "libkv 1", held.do(t, "VERSION"))
	require.Equal(t, "YES", kvstatAsk(t, sport, "CHECK a b"))
	ops := held.ops(t)

	// The upgrade deletes the file both processes mapped.
	require.NoError(t, os.Remove(filepath.Join(libdir, "libkv.so.1")))

	patch12 := writeLibPatch(t, dir, v1, v2, "kv12.graft")
	for _, pid := range []int{kvd.Pid, kvs.Pid} {
		res, err := Apply(context.Background(), pid, Source{File: patch12}, ApplyOptions{Timeout: 5 * time.Second})
		require.NoError(t, err, "pid %d", pid)
		require.ElementsMatch(t, []string{"kv_check_key", "kv_version"}, res.Functions)
		testutil.RequireReleased(t, pid)
	}
	require.Equal(t, "ERR bad key", held.do(t, "PUTRAW q%20r 2"), "v2's kv_check_key, on the connection held through the patch")
	require.Equal(t, "libkv 2", held.do(t, "VERSION"))
	require.Equal(t, "VAL 1", held.do(t, "GET a"), "the library's table carried over")
	require.Equal(t, ops+1, held.ops(t), "the library's counter carried on (one GET since)")
	require.Equal(t, "NO", kvstatAsk(t, sport, "CHECK a b"), "kvstat runs v2's kv_check_key too")
	require.Equal(t, "libkv 2", kvstatAsk(t, sport, "VERSION"))
	require.Equal(t, "host=kvstat", kvstatAsk(t, sport, "FMT host"), "kvstat's own state in the library")

	// Stacked, from the NEW library file on disk: found by its SONAME.
	res, err := Apply(context.Background(), kvd.Pid, Source{NewBinary: v3}, ApplyOptions{Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"kv_format", "kv_version"}, res.Functions)
	require.NotEmpty(t, res.OnTopOf)
	require.Equal(t, `a="1"`, held.do(t, "FMT a"), "v3's static quote(), inlined into kv_format")
	require.Equal(t, "TCALLS 3", held.do(t, "TCALLS"), "new code counted in the same thread's TLS block")
	require.Equal(t, "libkv 3", held.do(t, "VERSION"))
	fresh := dialKV(t, port)
	require.Equal(t, `a="1"`, fresh.do(t, "FMT a"))
	require.Equal(t, "TCALLS 1", fresh.do(t, "TCALLS"), "another thread has its own block")

	st, err := Status(kvd.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 2)
	mods, err := tracer.Modules(kvd.Pid)
	require.NoError(t, err)
	var lib *tracer.Module
	for i := range mods {
		if strings.Contains(mods[i].Path, "libkv.so.1") {
			lib = &mods[i]
		}
	}
	require.NotNil(t, lib)
	require.Contains(t, lib.Path, "(deleted)")
	for _, p := range st.Patches {
		require.Equal(t, lib.BuildID, p.Module, "patch %s is recorded against the library", p.ID)
		require.Contains(t, p.ModulePath, "libkv.so.1")
		require.True(t, p.Intact)
	}

	// Revert both in kvd: v1's behaviour, state still there.
	_, err = Revert(context.Background(), kvd.Pid, RevertOptions{All: true, Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, "libkv 1", held.do(t, "VERSION"))
	require.Equal(t, "a=1", held.do(t, "FMT a"))
	require.Equal(t, "TCALLS 4", held.do(t, "TCALLS"))
	require.Equal(t, "OK", held.do(t, "PUTRAW s%20t 3"))
	require.Empty(t, graftMappings(t, kvd.Pid))
	_, err = Revert(context.Background(), kvs.Pid, RevertOptions{All: true, Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, "YES", kvstatAsk(t, sport, "CHECK a b"))
	require.Empty(t, graftMappings(t, kvs.Pid))
}

// --new with a library the process does not map is refused, naming what
// it maps; nothing is touched.
func TestSharedLibraryNotMapped(t *testing.T) {
	requirePtrace(t)
	target, _ := testutil.StartServer(t, "sshd-v1")
	defer testutil.RequireReleased(t, target.Pid)
	_, err := Apply(context.Background(), target.Pid, Source{NewBinary: testutil.Build(t, "libkv-v2")}, ApplyOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "is the library libkv.so.1, and pid "+strconv.Itoa(target.Pid)+" maps no library of that name")
	require.Empty(t, graftMappings(t, target.Pid))
}
