package elfpatch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// GoBuild is what a Go binary says about how it was built: the toolchain
// and the settings `go version -m` prints, read from its .go.buildinfo
// section (the format Go 1.18 and later write: the version and the module
// information inline after the 32-byte header).
type GoBuild struct {
	// GoVersion is the toolchain, "go1.26.8".
	GoVersion string `json:"go_version"`
	// Path is the main package's import path; Module the main module's.
	Path   string `json:"path,omitempty"`
	Module string `json:"module,omitempty"`
	// Settings are the "build" lines, key to value ("-buildmode" "pie",
	// "GOAMD64" "v1", "CGO_ENABLED" "1", ...).
	Settings map[string]string `json:"settings,omitempty"`
}

// ErrGoBuildMismatch is wrapped by CheckGoBuilds when OLD and NEW were not
// built with the same toolchain and settings.
var ErrGoBuildMismatch = errors.New("OLD and NEW were built with different Go toolchains or settings")

// ErrGoNewNotPIE is wrapped when NEW must be built with -buildmode=pie.
var ErrGoNewNotPIE = errors.New("NEW must be built with -buildmode=pie (go build -buildmode=pie): its code is loaded next to the running program, which already occupies the fixed addresses of a default build")

// IsGo reports whether b was built by the Go toolchain.
func (b *Binary) IsGo() bool { return b.goBuild() != nil }

// GoBuildInfo returns b's Go build information, nil for a binary that is
// not Go (or whose .go.buildinfo cannot be read).
func (b *Binary) GoBuildInfo() *GoBuild {
	g := b.goBuild()
	if g == nil {
		return nil
	}
	c := *g
	c.Settings = map[string]string{}
	for k, v := range g.Settings {
		c.Settings[k] = v
	}
	return &c
}

func (b *Binary) goBuild() *GoBuild {
	b.goOnce.Do(func() { b.goInfo = readGoBuild(b.f, b.secData) })
	return b.goInfo
}

// readGoBuild parses .go.buildinfo: "\xff Go buildinf:", pointer size,
// flags (bit 1: strings inline), 16 bytes of pre-1.18 pointers, then two
// varint-prefixed strings, the version and the module information.
func readGoBuild(f *elf.File, data map[*elf.Section][]byte) *GoBuild {
	sec := f.Section(".go.buildinfo")
	if sec == nil {
		return nil
	}
	d, ok := data[sec]
	if !ok {
		var err error
		if d, err = sec.Data(); err != nil {
			return nil
		}
	}
	const magic = "\xff Go buildinf:"
	if len(d) < 32 || !bytes.HasPrefix(d, []byte(magic)) || d[15]&2 == 0 {
		return nil
	}
	d = d[32:]
	str := func() (string, bool) {
		n, w := binary.Uvarint(d)
		if w <= 0 || n > uint64(len(d)-w) {
			return "", false
		}
		s := string(d[w : w+int(n)])
		d = d[w+int(n):]
		return s, true
	}
	vers, ok := str()
	if !ok || vers == "" {
		return nil
	}
	mod, _ := str()
	g := &GoBuild{GoVersion: vers, Settings: map[string]string{}}
	// The module information is framed by 16-byte sentinels.
	if len(mod) >= 33 && mod[len(mod)-17] == '\n' {
		mod = mod[16 : len(mod)-16]
	}
	for _, line := range strings.Split(mod, "\n") {
		f := strings.SplitN(line, "\t", 3)
		switch {
		case len(f) >= 2 && f[0] == "path":
			g.Path = f[1]
		case len(f) >= 2 && f[0] == "mod":
			g.Module = f[1]
		case len(f) >= 2 && f[0] == "build":
			kv := f[1]
			if len(f) == 3 {
				kv += "\t" + f[2]
			}
			k, v, _ := strings.Cut(kv, "=")
			g.Settings[k] = v
		}
	}
	return g
}

// goSettingIgnored are build lines that legitimately differ between two
// builds of one program: where and when the source came from, and the
// build mode (checked separately: NEW is a PIE whatever OLD is).
func goSettingIgnored(k string) bool {
	return strings.HasPrefix(k, "vcs") || k == "-buildmode"
}

// CheckGoBuilds refuses a pair of Go builds that a live patch cannot join:
// another toolchain or other settings (GOAMD64, GOEXPERIMENT, -race,
// CGO_ENABLED, -gcflags, ...) give NEW's code other expectations of the
// runtime, of struct layouts and of calling conventions than the running
// OLD has. Only the VCS stamp and -buildmode may differ. It returns nil
// when neither binary is Go, and an error naming each difference
// otherwise. It does not require NEW to be a PIE (see CheckGoNewPIE).
func CheckGoBuilds(old, new *Binary) error {
	og, ng := old.goBuild(), new.goBuild()
	switch {
	case og == nil && ng == nil:
		return nil
	case og == nil:
		return fmt.Errorf("%w: NEW %s is a Go program (%s) but OLD %s is not", ErrGoBuildMismatch, new.path, ng.GoVersion, old.path)
	case ng == nil:
		return fmt.Errorf("%w: OLD %s is a Go program (%s) but NEW %s is not", ErrGoBuildMismatch, old.path, og.GoVersion, new.path)
	}
	var diffs []string
	if og.GoVersion != ng.GoVersion {
		diffs = append(diffs, fmt.Sprintf("go version: OLD %s, NEW %s", og.GoVersion, ng.GoVersion))
	}
	keys := map[string]bool{}
	for k := range og.Settings {
		keys[k] = true
	}
	for k := range ng.Settings {
		keys[k] = true
	}
	var ks []string
	for k := range keys {
		if !goSettingIgnored(k) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	for _, k := range ks {
		ov, oin := og.Settings[k]
		nv, nin := ng.Settings[k]
		switch {
		case oin && nin && ov != nv:
			diffs = append(diffs, fmt.Sprintf("%s: OLD %q, NEW %q", k, ov, nv))
		case oin && !nin:
			diffs = append(diffs, fmt.Sprintf("%s: OLD %q, NEW not set", k, ov))
		case !oin && nin:
			diffs = append(diffs, fmt.Sprintf("%s: OLD not set, NEW %q", k, nv))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %s; rebuild NEW with OLD's toolchain and settings (compare `go version -m` of both)", ErrGoBuildMismatch, strings.Join(diffs, "; "))
	}
	return nil
}

// CheckGoNewPIE refuses a NEW Go build that is not position independent:
// it is mapped next to OLD, which (in a default build) sits at the fixed
// addresses a non-PIE NEW would need too.
func CheckGoNewPIE(new *Binary) error {
	if new.goBuild() == nil {
		return nil
	}
	if new.f.Type != elf.ET_DYN {
		mode := new.goBuild().Settings["-buildmode"]
		if mode == "" {
			mode = "exe (the default)"
		}
		return fmt.Errorf("%w; %s was built with -buildmode=%s", ErrGoNewNotPIE, new.path, mode)
	}
	return nil
}
