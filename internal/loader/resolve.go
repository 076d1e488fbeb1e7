package loader

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"graft/elfpatch"
	"graft/internal/elfx"
	"graft/tracer"
)

// ErrIFUNC marks an import that resolves to a GNU indirect function whose
// choice the loader cannot read in the target: neither the running
// program nor the library itself (through an IRELATIVE relocation) has a
// field the dynamic linker filled with it. Which implementation (memcpy's
// AVX2 or ERMS variant) would be right is only known by running the
// library's resolver inside the target, which this loader does not do.
var ErrIFUNC = errors.New("symbol is an indirect function (STT_GNU_IFUNC) not imported by the running program")

// ErrNotFound marks an import no loaded library defines.
var ErrNotFound = errors.New("symbol not defined by any library loaded in the target")

// Resolver finds, for the target process, the address each of NEW's
// imports must hold.
//
// The dynamic linker already bound OLD's own imports: OLD's GOT, read from
// the target, holds exactly the implementation the process uses (the
// chosen variant of an IFUNC such as strlen, the interposed definition,
// the COPY-relocated object). So an import OLD also has is taken from
// OLD's slot. Only symbols OLD never imported are looked up in the
// libraries' .dynsym (runtime address = value + the library's bias); an
// indirect function among them is read from the library's own IRELATIVE
// field for the same resolver, which glibc has for most of its IFUNCs.
type Resolver struct {
	pid  int
	mem  io.ReaderAt
	main *tracer.Module
	libs []*libSyms
	// oldSlots are OLD's imported fields by symbol name.
	oldSlots map[string][]elfpatch.Import
}

type libSyms struct {
	mod  tracer.Module
	syms map[string][]elf.Symbol // defined dynamic symbols by name
	// islots maps an IFUNC resolver's vaddr to a field of the library
	// holding its result (elfpatch.IndirectSlots).
	islots map[uint64]uint64
	// islotsErr says why islots could not be read: an IFUNC of this
	// library is then unresolvable, and the error says why.
	islotsErr error
	err       error // why the library could not be read
}

// NewResolver reads OLD's imports (from /proc/PID/exe, the file the
// process runs even if the path now holds a newer build) and the dynamic
// symbols of every library in mods. mem reads target memory (a
// *tracer.Process); reads need no stop.
func NewResolver(pid int, mods []tracer.Module, mem io.ReaderAt) (*Resolver, error) {
	for i := range mods {
		if mods[i].Main {
			return NewResolverFor(pid, mods, mem, &mods[i])
		}
	}
	return nil, fmt.Errorf("resolve imports in pid %d: no main executable among %d modules", pid, len(mods))
}

// NewResolverFor is NewResolver for a patch of the module old, the
// executable or a shared library: OLD's GOT is that module's, as the
// dynamic linker filled it in this process (a library's calls to its own
// exported functions, its references to the executable's COPY-relocated
// data and its IFUNC choices are all there).
func NewResolverFor(pid int, mods []tracer.Module, mem io.ReaderAt, old *tracer.Module) (*Resolver, error) {
	r := &Resolver{pid: pid, mem: mem, main: old, oldSlots: map[string][]elfpatch.Import{}}
	for i := range mods {
		if m := mods[i]; !m.Main && strings.HasPrefix(m.Path, "/") {
			r.libs = append(r.libs, readLib(pid, m))
		}
	}
	path, err := tracer.ModuleFile(pid, old)
	if err != nil {
		return nil, fmt.Errorf("resolve imports in pid %d: %w", pid, err)
	}
	f, err := elfx.Open(path)
	if err != nil {
		return nil, fmt.Errorf("resolve imports in pid %d: open %s as mapped: %w", pid, old.Path, err)
	}
	defer f.Close()
	imps, err := elfpatch.DynamicImports(f)
	if err != nil {
		return nil, fmt.Errorf("resolve imports in pid %d: %w", pid, err)
	}
	for _, imp := range imps {
		r.oldSlots[imp.Symbol] = append(r.oldSlots[imp.Symbol], imp)
	}
	return r, nil
}

// readLib reads a library's defined dynamic symbols from the file the
// target mapped (tracer.ModuleFile: through the target's root, or
// map_files when the path was replaced or deleted).
func readLib(pid int, m tracer.Module) (l *libSyms) {
	l = &libSyms{mod: m, syms: map[string][]elf.Symbol{}}
	defer func() {
		if x := recover(); x != nil {
			l.err = fmt.Errorf("malformed ELF: %v", x)
		}
	}()
	// A library upgraded on disk since the target mapped it has the
	// same path and different symbols: only the mapped file will do.
	path, err := tracer.ModuleFile(pid, &m)
	if err != nil {
		l.err = err
		return l
	}
	f, err := elf.Open(path)
	if err != nil {
		l.err = err
		return l
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		l.err = err
		return l
	}
	l.err = nil
	l.islots, l.islotsErr = elfpatch.IndirectSlots(f)
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF || s.Name == "" {
			continue
		}
		l.syms[s.Name] = append(l.syms[s.Name], s)
	}
	return l
}

// Resolve returns the address imp's field must hold, without its addend
// (Link adds it). An absent weak symbol resolves to 0.
func (r *Resolver) Resolve(imp elfpatch.Import) (uint64, error) {
	if imp.TLSModule {
		return r.tlsModule()
	}
	v, ok, err := r.fromOld(imp)
	if err != nil || ok {
		return v, err
	}
	v, err = r.fromLibs(imp)
	if errors.Is(err, ErrNotFound) && imp.Weak {
		return 0, nil
	}
	return v, err
}

