package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"graft"
)

func sitesOutput(ss []graft.SiteRecord) []siteOutput {
	out := []siteOutput{}
	for _, s := range ss {
		out = append(out, siteOutput{Func: s.Func, Addr: hex(s.Addr), Target: hex(s.Target), Orig: fmt.Sprintf("%x", []byte(s.Orig)), New: fmt.Sprintf("%x", []byte(s.New))})
	}
	return out
}

// applyOpts are apply's flags and argument.
type applyOpts struct {
	Pid         int
	File        string // patch file, or
	New         string // NEW binary
	GoPIE       string // for a default-build Go program: NEW as a PIE, the code loaded
	State       string // with New: the operator's state description
	Timeout     time.Duration
	AllowActive []string
	DryRun      bool
	JSON        bool
	// AllowedSigners and Signature: the trust policy's signers file and
	// the patch's signature (trust.go).
	AllowedSigners string
	Signature      string
	// AllowUncheckedTypes: apply a patch whose diff could not compare
	// types (a build without debug info).
	AllowUncheckedTypes bool
}

func runApply(stdout, stderr io.Writer, o applyOpts) error {
	src := graft.Source{File: o.File, NewBinary: o.New, Signature: o.Signature, GoPIE: o.GoPIE, State: o.State}
	trust, err := graft.LoadTrustPolicy(o.AllowedSigners, "")
	if err != nil {
		return err
	}
	opts := graft.ApplyOptions{Timeout: o.Timeout, DryRun: o.DryRun, AllowActive: o.AllowActive, Progress: progressPrinter(stderr, "apply"), Trust: trust, AllowUncheckedTypes: o.AllowUncheckedTypes}
	pid, asJSON := &o.Pid, &o.JSON
	ctx, stop := interruptible()
	defer stop()
	res, err := graft.Apply(ctx, *pid, src, opts)
	if err != nil {
		return err
	}
	if res.Unverified {
		fmt.Fprintf(stderr, "graft apply: warning: patch %s is unverified: no allowed signers are configured (%s or --allowed-signers)\n", src.File, graft.DefaultAllowedSigners)
	}
	if *asJSON {
		return writeJSON(stdout, applyOutput{
			PatchID: res.PatchID, Pid: *pid, Functions: res.Functions, PauseUS: res.PauseUS,
			DryRun: res.DryRun, Base: hex(res.Base), Size: res.Size, OnTopOf: res.OnTopOf,
			Unloaded: res.Unloaded, Sites: sitesOutput(res.Sites),
			Signer: res.Signer, Unverified: res.Unverified, Warnings: res.Warnings,
			Transfers: res.Transfers, Irreversible: res.Irreversible, TransferUS: res.TransferUS,
			Stayed: framesOut(res.Stayed), Held: res.Held, Switched: switchesOut(res.Switched),
		})
	}
	verb := "applied"
	if res.DryRun {
		verb = "dry run: would apply"
	}
	fmt.Fprintf(stdout, "%s patch %s to pid %d: %d function(s): %s\n", verb, res.PatchID, *pid, len(res.Functions), strings.Join(res.Functions, ", "))
	if res.OnTopOf != "" {
		fmt.Fprintf(stdout, "  stacked on %s\n", res.OnTopOf)
	}
	if res.Signer != nil {
		fmt.Fprintf(stdout, "  signed by %s (%s key %s)\n", res.Signer.Principal, res.Signer.KeyType, res.Signer.Fingerprint)
	}
	fmt.Fprintf(stdout, "  new code at %s (%d bytes)\n", hex(res.Base), res.Size)
	for _, w := range res.Warnings {
		fmt.Fprintf(stdout, "  warning: %s\n", w)
	}
	for _, s := range res.Sites {
		fmt.Fprintf(stdout, "  %-24s %s -> %s\n", s.Func, hex(s.Addr), hex(s.Target))
	}
	if len(res.Unloaded) > 0 {
		fmt.Fprintf(stdout, "  unloaded superseded: %s\n", strings.Join(res.Unloaded, ", "))
	}
	printTransfers(stdout, res.Transfers, res.Irreversible)
	printStayed(stdout, res.Stayed, "old")
	if res.DryRun {
		printSwitched(stdout, res.Switched, "new (would be)")
	} else {
		printSwitched(stdout, res.Switched, "new")
	}
	if res.TransferUS > 0 {
		fmt.Fprintf(stdout, "  pause: %d µs (state transfer %d µs)\n", res.PauseUS, res.TransferUS)
	} else {
		fmt.Fprintf(stdout, "  pause: %d µs\n", res.PauseUS)
	}
	return nil
}
