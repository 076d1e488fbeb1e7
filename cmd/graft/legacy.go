package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// The registration style of graft before cobra, kept so that a command
// written for it (a func(stdout, stderr, args) error that parses its own
// flags with the flag package) still builds and runs after a merge:
// register adds it to the command tree with its arguments passed through
// untouched. Its -h output is the flag package's, on stderr; move it to a
// constructor in commandList (commands.go) to get cobra's help, completion
// and a usage page.

// errUsage marks an error whose message already explains correct usage
// (exit status 2).
var errUsage = errors.New("usage")

// errHelp means -h was given and the flag package already printed help.
var errHelp = errors.New("help shown")

type legacyCommand struct {
	name, summary string
	run           func(stdout, stderr io.Writer, args []string) error
}

var legacyCommands []legacyCommand

func register(name, summary string, run func(stdout, stderr io.Writer, args []string) error) {
	legacyCommands = append(legacyCommands, legacyCommand{name, summary, run})
}

// legacyCobra wraps a registered command.
func legacyCobra(lc legacyCommand, stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:                lc.name,
		Short:              lc.summary,
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error {
			err := lc.run(stdout, stderr, args)
			switch {
			case errors.Is(err, errHelp):
				return nil
			case errors.Is(err, errUsage):
				return &usageError{err.Error()}
			}
			return err
		},
	}
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("graft "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and turns flag errors into usage errors; after
// -h it returns errHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return errHelp
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// parseInterleaved parses flags that may come before or after positional
// arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parsePidArgs parses -p PID (required) and --json, nothing else.
func parsePidArgs(name string, stderr io.Writer, args []string) (pid int, asJSON bool, err error) {
	fs := newFlags(name, stderr)
	p := fs.Int("p", 0, "process ID")
	j := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return 0, false, err
	}
	if *p <= 0 {
		return 0, false, fmt.Errorf("%w: -p PID is required", errUsage)
	}
	if fs.NArg() > 0 {
		return 0, false, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return *p, *j, nil
}
