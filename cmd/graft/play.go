package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"graft"
	"graft/internal/playbook"
)

// PlayOptions are graft play's inputs, without the flag package.
type PlayOptions struct {
	// File is the playbook.
	File string
	// Check resolves targets, builds the patch and runs the baseline
	// checks, writing nothing to any process.
	Check bool
	// JSON prints the report as JSON on stdout (progress goes to stderr).
	JSON bool
	// AllowedSigners overrides the trust policy's signers file, as for
	// apply (trust.go).
	AllowedSigners string
}

func newPlayCmd(stdout, stderr io.Writer) *cobra.Command {
	var o PlayOptions
	c := &cobra.Command{
		Use:   "play PLAYBOOK.yaml",
		Short: "run a patch playbook (YAML) on this host",
		Long: `Rolls a patch out to every process on this host that needs it, as a YAML
playbook says: which patch, which processes, in what batches, and the checks
that decide whether a batch is healthy (README, "graft play"). Every mistake
in the playbook is reported at file:line:col before anything runs. The trust
policy applies to every target, as for apply.

Exit status: 0 every target patched (or already), 1 invalid playbook or usage,
2 a target failed (everything this run patched rolled back, unless
on_failure: stop), 3 a rollback failed, 4 aborted before touching any
process, 5 some target skipped as unhealthy.`,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				fmt.Fprintf(stderr, "graft play: need exactly one playbook file, got %d arguments; 'graft play --help' for usage\n", len(args))
				return exitWith(playbook.ExitInvalid)
			}
			o.File, o.JSON = args[0], jsonFlag(c)
			ctx, stop := interruptible()
			defer stop()
			return exitWith(runPlay(ctx, stdout, stderr, o))
		},
	}
	c.Flags().BoolVar(&o.Check, "check", false, "dry run: resolve targets, build the patch, run the baseline checks; write nothing")
	c.Flags().StringVar(&o.AllowedSigners, "allowed-signers", "", "OpenSSH allowed_signers `FILE` whose keys may sign patches (default "+graft.DefaultAllowedSigners+" if it exists)")
	return c
}

// runPlay runs a playbook and returns the exit status (playbook.Exit*).
// Progress lines go to stdout as they happen (stderr with JSON), then the
// recap (or the JSON report).
func runPlay(ctx context.Context, stdout, stderr io.Writer, opts PlayOptions) int {
	pb, err := playbook.Load(opts.File)
	if err != nil {
		var pe playbook.Errors
		if errors.As(err, &pe) {
			fmt.Fprintf(stderr, "graft play: %d error(s) in the playbook, nothing was run:\n%v\n", len(pe), err)
		} else {
			fmt.Fprintf(stderr, "graft play: %v\n", err)
		}
		return playbook.ExitInvalid
	}
	progressOut := stdout
	if opts.JSON {
		progressOut = stderr
	}
	trust, err := graft.LoadTrustPolicy(opts.AllowedSigners, "")
	if err != nil {
		fmt.Fprintf(stderr, "graft play: %v\n", err)
		return playbook.ExitAborted
	}
	var mu sync.Mutex
	ro := playbook.Options{Check: opts.Check, Trust: trust, Progress: func(line string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(progressOut, "%s\n", line)
	}}
	title := pb.Name
	if title == "" {
		title = opts.File
	}
	if opts.Check {
		ro.Progress(fmt.Sprintf("PLAY %s (check: nothing is written)", title))
	} else {
		ro.Progress(fmt.Sprintf("PLAY %s", title))
	}
	rep := playbook.Run(ctx, pb, ro)
	if opts.JSON {
		if err := writeJSON(stdout, rep); err != nil {
			fmt.Fprintf(stderr, "graft play: %v\n", err)
		}
		return rep.ExitCode
	}
	printRecap(stdout, rep)
	return rep.ExitCode
}

// printRecap prints one line per target and the counts, which add up to
// the number of targets.
func printRecap(w io.Writer, rep *playbook.Report) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "RECAP %d target(s)\n", rep.Total)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, t := range rep.Targets {
		batch := fmt.Sprint(t.Batch)
		switch {
		case t.Followed:
			batch = "follow"
		case t.Batch == 0:
			batch = "-"
		}
		detail := t.PatchID
		if t.PauseUS > 0 {
			detail += fmt.Sprintf(" pause %d µs", t.PauseUS)
		}
		if t.Blocker != nil {
			detail = fmt.Sprintf("thread %d in %s: %s", t.Blocker.Tid, t.Blocker.Function, t.Blocker.Stack)
		} else if t.Error != "" {
			detail = strings.TrimSpace(detail + " " + t.Error)
		}
		fmt.Fprintf(tw, "  pid %d\t%s\tbatch %s\t%s\t%s\n", t.Pid, t.Comm, batch, t.Outcome, detail)
	}
	tw.Flush()
	var counts []string
	for _, o := range playbook.Outcomes {
		if rep.Check != (o == playbook.WouldApply) && o == playbook.WouldApply {
			continue
		}
		counts = append(counts, fmt.Sprintf("%s=%d", strings.ToLower(string(o)), rep.Counts[o]))
	}
	fmt.Fprintf(w, "%s (total %d)\n", strings.Join(counts, " "), rep.Total)
	if rep.Failure != "" {
		fmt.Fprintf(w, "failure: %s\n", rep.Failure)
	}
	if rep.Aborted != "" {
		fmt.Fprintf(w, "aborted, no process touched: %s\n", rep.Aborted)
	}
	fmt.Fprintf(w, "exit %d\n", rep.ExitCode)
}
