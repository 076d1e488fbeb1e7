package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"graft"
)

func init() {
	register("revert", "take a patch out of a running process", runRevert)
}

type revertOutput struct {
	Pid       int           `json:"pid"`
	Reverted  []string      `json:"reverted"`
	Functions []string      `json:"functions"`
	PauseUS   int64         `json:"pause_us"`
	Orphans   []rangeOutput `json:"orphans,omitempty"`
	// Descriptors: graft memfds left open by a killed graft, closed.
	Descriptors []graft.Descriptor `json:"descriptors,omitempty"`
}

func runRevert(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("revert", stderr)
	pid := fs.Int("p", 0, "`PID` of the process")
	id := fs.String("id", "", "patch `ID` to revert (must be the newest)")
	all := fs.Bool("all", false, "revert every patch")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for a safe point")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pid <= 0 || fs.NArg() != 0 {
		return fmt.Errorf("%w: graft revert -p PID [--id ID | --all] [--json]", errUsage)
	}
	if *all && *id != "" {
		return fmt.Errorf("%w: --id and --all exclude each other", errUsage)
	}
	ctx, stop := interruptible()
	defer stop()
	res, err := graft.Revert(ctx, *pid, graft.RevertOptions{ID: *id, All: *all, Timeout: *timeout})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, revertOutput{Pid: *pid, Reverted: res.Reverted, Functions: res.Functions, PauseUS: res.PauseUS, Orphans: rangesOutput(res.Orphans), Descriptors: res.Descriptors})
	}
	if len(res.Reverted) > 0 {
		fmt.Fprintf(stdout, "reverted %s in pid %d: %s\n", strings.Join(res.Reverted, ", "), *pid, strings.Join(res.Functions, ", "))
	}
	for _, r := range res.Orphans {
		fmt.Fprintf(stdout, "unmapped orphaned graft image %s-%s\n", hex(r.Start), hex(r.End))
	}
	for _, d := range res.Descriptors {
		fmt.Fprintf(stdout, "closed descriptor %d (memfd %s) left by a killed graft\n", d.FD, d.Name)
	}
	fmt.Fprintf(stdout, "  pause: %d µs\n", res.PauseUS)
	return nil
}
