package playbook

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"graft"
	"graft/internal/testutil"
)

// graft play under a trust policy, on real servers: with signers
// configured, a patch.file without a trusted signature and a patch.new
// (made on the spot, signed by nobody) abort the run before any process is
// touched; a signed patch file goes into every target, which records the
// signer; and patch.new goes through once the policy says allow-new.
func TestPlayHonoursTrustPolicy(t *testing.T) {
	testutil.RequirePtrace(t)
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen missing: .ci/run installs openssh-client")
		}
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "ops")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", key).CombinedOutput()
	require.NoError(t, err, "%s", out)
	pub, err := os.ReadFile(key + ".pub")
	require.NoError(t, err)
	allowed := filepath.Join(dir, "allowed_signers")
	require.NoError(t, os.WriteFile(allowed, []byte(`ops@example.org namespaces="graft" `+string(pub)), 0o644))
	policy := filepath.Join(dir, "policy")
	require.NoError(t, os.WriteFile(policy, []byte("allowed-signers "+allowed+"\n"), 0o644))
	strict, err := graft.LoadTrustPolicy("", policy)
	require.NoError(t, err)
	require.True(t, strict.Enforced())

	exe := copyExe(t, "sshd-v1", "sshd-old")
	var pids, ports []int
	for i := 0; i < 2; i++ {
		p, port := startAt(t, exe)
		pids, ports = append(pids, p.Pid), append(ports, port)
	}
	untouched := func(why string) {
		t.Helper()
		for i, pid := range pids {
			require.Empty(t, patches(t, pid), why)
			require.Equal(t, "OK welcome alice", sshdLogin(t, ports[i], "alice", "sec"), why)
			testutil.RequireReleased(t, pid)
		}
	}

	unsigned := filepath.Join(dir, "fix.graft")
	writePatch(t, testutil.Build(t, "sshd-v1"), testutil.Build(t, "sshd-v2"), unsigned)
	run := func(patchKey string) *Report {
		pb := writePlaybook(t, fmt.Sprintf("patch: {%s}\ntargets:\n  - exe: %s\n", patchKey, exe)+sshdHealthy)
		return Run(context.Background(), pb, Options{Trust: strict})
	}

	rep := run("file: " + unsigned)
	require.Equal(t, ExitAborted, rep.ExitCode, rep.Aborted)
	require.Contains(t, rep.Aborted, "refused by the trust policy")
	require.Contains(t, rep.Aborted, "no signature")
	untouched("unsigned patch file")

	rep = run("new: " + testutil.Build(t, "sshd-v2"))
	require.Equal(t, ExitAborted, rep.ExitCode, rep.Aborted)
	require.Contains(t, rep.Aborted, "nobody signed")
	untouched("patch.new under signers")

	out, err = exec.Command("ssh-keygen", "-Y", "sign", "-f", key, "-n", "graft", unsigned).CombinedOutput()
	require.NoError(t, err, "%s", out)
	rep = run("file: " + unsigned)
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure)
	require.Equal(t, 2, rep.Counts[Applied])
	for i, pid := range pids {
		st, err := graft.Status(pid)
		require.NoError(t, err)
		require.Len(t, st.Patches, 1)
		require.NotNil(t, st.Patches[0].Signer, "the process records who signed the patch")
		require.Equal(t, "ops@example.org", st.Patches[0].Signer.Principal)
		require.Equal(t, "FAIL login incorrect", sshdLogin(t, ports[i], "alice", "sec"))
		_, err = graft.Revert(context.Background(), pid, graft.RevertOptions{All: true})
		require.NoError(t, err)
	}

	require.NoError(t, os.WriteFile(policy, []byte("allowed-signers "+allowed+"\nallow-new yes\n"), 0o644))
	lax, err := graft.LoadTrustPolicy("", policy)
	require.NoError(t, err)
	pb := writePlaybook(t, fmt.Sprintf("patch: {new: %s}\ntargets:\n  - exe: %s\n", testutil.Build(t, "sshd-v2"), exe)+sshdHealthy)
	rep = Run(context.Background(), pb, Options{Trust: lax})
	require.Equal(t, ExitOK, rep.ExitCode, rep.Failure+rep.Aborted)
	require.Equal(t, 2, rep.Counts[Applied])
	for i, pid := range pids {
		require.Equal(t, "FAIL login incorrect", sshdLogin(t, ports[i], "alice", "sec"))
		st, err := graft.Status(pid)
		require.NoError(t, err)
		require.Nil(t, st.Patches[0].Signer, "made on this machine: no signer")
	}
}
