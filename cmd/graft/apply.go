package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"graft"
)

func init() {
	register("apply", "patch a running process live", runApply)
}

// applyOutput is apply's --json document.
type applyOutput struct {
	PatchID   string       `json:"patch_id"`
	Pid       int          `json:"pid"`
	Functions []string     `json:"functions"`
	PauseUS   int64        `json:"pause_us"`
	DryRun    bool         `json:"dry_run,omitempty"`
	Base      string       `json:"base"`
	Size      uint64       `json:"size"`
	OnTopOf   string       `json:"on_top_of,omitempty"`
	Unloaded  []string     `json:"unloaded,omitempty"`
	Sites     []siteOutput `json:"sites"`
	// Signer is who signed the patch; Unverified is set when no signers
	// are configured, so nobody checked.
	Signer     *graft.Signer `json:"signer,omitempty"`
	Unverified bool          `json:"unverified,omitempty"`
	Warnings   []string      `json:"warnings,omitempty"`
	// Transfers: globals converted (transfer.go).
	Transfers    []graft.TransferResult `json:"transfers,omitempty"`
	Irreversible string                 `json:"irreversible,omitempty"`
	TransferUS   int64                  `json:"transfer_us,omitempty"`
	Stayed       []frameOut             `json:"stayed,omitempty"`
	// Held: per thread, stops and held time by cause (graft.ThreadHold).
	Held []graft.ThreadHold `json:"held,omitempty"`
}

type siteOutput struct {
	Func   string `json:"func"`
	Addr   string `json:"addr"`
	Target string `json:"target"`
	Orig   string `json:"orig"`
	New    string `json:"new"`
}

func sitesOutput(ss []graft.SiteRecord) []siteOutput {
	out := []siteOutput{}
	for _, s := range ss {
		out = append(out, siteOutput{Func: s.Func, Addr: hex(s.Addr), Target: hex(s.Target), Orig: fmt.Sprintf("%x", []byte(s.Orig)), New: fmt.Sprintf("%x", []byte(s.New))})
	}
	return out
}

// parseInterleaved parses flags that may come before or after positional
// arguments (`graft apply FILE -p PID` as well as `-p PID FILE`).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func runApply(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("apply", stderr)
	pid := fs.Int("p", 0, "`PID` of the process to patch")
	newBin := fs.String("new", "", "NEW `binary`: diff it against what the process runs and apply the result")
	goPIE := fs.String("go-pie", "", "for a Go program running a default (non-PIE) build: NEW built with -buildmode=pie, the `binary` loaded (--new is NEW built like the running one)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for a safe point")
	allow := fs.String("allow-active", "", "`FUNC[,FUNC]` that may stay on a stack (running frames finish in old code)")
	dry := fs.Bool("dry-run", false, "prepare and check, write nothing")
	asJSON := fs.Bool("json", false, "print JSON")
	signers := fs.String("allowed-signers", "", "OpenSSH allowed_signers `FILE` whose keys may sign patches (default "+graft.DefaultAllowedSigners+" if it exists)")
	sigFile := fs.String("signature", "", "the patch's signature `FILE` (default FILE.sig)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: graft apply -p PID [options] FILE")
		fmt.Fprintln(stderr, "       graft apply -p PID [options] --new NEWBIN")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *pid <= 0 {
		return fmt.Errorf("%w: -p PID is required", errUsage)
	}
	src := graft.Source{NewBinary: *newBin, Signature: *sigFile, GoPIE: *goPIE}
	switch {
	case len(pos) == 1 && *newBin == "":
		src.File = pos[0]
	case len(pos) == 0 && *newBin != "":
	default:
		return fmt.Errorf("%w: give exactly one of FILE or --new NEWBIN", errUsage)
	}
	trust, err := graft.LoadTrustPolicy(*signers, "")
	if err != nil {
		return err
	}
	opts := graft.ApplyOptions{Timeout: *timeout, DryRun: *dry, Trust: trust}
	for _, f := range strings.Split(*allow, ",") {
		if f = strings.TrimSpace(f); f != "" {
			opts.AllowActive = append(opts.AllowActive, f)
		}
	}

	ctx, stop := interruptible()
	defer stop()
	res, err := graft.Apply(ctx, *pid, src, opts)
	if err != nil {
		if *asJSON {
			writeBlockers(stdout, *pid, err)
		}
		return err
	}
	if res.Unverified {
		fmt.Fprintf(stderr, "graft apply: warning: patch %s is unverified: no allowed signers are configured (%s or --allowed-signers)\n", src.File, graft.DefaultAllowedSigners)
	}
	if *asJSON {
		return writeJSON(stdout, applyOutput{
			Signer: res.Signer, Unverified: res.Unverified,
			PatchID: res.PatchID, Pid: *pid, Functions: res.Functions, PauseUS: res.PauseUS,
			DryRun: res.DryRun, Base: hex(res.Base), Size: res.Size, OnTopOf: res.OnTopOf,
			Unloaded: res.Unloaded, Sites: sitesOutput(res.Sites), Warnings: res.Warnings,
			Transfers: res.Transfers, Irreversible: res.Irreversible, TransferUS: res.TransferUS,
			Stayed: framesOut(res.Stayed), Held: res.Held,
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
	if res.TransferUS > 0 {
		fmt.Fprintf(stdout, "  pause: %d µs (state transfer %d µs)\n", res.PauseUS, res.TransferUS)
	} else {
		fmt.Fprintf(stdout, "  pause: %d µs\n", res.PauseUS)
	}
	return nil
}
