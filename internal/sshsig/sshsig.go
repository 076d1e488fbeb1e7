// Package sshsig reads, checks and makes OpenSSH signatures
// (`ssh-keygen -Y sign`), and reads OpenSSH allowed_signers files.
//
// The format is OpenSSH's PROTOCOL.sshsig. An armored signature is the
// base64 of this blob between "-----BEGIN SSH SIGNATURE-----" and
// "-----END SSH SIGNATURE-----", wrapped at 70 columns:
//
//	byte[6]  "SSHSIG"
//	uint32   version (1)
//	string   public key (SSH wire format)
//	string   namespace
//	string   reserved ("")
//	string   hash algorithm ("sha256" or "sha512")
//	string   signature (SSH wire format: string format, string blob)
//
// What the key signs is not the message but
//
//	byte[6]  "SSHSIG"
//	string   namespace
//	string   reserved
//	string   hash algorithm
//	string   H(message)
//
// so a signature made for one namespace (say "file") never verifies for
// another ("graft"): a key that signs release tarballs cannot be tricked
// into signing a patch.
//
// Nothing here decides whom to trust: Verify proves that the key in the
// signature signed the message for the namespace; AllowedSigners.Check
// decides whether that key may sign for that namespace at that time.
package sshsig

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

const (
	magic      = "SSHSIG"
	version    = 1
	armorBegin = "-----BEGIN SSH SIGNATURE-----"
	armorEnd   = "-----END SSH SIGNATURE-----"
	wrap       = 70
)

// Signature is a parsed OpenSSH signature.
type Signature struct {
	Key       ssh.PublicKey
	Namespace string
	HashAlg   string
	Sig       *ssh.Signature
}

// FormatError says why bytes are not an OpenSSH signature.
type FormatError struct{ Msg string }

func (e *FormatError) Error() string { return "not an OpenSSH signature: " + e.Msg }

// ErrBadSignature means the signature does not match the message: the
// message or the signature was changed after signing.
var ErrBadSignature = errors.New("signature does not match the file (the file or its signature was changed after signing)")

// Parse reads an armored signature.
func Parse(armored []byte) (*Signature, error) {
	s := strings.TrimSpace(string(armored))
	if !strings.HasPrefix(s, armorBegin) {
		return nil, &FormatError{"missing " + armorBegin}
	}
	s = s[len(armorBegin):]
	end := strings.Index(s, armorEnd)
	if end < 0 {
		return nil, &FormatError{"missing " + armorEnd}
	}
	body := strings.Join(strings.Fields(s[:end]), "")
	blob, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, &FormatError{"bad base64: " + err.Error()}
	}
	return parseBlob(blob)
}

func parseBlob(b []byte) (*Signature, error) {
	if len(b) < len(magic)+4 || string(b[:len(magic)]) != magic {
		return nil, &FormatError{"bad magic"}
	}
	b = b[len(magic):]
	if v := binary.BigEndian.Uint32(b); v != version {
		return nil, &FormatError{fmt.Sprintf("version %d (only %d is known)", v, version)}
	}
	b = b[4:]
	var fields [5][]byte
	for i := range fields {
		f, rest, ok := readString(b)
		if !ok {
			return nil, &FormatError{"truncated"}
		}
		fields[i], b = f, rest
	}
	if len(b) != 0 {
		return nil, &FormatError{"trailing bytes"}
	}
	key, err := ssh.ParsePublicKey(fields[0])
	if err != nil {
		return nil, &FormatError{"public key: " + err.Error()}
	}
	hashAlg := string(fields[3])
	if hashAlg != "sha256" && hashAlg != "sha512" {
		return nil, &FormatError{fmt.Sprintf("hash algorithm %q", hashAlg)}
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(fields[4], sig); err != nil {
		return nil, &FormatError{"signature: " + err.Error()}
	}
	return &Signature{Key: key, Namespace: string(fields[1]), HashAlg: hashAlg, Sig: sig}, nil
}

func readString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func digest(hashAlg string, msg []byte) []byte {
	if hashAlg == "sha256" {
		h := sha256.Sum256(msg)
		return h[:]
	}
	h := sha512.Sum512(msg)
	return h[:]
}

// signedData is what the key signs for msg.
func signedData(namespace, hashAlg string, msg []byte) []byte {
	b := []byte(magic)
	b = appendString(b, []byte(namespace))
	b = appendString(b, nil)
	b = appendString(b, []byte(hashAlg))
	return appendString(b, digest(hashAlg, msg))
}

// Verify checks that s is a signature of msg by s.Key for s.Namespace.
// It does not say whether the key is trusted (see AllowedSigners).
func (s *Signature) Verify(msg []byte) error {
	if _, isCert := s.Key.(*ssh.Certificate); isCert {
		return errors.New("signatures made with an SSH certificate are not supported: sign with the plain key")
	}
	// ssh-rsa (SHA-1) signatures are refused by OpenSSH for sshsig too.
	if s.Sig.Format == ssh.KeyAlgoRSA {
		return errors.New("RSA signature with SHA-1 (ssh-rsa) is not accepted: sign again with a current ssh-keygen")
	}
	if err := s.Key.Verify(signedData(s.Namespace, s.HashAlg, msg), s.Sig); err != nil {
		return ErrBadSignature
	}
	return nil
}

// Fingerprint is the key's fingerprint as ssh-keygen prints it
// ("SHA256:...").
func Fingerprint(k ssh.PublicKey) string { return ssh.FingerprintSHA256(k) }

// Sign signs msg for namespace with signer, as `ssh-keygen -Y sign -n
// namespace` does (SHA-512; RSA keys sign with rsa-sha2-512), and returns
// the armored signature.
func Sign(signer ssh.Signer, namespace string, msg []byte) ([]byte, error) {
	if namespace == "" {
		return nil, errors.New("sign: empty namespace")
	}
	const hashAlg = "sha512"
	data := signedData(namespace, hashAlg, msg)
	var sig *ssh.Signature
	var err error
	if signer.PublicKey().Type() == ssh.KeyAlgoRSA {
		as, ok := signer.(ssh.AlgorithmSigner)
		if !ok {
			return nil, errors.New("sign: this RSA key cannot sign with SHA-512")
		}
		sig, err = as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = signer.Sign(rand.Reader, data)
	}
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	blob := []byte(magic)
	blob = binary.BigEndian.AppendUint32(blob, version)
	blob = appendString(blob, signer.PublicKey().Marshal())
	blob = appendString(blob, []byte(namespace))
	blob = appendString(blob, nil)
	blob = appendString(blob, []byte(hashAlg))
	blob = appendString(blob, ssh.Marshal(sig))
	return armor(blob), nil
}

func armor(blob []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(blob)
	var out bytes.Buffer
	out.WriteString(armorBegin + "\n")
	for len(enc) > wrap {
		out.WriteString(enc[:wrap] + "\n")
		enc = enc[wrap:]
	}
	out.WriteString(enc + "\n")
	out.WriteString(armorEnd + "\n")
	return out.Bytes()
}
