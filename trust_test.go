package graft

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The policy file: settings with line numbers in errors; allow-new lets an
// unsigned --new through while signers are configured, its absence does
// not.
func TestTrustPolicyFile(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	allowed := filepath.Join(dir, "allowed")
	os.WriteFile(allowed, []byte("ops "+string(pub)), 0o644)

	write := func(s string) string {
		p := filepath.Join(dir, "policy")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	for _, c := range []struct{ policy, want string }{
		{"allow-new maybe\n", "policy:1: allow-new takes yes or no"},
		{"# x\nfrobnicate 1\n", `policy:2: unknown setting "frobnicate"`},
		{"allowed-signers\n", "policy:1: allowed-signers needs a file"},
	} {
		_, err := LoadTrustPolicy("", write(c.policy))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.policy, err, c.want)
		}
	}
	if _, err := LoadTrustPolicy("", filepath.Join(dir, "absent")); err == nil {
		t.Error("an explicitly named policy file that does not exist must be an error")
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("# nobody\n"), 0o644)
	if _, err := LoadTrustPolicy(empty, write("")); err == nil || !strings.Contains(err.Error(), "lists no keys") {
		t.Errorf("an allowed_signers file with no keys: got %v", err)
	}

	newSrc := Source{NewBinary: "/bin/true"}
	tp, err := LoadTrustPolicy("", write("allowed-signers "+allowed+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !tp.Enforced() || tp.From != filepath.Join(dir, "policy") {
		t.Fatalf("policy %+v", tp)
	}
	if _, err := tp.checkSource(&newSrc, time.Now()); !errors.Is(err, ErrNewNotAllowed) {
		t.Fatalf("--new without allow-new: %v", err)
	}
	tp, err = LoadTrustPolicy("", write("allowed-signers "+allowed+"\nallow-new yes\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.checkSource(&newSrc, time.Now()); err != nil {
		t.Fatalf("--new with allow-new yes: %v", err)
	}
	// Without signers nothing is enforced, and --new goes through.
	tp, err = LoadTrustPolicy("", write(""))
	if err != nil {
		t.Fatal(err)
	}
	if tp.Enforced() {
		if _, statErr := os.Stat(DefaultAllowedSigners); statErr != nil {
			t.Fatal("no signers configured, yet the policy is enforced")
		}
	}
}
