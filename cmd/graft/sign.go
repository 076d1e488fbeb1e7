package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"graft"
)

// signOptions are sign's inputs: the patch, the private key and where the
// signature goes ("" = PATCH.sig).
type signOptions struct {
	Patch, Key, Out string
	JSON            bool
}

func newSignCmd(stdout, stderr io.Writer) *cobra.Command {
	var o signOptions
	c := &cobra.Command{
		Use:   "sign -f KEY PATCH",
		Short: "sign a patch file with an OpenSSH key",
		Long: `Writes an OpenSSH signature of PATCH for the namespace "graft" (PATCH.sig, or -o
FILE), the same as 'ssh-keygen -Y sign -f KEY -n graft PATCH': either command's
signature verifies with the other. A key behind a passphrase or in an agent:
sign with ssh-keygen. Hosts trust signers through an OpenSSH allowed_signers
file (README, "Signed patches").`,
		Example: "  graft sign -f ~/.ssh/id_ed25519 fix.graft",
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) != 1 || o.Key == "" {
				return usagef("graft sign -f KEY [-o FILE] PATCH")
			}
			o.Patch, o.JSON = args[0], jsonFlag(c)
			return runSign(stdout, o)
		},
	}
	c.Flags().StringVarP(&o.Key, "key", "f", "", "OpenSSH private `KEY` file (as for ssh-keygen -Y sign -f)")
	c.Flags().StringVarP(&o.Out, "output", "o", "", "write the signature to `FILE` (default PATCH.sig)")
	return c
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
