package elfpatch

import (
	"bufio"
	"bytes"
	"debug/dwarf"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/testutil"
	"graft/internal/x86dec"
)

// The locations FrameVarsAt reports are checked against gdb's own reading
// of the same DWARF ("info scope", through testdata/framevars/scope.py)
// at every call's return address of the functions the sshd v5 -> v6
// frame switch concerns, and FrameCFA against readelf's interpretation
// of .eh_frame.

func funcSymbol(t testing.TB, b *Binary, name string) *symbol {
	t.Helper()
	for _, s := range b.syms {
		if s.fn && s.name == name {
			return s
		}
	}
	t.Fatalf("%s: no function %s", b.path, name)
	return nil
}

type callSite struct {
	callee string // PLT stubs by the symbol they are bound to
	ret    uint64
}

// callSites decodes a function and lists its direct calls with their
// return addresses.
func callSites(t testing.TB, b *Binary, s *symbol) []callSite {
	t.Helper()
	code := b.read(s.addr, s.size)
	if code == nil {
		t.Fatalf("cannot read %s", s.name)
	}
	n := newNormaliser(b)
	var out []callSite
	for off := 0; off < len(code); {
		in, err := x86dec.Decode(code[off:], s.addr+uint64(off))
		if err != nil {
			t.Fatalf("decode %s+%#x: %v", s.name, off, err)
		}
		off += in.Len
		if in.Op != x86asm.CALL {
			continue
		}
		ret := s.addr + uint64(off)
		if _, ok := in.Args[0].(x86asm.Rel); !ok {
			out = append(out, callSite{"*indirect", ret})
			continue
		}
		name := "?"
		if b.inPLT(in.Target) {
			name = n.pltName(in.Target)
		} else if c := b.symbolAt(in.Target); c != nil {
			name = c.name
		}
		out = append(out, callSite{name, ret})
	}
	return out
}

func returnAfter(t testing.TB, b *Binary, fn, callee string) (entry, ret uint64) {
	t.Helper()
	s := funcSymbol(t, b, fn)
	var rets []uint64
	for _, c := range callSites(t, b, s) {
		if c.callee == callee {
			rets = append(rets, c.ret)
		}
	}
	if len(rets) != 1 {
		t.Fatalf("%s: %d calls to %s, want 1", fn, len(rets), callee)
	}
	return s.addr, rets[0]
}

func varsByPath(vs []FrameVar) map[string][]FrameVar {
	m := map[string][]FrameVar{}
	for _, v := range vs {
		m[v.Path] = append(m[v.Path], v)
	}
	return m
}

func want1(t *testing.T, where string, m map[string][]FrameVar, path string, kind VarKind) FrameVar {
	t.Helper()
	vs := m[path]
	if len(vs) != 1 {
		t.Fatalf("%s: %d variables %q, want 1 (have %v)", where, len(vs), path, m)
	}
	if vs[0].Kind != kind {
		t.Errorf("%s: %v, want kind %v", where, vs[0], kind)
	}
	return vs[0]
}

// gdbVar is one symbol of gdb's "info scope" output: its path (as
// FrameVar.Path) and the text gdb gives for it.
type gdbVar struct {
	path, desc string
	unchecked  bool // in a block gdb's "info scope" cannot show
}

var haveGDB = sync.OnceValue(func() bool { _, err := exec.LookPath("gdb"); return err == nil })

// gdbScopes runs scope.py once for all pcs of a binary.
func gdbScopes(t *testing.T, bin string, pcs []uint64) map[uint64][]gdbVar {
	t.Helper()
	var list []string
	for _, pc := range pcs {
		list = append(list, "0x"+strconv.FormatUint(pc, 16))
	}
	script, _ := filepath.Abs(filepath.Join("testdata", "framevars", "scope.py"))
	cmd := exec.Command("gdb", "-nx", "-batch", "-ex", "python PCS=["+strings.Join(list, ",")+"]", "-x", script, bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	m := map[uint64][]gdbVar{}
	var cur uint64
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), "\t", 3)
		switch {
		case len(f) == 2 && f[0] == "PC":
			cur, _ = strconv.ParseUint(f[1], 16, 64)
			m[cur] = []gdbVar{}
		case len(f) == 2 && f[0] == "UNCHECKED":
			m[cur] = append(m[cur], gdbVar{path: f[1], unchecked: true})
		case len(f) >= 2 && f[0] == "MISMATCH":
			t.Fatalf("scope.py at %#x: %s", cur, sc.Text())
		case len(f) == 2:
			name, desc, _ := strings.Cut(f[1], " is ")
			m[cur] = append(m[cur], gdbVar{path: f[0] + name, desc: desc})
		default:
			t.Fatalf("unexpected gdb output: %q\n%s", sc.Text(), out)
		}
	}
	for _, pc := range pcs {
		if _, ok := m[pc]; !ok {
			t.Fatalf("gdb said nothing for %#x:\n%s", pc, out)
		}
	}
	return m
}

