package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"graft/elfpatch"
)

// diffOpts are diff's flags and arguments.
type diffOpts struct {
	Old, New string
	Out      string
	Force    bool
	JSON     bool
	State    string // the operator's state description (--state)
	Pid      int    // show the frames of this running process (-p)
}

func runDiff(stdout, stderr io.Writer, o diffOpts) error {
	pos := []string{o.Old, o.New}
	asJSON, out, force := &o.JSON, &o.Out, &o.Force
	statePath, pid := &o.State, &o.Pid
	old, err := elfpatch.Open(pos[0])
	if err != nil {
		return err
	}
	new, err := elfpatch.Open(pos[1])
	if err != nil {
		return err
	}
	rules, err := loadStateRules(*statePath)
	if err != nil {
		return err
	}
	var report *elfpatch.Report
	var refused error
	if *out != "" {
		opts := []elfpatch.BuildOption{elfpatch.WithRules(rules)}
		if *force {
			opts = append(opts, elfpatch.AllowRefused())
		}
		p, err := elfpatch.BuildPatch(old, new, opts...)
		var re *elfpatch.RefusedError
		switch {
		case errors.As(err, &re):
			report, refused = re.Report, err
			// The operator's decisions may be what is missing: the
			// state description to fill is written all the same.
			if err := writeStateDesc(stdout, *out, re.Report, rules, *asJSON); err != nil {
				return err
			}
		case err != nil:
			// The diff itself worked (the image could not be planned):
			// show it, then say why there is no patch.
			report, refused = nil, fmt.Errorf("no patch written to %s: %w", *out, err)
			if report, err = elfpatch.Diff(old, new); err != nil {
				return refused
			}
		default:
			report = p.Report
			if err := writePatchFile(*out, p); err != nil {
				return err
			}
			if err := writeStateDesc(stdout, *out, p.Report, rules, *asJSON); err != nil {
				return err
			}
		}
	} else {
		report, err = elfpatch.DiffRules(old, new, rules)
		if err != nil {
			return err
		}
	}
	var fr *framesNow
	if *pid > 0 {
		fr = checkFrames(*pid, report.OldBuildID, pos[1])
	}
	if *asJSON {
		var doc any = reportJSON(report)
		if fr != nil {
			doc = struct {
				*reportOutput
				Frames *framesNow `json:"frames"`
			}{reportJSON(report), fr}
		}
		if err := writeJSON(stdout, doc); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "old %s (build-id %s)\nnew %s (build-id %s)\n", pos[0], orNone(report.OldBuildID), pos[1], orNone(report.NewBuildID))
		printReport(stdout, report)
		if fr != nil {
			printFramesNow(stdout, *pid, fr)
		}
		if *out != "" && refused == nil {
			fmt.Fprintf(stdout, "\npatch written to %s\n", *out)
		}
	}
	var re *elfpatch.RefusedError
	if errors.As(refused, &re) {
		return fmt.Errorf("no patch written to %s: %w (use --force to write it anyway)", *out, refused)
	}
	if refused != nil {
		return refused
	}
	return nil
}

