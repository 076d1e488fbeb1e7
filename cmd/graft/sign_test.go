package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"graft/internal/testutil"
)

func sshKeygen(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ssh-keygen", args...).CombinedOutput()
	require.NoError(t, err, "ssh-keygen %v: %s", args, out)
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o644))
}

// Signed patches end to end on a live sshd, with keys made by ssh-keygen:
// every way a patch can fail the trust policy is refused with its own
// message and the target untouched; a signed patch applies and the process
// records the signer; ssh-keygen and graft accept each other's signatures.
func TestSignedPatches(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen missing: .ci/run installs openssh-client")
		}
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	key, stranger := filepath.Join(dir, "ops"), filepath.Join(dir, "stranger")
	sshKeygen(t, "-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f", key)
	sshKeygen(t, "-q", "-t", "ecdsa", "-N", "", "-C", "stranger", "-f", stranger)
	pub, err := os.ReadFile(key + ".pub")
	require.NoError(t, err)
	allowed := filepath.Join(dir, "allowed_signers")
	require.NoError(t, os.WriteFile(allowed, []byte(`ops@example.org namespaces="graft" `+string(pub)), 0o644))
	expired := filepath.Join(dir, "allowed_expired")
	require.NoError(t, os.WriteFile(expired, []byte(`ops@example.org namespaces="graft",valid-before="20200101Z" `+string(pub)), 0o644))

	users := filepath.Join(dir, "users")
	require.NoError(t, os.WriteFile(users, []byte("alice:wonderland\n"), 0o644))
	target, port := testutil.StartServer(t, "sshd-v1", "-u", users)
	defer testutil.RequireReleased(t, target.Pid)
	pid := strconv.Itoa(target.Pid)

	patch := filepath.Join(dir, "fix.graft")
	_, errOut, code := runGraft("diff", testutil.Build(t, "sshd-v1"), testutil.Build(t, "sshd-v2"), "-o", patch)
	require.Equal(t, 0, code, errOut)
	// ssh-keygen signs the patch the way the README tells operators to.
	sshKeygen(t, "-Y", "sign", "-f", key, "-n", "graft", patch)

	untouched := func(why string) {
		t.Helper()
		require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"), why)
		out, errOut, code := runGraft("status", "-p", pid, "--json")
		require.Equal(t, 0, code, errOut)
		var st struct {
			Record  string            `json:"record"`
			Patches []json.RawMessage `json:"patches"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &st))
		require.Empty(t, st.Patches, why)
		require.Empty(t, st.Record, "%s: a refused patch must leave no record in the target", why)
		testutil.RequireReleased(t, target.Pid)
	}

	refused := func(why, want string, args ...string) {
		t.Helper()
		out, errOut, code := runGraft(append([]string{"apply", "-p", pid, "--timeout", "3s"}, args...)...)
		require.Equal(t, 1, code, "%s: stdout %s stderr %s", why, out, errOut)
		require.Contains(t, errOut, "refused by the trust policy", why)
		require.Contains(t, errOut, want, why)
		untouched(why)
	}

	// Unsigned: a copy of the patch with no .sig beside it.
	unsigned := filepath.Join(dir, "unsigned.graft")
	copyFile(t, patch, unsigned)
	refused("unsigned", "no signature", "--allowed-signers", allowed, unsigned)

	// Tampered patch: one byte changed after signing.
	tampered := filepath.Join(dir, "tampered.graft")
	b, _ := os.ReadFile(patch)
	b[len(b)/2] ^= 0x40
	require.NoError(t, os.WriteFile(tampered, b, 0o644))
	copyFile(t, patch+".sig", tampered+".sig")
	refused("tampered patch", "does not match the file", "--allowed-signers", allowed, tampered)

	// Tampered signature: a character of the signature's base64 changed
	// (inside the signature bytes, past the key and namespace).
	badsig := filepath.Join(dir, "badsig.graft")
	copyFile(t, patch, badsig)
	sig, _ := os.ReadFile(patch + ".sig")
	lines := strings.Split(string(sig), "\n")
	l := []byte(lines[3])
	if l[10] == 'A' {
		l[10] = 'B'
	} else {
		l[10] = 'A'
	}
	lines[3] = string(l)
	require.NoError(t, os.WriteFile(badsig+".sig", []byte(strings.Join(lines, "\n")), 0o644))
	refused("tampered signature", "does not match", "--allowed-signers", allowed, badsig)

	// A stranger's key.
	strange := filepath.Join(dir, "strange.graft")
	copyFile(t, patch, strange)
	sshKeygen(t, "-Y", "sign", "-f", stranger, "-n", "graft", strange)
	refused("stranger", "which is not in "+allowed, "--allowed-signers", allowed, strange)

	// The right key, signing for another namespace.
	otherNS := filepath.Join(dir, "otherns.graft")
	copyFile(t, patch, otherNS)
	sshKeygen(t, "-Y", "sign", "-f", key, "-n", "file", otherNS)
	refused("namespace", `namespace "file", not "graft"`, "--allowed-signers", allowed, otherNS)

	// A signer whose validity ended.
	refused("expired", "trusted only until 2020-01-01", "--allowed-signers", expired, patch)

	// --new is refused while signers are configured (the default policy
	// file does not allow it).
	refused("--new", "--new builds a patch on this machine", "--allowed-signers", allowed, "--new", testutil.Build(t, "sshd-v2"))

	// graft show says the same before anything is applied.
	out, errOut, code := runGraft("show", "--allowed-signers", allowed, strange)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "signature NOT TRUSTED")

	// The signed patch applies; the target records who signed it.
	out, errOut, code = runGraft("apply", "-p", pid, "--allowed-signers", allowed, "--json", patch)
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, errOut, "unverified")
	var ap struct {
		Signer struct{ Principal, Fingerprint string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ap), out)
	require.Equal(t, "ops@example.org", ap.Signer.Principal)
	require.True(t, strings.HasPrefix(ap.Signer.Fingerprint, "SHA256:"), ap.Signer.Fingerprint)
	require.Equal(t, "FAIL login incorrect", sshdLogin(t, port, "alice", "wonder"))
	testutil.RequireReleased(t, target.Pid)

	out, errOut, code = runGraft("status", "-p", pid)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "signed by ops@example.org (ssh-ed25519 key "+ap.Signer.Fingerprint+")")
	out, errOut, code = runGraft("show", "--allowed-signers", allowed, patch)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "signed by ops@example.org (ssh-ed25519 key "+ap.Signer.Fingerprint+"), trusted")

	_, errOut, code = runGraft("revert", "-p", pid)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "OK welcome alice", sshdLogin(t, port, "alice", "wonder"))

	// graft sign's signature passes ssh-keygen -Y verify, and graft.
	ours := filepath.Join(dir, "ours.graft")
	copyFile(t, patch, ours)
	_, errOut, code = runGraft("sign", "-f", key, ours)
	require.Equal(t, 0, code, errOut)
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "ops@example.org", "-n", "graft", "-s", ours+".sig")
	data, _ := os.ReadFile(ours)
	cmd.Stdin = bytes.NewReader(data)
	vout, err := cmd.CombinedOutput()
	require.NoError(t, err, "ssh-keygen -Y verify rejects graft sign's signature: %s", vout)
	out, errOut, code = runGraft("apply", "-p", pid, "--allowed-signers", allowed, ours)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "signed by ops@example.org")
	require.Equal(t, "FAIL login incorrect", sshdLogin(t, port, "alice", "wonder"))
	_, errOut, code = runGraft("revert", "-p", pid)
	require.Equal(t, 0, code, errOut)

	// With no signers configured, an unsigned patch applies with one
	// warning that it is unverified.
	if _, err := os.Stat("/etc/graft/allowed_signers"); err == nil {
		t.Log("this machine has /etc/graft/allowed_signers: the no-policy case is not tested here")
		return
	}
	_, errOut, code = runGraft("apply", "-p", pid, unsigned)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 1, strings.Count(errOut, "unverified"), errOut)
	_, errOut, code = runGraft("revert", "-p", pid)
	require.Equal(t, 0, code, errOut)
}
