package x86dec

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"graft/internal/testutil"
)

// TestLengthsAgainstObjdump decodes every instruction objdump lists in the
// .text of the loader's tick fixture, built for newer CPUs (AVX2, AVX-512,
// CET), and requires the same length: one wrong length misreads every
// later instruction of the function. x86asm alone gets VZEROUPPER wrong,
// which gcc puts before every return from AVX code.
func TestLengthsAgainstObjdump(t *testing.T) {
	for _, tool := range []string{"gcc", "objdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	src, _ := filepath.Glob(filepath.Join(testutil.Root(), "elfpatch", "testdata", "loader", "v2", "*.c"))
	if len(src) == 0 {
		t.Fatal("no tick sources")
	}
	for _, flags := range [][]string{
		{"-O2", "-mavx2"},
		{"-O3", "-march=x86-64-v3"},
		{"-O3", "-march=x86-64-v4", "-fcf-protection=full"},
	} {
		out := filepath.Join(t.TempDir(), "tick")
		args := append(append(append([]string{"-g"}, flags...), "-o", out), src...)
		if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, b)
		}
		n, vex := compareObjdump(t, out)
		t.Logf("%v: %d instructions (%d VEX/EVEX) agree with objdump", flags, n, vex)
		if vex == 0 {
			t.Errorf("%v: no VEX/EVEX instruction in the build: the test no longer tests them", flags)
		}
	}
}

func compareObjdump(t *testing.T, path string) (n, vex int) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	text := f.Section(".text")
	data, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	dump, err := exec.Command("objdump", "-d", "--wide", "-j", ".text", path).Output()
	if err != nil {
		t.Fatalf("objdump %s: %v", path, err)
	}
	for _, line := range strings.Split(string(dump), "\n") {
		// "    1295:\tc5 fd fe 05 43 2e 00 00 \tvpaddd 0x2e43(%rip),..."
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) < 3 || !strings.HasSuffix(parts[0], ":") {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(parts[0], ":")), 16, 64)
		if err != nil || addr < text.Addr || addr >= text.Addr+uint64(len(data)) {
			continue
		}
		want := len(strings.Fields(parts[1]))
		code := data[addr-text.Addr:]
		in, err := Decode(code, addr)
		if err != nil {
			t.Errorf("%#x % x (%s): %v", addr, code[:want], strings.TrimSpace(parts[2]), err)
			continue
		}
		if in.Len != want {
			t.Errorf("%#x % x (%s): length %d, objdump says %d", addr, code[:want], strings.TrimSpace(parts[2]), in.Len, want)
		}
		if code[0] == 0xc4 || code[0] == 0xc5 || code[0] == 0x62 {
			vex++
		}
		n++
	}
	if n == 0 {
		t.Fatalf("objdump listed no instructions in %s", path)
	}
	return n, vex
}
