package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"graft"
)

// frameOut is a frame apply or revert let stay, in --json.
type frameOut struct {
	Tid      int    `json:"tid"`
	Frame    int    `json:"frame"`
	Function string `json:"function"`
	PC       string `json:"pc"`
	Allowed  bool   `json:"allowed,omitempty"`
	Why      string `json:"why"`
}

func framesOut(fs []graft.StayedFrame) []frameOut {
	var out []frameOut
	for _, f := range fs {
		out = append(out, frameOut{Tid: f.Tid, Frame: f.Frame, Function: f.Function, PC: hex(f.PC), Allowed: f.Allowed, Why: f.Why})
	}
	return out
}

// printStayed lists the frames let stay; which is "old" (apply: they
// finish in the old code) or "new" (revert).
func printStayed(w io.Writer, fs []graft.StayedFrame, which string) {
	for _, f := range fs {
		fmt.Fprintf(w, "  let stay: thread %d frame #%d in %s at %s finishes in the %s code: %s\n", f.Tid, f.Frame, f.Function, hex(f.PC), which, f.Why)
	}
}

// blockerOut is one blocking frame in --json.
type blockerOut struct {
	Tid      int    `json:"tid"`
	Frame    int    `json:"frame"`
	Function string `json:"function,omitempty"`
	PC       string `json:"pc"`
	Why      string `json:"why"`
	Allow    string `json:"allow_active,omitempty"`
	Stack    string `json:"stack"`
}

// writeBlockers prints, for --json, every frame an error names as
// blocking: {"pid":N,"error":"..","blocked":[...]}. Nothing when the
// error names none.
func writeBlockers(w io.Writer, pid int, err error) {
	bs := graft.Blockers(err)
	if len(bs) == 0 || errors.Is(err, errUsage) {
		return
	}
	out := struct {
		Pid     int          `json:"pid"`
		Error   string       `json:"error"`
		Blocked []blockerOut `json:"blocked"`
	}{Pid: pid, Error: err.Error()}
	for _, b := range bs {
		out.Blocked = append(out.Blocked, blockerOut{Tid: b.Tid, Frame: b.Frame, Function: b.Function, PC: hex(b.PC), Why: b.Why, Allow: b.Allow, Stack: b.Stack})
	}
	_ = writeJSON(w, out)
}

// pendingOutput is a reverted patch whose image is still mapped.
type pendingOutput struct {
	ID        string   `json:"id"`
	State     string   `json:"state"`
	Base      string   `json:"base"`
	Size      uint64   `json:"size"`
	Functions []string `json:"functions"`
}

func pendingsOutput(ps []graft.PendingStatus) []pendingOutput {
	var out []pendingOutput
	for _, p := range ps {
		out = append(out, pendingOutput{ID: p.ID, State: "reverted, image pending", Base: hex(p.Base), Size: p.Size, Functions: p.Functions})
	}
	return out
}

func printPending(w io.Writer, ps []graft.PendingStatus) {
	for _, p := range ps {
		fmt.Fprintf(w, "%s  reverted, image pending: a thread is still in its new code at %s (%d bytes; %s); the next graft apply or revert that finds it free unmaps it\n",
			p.ID, hex(p.Base), p.Size, strings.Join(p.Functions, ", "))
	}
}
