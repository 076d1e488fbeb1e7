package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spf13/cobra/doc"
	"graft"
)

// commandList is the one place where graft's commands are listed, in the
// order `graft --help` shows them. To add one: write its logic as a
// function of its own file taking the output streams and an options
// struct, and a constructor here that declares its flags, checks them
// (usagef for a wrong command line: exit status 2) and calls it; a logic
// function that returns an exit status itself goes through exitWith.
// Then run `go generate ./cmd/graft` for its usage page.
var commandList = []func(stdout, stderr io.Writer) *cobra.Command{
	newDiffCmd,
	newShowCmd,
	newApplyCmd,
	newStatusCmd,
	newRevertCmd,
	newInspectCmd,
	newStacksCmd,
	newPlayCmd,
	newSignCmd,
	newDocsCmd,
}

// newRoot builds the command tree writing to stdout and stderr.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "graft",
		Short: "live-patch running native Linux x86-64 processes",
		Long: `graft live-patches running native Linux x86-64 processes from outside,
through ptrace: 'graft diff OLD NEW -o FILE' makes a patch, 'graft apply -p PID
FILE' maps the new code into the process, waits until no thread is inside a
function it replaces, and writes jumps; 'graft status' and 'graft revert' read
what it did from the process itself.

Exit status: 0 done; 1 failed, the target is as it was; 2 wrong command line,
nothing touched; 3 the target's state needs attention (the message says what
to do); 130/143 interrupted by SIGINT/SIGTERM, the target left as it was.
With --json, errors too are JSON on stdout: {"error":{"code":..,"message":..}}.`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// Any other argument is an unknown command.
		Args: noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("give a command; 'graft help' lists them")
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("graft {{.Version}}\n")
	root.PersistentFlags().Bool("json", false, "print JSON (errors too: {\"error\":{\"code\":..,\"message\":..}})")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{err.Error()}
	})
	for _, mk := range commandList {
		root.AddCommand(mk(stdout, stderr))
	}
	return root
}

// jsonFlag reads the persistent --json.
func jsonFlag(c *cobra.Command) bool {
	v, _ := c.Flags().GetBool("json")
	return v
}

// commit is set with -ldflags "-X main.commit=$(git rev-parse HEAD)" where
// the go command cannot stamp the build itself (GOFLAGS=-buildvcs=false,
// or a git worktree, whose .git is a file the go command does not
// recognise).
var commit string

// version is the module version and the commit graft was built from
// (from the build info the go command embeds: vcs.revision, and
// "+dirty" when the tree had uncommitted changes; else commit).
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown build)"
	}
	v := bi.Main.Version
	var rev, modified, when string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		case "vcs.time":
			when = s.Value
		}
	}
	if rev == "" {
		rev = commit
	}
	if rev == "" {
		return v + " (commit unknown: built without VCS information; build with -buildvcs=true in the repository, or -ldflags \"-X main.commit=...\")"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := fmt.Sprintf("%s commit %s%s", v, rev, modified)
	if when != "" {
		out += " (" + when + ")"
	}
	return out
}

// pidFlag declares -p PID.
func pidFlag(c *cobra.Command, pid *int) {
	c.Flags().IntVarP(pid, "pid", "p", 0, "`PID` of the process")
}

func requirePid(pid int) error {
	if pid <= 0 {
		return usagef("-p PID is required (a process ID, more than 0)")
	}
	return nil
}

// timeoutValue is --timeout: a Go duration with a unit, more than 0.
type timeoutValue struct{ d *time.Duration }

func (v timeoutValue) String() string { return v.d.String() }
func (v timeoutValue) Type() string   { return "duration" }
func (v timeoutValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := fmt.Sscanf(s, "%g", new(float64)); nerr == nil && !strings.ContainsAny(s, "smhnuµ") {
			return fmt.Errorf("%q has no unit: write e.g. %ss or %sms", s, s, s)
		}
		return fmt.Errorf("%q is not a duration: write e.g. 5s, 500ms or 1m", s)
	}
	if d <= 0 {
		return fmt.Errorf("%q: the timeout must be more than 0 (e.g. 5s)", s)
	}
	*v.d = d
	return nil
}

func timeoutFlag(c *cobra.Command, d *time.Duration, what string) {
	*d = 5 * time.Second
	c.Flags().Var(timeoutValue{d}, "timeout", what+" (a duration with its unit: 5s, 500ms, 1m)")
}

