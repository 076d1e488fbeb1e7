package graft

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"graft/internal/sshsig"

	"golang.org/x/crypto/ssh"
)

// Signed patches.
//
// A patch file is code that graft maps into a process and jumps to, as
// root, so where an operator has said whose patches to trust, nothing else
// goes in. Trust is configured in OpenSSH's own terms: an allowed_signers
// file (the one `ssh-keygen -Y verify -f` reads) whose keys may sign for
// the namespace "graft", and a patch signed with `ssh-keygen -Y sign -n
// graft` (or `graft sign`), its signature next to it as PATCH.sig.
//
// The policy is read before anything is done to the target: a patch that
// fails it is refused with nothing touched. The signature is checked over
// the very bytes that are then parsed and applied (the file is read once),
// so a file swapped after the check is not what goes in.

// SignatureNamespace is the sshsig namespace of graft patches: a key's
// signature for any other purpose ("file", "git") never passes for a patch.
const SignatureNamespace = "graft"

// The default places of the trust policy.
const (
	DefaultAllowedSigners = "/etc/graft/allowed_signers"
	DefaultPolicyFile     = "/etc/graft/policy"
)

// TrustPolicy says which patches may be applied.
type TrustPolicy struct {
	// AllowedSigners is the allowed_signers file; "" means no signers are
	// configured: any patch applies, with a warning that it is unverified.
	AllowedSigners string
	// AllowNew lets `--new` (a patch diffed on this machine from binaries
	// on it, which nobody signed) through while signers are configured.
	AllowNew bool
	// From says where the policy came from, for messages.
	From    string
	signers *sshsig.AllowedSigners
}

// Signer is who signed a patch.
type Signer = sshsig.Signer

// LoadTrustPolicy reads the policy: allowedSigners when given (an
// operator's --allowed-signers), else the policy file's allowed-signers
// line, else DefaultAllowedSigners when it exists. policyFile "" means
// DefaultPolicyFile, which may be absent. The policy file has one setting
// a line:
//
//	allowed-signers /etc/graft/allowed_signers
//	allow-new yes
func LoadTrustPolicy(allowedSigners, policyFile string) (*TrustPolicy, error) {
	tp := &TrustPolicy{}
	explicitPolicy := policyFile != ""
	if policyFile == "" {
		policyFile = DefaultPolicyFile
	}
	if err := tp.readPolicyFile(policyFile); err != nil {
		if !errors.Is(err, fs.ErrNotExist) || explicitPolicy {
			return nil, err
		}
	}
	switch {
	case allowedSigners != "":
		tp.AllowedSigners, tp.From = allowedSigners, "--allowed-signers"
	case tp.AllowedSigners != "":
		tp.From = policyFile
	default:
		if _, err := os.Stat(DefaultAllowedSigners); err == nil {
			tp.AllowedSigners, tp.From = DefaultAllowedSigners, DefaultAllowedSigners
		}
	}
	if tp.AllowedSigners == "" {
		return tp, nil
	}
	f, err := os.Open(tp.AllowedSigners)
	if err != nil {
		return nil, fmt.Errorf("trust policy: allowed signers: %w", err)
	}
	defer f.Close()
	if tp.signers, err = sshsig.ParseAllowedSigners(f, tp.AllowedSigners); err != nil {
		return nil, fmt.Errorf("trust policy: %w", err)
	}
	if len(tp.signers.Entries) == 0 {
		return nil, fmt.Errorf("trust policy: %s lists no keys: no patch could be applied; add the signers' public keys, or remove the file to apply unverified patches", tp.AllowedSigners)
	}
	return tp, nil
}

func (tp *TrustPolicy) readPolicyFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch key {
		case "allowed-signers":
			if val == "" {
				return fmt.Errorf("%s:%d: allowed-signers needs a file", path, n)
			}
			tp.AllowedSigners = val
		case "allow-new":
			switch val {
			case "yes":
				tp.AllowNew = true
			case "no":
				tp.AllowNew = false
			default:
				return fmt.Errorf("%s:%d: allow-new takes yes or no, not %q", path, n, val)
			}
		default:
			return fmt.Errorf("%s:%d: unknown setting %q (known: allowed-signers, allow-new)", path, n, key)
		}
	}
	return sc.Err()
}

// Enforced reports whether signatures are required.
func (tp *TrustPolicy) Enforced() bool { return tp != nil && tp.signers != nil }

// UntrustedError is a patch refused by the trust policy.
type UntrustedError struct {
	Patch string
	Msg   string
	Err   error // the sshsig reason, for errors.Is
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("patch %s refused by the trust policy: %s", e.Patch, e.Msg)
}
func (e *UntrustedError) Unwrap() error { return e.Err }

// ErrUnsigned: signers are configured and the patch has no signature.
var ErrUnsigned = errors.New("patch is not signed")

// ErrNewNotAllowed: signers are configured and --new was asked for.
var ErrNewNotAllowed = errors.New("unsigned --new patches are not allowed by the trust policy")