var (
	gdbRange  = regexp.MustCompile(`Range (0x[0-9a-f]+)-(0x[0-9a-f]+): `)
	gdbLength = regexp.MustCompile(`, length (\d+)\.$`)
	gdbOp     = regexp.MustCompile(`\d+: (DW_OP_\w+)((?: [^|]*)?)`)
	// gdb prints the frame base's own offset, then DW_OP_fbreg's.
	gdbFrameBase = regexp.MustCompile(`^a variable at frame base reg \$(\w+) offset (-?\d+)\+(-?\d+)$`)
)

// gdbLocation reads gdb's description of a symbol as a FrameVar (Kind,
// Reg, Off, Value, Size); skip is set for what FrameVarsAt leaves out
// (functions, statics).
func gdbLocation(t *testing.T, b *Binary, desc string, pc uint64, frameBase []byte) (v FrameVar, skip bool) {
	t.Helper()
	if m := gdbLength.FindStringSubmatch(desc); m != nil {
		v.Size, _ = strconv.ParseInt(m[1], 10, 64)
		desc = strings.TrimSuffix(desc, m[0])
	}
	if strings.HasPrefix(desc, "a function at") || strings.HasPrefix(desc, "a label at") || strings.Contains(desc, "static storage at") {
		return v, true
	}
	if rest, ok := strings.CutPrefix(desc, "multi-location:"); ok {
		ms := gdbRange.FindAllStringSubmatchIndex(rest, -1)
		desc = "optimized out"
		for i, m := range ms {
			lo, _ := strconv.ParseUint(rest[m[2]:m[3]], 0, 64)
			hi, _ := strconv.ParseUint(rest[m[4]:m[5]], 0, 64)
			end := len(rest)
			if i+1 < len(ms) {
				end = ms[i+1][0]
			}
			if lo <= pc && pc < hi {
				desc = rest[m[1]:end]
				break
			}
		}
	}
	desc = strings.Trim(desc, " |.,")
	switch {
	case strings.HasPrefix(desc, "a variable in $"):
		name := strings.TrimPrefix(desc, "a variable in $")
		for i, r := range x86DwarfRegs {
			if r == name {
				v.Kind, v.Reg = VarReg, i
			}
		}
	case strings.HasPrefix(desc, "the constant "), strings.HasPrefix(desc, "a constant with value "):
		f := strings.Fields(desc)
		n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if strings.HasPrefix(desc, "a constant") {
			n, err = strconv.ParseInt(f[4], 10, 64)
		}
		if err != nil {
			t.Fatalf("gdb constant %q: %v", desc, err)
		}
		v.Kind, v.Value = VarConst, uint64(n)
	case strings.HasPrefix(desc, "a variable at frame base reg $"):
		// DW_OP_fbreg with a register frame base (clang's DW_OP_reg7):
		// "a variable at frame base reg $rsp offset 0+16".
		m := gdbFrameBase.FindStringSubmatch(desc)
		if m == nil {
			t.Fatalf("gdb: %q", desc)
		}
		a, _ := strconv.ParseInt(m[2], 0, 64)
		o, _ := strconv.ParseInt(m[3], 0, 64)
		if m[1] != "rsp" {
			break // unknown: only rsp-based locations are compared
		}
		cfa, err := b.FrameCFA(pc)
		if err != nil {
			t.Fatalf("gdb says %q at %#x: %v", desc, pc, err)
		}
		v.Kind, v.Off = VarFrame, a+o-cfa
	case strings.Contains(desc, "piece"):
		// unknown: in pieces
	case strings.HasPrefix(desc, "a complex DWARF expression:"):
		ops := gdbOp.FindAllStringSubmatch(desc, -1)
		arg := func(i int) int64 {
			f := strings.Fields(ops[i][2])
			n, err := strconv.ParseInt(f[0], 0, 64)
			if err != nil {
				t.Fatalf("gdb operand %q: %v", ops[i][0], err)
			}
			return n
		}
		value := len(ops) == 2 && ops[1][1] == "DW_OP_stack_value"
		breg := -1
		if len(ops) > 0 && strings.HasPrefix(ops[0][1], "DW_OP_breg") {
			breg, _ = strconv.Atoi(strings.TrimPrefix(ops[0][1], "DW_OP_breg"))
		}
		cfa := func() int64 {
			cfa, err := b.FrameCFA(pc)
			if err != nil {
				t.Fatalf("gdb says %q at %#x: %v", desc, pc, err)
			}
			return cfa
		}
		// DW_OP_fbreg is relative to the CFA (gcc) or to rsp (clang).
		fbOff := func() int64 {
			if bytes.Equal(frameBase, []byte{0x57}) { // DW_OP_reg7
				return -cfa()
			}
			if !bytes.Equal(frameBase, []byte{0x9c}) { // DW_OP_call_frame_cfa
				t.Fatalf("frame base % x", frameBase)
			}
			return 0
		}
		switch {
		case len(ops) == 1 && ops[0][1] == "DW_OP_fbreg":
			v.Kind, v.Off = VarFrame, arg(0)+fbOff()
		case value && ops[0][1] == "DW_OP_fbreg":
			v.Kind, v.Off = VarFrameAddr, arg(0)+fbOff()
		case len(ops) == 1 && breg == 7:
			v.Kind, v.Off = VarFrame, arg(0)-cfa()
		case value && breg == 7:
			v.Kind, v.Off = VarFrameAddr, arg(0)-cfa()
		case value && breg >= 0 && breg <= 16 && arg(0) == 0:
			v.Kind, v.Reg = VarReg, breg
		case len(ops) == 2 && ops[1][1] == "DW_OP_stack_value" && strings.HasPrefix(ops[0][1], "DW_OP_lit"):
			n, _ := strconv.ParseUint(strings.TrimPrefix(ops[0][1], "DW_OP_lit"), 10, 64)
			v.Kind, v.Value = VarConst, n
		case len(ops) == 2 && ops[1][1] == "DW_OP_stack_value" && strings.HasPrefix(ops[0][1], "DW_OP_const"):
			v.Kind, v.Value = VarConst, uint64(arg(0))
		case len(ops) == 2 && ops[1][1] == "DW_OP_stack_value" && ops[0][1] == "DW_OP_addr":
			v.Kind, v.Value, v.LinkAddr = VarConst, uint64(arg(0)), true
		}
	}
	v.Why = desc
	return v, false
}