func newDiffCmd(stdout, stderr io.Writer) *cobra.Command {
	var o diffOpts
	c := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "compare two builds and write a patch file",
		Long: `Compares two builds of a program and says what a live update would involve:
changed, added and removed functions, globals, type layouts and signatures, and
a verdict (auto, transformer or refused) with a reason per symbol. With -o it
writes the patch file that 'graft apply' takes.`,
		Example: "  graft diff build/ftpd-v6 build/ftpd-v7\n  graft diff old new -o v1-v2.patch",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("need the OLD and NEW binaries, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.Old, o.New, o.JSON = args[0], args[1], jsonFlag(c)
			return runDiff(stdout, stderr, o)
		},
	}
	c.Flags().StringVarP(&o.Out, "output", "o", "", "write the patch to `FILE`")
	c.Flags().BoolVar(&o.Force, "force", false, "with -o, write the patch even if the verdict is refused (apply still refuses it)")
	c.Flags().StringVar(&o.State, "state", "", "the operator's rules for the state transformers: a state description `FILE` (FILE.state.yaml from an earlier diff -o, edited)")
	c.Flags().IntVarP(&o.Pid, "pid", "p", 0, "also show which frames of running `PID` (running OLD) are inside changed functions: which would stay, which block")
	return c
}

func newShowCmd(stdout, stderr io.Writer) *cobra.Command {
	var o showOpts
	c := &cobra.Command{
		Use:   "show FILE",
		Short: "print a patch file",
		Long: `Prints a patch file: the builds it applies to and was made from, whether its
signature is trusted, the report, and a summary of the new code it carries.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("need one patch FILE, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.File, o.JSON = args[0], jsonFlag(c)
			return runShow(stdout, stderr, o)
		},
	}
	c.Flags().StringVar(&o.AllowedSigners, "allowed-signers", "", "check the signature against this allowed_signers `FILE` (default "+graft.DefaultAllowedSigners+" if it exists)")
	c.Flags().StringVar(&o.Signature, "signature", "", "the patch's signature `FILE` (default FILE.sig)")
	return c
}

func newApplyCmd(stdout, stderr io.Writer) *cobra.Command {
	var o applyOpts
	var allow string
	c := &cobra.Command{
		Use:   "apply -p PID (FILE | --new NEWBIN)",
		Short: "patch a running process live",
		Long: `Patches a running process. FILE is a patch from 'graft diff -o'; with --new the
diff is made on the fly against what the process runs. Everything that needs no
stopped target is prepared while it runs; then one pause checks that no thread
is inside a function being replaced, writes the jumps and records the patch in
the process. While a function is busy graft retries until --timeout, saying
once a second on stderr what blocks; then it gives up and leaves the process as
it was.`,
		Example: "  graft apply -p 4242 v1-v2.patch\n  graft apply -p 4242 --new build/sshd-v2 --timeout 30s",
		RunE: func(c *cobra.Command, args []string) error {
			if err := requirePid(o.Pid); err != nil {
				return err
			}
			switch {
			case len(args) == 1 && o.New == "":
				o.File = args[0]
				if isELF(o.File) {
					return usagef("%s is a program, not a patch file: to patch with that build, give it as --new %s (or make a patch with graft diff OLD %s -o FILE)", o.File, o.File, o.File)
				}
			case len(args) == 0 && o.New != "":
			default:
				return usagef("give exactly one of FILE or --new NEWBIN")
			}
			if o.State != "" && o.New == "" {
				return usagef("--state goes with --new: a patch file carries the rules it was made with (graft diff --state)")
			}
			for _, f := range strings.Split(allow, ",") {
				if f = strings.TrimSpace(f); f != "" {
					o.AllowActive = append(o.AllowActive, f)
				}
			}
			o.JSON = jsonFlag(c)
			return runApply(stdout, stderr, o)
		},
	}
	pidFlag(c, &o.Pid)
	c.Flags().StringVar(&o.New, "new", "", "NEW `binary`: diff it against what the process runs and apply the result")
	timeoutFlag(c, &o.Timeout, "how long to wait for a safe point, and the most one stop waits for a thread")
	c.Flags().StringVar(&allow, "allow-active", "", "`FUNC[,FUNC]` that may stay on a stack (their running frames finish in the old code)")
	c.Flags().BoolVar(&o.DryRun, "dry-run", false, "prepare and check, including the safe point; write nothing")
	c.Flags().StringVar(&o.State, "state", "", "with --new: the operator's rules for converting globals whose layout changed, a state description `FILE` (as graft diff --state)")
	c.Flags().StringVar(&o.GoPIE, "go-pie", "", "for a Go program running a default (non-PIE) build: NEW built with -buildmode=pie, the `binary` loaded (--new is NEW built like the running one)")
	c.Flags().StringVar(&o.AllowedSigners, "allowed-signers", "", "OpenSSH allowed_signers `FILE` whose keys may sign patches (default "+graft.DefaultAllowedSigners+" if it exists)")
	c.Flags().StringVar(&o.Signature, "signature", "", "the patch's OpenSSH signature `FILE` (default FILE.sig)")
	c.Flags().BoolVar(&o.AllowUncheckedTypes, "allow-unchecked-types", false, "apply a patch made from a build without debug info, whose type layouts and signatures could not be compared (you vouch that none changed)")
	return c
}

func newStatusCmd(stdout, stderr io.Writer) *cobra.Command {
	var pid int
	c := &cobra.Command{
		Use:   "status [-p PID]",
		Short: "list the patches in effect (in one process, or every patched process on the host)",
		Long: `With -p, lists the patches in effect in the process, oldest first, read from the
process itself without stopping it, and anything a killed graft left behind
(an image no jump leads to, an open descriptor). Without -p, lists every process
on the host that carries a graft record, graft code or graft descriptors, from
/proc alone: no process is stopped.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if c.Flags().Changed("pid") {
				if err := requirePid(pid); err != nil {
					return err
				}
				return runStatus(stdout, stderr, pid, jsonFlag(c))
			}
			return runHostStatus(stdout, stderr, jsonFlag(c))
		},
	}
	pidFlag(c, &pid)
	return c
}

