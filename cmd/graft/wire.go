package main

import (
	"time"

	"graft"
	"graft/elfpatch"
)

// Every --json document graft prints, in one place. One vocabulary across
// commands (README, "JSON output"):
//
//   - patch_id: a patch's id (12 hex digits); patch_ids: several.
//     on_top_of and superseded_by hold patch ids too.
//   - function: a function's name; functions: a list of names.
//   - addresses are "0x..." strings: addr (where a jump is written),
//     entry (a function's old entry), target (where its new code is),
//     base/size (an image); sizes are numbers of bytes.
//   - orig_bytes / new_bytes: hex of the bytes a jump site held and holds.
//   - pid, tid: numbers.
//   - errors: {"error":{"code":"..","message":"..","exit":N}}.

// errorWire is any command's failure under --json.
type errorWire struct {
	Error errorBody `json:"error"`
	// Blocked lists, when frames kept a patch from going in or out,
	// every one of them (frames.go): the thread, the function, why it
	// could not stay, and the --allow-active value that would let it.
	Blocked []blockerOut `json:"blocked,omitempty"`
}

type errorBody struct {
	// Code is stable, for scripts: usage, interrupted, needs_attention,
	// no_such_process, permission_denied, already_traced, not_safe,
	// refused, build_mismatch, nothing_applied, already_applied, ...,
	// failed.
	Code    string `json:"code"`
	Message string `json:"message"`
	Exit    int    `json:"exit"`
}

// hostStatusWire is `status --json` without -p.
type hostStatusWire struct {
	Processes []hostProcessWire `json:"processes"`
	// Unreadable counts processes whose /proc entries could not be read.
	Unreadable int `json:"unreadable,omitempty"`
}

type hostProcessWire struct {
	Pid         int              `json:"pid"`
	Comm        string           `json:"comm"`
	Record      bool             `json:"record"`
	Images      int              `json:"images"`
	Descriptors []descriptorWire `json:"descriptors,omitempty"`
}

// descriptorWire is a graft memfd a killed graft left open in a target.
type descriptorWire struct {
	FD   int    `json:"fd"`
	Name string `json:"name"`
	Size int64  `json:"size"`
}

func descriptorsWire(ds []graft.Descriptor) []descriptorWire {
	var out []descriptorWire
	for _, d := range ds {
		out = append(out, descriptorWire{FD: d.FD, Name: d.Name, Size: d.Size})
	}
	return out
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
	Unloaded  []string     `json:"unloaded_patch_ids,omitempty"`
	Sites     []siteOutput `json:"sites"`
	// Signer is who signed the patch; Unverified is set when no signers
	// are configured, so nobody checked.
	Signer     *graft.Signer `json:"signer,omitempty"`
	Unverified bool          `json:"unverified,omitempty"`
	// Warnings are the diff's limits (types not compared, ...).
	Warnings []string `json:"warnings,omitempty"`
	// Transfers: globals converted (transfer.go); Irreversible says why
	// revert will refuse; TransferUS the part of the pause it took.
	Transfers    []graft.TransferResult `json:"transfers,omitempty"`
	Irreversible string                 `json:"irreversible,omitempty"`
	// Switched: frames carried into the new code (transfer patches).
	Switched   []switchOut `json:"switched,omitempty"`
	TransferUS int64       `json:"transfer_us,omitempty"`
	// Stayed: frames inside replaced functions let stay, and why.
	Stayed []frameOut `json:"stayed,omitempty"`
	// Held: per thread, stops and held time by cause (graft.ThreadHold).
	Held []graft.ThreadHold `json:"held,omitempty"`
}

type siteOutput struct {
	Func   string `json:"function"`
	Addr   string `json:"addr"`
	Target string `json:"target"`
	Orig   string `json:"orig_bytes"`
	New    string `json:"new_bytes"`
}

// reportOutput is the --json form of a diff report (graft diff, graft
// show): elfpatch.Report with every address as a "0x..." string, like the
// other commands' JSON.
type reportOutput struct {
	OldBuildID string                     `json:"old_build_id"`
	NewBuildID string                     `json:"new_build_id"`
	Changed    []funcOutput               `json:"changed"`
	Added      []funcOutput               `json:"added"`
	Removed    []funcOutput               `json:"removed"`
	Unchanged  int                        `json:"unchanged"`
	Globals    []globalOutput             `json:"globals"`
	Types      []elfpatch.TypeChange      `json:"types"`
	Signatures []elfpatch.SignatureChange `json:"signatures"`
	Verdict    elfpatch.Verdict           `json:"verdict"`
	Reasons    []elfpatch.Reason          `json:"reasons"`
	Warnings   []string                   `json:"warnings,omitempty"`
	// Transfers: the generated state transformers (elfpatch/transform.go).
	Transfers []elfpatch.Transfer `json:"transfers,omitempty"`
}

