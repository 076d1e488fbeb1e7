package main

import (
	"fmt"
	"io"
	"os"

	"graft"
)

func init() {
	register("sign", "sign a patch file with an OpenSSH key", runSignCmd)
}

// signOptions are sign's inputs: the patch, the private key and where the
// signature goes ("" = PATCH.sig).
type signOptions struct {
	Patch, Key, Out string
	JSON            bool
}

type signOutput struct {
	Patch     string        `json:"patch"`
	Signature string        `json:"signature"`
	Signer    *graft.Signer `json:"signer"`
}

func runSignCmd(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("sign", stderr)
	key := fs.String("f", "", "OpenSSH private `KEY` file (as for ssh-keygen -Y sign -f)")
	out := fs.String("o", "", "write the signature to `FILE` (default PATCH.sig)")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: graft sign -f KEY [-o FILE] PATCH")
		fmt.Fprintln(stderr, "Writes an OpenSSH signature for the namespace \"graft\", the same as")
		fmt.Fprintln(stderr, "ssh-keygen -Y sign -f KEY -n graft PATCH; either verifies with the other.")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *key == "" {
		return fmt.Errorf("%w: graft sign -f KEY [-o FILE] PATCH", errUsage)
	}
	return runSign(stdout, signOptions{Patch: pos[0], Key: *key, Out: *out, JSON: *asJSON})
}

func runSign(stdout io.Writer, o signOptions) error {
	armored, who, err := graft.SignPatchFile(o.Patch, o.Key)
	if err != nil {
		return err
	}
	if o.Out == "" {
		o.Out = o.Patch + ".sig"
	}
	if err := os.WriteFile(o.Out, armored, 0o644); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if o.JSON {
		return writeJSON(stdout, signOutput{Patch: o.Patch, Signature: o.Out, Signer: who})
	}
	fmt.Fprintf(stdout, "signed %s with %s key %s: %s\n", o.Patch, who.KeyType, who.Fingerprint, o.Out)
	return nil
}