func newRevertCmd(stdout, stderr io.Writer) *cobra.Command {
	var o revertOpts
	var allow string
	c := &cobra.Command{
		Use:   "revert -p PID [--id ID | --all]",
		Short: "take a patch out of a running process",
		Long: `Takes the newest patch out again (or all of them), behind the same check as
apply. With --all it also removes what a killed graft left behind: images no
jump leads to and open graft descriptors.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := requirePid(o.Pid); err != nil {
				return err
			}
			if o.All && o.ID != "" {
				return usagef("--id and --all exclude each other")
			}
			for _, f := range strings.Split(allow, ",") {
				if f = strings.TrimSpace(f); f != "" {
					o.AllowActive = append(o.AllowActive, f)
				}
			}
			o.JSON = jsonFlag(c)
			return runRevert(stdout, stderr, o)
		},
	}
	pidFlag(c, &o.Pid)
	c.Flags().StringVar(&o.ID, "id", "", "patch `ID` to revert (must be the newest)")
	c.Flags().BoolVar(&o.All, "all", false, "revert every patch and remove a killed graft's leftovers")
	timeoutFlag(c, &o.Timeout, "how long to wait for a safe point")
	c.Flags().StringVar(&allow, "allow-active", "", "`FUNC[,FUNC]` of the new code that may stay on a stack (running frames finish in the new code; its image stays mapped until they leave)")
	return c
}

func newInspectCmd(stdout, stderr io.Writer) *cobra.Command {
	var pid int
	c := &cobra.Command{
		Use:   "inspect -p PID",
		Short: "show a process's threads and loaded modules",
		Long: `Shows every thread of a running process with its state, pc and function, and
every mapped ELF module with its base, load bias and build-id. The process is
stopped only to read the registers.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := requirePid(pid); err != nil {
				return err
			}
			return runInspect(stdout, stderr, pid, jsonFlag(c))
		},
	}
	pidFlag(c, &pid)
	return c
}

func newStacksCmd(stdout, stderr io.Writer) *cobra.Command {
	var pid int
	c := &cobra.Command{
		Use:   "stacks -p PID",
		Short: "print every thread's stack as graft's safety check sees it",
		Long: `Prints the stack of every thread of a running process, unwound with the CFI of
every mapped module, the way graft sees them when it checks that no thread is
inside a function it is about to replace. The process is stopped only for the
unwinding.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := requirePid(pid); err != nil {
				return err
			}
			return runStacks(stdout, stderr, pid, jsonFlag(c))
		},
	}
	pidFlag(c, &pid)
	return c
}

// newDocsCmd writes the usage pages under cmd/graft/docs (go generate;
// TestUsageDocs checks they are current).
func newDocsCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "gendocs DIR",
		Short:  "write the usage pages (Markdown) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return writeDocs(c.Root(), args[0])
		},
	}
}

//go:generate go run . gendocs docs

func writeDocs(root *cobra.Command, dir string) error {
	root.InitDefaultCompletionCmd() // as Execute adds it
	root.DisableAutoGenTag = true
	for _, c := range root.Commands() {
		c.DisableAutoGenTag = true
		for _, s := range c.Commands() {
			s.DisableAutoGenTag = true
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return doc.GenMarkdownTree(root, dir)
}

// noArgs refuses positional arguments as a usage error.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected arguments %q", args)
	}
	return nil
}

// isELF reports whether path starts with the ELF magic.
func isELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	n, _ := f.Read(b[:])
	return n == 4 && string(b[:]) == "\x7fELF"
}
