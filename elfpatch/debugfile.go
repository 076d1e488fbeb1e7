package elfpatch

import (
	"debug/dwarf"
	"debug/elf"
	"os"
	"path/filepath"
)

// debugRoots are where separate debug files are looked up by build-id
// (Debian's -dbgsym packages, `objcopy --only-keep-debug` installs):
// <root>/.build-id/<first two hex digits>/<the rest>.debug.
var debugRoots = []string{"/usr/lib/debug"}

// separateDWARF returns the DWARF of the separate debug file of a build
// whose own DWARF was stripped, when one with its build-id is installed.
// Types, signatures and globals are then compared as for a debug build.
func separateDWARF(buildID string) (*dwarf.Data, string) {
	if len(buildID) < 3 {
		return nil, ""
	}
	for _, root := range debugRoots {
		path := filepath.Join(root, ".build-id", buildID[:2], buildID[2:]+".debug")
		if _, err := os.Stat(path); err != nil {
			continue
		}
		f, err := elf.Open(path)
		if err != nil {
			continue
		}
		d, err := f.DWARF()
		f.Close()
		if err == nil && d != nil {
			return d, path
		}
	}
	return nil, ""
}