// checkSource applies the policy to src before anything else happens. For
// a patch file it reads the file once; the bytes it checked are the ones
// later parsed (src.data). It returns the signer (nil when the policy
// enforces nothing).
func (tp *TrustPolicy) checkSource(src *Source, now time.Time) (*Signer, error) {
	if (src.NewBinary != "" && src.File == "") || src.LocalBuild {
		if err := tp.CheckNew(src.NewBinary + src.File); err != nil {
			return nil, err
		}
		if src.File == "" {
			return nil, nil
		}
		data, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("read patch: %w", err)
		}
		src.data = data
		return nil, nil
	}
	if src.File == "" {
		return nil, nil
	}
	data, err := os.ReadFile(src.File)
	if err != nil {
		return nil, fmt.Errorf("read patch: %w", err)
	}
	src.data = data
	if !tp.Enforced() {
		return nil, nil
	}
	sigPath := src.Signature
	if sigPath == "" {
		sigPath = src.File + ".sig"
	}
	armored, err := os.ReadFile(sigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &UntrustedError{Patch: src.File, Err: ErrUnsigned,
			Msg: fmt.Sprintf("no signature (%s does not exist) and signers are configured (%s): sign it with ssh-keygen -Y sign -f KEY -n graft %s", sigPath, tp.AllowedSigners, src.File)}
	}
	if err != nil {
		return nil, fmt.Errorf("read signature: %w", err)
	}
	sig, err := sshsig.Parse(armored)
	if err != nil {
		return nil, &UntrustedError{Patch: src.File, Err: err, Msg: fmt.Sprintf("%s: %v", sigPath, err)}
	}
	who, err := tp.signers.Check(sig, data, SignatureNamespace, now)
	if err != nil {
		return nil, &UntrustedError{Patch: src.File, Err: err, Msg: fmt.Sprintf("%s: %v", sigPath, err)}
	}
	return who, nil
}

// CheckNew says whether the policy lets a patch made on this machine from
// binaries on it (--new, graft play's patch.new) in: refused where signers
// are configured and the policy does not say allow-new yes.
func (tp *TrustPolicy) CheckNew(what string) error {
	if tp.Enforced() && !tp.AllowNew {
		return &UntrustedError{Patch: what, Err: ErrNewNotAllowed,
			Msg: fmt.Sprintf("signers are configured (%s) and --new builds a patch on this machine that nobody signed: apply a signed patch file (graft diff -o PATCH, then ssh-keygen -Y sign -n graft or graft sign), or set 'allow-new yes' in %s", tp.AllowedSigners, DefaultPolicyFile)}
	}
	return nil
}

// CheckFile checks a patch file and its signature (sigPath "" = path +
// ".sig") against the policy, as apply would, without applying it: the
// signer (nil when the policy enforces nothing), or why it is refused.
func (tp *TrustPolicy) CheckFile(path, sigPath string) (*Signer, error) {
	src := Source{File: path, Signature: sigPath}
	return tp.checkSource(&src, time.Now())
}

// SignatureInfo is what graft show says of a patch file's signature.
type SignatureInfo struct {
	// State is "trusted" (signed by an allowed signer), "untrusted" (the
	// policy refuses it: Reason says why), "unchecked" (a signature but
	// no signers configured: Signer has only the key) or "unsigned".
	State  string  `json:"state"`
	Signer *Signer `json:"signer,omitempty"`
	Reason string  `json:"reason,omitempty"`
	File   string  `json:"file,omitempty"`
}

// DescribeSignature checks a patch file against the policy without
// applying it.
func (tp *TrustPolicy) DescribeSignature(path, sigPath string) SignatureInfo {
	if sigPath == "" {
		sigPath = path + ".sig"
	}
	if tp.Enforced() {
		src := Source{File: path, Signature: sigPath}
		who, err := tp.checkSource(&src, time.Now())
		if err != nil {
			var ue *UntrustedError
			if errors.As(err, &ue) {
				return SignatureInfo{State: "untrusted", Reason: ue.Msg, File: sigPath}
			}
			return SignatureInfo{State: "untrusted", Reason: err.Error(), File: sigPath}
		}
		return SignatureInfo{State: "trusted", Signer: who, File: sigPath}
	}
	armored, err := os.ReadFile(sigPath)
	if err != nil {
		return SignatureInfo{State: "unsigned"}
	}
	sig, err := sshsig.Parse(armored)
	if err != nil {
		return SignatureInfo{State: "unchecked", Reason: err.Error(), File: sigPath}
	}
	return SignatureInfo{State: "unchecked", File: sigPath, Reason: "no allowed signers configured",
		Signer: &Signer{Fingerprint: sshsig.Fingerprint(sig.Key), KeyType: sig.Key.Type()}}
}

// SignPatchFile signs a patch file for graft with an OpenSSH private key
// file (unencrypted; a key behind a passphrase or in an agent signs with
// ssh-keygen -Y sign -n graft) and returns the armored signature.
func SignPatchFile(patch, keyFile string) ([]byte, *Signer, error) {
	data, err := os.ReadFile(patch)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	var pm *ssh.PassphraseMissingError
	if errors.As(err, &pm) {
		return nil, nil, fmt.Errorf("sign: %s is protected by a passphrase: sign with ssh-keygen -Y sign -f %s -n %s %s, which asks for it (or uses your agent)", keyFile, keyFile, SignatureNamespace, patch)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %s is not an OpenSSH private key: %w", keyFile, err)
	}
	armored, err := sshsig.Sign(signer, SignatureNamespace, data)
	if err != nil {
		return nil, nil, err
	}
	return armored, &Signer{Fingerprint: sshsig.Fingerprint(signer.PublicKey()), KeyType: signer.PublicKey().Type()}, nil
}
