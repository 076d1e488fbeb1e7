package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"graft"
)

// revertOpts are revert's flags.
type revertOpts struct {
	Pid     int
	ID      string
	All     bool
	Timeout time.Duration
	JSON    bool
}

func runRevert(stdout, stderr io.Writer, o revertOpts) error {
	pid, id, all, timeout, asJSON := &o.Pid, &o.ID, &o.All, &o.Timeout, &o.JSON
	ctx, stop := interruptible()
	defer stop()
	res, err := graft.Revert(ctx, *pid, graft.RevertOptions{ID: *id, All: *all, Timeout: *timeout, Progress: progressPrinter(stderr, "revert")})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, revertOutput{Pid: *pid, Reverted: res.Reverted, Functions: res.Functions, PauseUS: res.PauseUS, Orphans: rangesOutput(res.Orphans), Descriptors: descriptorsWire(res.Descriptors), EmptyRecord: res.EmptyRecord})
	}
	if len(res.Reverted) > 0 {
		fmt.Fprintf(stdout, "reverted %s in pid %d: %s\n", strings.Join(res.Reverted, ", "), *pid, strings.Join(res.Functions, ", "))
	}
	for _, r := range res.Orphans {
		fmt.Fprintf(stdout, "unmapped orphaned graft image %s-%s\n", hex(r.Start), hex(r.End))
	}
	if res.EmptyRecord {
		fmt.Fprintf(stdout, "removed the empty graft record left by a killed revert\n")
	}
	for _, d := range res.Descriptors {
		fmt.Fprintf(stdout, "closed descriptor %d (memfd %s) left by a killed graft\n", d.FD, d.Name)
	}
	fmt.Fprintf(stdout, "  pause: %d µs\n", res.PauseUS)
	return nil
}
