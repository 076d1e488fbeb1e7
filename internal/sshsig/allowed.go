package sshsig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// AllowedSigners is an OpenSSH allowed_signers file (ssh-keygen(1),
// "ALLOWED SIGNERS"): one key a line,
//
//	principals [options] keytype base64-key [comment]
//
// principals is a comma-separated list of patterns; the options graft
// honours are namespaces="pattern,...", valid-after="time" and
// valid-before="time"; cert-authority lines trust certificates, which graft
// does not accept, and are kept only to say so.
type AllowedSigners struct {
	// Name is where the lines came from, for messages.
	Name    string
	Entries []Entry
}

// Entry is one line of an allowed_signers file.
type Entry struct {
	Line          int
	Principals    string
	Key           ssh.PublicKey
	CertAuthority bool
	// Namespaces are patterns; nil means any namespace.
	Namespaces  []string
	ValidAfter  time.Time // zero: no lower bound
	ValidBefore time.Time // zero: no upper bound
}

// ParseAllowedSigners reads an allowed_signers file; an error names the
// line.
func ParseAllowedSigners(r io.Reader, name string) (*AllowedSigners, error) {
	as := &AllowedSigners{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		e, err := parseEntry(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		e.Line = n
		as.Entries = append(as.Entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return as, nil
}

func parseEntry(line string) (Entry, error) {
	var e Entry
	// The principals: one token, optionally quoted.
	var rest string
	if line[0] == '"' {
		end := strings.IndexByte(line[1:], '"')
		if end < 0 {
			return e, errors.New("unterminated quoted principals")
		}
		e.Principals, rest = line[1:1+end], line[2+end:]
	} else {
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			return e, errors.New("principals but no key")
		}
		e.Principals, rest = line[:i], line[i:]
	}
	if e.Principals == "" {
		return e, errors.New("empty principals")
	}
	key, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
	if err != nil {
		return e, fmt.Errorf("key: %w", err)
	}
	e.Key = key
	for _, o := range opts {
		name, val, hasVal := strings.Cut(o, "=")
		name = strings.ToLower(name)
		if hasVal {
			val = strings.Trim(val, `"`)
		}
		switch name {
		case "cert-authority":
			e.CertAuthority = true
		case "namespaces":
			e.Namespaces = strings.Split(val, ",")
		case "valid-after":
			t, err := parseTime(val)
			if err != nil {
				return e, fmt.Errorf("valid-after: %w", err)
			}
			e.ValidAfter = t
		case "valid-before":
			t, err := parseTime(val)
			if err != nil {
				return e, fmt.Errorf("valid-before: %w", err)
			}
			e.ValidBefore = t
		default:
			return e, fmt.Errorf("unknown option %q", name)
		}
	}
	return e, nil
}

// parseTime reads YYYYMMDD[HHMM[SS]][Z]: UTC with Z, local time without
// (as ssh-keygen does). A bare date means the start of that day, for
// valid-before too (checked against ssh-keygen 9.2: valid-before="20261206"
// has expired at 2026-12-06T12:00).
func parseTime(s string) (time.Time, error) {
	loc := time.Local
	if strings.HasSuffix(s, "Z") || strings.HasSuffix(s, "z") {
		loc, s = time.UTC, s[:len(s)-1]
	}
	var layout string
	switch len(s) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", s)
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", s)
	}
	return t, nil
}

// Signer is who signed, once a signature checked out.
type Signer struct {
	Principal   string `json:"principal"`
	Fingerprint string `json:"fingerprint"`
	KeyType     string `json:"key_type"`
}

// Why a signature that is cryptographically sound is still not trusted.
var (
	ErrUnknownKey   = errors.New("key is not an allowed signer")
	ErrNamespace    = errors.New("wrong namespace")
	ErrNotYetValid  = errors.New("signer not valid yet")
	ErrExpired      = errors.New("signer expired")
	ErrCertificates = errors.New("certificates not supported")
)

// TrustError says why a signature was not trusted; Is maps it to one of
// the Err values above.
type TrustError struct {
	Kind error
	Msg  string
}

func (e *TrustError) Error() string { return e.Msg }
func (e *TrustError) Is(t error) bool {
	return t == e.Kind
}

// Check verifies sig over msg and decides whether as trusts it for
// namespace at time now. It returns the signer, or an error saying which
// of the checks failed: the signature itself, the namespace, the key, the
// validity window.
func (as *AllowedSigners) Check(sig *Signature, msg []byte, namespace string, now time.Time) (*Signer, error) {
	fp := Fingerprint(sig.Key)
	if sig.Namespace != namespace {
		return nil, &TrustError{ErrNamespace, fmt.Sprintf("the signature is for namespace %q, not %q: sign with -n %s", sig.Namespace, namespace, namespace)}
	}
	if err := sig.Verify(msg); err != nil {
		return nil, err
	}
	want := sig.Key.Marshal()
	var first error
	matched := false
	for _, e := range as.Entries {
		if !bytes.Equal(e.Key.Marshal(), want) {
			continue
		}
		matched = true
		loc := fmt.Sprintf("%s:%d", as.Name, e.Line)
		var err error
		switch {
		case e.CertAuthority:
			err = &TrustError{ErrCertificates, fmt.Sprintf("key %s is trusted in %s only as a certificate authority, and graft does not accept certificate signatures", fp, loc)}
		case e.Namespaces != nil && !matchList(e.Namespaces, namespace):
			err = &TrustError{ErrNamespace, fmt.Sprintf("key %s (%s) may sign only for namespaces %q (%s), not %q", fp, e.Principals, strings.Join(e.Namespaces, ","), loc, namespace)}
		case !e.ValidAfter.IsZero() && now.Before(e.ValidAfter):
			err = &TrustError{ErrNotYetValid, fmt.Sprintf("key %s (%s) is trusted only from %s (%s)", fp, e.Principals, e.ValidAfter.Format(time.RFC3339), loc)}
		case !e.ValidBefore.IsZero() && now.After(e.ValidBefore):
			err = &TrustError{ErrExpired, fmt.Sprintf("key %s (%s) was trusted only until %s (%s)", fp, e.Principals, e.ValidBefore.Format(time.RFC3339), loc)}
		}
		if err == nil {
			return &Signer{Principal: e.Principals, Fingerprint: fp, KeyType: sig.Key.Type()}, nil
		}
		if first == nil {
			first = err
		}
	}
	if !matched {
		return nil, &TrustError{ErrUnknownKey, fmt.Sprintf("signed by %s key %s, which is not in %s", sig.Key.Type(), fp, as.Name)}
	}
	return nil, first
}

// matchList matches s against OpenSSH-style patterns (* and ?), where a
// pattern starting with ! excludes.
func matchList(patterns []string, s string) bool {
	ok := false
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if m, err := path.Match(p, s); err == nil && m {
			if neg {
				return false
			}
			ok = true
		}
	}
	return ok
}
