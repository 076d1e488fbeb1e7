package sshsig

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// keygen makes a key with ssh-keygen and returns its path (the .pub is
// next to it).
func keygen(t *testing.T, dir, name, typ string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	args := []string{"-q", "-t", typ, "-N", "", "-C", name, "-f", p}
	if typ == "rsa" {
		args = append(args, "-b", "2048")
	}
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return p
}

func needKeygen(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh-keygen not found (CI installs openssh-client)")
		}
		t.Skip("ssh-keygen not found")
	}
}

func pub(t *testing.T, key string) string {
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func loadSigner(t *testing.T, key string) ssh.Signer {
	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, p, s string) {
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Signatures graft makes verify with ssh-keygen, and signatures ssh-keygen
// makes verify with graft, for every key type ssh-keygen makes by default.
func TestInteropWithSSHKeygen(t *testing.T) {
	needKeygen(t)
	dir := t.TempDir()
	msg := filepath.Join(dir, "patch")
	writeFile(t, msg, "a patch\x00with bytes\n")
	data, _ := os.ReadFile(msg)
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(typ, func(t *testing.T) {
			key := keygen(t, dir, "k-"+typ, typ)
			allowed := filepath.Join(dir, "allowed-"+typ)
			writeFile(t, allowed, "ops@example.org namespaces=\"graft\" "+pub(t, key)+"\n")

			// graft signs, ssh-keygen verifies.
			armored, err := Sign(loadSigner(t, key), "graft", data)
			if err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(dir, "patch-"+typ+".sig")
			writeFile(t, sigPath, string(armored))
			cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "ops@example.org", "-n", "graft", "-s", sigPath)
			cmd.Stdin = bytes.NewReader(data)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -Y verify rejects graft's signature: %v\n%s", err, out)
			}

			// ssh-keygen signs, graft verifies.
			cmd = exec.Command("ssh-keygen", "-Y", "sign", "-f", key, "-n", "graft", msg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
			}
			theirs, _ := os.ReadFile(msg + ".sig")
			os.Remove(msg + ".sig")
			as := mustAllowed(t, allowed)
			for name, a := range map[string][]byte{"ssh-keygen's": theirs, "graft's": armored} {
				sig, err := Parse(a)
				if err != nil {
					t.Fatalf("%s signature: %v", name, err)
				}
				who, err := as.Check(sig, data, "graft", time.Now())
				if err != nil {
					t.Fatalf("%s signature: %v", name, err)
				}
				if who.Principal != "ops@example.org" || who.Fingerprint != ssh.FingerprintSHA256(sig.Key) {
					t.Fatalf("%s signature: signer %+v", name, who)
				}
				// One flipped byte of the file breaks it.
				bad := bytes.Clone(data)
				bad[3] ^= 1
				if _, err := as.Check(sig, bad, "graft", time.Now()); !errors.Is(err, ErrBadSignature) {
					t.Fatalf("%s signature over a changed file: %v", name, err)
				}
			}
		})
	}
}

func mustAllowed(t *testing.T, p string) *AllowedSigners {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	as, err := ParseAllowedSigners(f, p)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// Each reason not to trust a sound signature has its own error.
func TestCheckRefusals(t *testing.T) {
	needKeygen(t)
	dir := t.TempDir()
	key := keygen(t, dir, "k", "ed25519")
	stranger := keygen(t, dir, "s", "ed25519")
	data := []byte("payload")
	sig := func(k, ns string) *Signature {
		a, err := Sign(loadSigner(t, k), ns, data)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Parse(a)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		allowed string
		sig     *Signature
		want    error
		msg     string
	}{
		{"stranger", "ops " + pub(t, key), sig(stranger, "graft"), ErrUnknownKey, "not in"},
		{"signature namespace", "ops " + pub(t, key), sig(key, "file"), ErrNamespace, `namespace "file", not "graft"`},
		{"allowed namespaces", `ops namespaces="file,git" ` + pub(t, key), sig(key, "graft"), ErrNamespace, "may sign only for namespaces"},
		{"expired", `ops valid-before="20261201Z" ` + pub(t, key), sig(key, "graft"), ErrExpired, "trusted only until 2026-12-01"},
		{"not yet", `ops valid-after="20270101Z" ` + pub(t, key), sig(key, "graft"), ErrNotYetValid, "trusted only from 2027-01-01"},
		{"certificate authority", `ops cert-authority ` + pub(t, key), sig(key, "graft"), ErrCertificates, "certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			as, err := ParseAllowedSigners(strings.NewReader(c.allowed+"\n"), "allowed")
			if err != nil {
				t.Fatal(err)
			}
			who, err := as.Check(c.sig, data, "graft", now)
			if !errors.Is(err, c.want) || who != nil {
				t.Fatalf("got %v, %v; want %v", who, err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("message %q lacks %q", err, c.msg)
			}
		})
	}
	// Inside its window, with a glob namespace, the same key is trusted.
	as, err := ParseAllowedSigners(strings.NewReader(`"ops,dev" namespaces="gr*",valid-after="20261201",valid-before="202701010000Z" `+pub(t, key)+"\n"), "allowed")
	if err != nil {
		t.Fatal(err)
	}
	who, err := as.Check(sig(key, "graft"), data, "graft", now)
	if err != nil || who.Principal != "ops,dev" {
		t.Fatalf("got %+v, %v", who, err)
	}
}

func TestParseAllowedSignersErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"# comment\n\nops\n", "f:3: principals but no key"},
		{"ops ssh-ed25519 notbase64!\n", "f:1: key:"},
		{"ops frobnicate ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhgIqbMSWXCtwZUPr+z5VsXHfsT8DAXANqs2TB8UomS\n", `f:1: unknown option "frobnicate"`},
		{`ops valid-after="2026" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhgIqbMSWXCtwZUPr+z5VsXHfsT8DAXANqs2TB8UomS` + "\n", "f:1: valid-after:"},
		{`ops nonsense="x" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhgIqbMSWXCtwZUPr+z5VsXHfsT8DAXANqs2TB8UomS` + "\n", `f:1: unknown option "nonsense"`},
	} {
		_, err := ParseAllowedSigners(strings.NewReader(c.in), "f")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.in, err, c.want)
		}
	}
}

func TestParseRejectsDamage(t *testing.T) {
	for _, in := range []string{
		"",
		"-----BEGIN SSH SIGNATURE-----\n",
		"-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----\n",
		"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n",
		"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAg==\n-----END SSH SIGNATURE-----\n",
	} {
		var fe *FormatError
		if _, err := Parse([]byte(in)); !errors.As(err, &fe) {
			t.Errorf("%q: got %v, want a FormatError", in, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgCGAipsxJZcK3BlQ+v7PlWxcd+x\nPwMBcA2yrZMHxSiZIAAAAFZ3JhZnQAAAAAAAAABnNoYTUxMgAAAFMAAAALc3NoLWVkMjU1\nMTkAAABAfVmgoWlU7Ngm3+TcCADvOyxDQvptQtkPDislzOLtaE76GORxGMFESrqVgULPBC\ntUaBHshgue6TGhv7n5miFbBg==\n-----END SSH SIGNATURE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err == nil {
			_ = s.Verify([]byte("hello\n"))
		}
	})
}
