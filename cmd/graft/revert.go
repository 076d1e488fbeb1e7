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
	// AllowActive: functions of the new code whose running frames may
	// stay though not proven (their image stays mapped until they leave).
	AllowActive []string
}

func runRevert(stdout, stderr io.Writer, o revertOpts) error {
	pid, id, all, timeout, asJSON := &o.Pid, &o.ID, &o.All, &o.Timeout, &o.JSON
	ctx, stop := interruptible()
	defer stop()
	res, err := graft.Revert(ctx, *pid, graft.RevertOptions{ID: *id, All: *all, Timeout: *timeout, AllowActive: o.AllowActive, Progress: progressPrinter(stderr, "revert")})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, revertOutput{Pid: *pid, Reverted: res.Reverted, Functions: res.Functions, PauseUS: res.PauseUS, Orphans: rangesOutput(res.Orphans), Descriptors: descriptorsWire(res.Descriptors), EmptyRecord: res.EmptyRecord,
			Stayed: framesOut(res.Stayed), Pending: res.Pending, Reaped: res.Reaped, Held: res.Held,
			SwitchedBack: switchesOut(res.SwitchedBack), Unswitched: res.Unswitched})
	}
	for _, id := range res.Reaped {
		fmt.Fprintf(stdout, "unmapped the pending image of reverted patch %s (no thread is in it any more)\n", id)
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
	printStayed(stdout, res.Stayed, "new")
	printSwitched(stdout, res.SwitchedBack, "old")
	if res.Unswitched > 0 {
		fmt.Fprintf(stdout, "  %d switched frame(s) whose call had not returned go on in the old code\n", res.Unswitched)
	}
	for _, id := range res.Pending {
		fmt.Fprintf(stdout, "  image of %s stays mapped while a thread is in it (graft status shows it pending; the next apply or revert that finds it free unmaps it)\n", id)
	}
	if len(res.Reverted) > 0 || len(res.Orphans) > 0 {
		fmt.Fprintf(stdout, "  pause: %d µs\n", res.PauseUS)
	}
	return nil
}
