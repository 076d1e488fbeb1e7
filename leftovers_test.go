package graft

import (
	"context"
	"graft/internal/record"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
	"graft/tracer"
)

// A revert killed after it emptied the record but before it unmapped it
// leaves a record with no patch (made here by hand): status reads it as no
// patch applied, plain revert has nothing to do, and revert --all removes
// it, leaving the process's mappings as they were.
func TestRevertAllRemovesEmptyRecord(t *testing.T) {
	requirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "spin"), "2")
	target.WaitLine(t, "ready", 10*time.Second)
	pid := target.Pid
	defer testutil.RequireReleased(t, pid)
	before := mapsText(t, pid)

	p, err := tracer.Attach(pid)
	require.NoError(t, err)
	var addr uint64
	require.NoError(t, stopped(p, func() (err error) {
		addr, err = createStateMapping(p)
		return err
	}))
	buf, err := encodeState(&State{}, 2)
	require.NoError(t, err)
	require.NoError(t, stopped(p, func() error {
		return record.Write(p, addr, buf)
	}))
	require.NoError(t, p.Close())
	require.Contains(t, mapsText(t, pid), stateMapPrefix)

	st, err := Status(pid)
	require.NoError(t, err)
	require.Empty(t, st.Patches)
	require.Equal(t, addr, st.Record)

	_, err = Revert(context.Background(), pid, RevertOptions{})
	require.ErrorIs(t, err, ErrNothingApplied)
	res, err := Revert(context.Background(), pid, RevertOptions{All: true})
	require.NoError(t, err)
	require.True(t, res.EmptyRecord)
	require.Equal(t, before, mapsText(t, pid))
}
