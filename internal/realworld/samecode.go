package main

import (
	"bytes"
	"debug/elf"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// sameCode is an check of graft's "unchanged", independent of graft's own
// normaliser: the function's instructions as objdump prints them, with
// addresses dropped, code targets named by symbol and offset, and a
// reference to anonymous read-only data replaced by the bytes there (up
// to a NUL, at most 256). A source line the diff touches can compile to
// the same code: a dead store deleted, a macro that expands to the same
// expression, diff aligning an insertion so that it takes the closing
// brace of the function before. Such a function is not a miss; any other
// difference is. A function the check cannot find on both sides is not
// the same.
func sameCode(oldBin, newBin, name string) bool {
	o, ok1 := disasm(oldBin, name)
	n, ok2 := disasm(newBin, name)
	return ok1 && ok2 && o == n
}

var (
	lineAddr = regexp.MustCompile(`^\s*[0-9a-f]+:\s*`)
	// "lea 0x1234(%rip),%rdi        # 1f07f <_fini+0xab>"
	ripComment = regexp.MustCompile(`0x[0-9a-f]+\(%rip\)(.*?)#\s*([0-9a-f]+)\s*<([^>]*)>`)
	// "call 1030 <printf@plt>", "jmp 11ba <f+0x1a>"
	codeTarget = regexp.MustCompile(`\b[0-9a-f]+ <([^>]*)>`)
	header     = regexp.MustCompile(`^[0-9a-f]+ <[^>]*>:$`)
)

func disasm(bin, name string) (string, bool) {
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", "--disassemble="+name, bin).Output()
	if err != nil {
		return "", false
	}
	f, err := elf.Open(bin)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var sb strings.Builder
	body := false
	for _, l := range strings.Split(string(out), "\n") {
		if header.MatchString(l) {
			// The function's block, under whichever alias objdump
			// chose for its address.
			body = true
			continue
		}
		if !body || strings.TrimSpace(l) == "" || strings.HasPrefix(l, "Disassembly") {
			continue
		}
		l = lineAddr.ReplaceAllString(l, "")
		l = ripComment.ReplaceAllStringFunc(l, func(m string) string {
			sub := ripComment.FindStringSubmatch(m)
			addr, _ := strconv.ParseUint(sub[2], 16, 64)
			sym := sub[3]
			if strings.HasPrefix(sym, "_fini+") || strings.HasPrefix(sym, "_IO_stdin_used+") || strings.Contains(sym, "@@Base-") || strings.Contains(sym, "-0x") {
				sym = "data:" + strconv.Quote(string(rodata(f, addr)))
			}
			return "(%rip)" + sub[1] + "# " + sym
		})
		l = codeTarget.ReplaceAllString(l, "<$1>")
		sb.WriteString(strings.TrimSpace(l) + "\n")
	}
	return sb.String(), body
}

// rodata returns the bytes at addr up to a NUL (at most 256).
func rodata(f *elf.File, addr uint64) []byte {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || addr < s.Addr || addr >= s.Addr+s.Size {
			continue
		}
		d, err := s.Data()
		if err != nil {
			return nil
		}
		d = d[addr-s.Addr:]
		if len(d) > 256 {
			d = d[:256]
		}
		if i := bytes.IndexByte(d, 0); i >= 0 {
			d = d[:i]
		}
		return d
	}
	return nil
}
