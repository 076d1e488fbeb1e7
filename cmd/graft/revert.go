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
	Stayed    []frameOut    `json:"stayed,omitempty"`
	Pending   []string      `json:"pending,omitempty"`
	Reaped    []string      `json:"reaped,omitempty"`
	// Held: per thread, stops and held time by cause (graft.ThreadHold).
	Held []graft.ThreadHold `json:"held,omitempty"`
}

func runRevert(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("revert", stderr)
	pid := fs.Int("p", 0, "`PID` of the process")
	id := fs.String("id", "", "patch `ID` to revert (must be the newest)")
	all := fs.Bool("all", false, "revert every patch")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for a safe point")
	allow := fs.String("allow-active", "", "`FUNC[,FUNC]` of the new code that may stay on a stack (running frames finish in the new code; its image stays mapped until they leave)")
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
	ropts := graft.RevertOptions{ID: *id, All: *all, Timeout: *timeout}
	for _, f := range strings.Split(*allow, ",") {
		if f = strings.TrimSpace(f); f != "" {
			ropts.AllowActive = append(ropts.AllowActive, f)
		}
	}
	res, err := graft.Revert(ctx, *pid, ropts)
	if err != nil {
		if *asJSON {
			writeBlockers(stdout, *pid, err)
		}
		return err
	}
	if *asJSON {
		return writeJSON(stdout, revertOutput{Pid: *pid, Reverted: res.Reverted, Functions: res.Functions, PauseUS: res.PauseUS, Orphans: rangesOutput(res.Orphans),
			Stayed: framesOut(res.Stayed), Pending: res.Pending, Reaped: res.Reaped, Held: res.Held})
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
	printStayed(stdout, res.Stayed, "new")
	for _, id := range res.Pending {
		fmt.Fprintf(stdout, "  image of %s stays mapped while a thread is in it (graft status shows it pending; the next apply or revert that finds it free unmaps it)\n", id)
	}
	if len(res.Reverted) > 0 || len(res.Orphans) > 0 {
		fmt.Fprintf(stdout, "  pause: %d µs\n", res.PauseUS)
	}
	return nil
}
