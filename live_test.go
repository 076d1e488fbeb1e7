package graft

import (
	"graft/internal/record"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
	"graft/tracer"
)

// requirePtrace is testutil.RequirePtrace: it skips when this process
// cannot trace (neither root nor CAP_SYS_PTRACE), except under CI=true,
// where it fails.
func requirePtrace(t testing.TB) {
	t.Helper()
	testutil.RequirePtrace(t)
}

func mapsText(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	require.NoError(t, err)
	return string(b)
}

// The record is created in a real process with remote syscalls, found again
// by a later reader through /proc/PID/maps, and taken out without a trace.
func TestRecordInLiveProcess(t *testing.T) {
	requirePtrace(t)
	bin := testutil.Build(t, "spin")
	target := testutil.Start(t, bin, "2")
	target.WaitLine(t, "ready", 10*time.Second)
	pid := target.Pid
	defer testutil.RequireReleased(t, pid)
	before := mapsText(t, pid)
	require.NotContains(t, before, stateMapPrefix)

	p, err := tracer.Attach(pid)
	require.NoError(t, err)
	var addr uint64
	err = stopped(p, func() (err error) {
		addr, err = createStateMapping(p)
		return err
	})
	require.NoError(t, err)
	rec := &State{Patches: []PatchRecord{{ID: "live-1", OldBuildID: "aa", NewBuildID: "bb",
		Functions: []FuncRecord{{Name: "busy", Entry: 0x1234, New: 0x5678, NewSize: 9}}}}}
	buf, err := encodeState(rec, 1)
	require.NoError(t, err)
	require.NoError(t, stopped(p, func() error {
		err := record.Write(p, addr, buf)
		return err
	}))
	require.NoError(t, p.Close())
	testutil.RequireReleased(t, pid)

	m := mapsText(t, pid)
	require.Contains(t, m, stateMapPrefix)
	line := ""
	for _, l := range strings.Split(m, "\n") {
		if strings.Contains(l, stateMapPrefix) {
			line = l
		}
	}
	require.Contains(t, line, " r--p ", "read-only and private in the target: %s", line)

	// A later invocation finds it without attaching.
	sys, err := defaultSystem()
	require.NoError(t, err)
	st, err := sys.status(pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 1)
	require.Equal(t, "live-1", st.Patches[0].ID)
	require.Equal(t, []string{"busy"}, st.Patches[0].Functions)
	require.Equal(t, addr, st.Record)
	require.False(t, target.Exited())

	p, err = tracer.Attach(pid)
	require.NoError(t, err)
	require.NoError(t, stopped(p, func() error { return p.Munmap(addr, stateCapacity) }))
	require.NoError(t, p.Close())
	require.Equal(t, before, mapsText(t, pid))
}
