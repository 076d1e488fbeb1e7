// Command graft live-patches running native Linux x86-64 processes.
//
// Each subcommand lives in its own file and registers itself with register
// in an init function; its run function takes the output streams and the
// arguments after the subcommand name, so tests can drive it without a
// subprocess. Library packages never print; only this package does.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	summary string
	run     func(stdout, stderr io.Writer, args []string) error
}

var commands = map[string]command{}

func register(name, summary string, run func(stdout, stderr io.Writer, args []string) error) {
	if _, dup := commands[name]; dup {
		panic("graft: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

// errUsage marks an error whose message already explains correct usage; the
// exit status is 2 instead of 1.
var errUsage = errors.New("usage")

// errHelp means -h was given and the flag package already printed help.
var errHelp = errors.New("help shown")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: graft <command> [options]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "run 'graft <command> -h' for a command's options")
}

// run is main without the process exit, for tests.
func run(stdout, stderr io.Writer, args []string) int {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) < 1 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "graft: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	if err := cmd.run(stdout, stderr, args[1:]); err != nil {
		// A command with exit statuses of its own (play) has printed
		// its message already.
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		if errors.Is(err, errHelp) {
			return 0
		}
		if errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "graft %s: %v\n", args[0], err)
			return 2
		}
		fmt.Fprintf(stderr, "graft %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func main() {
	// Commands that hold a process install their own handling through
	// interruptible; the default here only makes sure a stray signal during
	// a command that holds nothing still exits with the usual status.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Stdout, os.Stderr, os.Args[1:]))
}