// writePatchFile writes through a temporary file and a rename, so a patch
// file that exists is always complete.
func writePatchFile(path string, p *elfpatch.Patch) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".graft-patch-*")
	if err != nil {
		return fmt.Errorf("write patch %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := p.WriteTo(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write patch %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write patch %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write patch %s: %w", path, err)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// funcLabel names a function the way people look for it: static ones with
// their file.
func funcLabel(f elfpatch.Func) string {
	if f.File != "" {
		return f.Name + " [" + f.File + "]"
	}
	return f.Name
}

// printReport writes the human-readable form of a diff report.
func printReport(w io.Writer, r *elfpatch.Report) {
	fmt.Fprintf(w, "verdict: %s\n", r.Verdict)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	section := func(title string, n int) bool {
		if n == 0 {
			return false
		}
		tw.Flush()
		fmt.Fprintf(w, "\n%s (%d):\n", title, n)
		return true
	}
	if section("changed functions", len(r.Changed)) {
		for _, f := range r.Changed {
			note := "patchable"
			if !f.Patchable {
				note = "NOT PATCHABLE: " + f.Why
			} else if f.Pad > 0 {
				note = fmt.Sprintf("patchable (jump spills %d bytes into padding)", f.Pad)
			}
			extra := ""
			if f.Origin != "" {
				extra += " clone of " + f.Origin
			}
			if len(f.Parts) > 0 {
				extra += " with " + strings.Join(f.Parts, ", ")
			}
			if f.OldName != "" {
				extra += " (was " + f.OldName + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\told %s+%d\tnew %s+%d\t%s%s\n", funcLabel(f), f.Source, hex(f.OldAddr), f.OldSize, hex(f.NewAddr), f.NewSize, note, extra)
		}
	}
	if section("added functions", len(r.Added)) {
		for _, f := range r.Added {
			fmt.Fprintf(tw, "  %s\t%s\tnew %s+%d\n", funcLabel(f), f.Source, hex(f.NewAddr), f.NewSize)
		}
	}
	if section("removed functions", len(r.Removed)) {
		for _, f := range r.Removed {
			fmt.Fprintf(tw, "  %s\t%s\told %s+%d\n", funcLabel(f), f.Source, hex(f.OldAddr), f.OldSize)
		}
	}
	if section("globals", len(r.Globals)) {
		for _, g := range r.Globals {
			name := g.Name
			if g.File != "" {
				name += " [" + g.File + "]"
			}
			if g.Function != "" {
				name += " in " + g.Function
			}
			detail := ""
			if g.OldType != g.NewType && g.OldType != "" && g.NewType != "" {
				detail = g.OldType + " -> " + g.NewType
			} else if g.NewType != "" {
				detail = g.NewType
			} else {
				detail = g.OldType
			}
			if g.TypeClass == elfpatch.TypeCompatible || (g.NewType != "" && strings.Contains(g.Detail, g.NewType)) {
				detail = g.Detail // already names the types
			} else if g.Detail != "" {
				detail += ": " + g.Detail
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", name, g.Source, strings.Join(g.Changes, ","), detail)
		}
	}
	if section("types", len(r.Types)) {
		for _, t := range r.Types {
			fmt.Fprintf(tw, "  %s\t%s\t%d -> %d bytes\tin %s objects via %s\t%s\n", t.Name, t.Class, t.OldSize, t.NewSize, t.Storage, strings.Join(t.UsedBy, ", "), t.Detail)
		}
	}
	if section("signatures", len(r.Signatures)) {
		for _, s := range r.Signatures {
			callers := strings.Join(s.Callers, ", ")
			if callers == "" {
				callers = "none"
			}
			fmt.Fprintf(tw, "  %s\t%s -> %s\tcallers: %s\n", s.Name, s.Old, s.New, callers)
		}
	}
	if section("reasons", len(r.Reasons)) {
		for _, rs := range r.Reasons {
			sym := rs.Symbol
			if rs.Source != "" {
				sym += " (" + rs.Source + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", rs.Verdict, sym, rs.Message)
		}
	}
	tw.Flush()
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "\nwarning: %s\n", warn)
	}
	printTransferReport(w, r)
	printSwitchReport(w, r)
	fmt.Fprintf(w, "\n%d functions unchanged\n", r.Unchanged)
}

// hexOrEmpty leaves out the address of the side a symbol is not on.
func hexOrEmpty(v uint64) string {
	if v == 0 {
		return ""
	}
	return hex(v)
}

func funcsOutput(fs []elfpatch.Func, changed bool) []funcOutput {
	out := []funcOutput{}
	for _, f := range fs {
		o := funcOutput{
			Name: f.Name, OldName: f.OldName, File: f.File, Local: f.Local, Source: f.Source,
			Origin: f.Origin, Parts: f.Parts, OldAddr: hexOrEmpty(f.OldAddr), NewAddr: hexOrEmpty(f.NewAddr),
			OldSize: f.OldSize, NewSize: f.NewSize, Why: f.Why, Pad: f.Pad,
		}
		if changed {
			p := f.Patchable
			o.Patchable = &p
		}
		out = append(out, o)
	}
	return out
}

func reportJSON(r *elfpatch.Report) *reportOutput {
	if r == nil {
		return nil
	}
	o := &reportOutput{
		OldBuildID: r.OldBuildID, NewBuildID: r.NewBuildID,
		Changed: funcsOutput(r.Changed, true), Added: funcsOutput(r.Added, false), Removed: funcsOutput(r.Removed, false),
		Unchanged: r.Unchanged, Types: r.Types, Signatures: r.Signatures,
		Verdict: r.Verdict, Reasons: r.Reasons, Warnings: r.Warnings, Transfers: r.Transfers,
		Globals: []globalOutput{},
	}
	for _, g := range r.Globals {
		o.Globals = append(o.Globals, globalOutput{
			Name: g.Name, File: g.File, Local: g.Local, Source: g.Source, Function: g.Function,
			Changes: g.Changes, OldAddr: hexOrEmpty(g.OldAddr), NewAddr: hexOrEmpty(g.NewAddr),
			OldSize: g.OldSize, NewSize: g.NewSize, OldType: g.OldType, NewType: g.NewType,
			TypeClass: g.TypeClass, ReadOnly: g.ReadOnly, Detail: g.Detail,
		})
	}
	if o.Types == nil {
		o.Types = []elfpatch.TypeChange{}
	}
	if o.Signatures == nil {
		o.Signatures = []elfpatch.SignatureChange{}
	}
	if o.Reasons == nil {
		o.Reasons = []elfpatch.Reason{}
	}
	return o
}
