package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
)

// newFlags makes a flag set that reports errors instead of exiting, so run
// stays testable.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("graft "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and turns flag errors into usage errors. After -h it
// returns errHelp, which callers return as is (run treats it as success).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return errHelp
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// hex formats an address the way every --json output does: "0x..." string.
func hex(v uint64) string { return "0x" + strconv.FormatUint(v, 16) }