// compareGDB checks that FrameVarsAt and gdb see the same variables at
// pc in the same places. It returns how many variables gdb could not be
// asked about.
func compareGDB(t *testing.T, b *Binary, where string, fn, pc uint64, vs []FrameVar, g []gdbVar) (unchecked int) {
	t.Helper()
	fb := frameBaseOf(t, b, fn)
	gdb := map[string][]FrameVar{}
	skipped := map[string]bool{}
	for _, gv := range g {
		if gv.unchecked {
			skipped[gv.path] = true
			continue
		}
		v, skip := gdbLocation(t, b, gv.desc, pc, fb)
		if !skip {
			v.Path = gv.path
			gdb[gv.path] = append(gdb[gv.path], v)
		}
	}
	mine := varsByPath(vs)
	for path, ms := range mine {
		if skipped[path] {
			unchecked += len(ms)
			continue
		}
		gs := gdb[path]
		if len(ms) > 1 || ms[0].Why == "ambiguous" {
			if len(ms) < 2 || len(gs) < 2 {
				t.Errorf("%s: %d variables %q, gdb has %d", where, len(ms), path, len(gs))
			}
			for _, m := range ms {
				if m.Kind != VarUnknown || m.Why != "ambiguous" {
					t.Errorf("%s: %v, want unknown (ambiguous)", where, m)
				}
			}
			continue
		}
		m := ms[0]
		// gdb adds an "optimized out" copy of an inlined function's
		// abstract variable when the concrete one sits in a block of
		// its own; the real one is the other.
		var real []FrameVar
		for _, gv := range gs {
			if gv.Why != "optimized out" {
				real = append(real, gv)
			}
		}
		if len(real) == 0 && len(gs) > 0 {
			real = gs[:1]
		}
		switch {
		case len(real) == 0:
			t.Errorf("%s: %v: gdb does not list %q", where, m, path)
			continue
		case len(real) > 1:
			t.Errorf("%s: %v: gdb lists %d of them", where, m, len(real))
			continue
		}
		gv := real[0]
		if gv.Size != 0 && gv.Size != m.Size {
			t.Errorf("%s: %s: size %d, gdb says %d", where, path, m.Size, gv.Size)
		}
		same := gv.Kind == m.Kind
		switch m.Kind {
		case VarReg:
			same = same && gv.Reg == m.Reg
		case VarFrame, VarFrameAddr:
			same = same && gv.Off == m.Off
		case VarConst:
			same = same && gv.Value == m.Value && gv.LinkAddr == m.LinkAddr
		}
		if !same {
			t.Errorf("%s: %v, gdb says %q", where, m, gv.Why)
		}
	}
	for path, gs := range gdb {
		if _, ok := mine[path]; ok || skipped[path] {
			continue
		}
		for _, gv := range gs {
			if gv.Why != "optimized out" {
				t.Errorf("%s: gdb has %s (%q), FrameVarsAt does not", where, path, gv.Why)
			}
		}
	}
	return unchecked
}

