package tracer

// Regs is the general-purpose register set of one stopped thread, in the
// kernel's user_regs_struct order. It is graft's own type so that callers
// (safepoint, the controller) need not import x/sys/unix.
type Regs struct {
	R15, R14, R13, R12, Rbp, Rbx, R11, R10 uint64
	R9, R8, Rax, Rcx, Rdx, Rsi, Rdi        uint64
	OrigRax, Rip, Cs, Eflags, Rsp, Ss      uint64
	FsBase, GsBase, Ds, Es, Fs, Gs         uint64
}

// PC returns the instruction pointer.
func (r *Regs) PC() uint64 { return r.Rip }

// SP returns the stack pointer.
func (r *Regs) SP() uint64 { return r.Rsp }

// DWARF returns the value of the register with the given DWARF number
// (System V x86-64 psABI numbering: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi,
// 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 return address/rip).
func (r *Regs) DWARF(n int) (uint64, bool) {
	switch n {
	case 0:
		return r.Rax, true
	case 1:
		return r.Rdx, true
	case 2:
		return r.Rcx, true
	case 3:
		return r.Rbx, true
	case 4:
		return r.Rsi, true
	case 5:
		return r.Rdi, true
	case 6:
		return r.Rbp, true
	case 7:
		return r.Rsp, true
	case 8:
		return r.R8, true
	case 9:
		return r.R9, true
	case 10:
		return r.R10, true
	case 11:
		return r.R11, true
	case 12:
		return r.R12, true
	case 13:
		return r.R13, true
	case 14:
		return r.R14, true
	case 15:
		return r.R15, true
	case 16:
		return r.Rip, true
	}
	return 0, false
}

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End)
	Perms      string // e.g. "r-xp"
	Offset     uint64 // file offset of Start
	Dev        string
	Inode      uint64
	Path       string // file path, "[heap]", "[stack]", "" for anonymous
}

// Readable, Writable and Executable report the mapping's permissions.
func (m Mapping) Readable() bool   { return len(m.Perms) > 0 && m.Perms[0] == 'r' }
func (m Mapping) Writable() bool   { return len(m.Perms) > 1 && m.Perms[1] == 'w' }
func (m Mapping) Executable() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }

// Module is one ELF file mapped into a process: the main executable, a
// shared library or the vDSO.
type Module struct {
	Path string // as in /proc/PID/maps; "[vdso]" for the vDSO
	// Base is the lowest address of any mapping of the file.
	Base uint64
	// Bias is the load bias: runtime address = link-time (ELF) vaddr + Bias.
	Bias uint64
	// BuildID is the hex NT_GNU_BUILD_ID note, "" if the file has none.
	BuildID  string
	Mappings []Mapping
	// Main is true for the process's executable (/proc/PID/exe).
	Main bool
}

// Contains reports whether addr lies inside one of the module's mappings.
func (m *Module) Contains(addr uint64) bool {
	for _, mp := range m.Mappings {
		if addr >= mp.Start && addr < mp.End {
			return true
		}
	}
	return false
}