// indirect resolves an IFUNC through the library's own IRELATIVE field
// for the same resolver, which the dynamic linker filled at start-up with
// the implementation it chose for this CPU.
func (r *Resolver) indirect(imp elfpatch.Import, l *libSyms, s *elf.Symbol) (uint64, error) {
	slot, ok := l.islots[s.Value]
	if !ok && l.islotsErr != nil {
		return 0, fmt.Errorf("resolve %s in pid %d: %s defines it, and its relocations could not be read (%v): %w", imp.Symbol, r.pid, l.mod.Path, l.islotsErr, ErrIFUNC)
	}
	if !ok {
		return 0, fmt.Errorf("resolve %s in pid %d: %s defines it, and no relocated field records its choice: %w", imp.Symbol, r.pid, l.mod.Path, ErrIFUNC)
	}
	var b [8]byte
	addr := l.mod.Bias + slot
	if _, err := r.mem.ReadAt(b[:], int64(addr)); err != nil {
		return 0, fmt.Errorf("resolve %s in pid %d: read %s's IRELATIVE field at %#x: %w", imp.Symbol, r.pid, l.mod.Path, addr, err)
	}
	v := binary.LittleEndian.Uint64(b[:])
	if !l.mod.Contains(v) {
		return 0, fmt.Errorf("resolve %s in pid %d: %s's IRELATIVE field at %#x holds %#x, outside the library: %w", imp.Symbol, r.pid, l.mod.Path, addr, v, ErrIFUNC)
	}
	return v, nil
}

// tlsModule reads OLD's TLS module ID from one of OLD's own DTPMOD64
// fields, which the dynamic linker filled when it loaded the module.
func (r *Resolver) tlsModule() (uint64, error) {
	slots := r.oldSlots[""]
	for _, slot := range slots {
		if !slot.TLSModule {
			continue
		}
		var b [8]byte
		addr := r.main.Bias + slot.Off
		if _, err := r.mem.ReadAt(b[:], int64(addr)); err != nil {
			return 0, fmt.Errorf("resolve the TLS module of %s in pid %d: read %#x: %w", r.main.Path, r.pid, addr, err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("resolve the TLS module of %s in pid %d: the running build has no field holding it (it reaches no thread-local variable the way the new code does): unsupported", r.main.Path, r.pid)
}

func versionsMatch(a, b string) bool { return a == "" || b == "" || a == b }

// fromOld takes the value the dynamic linker stored in OLD's slot for the
// same symbol.
func (r *Resolver) fromOld(imp elfpatch.Import) (uint64, bool, error) {
	for _, slot := range r.oldSlots[imp.Symbol] {
		if !versionsMatch(slot.Version, imp.Version) {
			continue
		}
		var b [8]byte
		addr := r.main.Bias + slot.Off
		if _, err := r.mem.ReadAt(b[:], int64(addr)); err != nil {
			return 0, false, fmt.Errorf("resolve %s in pid %d: read old GOT slot at %#x: %w", imp.Symbol, r.pid, addr, err)
		}
		v := binary.LittleEndian.Uint64(b[:]) - uint64(slot.Addend)
		if v == 0 {
			if slot.Weak {
				// The dynamic linker found no definition when OLD
				// started; look again (a library dlopen'ed since may
				// define it), else an absent weak symbol is 0.
				return 0, false, nil
			}
			continue
		}
		if slot.Call && r.main.Contains(v) {
			// Lazy binding: the slot still points at OLD's PLT stub, which
			// resolves the symbol through OLD's link map on first call.
			// Calling that stub is as good as calling the function, but
			// its address is not the function's.
			if imp.Call {
				return v, true, nil
			}
			continue
		}
		return v, true, nil
	}
	return 0, false, nil
}

// fromLibs looks the symbol up in the loaded libraries' .dynsym, in the
// order the modules were listed.
func (r *Resolver) fromLibs(imp elfpatch.Import) (uint64, error) {
	var unreadable []string
	for _, l := range r.libs {
		if l.err != nil {
			unreadable = append(unreadable, fmt.Sprintf("%s (%v)", l.mod.Path, l.err))
			continue
		}
		var pick *elf.Symbol
		for i, s := range l.syms[imp.Symbol] {
			if imp.Version != "" && s.Version != imp.Version {
				continue
			}
			if imp.Version == "" && s.HasVersion && s.VersionIndex.IsHidden() {
				continue // only the default version binds an unversioned reference
			}
			pick = &l.syms[imp.Symbol][i]
			break
		}
		if pick == nil {
			continue
		}
		if elf.ST_TYPE(pick.Info) == elf.STT_GNU_IFUNC {
			return r.indirect(imp, l, pick)
		}
		if pick.Section == elf.SHN_ABS {
			return pick.Value, nil
		}
		return pick.Value + l.mod.Bias, nil
	}
	v := imp.Symbol
	if imp.Version != "" {
		v += "@" + imp.Version
	}
	err := fmt.Errorf("resolve %s in pid %d: %w", v, r.pid, ErrNotFound)
	if len(unreadable) > 0 {
		err = fmt.Errorf("%w (unreadable: %s)", err, strings.Join(unreadable, "; "))
	}
	return 0, err
}