// readelfFrames returns readelf's row of unwind rules at each pc, by
// column ("CFA": "rsp+608", "rbx": "c-56", "ra": "c-8"); no entry for a pc
// no FDE covers.
func readelfFrames(t *testing.T, bin string, pcs []uint64) map[uint64]map[string]string {
	t.Helper()
	out, err := exec.Command("readelf", "--debug-dump=frames-interp", bin).Output()
	if err != nil {
		t.Fatalf("readelf: %v", err)
	}
	fdeRE := regexp.MustCompile(`FDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)`)
	rowRE := regexp.MustCompile(`^[0-9a-f]{16} `)
	type row struct {
		loc  uint64
		cols map[string]string
	}
	type fde struct {
		lo, hi uint64
		names  []string
		rows   []row
	}
	var fdes []*fde
	for _, line := range strings.Split(string(out), "\n") {
		if m := fdeRE.FindStringSubmatch(line); m != nil {
			lo, _ := strconv.ParseUint(m[1], 16, 64)
			hi, _ := strconv.ParseUint(m[2], 16, 64)
			fdes = append(fdes, &fde{lo: lo, hi: hi})
			continue
		}
		if len(fdes) == 0 {
			continue
		}
		f := fdes[len(fdes)-1]
		fields := strings.Fields(line)
		switch {
		case len(fields) > 1 && fields[0] == "LOC":
			f.names = fields
		case rowRE.MatchString(line) && len(fields) == len(f.names):
			loc, _ := strconv.ParseUint(fields[0], 16, 64)
			r := row{loc, map[string]string{}}
			for i, n := range f.names[1:] {
				r.cols[n] = fields[i+1]
			}
			f.rows = append(f.rows, r)
		}
	}
	res := map[uint64]map[string]string{}
	for _, pc := range pcs {
		for _, f := range fdes {
			if f.lo <= pc && pc < f.hi {
				for _, r := range f.rows {
					if r.loc <= pc {
						res[pc] = r.cols
					}
				}
			}
		}
	}
	return res
}

