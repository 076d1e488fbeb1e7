package graft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// StatusResult is what graft has done to one process, read from the
// process itself.
type StatusResult struct {
	Pid int `json:"pid"`
	// Record is the address of the graft-state mapping (0: none).
	Record  uint64        `json:"record"`
	Patches []PatchStatus `json:"patches"`
	// Orphans are images a graft killed before its pause left mapped;
	// graft revert --all takes them out. While TracedBy is set they may
	// instead be the image of an apply still in progress.
	Orphans []Range `json:"orphans,omitempty"`
	// Pending are reverted patches whose image stays mapped while a
	// thread is in it; the next apply or revert that finds it free
	// unmaps it.
	Pending []PendingStatus `json:"pending,omitempty"`
	// TracedBy is the PID of the process tracing pid (0: none), Tracer
	// its name: another graft at work (its apply may have mapped an image
	// not recorded yet, or be between writing the record and the jumps)
	// or a debugger. Status reads without stopping, so it still answers.
	TracedBy int `json:"traced_by,omitempty"`
	// Descriptors are graft memfds left open in the process by a graft
	// killed mid-way (leftovers.go); graft revert --all closes them.
	Descriptors []Descriptor `json:"descriptors,omitempty"`
	Tracer      string       `json:"tracer,omitempty"`
	// Retained are images of reverted Go patches: still mapped, their
	// modules still registered with the Go runtime (goapply.go).
	Retained []RetainedImage `json:"retained,omitempty"`
}

// RetainedImage is the image of a reverted Go patch.
type RetainedImage struct {
	ID       string `json:"id"`
	Base     uint64 `json:"base"`
	Size     uint64 `json:"size"`
	GoModule uint64 `json:"go_module"`
}

// PatchStatus is one patch in effect (oldest first in StatusResult).
type PatchStatus struct {
	ID         string    `json:"id"`
	Applied    time.Time `json:"applied"`
	OldBuildID string    `json:"old_build_id"`
	NewBuildID string    `json:"new_build_id"`
	// Functions are the names of the functions the patch redirected.
	Functions []string     `json:"functions"`
	Redirects []FuncRecord `json:"redirects"`
	Sites     []SiteRecord `json:"sites"`
	Base      uint64       `json:"base"`
	Size      uint64       `json:"size"`
	// Unloaded: superseded by SupersededBy and its code unmapped.
	Unloaded     bool   `json:"unloaded,omitempty"`
	SupersededBy string `json:"superseded_by,omitempty"`
	// Intact is false when a jump of this patch that no later patch
	// overwrote is not in the code any more (someone else wrote there,
	// or graft was killed mid-apply).
	Intact bool `json:"intact"`
	// SelfContained is true when the record holds the place of the
	// image's CFI and its symbols: later invocations unwind through the
	// image and stack on it without NEW's file. False for a patch from a
	// version-1 patch file, which needs NEW at NewPath for both.
	SelfContained bool   `json:"self_contained"`
	NewPath       string `json:"new_path,omitempty"`
	// Signer is who signed the patch, when a trust policy checked it.
	Signer *Signer `json:"signer,omitempty"`
	// Module and ModulePath name the patched module (the executable or
	// a shared library) by build-id and mapped path; empty for a patch
	// recorded before graft patched libraries (the executable).
	Module     string `json:"module,omitempty"`
	ModulePath string `json:"module_path,omitempty"`
	// Transfers are the globals whose contents the patch converted;
	// Irreversible says why revert refuses it ("" if it does not).
	Transfers    []TransferResult `json:"transfers,omitempty"`
	Irreversible string           `json:"irreversible,omitempty"`
	// Switched counts the frames the apply switched to the new code;
	// SwitchWaiting those whose call has not returned yet (their return
	// address still leads to the switch code).
	Switched      int `json:"switched,omitempty"`
	SwitchWaiting int `json:"switch_waiting,omitempty"`
}

// status reads the record without attaching: the target never stops.
func (sys *system) status(pid int) (*StatusResult, error) {
	if err := sys.checkPid(pid); err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	maps, err := sys.readMaps(pid)
	if err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	mem, err := sys.openMem(pid)
	if err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	defer mem.Close()
	st, err := readState(mem, pid, maps)
	if err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	res := statusOf(pid, st, mem)
	res.Orphans = orphanImages(maps, st)
	res.Pending = pendingStatus(st)
	if res.Descriptors, err = sys.leftDescriptors(pid); err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	if sys.tracedBy != nil {
		res.TracedBy, res.Tracer = sys.tracedBy(pid)
	}
	return res, nil
}

func statusOf(pid int, st *State, mem io.ReaderAt) *StatusResult {
	res := &StatusResult{Pid: pid, Record: st.Addr, Patches: []PatchStatus{}}
	for i, r := range st.Patches {
		ps := PatchStatus{
			ID: r.ID, Applied: r.Applied, OldBuildID: r.OldBuildID, NewBuildID: r.NewBuildID,
			Functions: []string{}, Redirects: r.Functions, Sites: r.Sites,
			Base: r.Base, Size: r.Size, Unloaded: r.Unloaded, SupersededBy: r.SupersededBy,
			Intact:        true,
			SelfContained: r.EhFrameSize > 0 && len(r.Symbols) > 0,
			NewPath:       r.NewPath,
			Signer:        r.Signer,
			Module:        r.Module,
			ModulePath:    r.ModulePath,
			Transfers:     transferResults(r.Transfers),
			Irreversible:  r.Irreversible(),
		}
		for _, f := range r.Functions {
			ps.Functions = append(ps.Functions, f.Name)
		}
		ps.Switched = len(r.Switches)
		for _, sw := range r.Switches {
			var b [8]byte
			if _, err := mem.ReadAt(b[:], int64(sw.Slot)); err == nil && binary.LittleEndian.Uint64(b[:]) == sw.Stub {
				ps.SwitchWaiting++
			}
		}
		for _, s := range r.Sites {
			if overwrittenLater(st, i, s.Addr) || inUnloaded(st, s.Addr) {
				continue
			}
			cur := make([]byte, len(s.New))
			if _, err := mem.ReadAt(cur, int64(s.Addr)); err != nil || !bytes.Equal(cur, s.New) {
				ps.Intact = false
			}
		}
		res.Patches = append(res.Patches, ps)
	}
	for _, r := range st.Retained {
		res.Retained = append(res.Retained, RetainedImage{ID: r.ID, Base: r.Base, Size: r.Size, GoModule: r.GoModule})
	}
	return res
}

func overwrittenLater(st *State, i int, addr uint64) bool {
	for _, r := range st.Patches[i+1:] {
		for _, s := range r.Sites {
			if s.Addr <= addr && addr < s.Addr+uint64(len(s.New)) {
				return true
			}
		}
	}
	return false
}

func inUnloaded(st *State, addr uint64) bool {
	for _, r := range st.Patches {
		if r.Unloaded && addr >= r.Base && addr < r.Base+r.Size {
			return true
		}
	}
	return false
}
