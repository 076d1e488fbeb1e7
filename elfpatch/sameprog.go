package elfpatch

import (
	"debug/buildinfo"
	"fmt"
)

// toolchainFuncs are the functions the C toolchain links into every
// program (crt1.o, crti.o, crtbegin.o): two different programs share them,
// so they say nothing about whether NEW is a build of OLD.
var toolchainFuncs = map[string]bool{
	"_start": true, "_init": true, "_fini": true, "_dl_relocate_static_pie": true,
	"deregister_tm_clones": true, "register_tm_clones": true,
	"__do_global_dtors_aux": true, "frame_dummy": true,
	"__libc_csu_init": true, "__libc_csu_fini": true,
}

// sameProgram refuses a NEW that is not a build of OLD's program: one in
// which most of OLD's own functions are gone, or, for Go, whose main
// module is another one (or that is not Go when OLD is, or the reverse).
// Patching a process with another program's code would not be an update
// of anything it runs.
func (d *differ) sameProgram() {
	oldGo, newGo := d.old.b.isGoBinary(), d.new.b.isGoBinary()
	if oldGo != newGo {
		lang := func(g bool) string {
			if g {
				return "a Go program"
			}
			return "not a Go program"
		}
		d.reason(VerdictRefused, "program", "", "NEW is not a build of OLD's program: OLD is %s, NEW is %s; give a NEW built from OLD's sources", lang(oldGo), lang(newGo))
		return
	}
	if oldGo {
		om, oerr := goMainModule(d.old.b)
		nm, nerr := goMainModule(d.new.b)
		switch {
		case oerr != nil || nerr != nil:
			d.r.Warnings = append(d.r.Warnings, "the Go build info of one of the builds could not be read: whether NEW is the same program was judged by its functions only")
		case om != nm:
			d.reason(VerdictRefused, "program", "", "NEW is not a build of OLD's program: OLD's main module is %q, NEW's is %q; give a NEW built from OLD's module", om, nm)
			return
		}
	}
	own, gone := 0, 0
	for u, st := range d.status {
		if toolchainFuncs[u.sym.name] || isColdPart(u.sym.name) {
			continue
		}
		own++
		if st == "removed" {
			gone++
		}
	}
	if own > 0 && gone*2 > own {
		d.reason(VerdictRefused, "program", "", "NEW is not a build of OLD's program: %d of OLD's %d functions are not in NEW (%d%%); give a NEW built from OLD's sources", gone, own, gone*100/own)
	}
}

// goMainModule is the path of a Go program's main module from its build
// info ("command-line-arguments" for a program built from files).
func goMainModule(b *Binary) (string, error) {
	if b.path == "" {
		return "", fmt.Errorf("no path to read the build info from")
	}
	bi, err := buildinfo.ReadFile(b.path)
	if err != nil {
		return "", err
	}
	if bi.Main.Path != "" {
		return bi.Main.Path, nil
	}
	return bi.Path, nil
}
