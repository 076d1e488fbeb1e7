package elfpatch

import "debug/elf"

// codeLabels names the function symbols without a size, by address: the
// retpoline and return thunks GCC emits for -mindirect-branch=thunk and
// -mfunction-return=thunk (__x86_indirect_thunk_rax,
// __x86_return_thunk), and labels of assembly code. They are not units
// of the diff, but code that calls or jumps to one must name it, not its
// position in .text, which moves whenever a function before it grows.
func codeLabels(b *Binary) map[uint64]string {
	out := map[uint64]string{}
	syms, err := symbolsByFile(b.f)
	if err != nil {
		return out
	}
	for _, s := range syms {
		if s.Size != 0 || s.Name == "" || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE || int(s.Section) >= len(b.f.Sections) {
			continue
		}
		if t := elf.ST_TYPE(s.Info); t != elf.STT_FUNC && t != elf.STT_GNU_IFUNC {
			continue
		}
		if b.f.Sections[s.Section].Flags&elf.SHF_EXECINSTR == 0 {
			continue
		}
		name := cloneKey(s.Name)
		if elf.ST_BIND(s.Info) == elf.STB_LOCAL && s.file != "" {
			name = s.file + ":" + name
		}
		if prev, ok := out[s.Value]; !ok || name < prev {
			out[s.Value] = name
		}
	}
	return out
}