// checkFrame compares FrameCFA and FrameSaves at pc with readelf's row.
func checkFrame(t *testing.T, b *Binary, where string, pc uint64, row map[string]string) {
	t.Helper()
	cfa, err := b.FrameCFA(pc)
	if err != nil || "rsp+"+strconv.FormatInt(cfa, 10) != row["CFA"] {
		t.Errorf("%s (%#x): FrameCFA = %d, %v; readelf says %s", where, pc, cfa, err, row["CFA"])
	}
	saves, err := b.FrameSaves(pc)
	if err != nil {
		t.Errorf("%s (%#x): FrameSaves: %v; readelf says %v", where, pc, err, row)
		return
	}
	seen := 0
	for name, rule := range row {
		if name == "CFA" {
			continue
		}
		reg := 16
		if name != "ra" {
			reg = -1
			for i, n := range x86DwarfRegs {
				if n == name {
					reg = i
				}
			}
		}
		off, saved := saves[reg]
		switch {
		case reg < 0:
			t.Errorf("%s: readelf column %q", where, name)
		case rule == "u":
			if saved {
				t.Errorf("%s (%#x): %s saved at CFA%+d, readelf says not saved", where, pc, name, off)
			}
		case strings.HasPrefix(rule, "c"):
			seen++
			if want, _ := strconv.ParseInt(rule[1:], 10, 64); !saved || off != want {
				t.Errorf("%s (%#x): %s saved at CFA%+d (%v), readelf says %s", where, pc, name, off, saved, rule)
			}
		default:
			t.Errorf("%s (%#x): %s: readelf rule %q, FrameSaves has no error", where, pc, name, rule)
		}
	}
	if seen != len(saves) {
		t.Errorf("%s (%#x): FrameSaves %v, readelf %v", where, pc, saves, row)
	}
}

func TestFrameVarsSSHD(t *testing.T) {
	for _, ver := range []string{"sshd-v5", "sshd-v6"} {
		t.Run(ver, func(t *testing.T) {
			bin := testutil.Build(t, ver)
			b, err := Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			at := func(fn, pc uint64) map[string][]FrameVar {
				t.Helper()
				vs, err := b.FrameVarsAt(fn, pc)
				if err != nil {
					t.Fatal(err)
				}
				return varsByPath(vs)
			}

			// session_thread waiting in read (inlined read_line).
			fn, ra := returnAfter(t, b, "session_thread", "read")
			m := at(fn, ra)
			where := "session_thread after read"
			s := want1(t, where, m, "s", VarReg)
			if s.Reg != 13 || !s.Pointer || s.Size != 8 {
				t.Errorf("%s: s = %+v, want a pointer in r13", where, s)
			}
			if line := want1(t, where, m, "line", VarFrame); line.Size != 512 || line.Off >= 0 {
				t.Errorf("%s: line = %+v, want 512 bytes below the CFA", where, line)
			}
			want1(t, where, m, "read_line/n", VarReg)
			if fd := want1(t, where, m, "read_line/fd", VarReg); !fd.Param || fd.Size != 4 {
				t.Errorf("%s: read_line/fd = %+v, want an int parameter", where, fd)
			}

			// main waiting in accept.
			fn, ra = returnAfter(t, b, "main", "accept")
			m = at(fn, ra)
			where = "main after accept"
			for _, p := range []string{"peer", "plen", "attr"} {
				if v := want1(t, where, m, p, VarFrame); v.Off >= 0 {
					t.Errorf("%s: %v above the CFA", where, v)
				}
			}
			want1(t, where, m, "lfd", VarReg)

			// housekeeping_thread waiting in nanosleep.
			fn, ra = returnAfter(t, b, "housekeeping_thread", "nanosleep")
			m = at(fn, ra)
			where = "housekeeping_thread after nanosleep"
			for _, p := range []string{"pause", "start", "now"} {
				want1(t, where, m, p, VarFrame)
			}

			// Every call of the three functions, against gdb and readelf.
			type site struct {
				fn, ret uint64
				where   string
			}
			var sites []site
			var pcs []uint64
			for _, name := range []string{"session_thread", "main", "housekeeping_thread"} {
				sym := funcSymbol(t, b, name)
				for _, c := range callSites(t, b, sym) {
					sites = append(sites, site{sym.addr, c.ret, name + " after " + c.callee})
					pcs = append(pcs, c.ret)
				}
			}
			rows := readelfFrames(t, bin, pcs)
			for _, s := range sites {
				checkFrame(t, b, s.where, s.ret, rows[s.ret])
			}
			if !haveGDB() {
				t.Log("gdb is not installed: locations not compared with gdb's")
				return
			}
			g := gdbScopes(t, bin, pcs)
			kinds := map[VarKind]int{}
			for _, s := range sites {
				vs, err := b.FrameVarsAt(s.fn, s.ret)
				if err != nil {
					t.Fatalf("%s: %v", s.where, err)
				}
				for _, v := range vs {
					kinds[v.Kind]++
				}
				compareGDB(t, b, s.where+" ("+strconv.FormatUint(s.ret, 16)+")", s.fn, s.ret, vs, g[s.ret])
			}
			t.Logf("%d return addresses compared with gdb: %v variables by kind", len(sites), kinds)
			for _, k := range []VarKind{VarUnknown, VarReg, VarFrame, VarConst, VarFrameAddr} {
				if kinds[k] == 0 {
					t.Errorf("no variable of kind %v at any return address: the comparison did not exercise it", k)
				}
			}
		})
	}
}

