package main

import (
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// A command registered the old way (register, flag package) runs under
// the cobra tree with its own arguments, and its usage errors exit 2.
func TestLegacyRegister(t *testing.T) {
	register("oldstyle", "a command in the pre-cobra style", func(stdout, stderr io.Writer, args []string) error {
		fs := newFlags("oldstyle", stderr)
		n := fs.Int("n", 0, "a number")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if *n <= 0 {
			return fmt.Errorf("%w: -n N is required", errUsage)
		}
		fmt.Fprintf(stdout, "n=%d\n", *n)
		return nil
	})
	defer func() { legacyCommands = legacyCommands[:len(legacyCommands)-1] }()
	out, errOut, code := runGraft("oldstyle", "-n", "3")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "n=3\n", out)
	_, errOut, code = runGraft("oldstyle")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "-n N is required")
	_, _, code = runGraft("oldstyle", "-h")
	require.Equal(t, 0, code)
}