type funcOutput struct {
	Name      string   `json:"name"`
	OldName   string   `json:"old_name,omitempty"`
	File      string   `json:"file,omitempty"`
	Local     bool     `json:"local,omitempty"`
	Source    string   `json:"source,omitempty"`
	Origin    string   `json:"origin,omitempty"`
	Parts     []string `json:"parts,omitempty"`
	OldAddr   string   `json:"old_addr,omitempty"`
	NewAddr   string   `json:"new_addr,omitempty"`
	OldSize   uint64   `json:"old_size,omitempty"`
	NewSize   uint64   `json:"new_size,omitempty"`
	Patchable *bool    `json:"patchable,omitempty"`
	Why       string   `json:"why,omitempty"`
	Pad       uint64   `json:"pad,omitempty"`
}

type globalOutput struct {
	Name      string             `json:"name"`
	File      string             `json:"file,omitempty"`
	Local     bool               `json:"local,omitempty"`
	Source    string             `json:"source,omitempty"`
	Function  string             `json:"function,omitempty"`
	Changes   []string           `json:"changes"`
	OldAddr   string             `json:"old_addr,omitempty"`
	NewAddr   string             `json:"new_addr,omitempty"`
	OldSize   uint64             `json:"old_size,omitempty"`
	NewSize   uint64             `json:"new_size,omitempty"`
	OldType   string             `json:"old_type,omitempty"`
	NewType   string             `json:"new_type,omitempty"`
	TypeClass elfpatch.TypeClass `json:"type_class,omitempty"`
	ReadOnly  bool               `json:"read_only,omitempty"`
	Detail    string             `json:"detail,omitempty"`
}

type inspectJSON struct {
	Pid     int                 `json:"pid"`
	Threads []inspectThreadJSON `json:"threads"`
	Modules []inspectModuleJSON `json:"modules"`
}

type inspectThreadJSON struct {
	Tid int `json:"tid"`
	// State is the /proc state letter seen just before graft stopped the
	// process (R running, S sleeping, D disk wait, T stopped, ...).
	State    string `json:"state"`
	PC       string `json:"pc"`
	SP       string `json:"sp"`
	Function string `json:"function,omitempty"` // "name+0xoff"
	Module   string `json:"module,omitempty"`
}

type inspectModuleJSON struct {
	Path    string `json:"path"`
	Base    string `json:"base"`
	Bias    string `json:"bias"`
	BuildID string `json:"build_id"`
	Main    bool   `json:"main,omitempty"`
}

// switchOut is a frame carried between the old and the new code (a
// patch that converts state): the thread, the function, the return
// address it waited at and where it goes on.
type switchOut struct {
	Tid      int    `json:"tid"`
	Function string `json:"function"`
	From     string `json:"from"`
	To       string `json:"to"`
}

func switchesOut(rs []graft.SwitchRecord) []switchOut {
	var out []switchOut
	for _, r := range rs {
		out = append(out, switchOut{Tid: r.Tid, Function: r.Function, From: hex(r.Orig), To: hex(r.To)})
	}
	return out
}

type revertOutput struct {
	Pid       int           `json:"pid"`
	Reverted  []string      `json:"patch_ids"`
	Functions []string      `json:"functions"`
	PauseUS   int64         `json:"pause_us"`
	Orphans   []rangeOutput `json:"orphans,omitempty"`
	// Descriptors: graft memfds left open by a killed graft, closed.
	Descriptors []descriptorWire `json:"descriptors,omitempty"`
	// EmptyRecord: an empty record a killed revert left was removed.
	EmptyRecord bool `json:"empty_record,omitempty"`
	// Stayed: frames left in new code (proven to finish as the old
	// version would, or allowed); Pending: patches whose image therefore
	// stays mapped; Reaped: earlier pending images found free and
	// unmapped.
	Stayed []frameOut `json:"stayed,omitempty"`
	// SwitchedBack: frames in the new code carried back to the old;
	// Unswitched: switched frames whose call had not returned, put back.
	SwitchedBack []switchOut `json:"switched_back,omitempty"`
	Unswitched   int         `json:"unswitched,omitempty"`
	Pending      []string    `json:"pending_patch_ids,omitempty"`
	Reaped       []string    `json:"reaped_patch_ids,omitempty"`
	// Held: per thread, stops and held time by cause (graft.ThreadHold).
	Held []graft.ThreadHold `json:"held,omitempty"`
}