func TestFrameVarsFixture(t *testing.T) {
	// GCC 12's default DWARF 5 (.debug_loclists, .debug_rnglists) and
	// DWARF 4 (.debug_loc, .debug_ranges).
	for _, dw := range []string{"-gdwarf-5", "-gdwarf-4"} {
		t.Run(dw, func(t *testing.T) { testFrameVarsFixture(t, dw) })
	}
}

func testFrameVarsFixture(t *testing.T, dwarfFlag string) {
	bin := filepath.Join(fixtureDir, "framevars"+dwarfFlag)
	if out, err := exec.Command("gcc", "-g", dwarfFlag, "-O2", "-o", bin, filepath.Join("testdata", "framevars", "vars.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	shadow := funcSymbol(t, b, "shadow")
	var rets []uint64
	for _, c := range callSites(t, b, shadow) {
		if c.callee == "use" {
			rets = append(rets, c.ret)
		}
	}
	if len(rets) != 2 {
		t.Fatalf("shadow calls use %d times, want 2", len(rets))
	}
	ra := rets[1]
	vs, err := b.FrameVarsAt(shadow.addr, ra)
	if err != nil {
		t.Fatal(err)
	}
	m := varsByPath(vs)
	where := "shadow after use(&x)"
	if xs := m["x"]; len(xs) != 2 || xs[0].Why != "ambiguous" || xs[1].Why != "ambiguous" {
		t.Errorf("%s: x = %v, want two ambiguous", where, xs)
	}
	if k := want1(t, where, m, "k", VarConst); k.Value != 42 {
		t.Errorf("%s: k = %v, want 42", where, k)
	}
	if g := want1(t, where, m, "gone", VarUnknown); !strings.Contains(g.Why, "optimized out") {
		t.Errorf("%s: gone: %q", where, g.Why)
	}
	want1(t, where, m, "slot", VarFrame)
	if a := want1(t, where, m, "a", VarReg); !a.Param {
		t.Errorf("%s: a is not a parameter", where)
	}

	framed := funcSymbol(t, b, "framed")
	var fra uint64
	for _, c := range callSites(t, b, framed) {
		if c.callee == "use" {
			fra = c.ret
		}
	}
	if _, err := b.FrameCFA(fra); err == nil || !strings.Contains(err.Error(), "rbp") {
		t.Errorf("FrameCFA in a frame-pointer frame: %v, want an error naming rbp", err)
	}
	fvs, err := b.FrameVarsAt(framed.addr, fra)
	if err != nil {
		t.Fatal(err)
	}
	want1(t, "framed after use", varsByPath(fvs), "slot", VarFrame)

	// A call in the cold part of split: the subprogram's second range.
	split, cold := funcSymbol(t, b, "split"), funcSymbol(t, b, "split.cold")
	var cra uint64
	for _, c := range callSites(t, b, cold) {
		if c.callee == "fail" {
			cra = c.ret
		}
	}
	cvs, err := b.FrameVarsAt(split.addr, cra)
	if err != nil {
		t.Fatalf("split.cold after fail: %v", err)
	}
	cm := varsByPath(cvs)
	want1(t, "split.cold after fail", cm, "local", VarFrame)
	want1(t, "split.cold after fail", cm, "slot", VarFrame)
	if cfa, err := b.FrameCFA(cra); err != nil || cfa != 24 {
		t.Errorf("FrameCFA in split.cold = %d, %v; want 24 (the caller's 16 and the return address)", cfa, err)
	}

	if _, err := b.FrameVarsAt(shadow.addr+1, ra); err == nil {
		t.Error("FrameVarsAt accepted an address that starts no function")
	}
	if _, err := b.FrameVarsAt(shadow.addr, framed.addr); err == nil {
		t.Error("FrameVarsAt accepted a pc outside the function")
	}

	if !haveGDB() {
		t.Log("gdb is not installed: locations not compared with gdb's")
		return
	}
	g := gdbScopes(t, bin, []uint64{rets[0], ra, fra, cra})
	for _, c := range []struct {
		fn, pc uint64
	}{{shadow.addr, rets[0]}, {shadow.addr, ra}, {framed.addr, fra}, {split.addr, cra}} {
		vs, err := b.FrameVarsAt(c.fn, c.pc)
		if err != nil {
			t.Fatal(err)
		}
		compareGDB(t, b, "vars.c "+strconv.FormatUint(c.pc, 16), c.fn, c.pc, vs, g[c.pc])
	}
}

// TestFrameVarsEveryCall compares FrameVarsAt with gdb and FrameCFA with
// readelf at the return address of every direct and indirect call in
// every function of more builds: other testprocs (other inlining,
// pieces, DW_OP_addr constants, noreturn calls) and, when clang is
// installed, sshd v5 built by clang (DWARF 5 with DW_FORM_loclistx and
// rnglistx, .debug_addr, a DW_OP_reg7 frame base).
func TestFrameVarsEveryCall(t *testing.T) {
	if !haveGDB() {
		t.Skip("gdb is not installed: this test is the comparison with gdb")
	}
	for _, name := range []string{"ftpd-v8", "statd-v4", "handshake-v2"} {
		t.Run(name, func(t *testing.T) { compareEveryCall(t, testutil.Build(t, name)) })
	}
	t.Run("clang-sshd-v5", func(t *testing.T) {
		if _, err := exec.LookPath("clang"); err != nil {
			t.Skip("clang is not installed (apt-get install clang): its DWARF forms are not compared")
		}
		bin := filepath.Join(fixtureDir, "sshd-v5-clang")
		src := filepath.Join(testutil.TestprocsDir(), "sshd", "v5", "sshd.c")
		if out, err := exec.Command("clang", "-g", "-O2", "-o", bin, src, "-lpthread").CombinedOutput(); err != nil {
			t.Fatalf("clang: %v\n%s", err, out)
		}
		compareEveryCall(t, bin)
	})
}

func compareEveryCall(t *testing.T, bin string) {
	b, err := Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	type site struct {
		fn, ret uint64
		end     bool // the call ends the function
		where   string
	}
	var sites []site
	var pcs []uint64
	for _, s := range b.syms {
		if !s.fn || s.sect != ".text" || s.name == "_start" {
			continue
		}
		for _, c := range callSites(t, b, s) {
			sites = append(sites, site{s.addr, c.ret, c.ret == s.addr+s.size, s.name + " after " + c.callee})
			pcs = append(pcs, c.ret)
		}
	}
	rows := readelfFrames(t, bin, pcs)
	for _, s := range sites {
		row, ok := rows[s.ret]
		if !ok {
			// Past a noreturn call at a function's end, in the
			// padding before the next: no FDE covers it.
			if cfa, err := b.FrameCFA(s.ret); err == nil {
				t.Errorf("%s (%#x): FrameCFA = %d, readelf finds no FDE", s.where, s.ret, cfa)
			}
			continue
		}
		checkFrame(t, b, s.where, s.ret, row)
	}
	g := gdbScopes(t, bin, pcs)
	kinds := map[VarKind]int{}
	unchecked := 0
	for _, s := range sites {
		vs, err := b.FrameVarsAt(s.fn, s.ret)
		if s.end {
			if err == nil || !strings.Contains(err.Error(), "does not return") {
				t.Errorf("%s (%#x), the end of the function: %v, want an error saying the call does not return", s.where, s.ret, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", s.where, err)
			continue
		}
		for _, v := range vs {
			kinds[v.Kind]++
		}
		unchecked += compareGDB(t, b, s.where+" ("+strconv.FormatUint(s.ret, 16)+")", s.fn, s.ret, vs, g[s.ret])
	}
	if len(sites) == 0 || kinds[VarReg]+kinds[VarFrame] == 0 {
		t.Errorf("%d call sites, %v variables: nothing compared", len(sites), kinds)
	}
	t.Logf("%d return addresses compared with gdb: %v variables by kind, %d in blocks gdb cannot show", len(sites), kinds, unchecked)
}

// TestFrameVarsSeparateDebugFile: a build stripped of its DWARF whose
// debug file is installed by build-id gives the same variables as the
// unstripped build (the location lists are read from the debug file),
// and without it a clear error.
func TestFrameVarsSeparateDebugFile(t *testing.T) {
	bin := testutil.Build(t, "sshd-v5")
	full, err := Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	fn, ra := returnAfter(t, full, "session_thread", "read")
	want, err := full.FrameVarsAt(fn, ra)
	if err != nil {
		t.Fatal(err)
	}

	root := t.TempDir()
	saved := debugRoots
	debugRoots = []string{root}
	t.Cleanup(func() { debugRoots = saved })
	if _, err := stripped(t, bin).FrameVarsAt(fn, ra); err == nil || !strings.Contains(err.Error(), "-g") {
		t.Errorf("no DWARF and no debug file: %v, want an error saying to build with -g", err)
	}

	id := full.BuildID()
	dbg := filepath.Join(root, ".build-id", id[:2], id[2:]+".debug")
	if out, err := exec.Command("mkdir", "-p", filepath.Dir(dbg)).CombinedOutput(); err != nil {
		t.Fatalf("mkdir: %v\n%s", err, out)
	}
	if out, err := exec.Command("objcopy", "--only-keep-debug", bin, dbg).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	got, err := stripped(t, bin).FrameVarsAt(fn, ra)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("with the debug file:\n%v\nunstripped:\n%v", got, want)
	}
	if m := varsByPath(got); len(m["s"]) != 1 || m["s"][0].Kind != VarReg {
		t.Errorf("with the debug file: s = %v", m["s"])
	}
}

// frameBaseOf reads DW_AT_frame_base of the subprogram whose code starts at fn
// straight from debug/dwarf, for gdbLocation's reading of DW_OP_fbreg.
func frameBaseOf(t *testing.T, b *Binary, fn uint64) []byte {
	t.Helper()
	r := b.dw.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			t.Fatalf("no subprogram at %#x (%v)", fn, err)
		}
		if e.Tag != dwarf.TagSubprogram {
			continue
		}
		rs, _ := b.dw.Ranges(e) // low_pc/high_pc, or the hot and cold parts
		if len(rs) > 0 && rs[0][0] == fn {
			fb, _ := e.Val(dwarf.AttrFrameBase).([]byte)
			return fb
		}
	}
}

// FuzzFrameVarExpr feeds arbitrary location expressions to the
// classification FrameVarsAt applies to each variable: it must never
// panic, and what it reports must be consistent.
func FuzzFrameVarExpr(f *testing.F) {
	bin := testutil.Build(f, "sshd-v5")
	b, err := Open(bin)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range [][]byte{
		{0x91, 0xc0, 0x7b},             // DW_OP_fbreg -576
		{0x5d},                         // DW_OP_reg13
		{0x77, 0x08},                   // DW_OP_breg7 8
		{0x0a, 0x00, 0x02, 0x9f},       // DW_OP_const2u 512; DW_OP_stack_value
		{0xa3, 0x01, 0x55, 0x9f},       // DW_OP_entry_value(DW_OP_reg5); DW_OP_stack_value
		{0x91, 0x48, 0x93, 0x08, 0x5d}, // DW_OP_fbreg -56; DW_OP_piece 8; DW_OP_reg13
		{0x9e, 0x02, 0x2a, 0x00},       // DW_OP_implicit_value 2 {42, 0}
		{0x03, 1, 2, 3, 4, 5, 6, 7, 8, 0x9f},
	} {
		f.Add(e)
	}
	_, ra := returnAfter(f, b, "session_thread", "read")
	f.Fuzz(func(t *testing.T, expr []byte) {
		w := &varWalker{b: b, d: b.dw, fd: b.frameData(), pc: ra, frameBase: []byte{dwOpCallFrameCFA}}
		var v FrameVar
		w.classify(&v, expr)
		switch v.Kind {
		case VarUnknown:
			if v.Why == "" {
				t.Errorf("% x: unknown without a reason", expr)
			}
		case VarReg:
			if v.Reg < 0 || v.Reg > 16 {
				t.Errorf("% x: register %d", expr, v.Reg)
			}
		}
		_ = hasPieces(expr)
		_ = prettyExpr(expr)
	})
}
