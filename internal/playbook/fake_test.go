package playbook

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"graft"
	"graft/internal/testutil"
)

// fakeActions patches nothing: it records what the run asked for. Status
// reports the patches "applied" through it.
type fakeActions struct {
	mu         sync.Mutex
	applied    map[int][]string
	revertFail map[int]bool
	calls      []string
}

func (f *fakeActions) Apply(ctx context.Context, pid int, src graft.Source, opts graft.ApplyOptions) (*graft.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("apply %d", pid))
	f.applied[pid] = append(f.applied[pid], "p1")
	return &graft.ApplyResult{PatchID: "p1", Functions: []string{"f"}}, nil
}

func (f *fakeActions) Revert(ctx context.Context, pid int, opts graft.RevertOptions) (*graft.RevertResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("revert %d %s", pid, opts.ID))
	if f.revertFail[pid] {
		return nil, errors.New("thread 7 is inside f (frame #0)")
	}
	f.applied[pid] = nil
	return &graft.RevertResult{Reverted: []string{opts.ID}}, nil
}

func (f *fakeActions) Status(pid int) (*graft.StatusResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &graft.StatusResult{Pid: pid}
	for _, id := range f.applied[pid] {
		st.Patches = append(st.Patches, graft.PatchStatus{ID: id, NewBuildID: "00new"})
	}
	return st, nil
}

// A revert that fails is ROLLBACK_FAILED, named with its error, and the
// run exits 3; the revert that worked is ROLLED_BACK; newest first.
func TestPlayRollbackFailed(t *testing.T) {
	var pids []int
	for i := 0; i < 2; i++ {
		pids = append(pids, testutil.Start(t, "/bin/sleep", "60").Pid)
	}
	fix := filepath.Join(t.TempDir(), "fix.patch")
	writePatch(t, testutil.Build(t, "sshd-v1"), testutil.Build(t, "sshd-v2"), fix)
	pb := writePlaybook(t, fmt.Sprintf(`patch: {file: %s}
targets: [{pid: %d}, {pid: %d}]
checks:
  - name: fails once patched
    when: after
    exec: ["false"]
    failure_threshold: 1
`, fix, pids[0], pids[1]))
	fa := &fakeActions{applied: map[int][]string{}, revertFail: map[int]bool{pids[0]: true}}
	rep := Run(context.Background(), pb, Options{Actions: fa})
	require.Equal(t, ExitRollbackFailed, rep.ExitCode)
	requireCountsAddUp(t, rep)
	got := byPid(rep)
	require.Equal(t, RollbackFailed, got[pids[0]].Outcome)
	require.True(t, got[pids[0]].Patched, "state unknown: counted as still patched")
	require.Contains(t, got[pids[0]].Error, "rollback: thread 7 is inside f")
	require.Contains(t, got[pids[0]].Error, `check "fails once patched" failed after the patch`)
	require.Equal(t, RolledBack, got[pids[1]].Outcome)
	require.Equal(t, []string{
		fmt.Sprintf("apply %d", pids[0]), fmt.Sprintf("apply %d", pids[1]),
		fmt.Sprintf("revert %d p1", pids[1]), fmt.Sprintf("revert %d p1", pids[0]),
	}, fa.calls)
}