// showOutput is show's --json document: the patch without the segment
// bytes, which are summarised by size and hash.
type showOutput struct {
	Version    int                 `json:"version"`
	OldBuildID string              `json:"old_build_id"`
	NewBuildID string              `json:"new_build_id"`
	OldPath    string              `json:"old_path,omitempty"`
	NewPath    string              `json:"new_path,omitempty"`
	Report     *reportOutput       `json:"report"`
	Image      imageOutput         `json:"image"`
	Signature  graft.SignatureInfo `json:"signature"`
}

type imageOutput struct {
	Size      string                `json:"size"`
	Segments  []segmentOutput       `json:"segments"`
	Redirects []patchRedirectOutput `json:"redirects"`
	Fixups    []patchFixupOutput    `json:"fixups"`
	Imports   []patchImportOutput   `json:"imports"`
	Relatives int                   `json:"relatives"`
}

type patchRedirectOutput struct {
	Name    string `json:"function"`
	Old     string `json:"entry"`
	OldSize uint64 `json:"entry_size"`
	New     string `json:"target"`
	NewSize uint64 `json:"target_size"`
}

type patchFixupOutput struct {
	Off    string             `json:"off"`
	Kind   elfpatch.FixupKind `json:"kind"`
	PCNext string             `json:"pc_next,omitempty"`
	Target string             `json:"target"`
	Symbol string             `json:"symbol"`
}

type patchImportOutput struct {
	Off     string `json:"off"`
	Symbol  string `json:"symbol"`
	Version string `json:"version,omitempty"`
	Addend  int64  `json:"addend,omitempty"`
	Weak    bool   `json:"weak,omitempty"`
}

type segmentOutput struct {
	Vaddr  string `json:"vaddr"`
	Memsz  uint64 `json:"memsz"`
	Filesz int    `json:"filesz"`
	Prot   string `json:"prot"`
	SHA256 string `json:"sha256"`
}

type stacksJSON struct {
	Pid     int          `json:"pid"`
	Threads []threadJSON `json:"threads"`
	// Goroutines, for a Go program (gostacks.go).
	Goroutines []goroutineJSON `json:"goroutines,omitempty"`
}

type threadJSON struct {
	Tid    int         `json:"tid"`
	Frames []frameJSON `json:"frames"`
	// Incomplete is the reason the stack could not be unwound to its end.
	Incomplete string `json:"incomplete,omitempty"`
	// Note says where a Go thread's system stack ends (not required to
	// be complete: goroutine stacks are what counts).
	Note string `json:"note,omitempty"`
}

type frameJSON struct {
	PC       string `json:"pc"`
	CFA      string `json:"cfa,omitempty"`
	Function string `json:"function"`
	Module   string `json:"module,omitempty"`
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
	// Descriptors: graft memfds a killed graft left open.
	Descriptors []descriptorWire `json:"descriptors,omitempty"`
	// Pending: reverted patches whose image stays mapped while a thread
	// is in it.
	Pending []pendingOutput `json:"pending,omitempty"`
	// Retained: images of reverted Go patches (still mapped, their
	// modules registered with the runtime).
	Retained []graft.RetainedImage `json:"retained,omitempty"`
}

type rangeOutput struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type patchStatusOutput struct {
	ID           string           `json:"patch_id"`
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
	// Signer: who signed the patch, when a trust policy checked it.
	Signer *graft.Signer `json:"signer,omitempty"`
	// Module and ModulePath: the patched module (executable or library).
	Module     string `json:"module,omitempty"`
	ModulePath string `json:"module_path,omitempty"`
	// Transfers: globals the patch converted; Irreversible says why
	// revert refuses it.
	Transfers    []graft.TransferResult `json:"transfers,omitempty"`
	Irreversible string                 `json:"irreversible,omitempty"`
	// Switched: frames the apply switched to the new code;
	// SwitchWaiting: those whose call has not returned yet.
	Switched      int `json:"switched,omitempty"`
	SwitchWaiting int `json:"switch_waiting,omitempty"`
}

type redirectOutput struct {
	Name    string `json:"function"`
	Entry   string `json:"entry,omitempty"`
	New     string `json:"target"`
	NewSize uint64 `json:"target_size"`
}

// signOutput is sign's --json document.
type signOutput struct {
	Patch     string        `json:"patch"`
	Signature string        `json:"signature"`
	Signer    *graft.Signer `json:"signer"`
}
