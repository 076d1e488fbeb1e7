package graft

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/elfpatch"
	"graft/internal/testutil"
)

// sole.c: recs (struct rec[8]) grows between the builds; bump, which walks
// it, changes. A worker thread waits inside wait_in, which reaches struct
// rec through a pointer and is the same in both builds, until the file
// named by argv[1] exists; then it increments its record's counter and
// sleeps in worker, which only holds a void pointer.
const soleSrc = `#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
struct rec { int id; long seen; EXTRA };
static struct rec recs[8];
static const char *gate;
__attribute__((noinline)) static struct rec *slot(int i) { return &recs[i]; }
__attribute__((noinline)) static void wait_in(struct rec *r)
{
	while (access(gate, F_OK) != 0)
		usleep(2000);
	r->seen++;
}
__attribute__((noinline)) static long bump(void)
{
	long s = 0;
	for (int i = 0; i < 8; i++) {
		recs[i].id = i;
		s += recs[i].seen;
	}
	return s;
}
static void *worker(void *arg)
{
	wait_in(arg);
	for (;;)
		sleep(1);
	return 0;
}
int main(int argc, char **argv)
{
	pthread_t t;
	gate = argv[1];
	pthread_create(&t, 0, worker, slot(3));
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (bump() < 0)
			return 1;
		usleep(5000);
	}
}
`

func buildSole(t *testing.T, dir, name, extra string) string {
	t.Helper()
	// One source file name for both builds: statics pair by it.
	sub := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(sub, 0o755))
	c := filepath.Join(sub, "sole.c")
	require.NoError(t, os.WriteFile(c, []byte(strings.Replace(soleSrc, "EXTRA", extra, 1)), 0o644))
	out := filepath.Join(sub, "sole")
	if b, err := exec.Command("gcc", "-g", "-O2", "-o", out, c, "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	return out
}

// A thread inside wait_in, unchanged but holding a pointer into recs (the
// operator declared struct rec lives only there), blocks the pause; once
// it has left, the patch goes in.
func TestPointerUserBlocksPauseLive(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	oldPath, newPath := buildSole(t, dir, "v1", ""), buildSole(t, dir, "v2", "long added;")
	old, err := elfpatch.Open(oldPath)
	require.NoError(t, err)
	nb, err := elfpatch.Open(newPath)
	require.NoError(t, err)
	p, err := elfpatch.BuildPatch(old, nb, elfpatch.WithRules(map[string]*elfpatch.Rules{"recs": {SoleHomeOf: []string{"struct rec"}}}))
	require.NoError(t, err)
	require.Len(t, p.Report.Transfers, 1)
	require.Contains(t, p.Report.Transfers[0].PointerUsers, "wait_in")
	for _, f := range p.Report.Changed {
		require.NotEqual(t, "wait_in", f.Name, "wait_in must be unchanged for the test to mean anything")
	}
	file := filepath.Join(dir, "sole.patch")
	f, err := os.Create(file)
	require.NoError(t, err)
	_, err = p.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	gate := filepath.Join(dir, "gate")
	target := testutil.Start(t, oldPath, gate)
	defer testutil.RequireReleased(t, target.Pid)
	target.WaitLine(t, "ready", 10*time.Second)
	text := exeText(t, target.Pid)
	_, err = Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{Timeout: time.Second})
	require.Error(t, err)
	require.ErrorContains(t, err, "wait_in")
	require.Equal(t, text, exeText(t, target.Pid), "untouched")
	require.Empty(t, graftMappings(t, target.Pid))

	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	time.Sleep(50 * time.Millisecond) // the worker polls every 2 ms
	res, err := Apply(context.Background(), target.Pid, Source{File: file}, ApplyOptions{Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.Len(t, res.Transfers, 1)
	require.False(t, target.Exited())
}
