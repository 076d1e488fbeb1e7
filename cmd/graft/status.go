package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"graft"
)

func init() {
	register("status", "list the patches in effect in a process", runStatus)
}

type statusOutput struct {
	Pid     int                 `json:"pid"`
	Record  string              `json:"record,omitempty"`
	Patches []patchStatusOutput `json:"patches"`
	Orphans []rangeOutput       `json:"orphans,omitempty"`
	// TracedBy: another process (a graft at work, a debugger) traces
	// the target right now.
	TracedBy int    `json:"traced_by,omitempty"`
	Tracer   string `json:"tracer,omitempty"`
	// Retained: images of reverted Go patches (still mapped).
	Retained []graft.RetainedImage `json:"retained,omitempty"`
}

type rangeOutput struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

func rangesOutput(rs []graft.Range) []rangeOutput {
	var out []rangeOutput
	for _, r := range rs {
		out = append(out, rangeOutput{hex(r.Start), hex(r.End)})
	}
	return out
}

// printOrphans explains images a killed graft left behind.
func printOrphans(w io.Writer, rs []graft.Range) {
	for _, r := range rs {
		fmt.Fprintf(w, "orphaned graft image %s-%s (left by a graft killed before its pause; no jump leads there; 'graft revert --all' unmaps it)\n", hex(r.Start), hex(r.End))
	}
}

type patchStatusOutput struct {
	ID           string           `json:"id"`
	Applied      time.Time        `json:"applied"`
	OldBuildID   string           `json:"old_build_id"`
	NewBuildID   string           `json:"new_build_id"`
	Functions    []string         `json:"functions"`
	Redirects    []redirectOutput `json:"redirects"`
	Sites        []siteOutput     `json:"sites"`
	Base         string           `json:"base"`
	Size         uint64           `json:"size"`
	Unloaded     bool             `json:"unloaded,omitempty"`
	SupersededBy string           `json:"superseded_by,omitempty"`
	Intact       bool             `json:"intact"`
}

type redirectOutput struct {
	Name    string `json:"name"`
	Entry   string `json:"entry,omitempty"`
	New     string `json:"new"`
	NewSize uint64 `json:"new_size"`
}

func runStatus(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("status", stderr)
	pid := fs.Int("p", 0, "`PID` of the process")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pid <= 0 || fs.NArg() != 0 {
		return fmt.Errorf("%w: graft status -p PID [--json]", errUsage)
	}
	st, err := graft.Status(*pid)
	if err != nil {
		return err
	}
	if *asJSON {
		out := statusOutput{Pid: st.Pid, Patches: []patchStatusOutput{}, Orphans: rangesOutput(st.Orphans), TracedBy: st.TracedBy, Tracer: st.Tracer}
		if st.Record != 0 {
			out.Record = hex(st.Record)
		}
		for _, p := range st.Patches {
			po := patchStatusOutput{
				ID: p.ID, Applied: p.Applied, OldBuildID: p.OldBuildID, NewBuildID: p.NewBuildID,
				Functions: p.Functions, Sites: sitesOutput(p.Sites), Base: hex(p.Base), Size: p.Size,
				Unloaded: p.Unloaded, SupersededBy: p.SupersededBy, Intact: p.Intact, Redirects: []redirectOutput{},
			}
			for _, r := range p.Redirects {
				ro := redirectOutput{Name: r.Name, New: hex(r.New), NewSize: r.NewSize}
				if r.Entry != 0 {
					ro.Entry = hex(r.Entry)
				}
				po.Redirects = append(po.Redirects, ro)
			}
			out.Patches = append(out.Patches, po)
		}
		out.Retained = st.Retained
		return writeJSON(stdout, out)
	}
	for _, r := range st.Retained {
		fmt.Fprintf(stdout, "reverted Go patch %s: image %s (%d bytes) stays mapped, its module registered with the Go runtime\n", r.ID, hex(r.Base), r.Size)
	}
	if st.TracedBy != 0 {
		// An apply in progress has mapped its image before recording
		// it, and writes the record before the jumps: what looks
		// orphaned or not intact may be its work, not a killed graft's.
		fmt.Fprintf(stdout, "pid %d is traced by pid %d (%s) right now: if that is a graft, its apply or revert is in progress and what follows may be its work half done; run status again once it has finished\n", *pid, st.TracedBy, st.Tracer)
		for _, r := range st.Orphans {
			fmt.Fprintf(stdout, "unrecorded graft image %s-%s (no jump leads there; an apply in progress, or left by a killed graft)\n", hex(r.Start), hex(r.End))
		}
	} else {
		printOrphans(stdout, st.Orphans)
	}
	if len(st.Patches) == 0 {
		fmt.Fprintf(stdout, "pid %d: no patches applied\n", *pid)
		return nil
	}
	fmt.Fprintf(stdout, "pid %d: %d patch(es), oldest first (record at %s)\n", *pid, len(st.Patches), hex(st.Record))
	for _, p := range st.Patches {
		state := "in effect"
		switch {
		case p.Unloaded:
			state = "superseded by " + p.SupersededBy + ", code unloaded"
		case !p.Intact:
			state = "NOT INTACT: a jump was overwritten"
		}
		fmt.Fprintf(stdout, "%s  applied %s  %s\n", p.ID, p.Applied.Format(time.RFC3339), state)
		fmt.Fprintf(stdout, "  build %s -> %s\n", p.OldBuildID, p.NewBuildID)
		fmt.Fprintf(stdout, "  code at %s (%d bytes)\n", hex(p.Base), p.Size)
		fmt.Fprintf(stdout, "  functions: %s\n", strings.Join(p.Functions, ", "))
		if !p.SelfContained && !p.Unloaded {
			nb := p.NewPath
			if nb == "" {
				nb = "(not recorded)"
			}
			fmt.Fprintf(stdout, "  record lacks the image's CFI and symbols (old patch format): unwinding through it and stacking on it need NEW at %s\n", nb)
		}
	}
	return nil
}
