package elfpatch

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/testutil"
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
