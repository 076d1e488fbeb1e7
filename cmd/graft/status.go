package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"graft"
)

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

func runStatus(stdout, stderr io.Writer, pidv int, asJSONv bool) error {
	pid, asJSON := &pidv, &asJSONv
	st, err := graft.Status(*pid)
	if err != nil {
		return err
	}
	if *asJSON {
		out := statusOutput{Pid: st.Pid, Patches: []patchStatusOutput{}, Orphans: rangesOutput(st.Orphans), TracedBy: st.TracedBy, Tracer: st.Tracer, Descriptors: descriptorsWire(st.Descriptors), Pending: pendingsOutput(st.Pending)}
		if st.Record != 0 {
			out.Record = hex(st.Record)
		}
		for _, p := range st.Patches {
			po := patchStatusOutput{
				ID: p.ID, Applied: p.Applied, OldBuildID: p.OldBuildID, NewBuildID: p.NewBuildID,
				Functions: p.Functions, Sites: sitesOutput(p.Sites), Base: hex(p.Base), Size: p.Size,
				Unloaded: p.Unloaded, SupersededBy: p.SupersededBy, Intact: p.Intact, Redirects: []redirectOutput{},
				Signer: p.Signer, Module: p.Module, ModulePath: p.ModulePath,
				Transfers: p.Transfers, Irreversible: p.Irreversible,
				Switched: p.Switched, SwitchWaiting: p.SwitchWaiting,
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
	printPending(stdout, st.Pending)
	for _, d := range st.Descriptors {
		if st.TracedBy != 0 {
			fmt.Fprintf(stdout, "descriptor %d open to memfd %s (%d bytes): the apply in progress, or left by a killed graft\n", d.FD, d.Name, d.Size)
			continue
		}
		fmt.Fprintf(stdout, "descriptor %d open to memfd %s (%d bytes), left by a graft killed mid-way; 'graft revert -p %d --all' closes it\n", d.FD, d.Name, d.Size, *pid)
	}
	if len(st.Patches) == 0 && st.Record != 0 && st.TracedBy == 0 {
		fmt.Fprintf(stdout, "pid %d: no patches applied, but an empty graft record is mapped at %s (a revert killed before it removed it); 'graft revert -p %d --all' removes it\n", *pid, hex(st.Record), *pid)
		return nil
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
		if p.ModulePath != "" {
			fmt.Fprintf(stdout, "  in %s\n", p.ModulePath)
		}
		fmt.Fprintf(stdout, "  code at %s (%d bytes)\n", hex(p.Base), p.Size)
		fmt.Fprintf(stdout, "  functions: %s\n", strings.Join(p.Functions, ", "))
		if p.Signer != nil {
			fmt.Fprintf(stdout, "  signed by %s (%s key %s)\n", p.Signer.Principal, p.Signer.KeyType, p.Signer.Fingerprint)
		} else {
			fmt.Fprintf(stdout, "  unsigned: applied with no trust policy\n")
		}
		printTransfers(stdout, p.Transfers, p.Irreversible)
		if p.Switched > 0 {
			fmt.Fprintf(stdout, "  frames switched to the new code: %d (%d still waiting for their call to return)\n", p.Switched, p.SwitchWaiting)
		}
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
