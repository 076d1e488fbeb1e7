package elfpatch

import (
	"bytes"
	"debug/elf"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/x86dec"
)

// returnsAfter lists the return addresses of the calls from fn (or its
// parts) to callee in b: where a frame of fn waits while callee runs.
func returnsAfter(t *testing.T, b *Binary, fn, callee string) []uint64 {
	t.Helper()
	var target uint64
	for _, s := range b.syms {
		if s.name == callee && s.fn {
			target = s.addr
		}
	}
	if target == 0 {
		t.Fatalf("no function %s", callee)
	}
	var out []uint64
	for _, s := range b.syms {
		if s.name != fn && !strings.HasPrefix(s.name, fn+".cold") {
			continue
		}
		code := b.read(s.addr, s.size)
		for off := 0; off < len(code); {
			in, err := x86dec.Decode(code[off:], s.addr+uint64(off))
			if err != nil {
				off++
				continue
			}
			if in.Op == x86asm.CALL && in.RelSize > 0 && in.Target == target {
				out = append(out, s.addr+uint64(off+in.Len))
			}
			off += in.Len
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no call to %s", fn, callee)
	}
	return out
}

// TestResumeCompiled checks the proof on functions gcc -O2 compiled from
// testdata/diff/resume: each changes in one place between v1 and v2, and
// frames waiting in a call must be proven exactly when nothing changed
// lies ahead of them.
func TestResumeCompiled(t *testing.T) {
	old, nb := openFixture(t, "resume", "v1"), openFixture(t, "resume", "v2")
	r, err := Diff(old, nb)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Func{}
	for i := range r.Changed {
		byName[r.Changed[i].Name] = &r.Changed[i]
	}
	cases := []struct {
		fn, callee string
		newSide    bool // judge a frame in NEW's code (revert)
		proven     bool
		why        string // part of the reason when not proven
	}{
		// A banner inserted before the loop: a frame in the loop is
		// proven; one waiting in setup is not: the new version prints
		// the banner when setup returns, the old one would not.
		{"loop_banner", "wait_conn", false, true, ""},
		{"loop_banner", "handle", false, true, ""},
		{"loop_banner", "setup", false, false, "returns to code that changed"},
		// A counter after the blocking call, ahead of the frame.
		{"loop_ahead", "wait_conn", false, false, "changed"},
		{"loop_ahead", "wait_conn", true, false, "changed"},
		// A switch (jump table) in the loop; the banner is before it.
		{"sw_banner", "wait_conn", false, true, ""},
		{"sw_banner", "wait_conn", true, true, ""},
		// One case of the switch changed: reachable through the table.
		{"sw_case", "wait_conn", false, false, ""},
		// A counter before the blocking call, then a tail call out.
		{"tail_wrap", "wait_conn", false, true, ""},
		{"tail_wrap", "wait_conn", true, true, ""},
		// The unlikely path lives in .cold and is the same: followed,
		// proven.
		{"cold_loop", "wait_conn", false, true, ""},
		{"cold_loop", "handle", false, true, ""},
		// The .cold part's message changed: reachable, not proven.
		{"cold_changed", "wait_conn", false, false, "cold"},
		// A tail call through a function pointer: unknown target.
		{"indirect", "wait_conn", false, false, "indirect jump"},
		// Old code may call the changed sw_case (its entry jumps to the
		// new one); new code left running after a revert would call the
		// new copy directly: not proven on NEW's side.
		{"calls_changed", "wait_conn", false, true, ""},
		{"calls_changed", "wait_conn", true, false, "sw_case"},
		// The loop is the same code, but the string it prints was
		// loaded into a register before it: the data check refuses.
		{"hoisted", "wait_conn", false, false, "live here"},
		{"hoisted", "handle", false, false, "live here"},
		// A stack slot set differently before the loop, read through
		// the pointer the loop passes on.
		{"stack_local", "wait_conn", false, false, "live here"},
		{"stack_local", "use_opts", false, false, "live here"},
		// A call that never returns, the function's last instruction:
		// its frame never resumes. Behind the inserted log line, the
		// frame waiting in setup is not proven.
		{"ends_in_noreturn", "serve_forever", false, true, ""},
		{"ends_in_noreturn", "setup", false, false, "returns to code that changed"},
		// The local's address escapes into the call that fills it in,
		// which v2 replaced: the slot the loop passes on differs.
		{"escaped_init", "wait_conn", false, false, "stack slot"},
		{"escaped_init", "use_opts", false, false, "stack slot"},
	}
	for _, c := range cases {
		f := byName[c.fn]
		if f == nil || f.Resume == nil {
			t.Fatalf("%s: not reported changed with a resume analysis (changed: %v)", c.fn, names(r.Changed))
		}
		b, rs := old, f.Resume.Old
		if c.newSide {
			b, rs = nb, f.Resume.New
		}
		for _, ra := range returnsAfter(t, b, c.fn, c.callee) {
			proven, why := rs.Lookup(ra)
			if proven != c.proven || (!proven && !strings.Contains(why, c.why)) {
				t.Errorf("%s after call to %s at %#x (new side %v): proven %v (%q), want %v (reason with %q)",
					c.fn, c.callee, ra, c.newSide, proven, why, c.proven, c.why)
			}
		}
	}
	// An address that is no return address is never proven.
	f := byName["loop_banner"]
	if ok, _ := f.Resume.Old.Lookup(f.OldAddr); ok {
		t.Errorf("loop_banner's entry proven as a resume address")
	}
}

// TestResumeInPatchFile: the analysis travels in the patch file and reads
// back the same, so an apply from a file proves frames as an on-the-fly
// diff does.
func TestResumeInPatchFile(t *testing.T) {
	p, err := BuildPatch(openFixture(t, "resume", "v1"), openFixture(t, "resume", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := ReadPatch(&buf)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, f := range p.Report.Changed {
		g := q.Report.Changed[i]
		if f.Resume == nil || g.Resume == nil || !reflect.DeepEqual(f.Resume, g.Resume) {
			t.Errorf("%s: resume analysis %v written, %v read", f.Name, f.Resume, g.Resume)
			continue
		}
		n += len(g.Resume.Old.Proven())
	}
	if n == 0 {
		t.Errorf("no proven resume address survived the round trip")
	}
}

// FuzzResumeCode overwrites the code of compiled functions with arbitrary
// bytes and diffs the result against the original: the resume analysis
// (run for every changed function) must never panic, whatever it decodes.
func FuzzResumeCode(f *testing.F) {
	path := fixture(f, "resume", "v1")
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	ref, err := openBytes(data)
	if err != nil {
		f.Fatal(err)
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		f.Fatal(err)
	}
	text := ef.Section(".text")
	var targets [][2]uint64 // file offset and size of each function under test
	for _, s := range ref.syms {
		if s.fn && s.addr >= text.Addr && s.addr+s.size <= text.Addr+text.Size && s.size > 8 {
			targets = append(targets, [2]uint64{text.Offset + s.addr - text.Addr, s.size})
		}
	}
	f.Add(uint8(0), []byte{0xe8, 0, 0, 0, 0, 0xeb, 0xf9, 0xc3})
	f.Add(uint8(3), []byte{0xff, 0xe0, 0x0f, 0x84, 0x10, 0, 0, 0, 0x48, 0x8b, 0x44, 0x24, 0x08})
	f.Fuzz(func(t *testing.T, which uint8, code []byte) {
		tg := targets[int(which)%len(targets)]
		mut := bytes.Clone(data)
		copy(mut[tg[0]:tg[0]+tg[1]], code)
		b, err := openBytes(mut)
		if err != nil {
			return
		}
		recoverPanics = false
		defer func() { recoverPanics = true }()
		r, err := Diff(ref, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range r.Changed {
			if c.Resume == nil {
				t.Fatalf("%s changed without a resume analysis", c.Name)
			}
		}
	})
}
