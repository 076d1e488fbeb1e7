package elfpatch

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/testutil"
	"graft/trampoline"
)

// returnAfterCall finds, in function fn of b, the return address of its
// only call to the PLT entry of callee.
func returnAfterCall(t *testing.T, b *Binary, fn, callee string) uint64 {
	t.Helper()
	sd := prepare(b, true)
	var u *unit
	for _, x := range sd.units {
		if x.sym.name == fn {
			u = x
		}
	}
	require.NotNil(t, u, fn)
	f := sd.decodeResume(u)
	var found []uint64
	for i := range f.ins {
		ri := &f.ins[i]
		if ri.kind != rBadDec && ri.in.Op == x86asm.CALL && strings.HasSuffix(ri.token, ":"+callee) && ri.next >= 0 {
			found = append(found, f.ins[ri.next].addr)
		}
	}
	require.Len(t, found, 1, "calls to %s in %s", callee, fn)
	return found[0]
}

func movesByWhat(p *SwitchPlan) map[string]SwitchMove {
	out := map[string]SwitchMove{}
	for _, m := range p.Moves {
		out[m.What] = m
	}
	return out
}

// sshd v5 -> v6 with the operator's declaration: the frames that never
// leave get switch plans at the calls they wait in, both ways, built from
// the variables DWARF places and the values the new code recomputes.
func TestSwitchPlansSSHD(t *testing.T) {
	ob, nb := openSSHD(t)
	r, err := DiffRules(ob, nb, soleRules(t, "sessions", "struct session"))
	require.NoError(t, err)
	require.Len(t, r.Transfers, 1)
	plans := map[string]*Resume{}
	for i := range r.Changed {
		plans[r.Changed[i].Name] = r.Changed[i].Resume
	}
	for _, w := range []struct{ fn, callee string }{
		{"session_thread", "read"}, {"main", "accept"}, {"housekeeping_thread", "nanosleep"},
	} {
		rs := plans[w.fn]
		require.NotNil(t, rs, w.fn)
		from := returnAfterCall(t, ob, w.fn, w.callee)
		to := returnAfterCall(t, nb, w.fn, w.callee)
		p := rs.Switch.Lookup(from)
		require.NotNil(t, p, "%s: a plan at the return from %s", w.fn, w.callee)
		require.Empty(t, p.Why, "%s", w.fn)
		assert.Equal(t, to, p.To, "%s continues after NEW's call to %s", w.fn, w.callee)
		back := rs.Back.Lookup(to)
		require.NotNil(t, back, "%s: a plan back for revert", w.fn)
		require.Empty(t, back.Why)
		assert.Equal(t, from, back.To)
		t.Logf("%s: %s", w.fn, describeSwitch(p))

		m := movesByWhat(p)
		switch w.fn {
		case "session_thread":
			// The session pointer (the thread's argument) carried in
			// its register; the line buffer copied whole.
			assert.Equal(t, SwitchLoc{Kind: "reg", Reg: 13}, m["arg"].Src)
			assert.Equal(t, 512, m["line"].Size)
			assert.Equal(t, "slot", m["line"].Src.Kind)
		case "main":
			// The frame shrinks by 16 bytes; the listening socket moves
			// from rbp to rbx; attr, only reached through a pointer the
			// new code holds, is copied whole.
			assert.Equal(t, int64(272), p.FromSize)
			assert.Equal(t, int64(256), p.ToSize)
			assert.Equal(t, SwitchMove{Dst: SwitchLoc{Kind: "reg", Reg: 3}, Src: SwitchLoc{Kind: "reg", Reg: 6}, Size: 8, What: "lfd"}, m["lfd"])
			assert.Equal(t, 56, m["attr (its address is held)"].Size)
			assert.Equal(t, 16, m["peer"].Size)
		case "housekeeping_thread":
			// Hoisted addresses are recomputed from the new code
			// (r14: the moved sessions; r15: its end).
			var leas int
			for _, mv := range p.Moves {
				if mv.Src.Kind == "lea" {
					leas++
				}
			}
			assert.Equal(t, 5, leas)
		}
	}
	// A return address whose state cannot be rebuilt says why.
	var refused []string
	for _, rs := range plans {
		for _, p := range rs.Switch {
			if p.Why != "" {
				refused = append(refused, p.Why)
			}
		}
	}
	require.NotEmpty(t, refused)
	assert.Contains(t, strings.Join(refused, "\n"), "cannot be recomputed")
}

