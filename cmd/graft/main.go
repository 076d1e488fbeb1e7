// Command graft live-patches running native Linux x86-64 processes.
//
// The commands are cobra commands, all listed in commands.go; each one's
// logic is a function of its own file that takes the output streams and
// its options, so tests drive it without a subprocess. run is main without
// the exit: it maps every outcome to an exit status (exit.go) and, with
// --json, prints errors as JSON too. Every --json document's type is in
// wire.go. Library packages never print; only this package does.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"

	"graft/internal/osig"
)

// run executes one graft command line and returns its exit status.
func run(stdout, stderr io.Writer, args []string) int {
	resetInterrupt()
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	name := "graft"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	asJSON := slices.Contains(args, "--json")
	if f := root.PersistentFlags().Lookup("json"); f != nil && f.Value.String() == "true" {
		asJSON = true
	}
	e := classify(err)
	if e.message == "" {
		return e.exit // the command has said why (exitWith)
	}
	if asJSON {
		writeJSON(stdout, errorWire{Error: errorBody{Code: e.code, Message: e.message, Exit: e.exit}, Blocked: blockersOut(err)})
	} else {
		fmt.Fprintf(stderr, "%s: %s\n", name, e.message)
		if e.exit == exitUsage && cmd != nil {
			fmt.Fprintf(stderr, "run '%s --help' for usage\n", cmd.CommandPath())
		}
	}
	return e.exit
}

func main() {
	// Commands that hold a process install their own handling through
	// interruptible; SIGPIPE on a closed stdout must not kill graft
	// while it holds one.
	signal.Ignore(osig.Pipe)
	os.Exit(run(os.Stdout, os.Stderr, os.Args[1:]))
}
