package graft

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

// A patch that supersedes the one below (it redirects handle again) while
// a thread is blocked in read() inside the lower patch's copy of handle:
// that image must stay mapped, since the thread returns into it. Only the
// fake controller test covered this; here the proof is the live worker
// finishing its call in the kept code ("v2 c") and the next call taking
// the newest code ("v1 d"), with no crash. With the image unmapped, the
// worker would fault as soon as read() returned.
func TestSupersededImageWithBlockedThreadStaysMapped(t *testing.T) {
	requirePtrace(t)
	dir := t.TempDir()
	p12 := patchFileWithoutNew(t, dir, "blockread-v1", "blockread-v2")
	p21 := patchFileWithoutNew(t, dir, "blockread-v2", "blockread-v1")
	target, w := blockreadTarget(t)
	defer testutil.RequireReleased(t, target.Pid)
	sys := noNewSystem(t)

	r12, err := applyFile(t, sys, target.Pid, p12, ApplyOptions{AllowActive: []string{"handle"}})
	require.NoError(t, err)
	sendLine(t, target, w, "a", "v1 a")
	sendLine(t, target, w, "b", "v2 b") // now blocked in read() in v2's handle, in r12's image
	images, _ := graftMapped(t, target.Pid)
	require.Positive(t, images, "r12's image is mapped")

	// v2 -> v1 redirects handle again, so r12's image is a candidate for
	// unloading; the worker's frame in it must keep it.
	r21, err := applyFile(t, sys, target.Pid, p21, ApplyOptions{AllowActive: []string{"handle"}, Timeout: 3 * time.Second})
	require.NoError(t, err)
	require.Equal(t, r12.PatchID, r21.OnTopOf)
	require.Empty(t, r21.Unloaded, "an image a thread is blocked in is not unloaded")
	st, err := Status(target.Pid)
	require.NoError(t, err)
	require.Len(t, st.Patches, 2)
	require.False(t, st.Patches[0].Unloaded, "r12 still mapped: %+v", st.Patches[0])
	mapped := false
	for _, l := range graftMappings(t, target.Pid) {
		mapped = mapped || strings.HasPrefix(l, fmt.Sprintf("%x-", st.Patches[0].Base))
	}
	require.True(t, mapped, "r12's image at %#x in /proc/PID/maps: %v", st.Patches[0].Base, graftMappings(t, target.Pid))

	sendLine(t, target, w, "c", "v2 c") // the blocked call finishes in the kept image
	sendLine(t, target, w, "d", "v1 d") // the next call takes the newest code
	require.False(t, target.Exited(), "target died")

	// Both come out again; r12 only once the worker has left its image
	// (it now blocks in r21's copy, so r21's revert must wait for it).
	_, err = sys.revert(context.Background(), target.Pid, RevertOptions{Timeout: 300 * time.Millisecond})
	require.Error(t, err, "the worker is blocked in r21's image")
	require.Contains(t, err.Error(), "handle")
	testutil.RequireReleased(t, target.Pid)
}