// Without transfers, no switch is planned (the resume analysis alone
// decides which frames stay).
func TestSwitchPlansOnlyWithTransfers(t *testing.T) {
	ob, err := Open(testutil.Build(t, "sshd-v2"))
	require.NoError(t, err)
	nb, err := Open(testutil.Build(t, "sshd-v3"))
	require.NoError(t, err)
	r, err := Diff(ob, nb)
	require.NoError(t, err)
	for _, c := range r.Changed {
		if c.Resume != nil {
			assert.Empty(t, c.Resume.Switch, c.Name)
			assert.Empty(t, c.Resume.Back, c.Name)
		}
	}
}

// Every adjacent C pair of testprocs, every changed function, every
// return address, both ways: the analysis never fails to answer, and
// every plan it accepts is one the switch code generator accepts, with
// every move inside the frames and no destination written twice.
func TestSwitchPlansWellFormed(t *testing.T) {
	pairs := map[string]int{"sshd": 6, "ftpd": 8, "acceptd": 6, "statd": 4, "blockread": 3, "handshake": 2}
	total, ok := 0, 0
	for prog, n := range pairs {
		for v := 1; v < n; v++ {
			ob, err := Open(testutil.Build(t, fmt.Sprintf("%s-v%d", prog, v)))
			require.NoError(t, err)
			nb, err := Open(testutil.Build(t, fmt.Sprintf("%s-v%d", prog, v+1)))
			require.NoError(t, err)
			os, ns := prepare(ob, true), prepare(nb, true)
			for _, u := range os.units {
				w := ns.byKey[u.key]
				if w == nil {
					continue
				}
				x, y := os.decodeResume(u), ns.decodeResume(w)
				fwd, back := planSwitches(ob, nb, x, y, align(x.ins, y.ins))
				for dir, ps := range []SwitchPlans{fwd, back} {
					for _, p := range ps {
						total++
						if p.Why != "" {
							require.Empty(t, p.Moves)
							continue
						}
						ok++
						checkPlan(t, fmt.Sprintf("%s v%d dir %d %s %#x", prog, v, dir, u.sym.name, p.From), &p)
					}
				}
			}
		}
	}
	t.Logf("%d of %d return addresses can switch", ok, total)
	require.Positive(t, ok)
}

func checkPlan(t *testing.T, where string, p *SwitchPlan) {
	t.Helper()
	require.Positive(t, p.FromSize, where)
	require.Positive(t, p.ToSize, where)
	regs := map[int]bool{}
	bytes := map[int64]bool{}
	for _, mv := range p.Moves {
		switch mv.Dst.Kind {
		case "reg":
			require.False(t, regs[mv.Dst.Reg], "%s: register %d written twice", where, mv.Dst.Reg)
			require.NotEqual(t, 7, mv.Dst.Reg, where)
			regs[mv.Dst.Reg] = true
		case "slot":
			for b := mv.Dst.Off; b < mv.Dst.Off+int64(mv.Size); b++ {
				require.False(t, bytes[b], "%s: frame byte CFA%+d written twice (%s)", where, b, mv.What)
				bytes[b] = true
			}
			require.GreaterOrEqual(t, mv.Dst.Off, -p.ToSize, where)
			require.LessOrEqual(t, mv.Dst.Off+int64(mv.Size), int64(-8), where)
		default:
			t.Fatalf("%s: destination %+v", where, mv.Dst)
		}
		if mv.Src.Kind == "slot" {
			require.GreaterOrEqual(t, mv.Src.Off, -p.FromSize, where)
			require.LessOrEqual(t, mv.Src.Off+int64(mv.Size), int64(0), where)
		}
	}
	// The generator takes it (addresses are placeholders).
	const far = 0x7f0000000000
	fs := &trampoline.FrameSwitch{Addr: far, Scratch: far + 0x100000, CFA: far + 0x200000,
		OldSize: uint64(p.FromSize), NewSize: uint64(p.ToSize), Target: far + 0x300000}
	for _, mv := range p.Moves {
		loc := func(l SwitchLoc) trampoline.Loc {
			switch l.Kind {
			case "reg":
				return trampoline.Loc{Kind: trampoline.LocReg, Reg: l.Reg}
			case "slot":
				return trampoline.Loc{Kind: trampoline.LocSlot, Off: l.Off}
			}
			return trampoline.Loc{Kind: trampoline.LocConst, Value: far}
		}
		fs.Moves = append(fs.Moves, trampoline.Move{Dst: loc(mv.Dst), Src: loc(mv.Src), Size: mv.Size, Reloc: mv.Size%8 == 0 && (mv.Src.Kind == "reg" || mv.Src.Kind == "slot")})
	}
	_, err := trampoline.BuildFrameSwitch(fs)
	require.NoError(t, err, where)
}
