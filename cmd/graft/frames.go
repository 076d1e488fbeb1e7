package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"graft"
	"graft/elfpatch"
	"graft/tracer"
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

// blockersOut lists, for --json errors, every frame err names as
// blocking (none: nil).
func blockersOut(err error) []blockerOut {
	var out []blockerOut
	for _, b := range graft.Blockers(err) {
		out = append(out, blockerOut{Tid: b.Tid, Frame: b.Frame, Function: b.Function, PC: hex(b.PC), Why: b.Why, Allow: b.Allow, Stack: b.Stack})
	}
	return out
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

// framesNow is what `graft diff -p PID` found on the stacks of PID: the
// frames inside changed functions that would stay (proven or allowed)
// and those that would block an apply right now.
type framesNow struct {
	Stayed  []frameOut   `json:"stayed"`
	Blocked []blockerOut `json:"blocked"`
	// Error is why the check could not be made ("" if it was).
	Error string `json:"error,omitempty"`
}

// checkFrames runs a dry-run apply of NEW that checks the stacks once,
// without waiting: nothing is written. The process must run OLD (its
// executable, or the NEW of its newest patch).
func checkFrames(pid int, oldBuildID, newBin string) *framesNow {
	ctx, stop := interruptible()
	defer stop()
	fr := &framesNow{Stayed: []frameOut{}, Blocked: []blockerOut{}}
	running := ""
	if st, err := graft.Status(pid); err != nil {
		fr.Error = err.Error()
		return fr
	} else if n := len(st.Patches); n > 0 {
		running = st.Patches[n-1].NewBuildID
	} else if b, err := elfpatch.Open(tracer.ExePath(pid)); err == nil {
		running = b.BuildID()
	}
	if running != oldBuildID {
		fr.Error = fmt.Sprintf("pid %d runs build %s, not OLD (%s): its frames say nothing about this patch", pid, orNone(running), orNone(oldBuildID))
		return fr
	}
	res, err := graft.Apply(ctx, pid, graft.Source{NewBinary: newBin}, graft.ApplyOptions{DryRun: true, Once: true})
	if err != nil {
		bs := graft.Blockers(err)
		if len(bs) == 0 {
			fr.Error = err.Error()
			return fr
		}
		for _, b := range bs {
			fr.Blocked = append(fr.Blocked, blockerOut{Tid: b.Tid, Frame: b.Frame, Function: b.Function, PC: hex(b.PC), Why: b.Why, Allow: b.Allow, Stack: b.Stack})
		}
		if fs := framesOut(graft.StayedIn(err)); fs != nil {
			fr.Stayed = fs
		}
		return fr
	}
	if fs := framesOut(res.Stayed); fs != nil {
		fr.Stayed = fs
	}
	return fr
}

func printFramesNow(w io.Writer, pid int, fr *framesNow) {
	fmt.Fprintf(w, "\nframes of pid %d in changed functions right now:\n", pid)
	if fr.Error != "" {
		fmt.Fprintf(w, "  could not check: %s\n", fr.Error)
		return
	}
	if len(fr.Stayed) == 0 && len(fr.Blocked) == 0 {
		fmt.Fprintln(w, "  none: an apply would go through now")
		return
	}
	for _, f := range fr.Stayed {
		fmt.Fprintf(w, "  stays:  thread %d frame #%d in %s at %s: %s\n", f.Tid, f.Frame, f.Function, f.PC, f.Why)
	}
	for _, b := range fr.Blocked {
		fmt.Fprintf(w, "  BLOCKS: thread %d frame #%d in %s at %s: %s", b.Tid, b.Frame, b.Function, b.PC, b.Why)
		if b.Allow != "" {
			fmt.Fprintf(w, " (--allow-active %s lets it finish in the old code)", b.Allow)
		}
		fmt.Fprintln(w)
	}
	if len(fr.Blocked) > 0 {
		fmt.Fprintln(w, "  an apply now would wait for these frames to leave, up to --timeout")
	}
}

// printSwitched lists the frames carried into the other version's code
// ("new" for apply, "old" for revert), one line per function.
func printSwitched(w io.Writer, rs []graft.SwitchRecord, which string) {
	if len(rs) == 0 {
		return
	}
	var order []string
	tids := map[string][]string{}
	for _, r := range rs {
		if _, ok := tids[r.Function]; !ok {
			order = append(order, r.Function)
		}
		tids[r.Function] = append(tids[r.Function], strconv.Itoa(r.Tid))
	}
	verb := "switched"
	if strings.HasSuffix(which, " (would be)") {
		which, verb = strings.TrimSuffix(which, " (would be)"), "that would be switched"
	}
	fmt.Fprintf(w, "  frames %s to the %s code, each when its call returns (%d):\n", verb, which, len(rs))
	for _, fn := range order {
		fmt.Fprintf(w, "    %-24s thread %s\n", fn, strings.Join(tids[fn], ", "))
	}
}
