package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"graft"
	"graft/elfpatch"
)

// printTransfers lists the globals a patch converted (apply, status).
func printTransfers(w io.Writer, ts []graft.TransferResult, irreversible string) {
	for _, t := range ts {
		where := fmt.Sprintf("moved %s -> %s", hex(t.Old), hex(t.New))
		if t.InPlace {
			where = "in place at " + hex(t.Old)
		}
		fmt.Fprintf(w, "  transferred %s (%s): %d -> %d bytes, %s", t.Name, t.Type, t.OldSize, t.NewSize, where)
		if t.Pointers > 0 {
			fmt.Fprintf(w, ", %d pointer(s) rewritten", t.Pointers)
		}
		fmt.Fprintln(w)
	}
	if irreversible != "" {
		fmt.Fprintf(w, "  IRREVERSIBLE: revert will refuse this patch: %s\n", irreversible)
	}
}

// loadStateRules reads the operator's transformer rules (diff --state).
func loadStateRules(path string) (map[string]*elfpatch.Rules, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read state description: %w", err)
	}
	defer f.Close()
	rules, err := elfpatch.ReadStateRules(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, r := range rules {
		if r.C != "" && !filepath.IsAbs(r.C) {
			r.C = filepath.Join(filepath.Dir(path), r.C)
		}
	}
	return rules, nil
}

// writeStateDesc writes PATCH.state.yaml next to a patch whose globals
// changed layout: the generated mappings, the TODOs, the rules used.
func writeStateDesc(stdout io.Writer, patch string, r *elfpatch.Report, rules map[string]*elfpatch.Rules, quiet bool) error {
	if len(r.Transfers) == 0 {
		return nil
	}
	path := patch + ".state.yaml"
	var b bytes.Buffer
	if err := elfpatch.NewStateDesc(r, rules).Write(&b); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write state description: %w", err)
	}
	// The types a C transformer is written against (rule c:).
	for _, t := range r.Transfers {
		if t.CHeader != "" {
			if err := os.WriteFile(patch+"."+t.Name+".xf_types.h", []byte(t.CHeader), 0o644); err != nil {
				return fmt.Errorf("write C transformer types: %w", err)
			}
		}
	}
	todo := 0
	for _, t := range r.Transfers {
		todo += len(t.Todo)
	}
	if !quiet {
		if todo > 0 {
			fmt.Fprintf(stdout, "state description written to %s: %d TODO(s) to resolve there; apply refuses the patch until then\n", path, todo)
		} else {
			fmt.Fprintf(stdout, "state description written to %s (nothing to resolve)\n", path)
		}
	}
	return nil
}

// printSwitchReport is diff's section on frame switches: for a patch
// that converts state, how many of each changed function's return
// addresses a waiting frame can be carried from into the new code.
func printSwitchReport(w io.Writer, r *elfpatch.Report) {
	if len(r.Transfers) == 0 {
		return
	}
	type row struct {
		name      string
		ok, total int
		why       string
	}
	var rows []row
	for _, c := range r.Changed {
		if c.Resume == nil || len(c.Resume.Switch) == 0 {
			continue
		}
		x := row{name: c.Name, total: len(c.Resume.Switch)}
		for _, p := range c.Resume.Switch {
			if p.Why == "" {
				x.ok++
			} else if x.why == "" {
				x.why = p.Why
			}
		}
		rows = append(rows, x)
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\nframe switches: a frame waiting in a call inside these functions goes on in the new code when the call returns, its frame rebuilt in the new layout; at the other return addresses it blocks the patch:\n")
	for _, x := range rows {
		fmt.Fprintf(w, "  %-24s %d of %d return addresses\n", x.name, x.ok, x.total)
		if x.why != "" && x.ok < x.total {
			fmt.Fprintf(w, "  %-24s   e.g. %s\n", "", x.why)
		}
	}
}

// printTransferReport is diff's section on the state transformers.
func printTransferReport(w io.Writer, r *elfpatch.Report) {
	if len(r.Transfers) == 0 {
		return
	}
	fmt.Fprintf(w, "\nstate transformers (%d):\n", len(r.Transfers))
	for _, t := range r.Transfers {
		where := "moved into the new image"
		if t.InPlace {
			where = "in place"
		}
		fmt.Fprintf(w, "  %s (%s): %d -> %d bytes, %s, %d operation(s)\n", t.Name, t.Type, t.OldSize, t.NewSize, where, len(t.Ops))
		for _, n := range t.Notes {
			fmt.Fprintf(w, "    %s\n", n)
		}
		for _, n := range t.Todo {
			fmt.Fprintf(w, "    TODO %s\n", n)
		}
		if len(t.PointerUsers) > 0 {
			fmt.Fprintf(w, "    reached through pointers by (they count in apply's safety check): %s\n", strings.Join(t.PointerUsers, ", "))
		}
		if t.Irreversible != "" {
			fmt.Fprintf(w, "    irreversible: %s\n", t.Irreversible)
		}
	}
}
