package safepoint

import (
	"errors"
	"strings"
	"testing"
)

// Judge names every blocking frame (every thread, and several frames of
// one thread), lets the frames Spec.Stay proves stay with its reason, lets
// allowed ones stay by name (the operator's name for a clone), and keeps
// the entry bytes and incomplete stacks blocking whatever Stay says.
func TestJudgeAll(t *testing.T) {
	mainR := Range{Start: 0x1000, End: 0x1200, Name: "main", Allow: "main"}
	acc := Range{Start: 0x2000, End: 0x2040, Name: "accept_conn.constprop.0", Allow: "accept_conn"}
	entryAcc := Range{Start: 0x2000, End: 0x2005, Name: acc.Name}
	stay := func(fn string, pc uint64, exact bool) StayVerdict {
		if pc == 0x1050 && !exact {
			return StayVerdict{OK: true, Why: "proven"}
		}
		return StayVerdict{Why: "a changed instruction is reachable"}
	}
	tail := Frame{PC: 0x9000, Function: "_start"}
	stacks := map[int][]Frame{
		// main waits in accept_conn: both frames judged.
		10: {{PC: 0x7000, Exact: true}, {PC: 0x2010}, {PC: 0x1050}, tail},
		// A worker inside main at an unproven place, and inside the
		// entry bytes of accept_conn.
		11: {{PC: 0x1100, Exact: true}, tail},
		12: {{PC: 0x2002, Exact: true}, tail},
		13: {{PC: 0x7000, Exact: true, Incomplete: true, Reason: "no CFI"}},
	}
	spec := Spec{Functions: []Range{mainR, acc}, Entries: []Range{entryAcc}, Stay: stay}
	j := Judge(stacks, spec)
	if len(j.Stayed) != 1 || j.Stayed[0].Tid != 10 || j.Stayed[0].Frame != 2 || j.Stayed[0].Why != "proven" {
		t.Fatalf("stayed %+v, want thread 10's main frame, proven", j.Stayed)
	}
	type want struct {
		tid, frame        int
		entry, incomplete bool
		allow             string
	}
	wants := []want{{10, 1, false, false, "accept_conn"}, {11, 0, false, false, "main"}, {12, 0, true, false, ""}, {13, 0, false, true, ""}}
	if len(j.Blockers) != len(wants) {
		t.Fatalf("%d blockers, want %d: %v", len(j.Blockers), len(wants), (&BlockedError{Blockers: j.Blockers}).Error())
	}
	for i, w := range wants {
		b := j.Blockers[i]
		if b.Tid != w.tid || b.Frame != w.frame || b.Entry != w.entry || b.Incomplete != w.incomplete || b.Allow != w.allow {
			t.Errorf("blocker %d: %+v, want %+v", i, b, w)
		}
		if !w.entry && !w.incomplete && b.Why != "a changed instruction is reachable" {
			t.Errorf("blocker %d: why %q", i, b.Why)
		}
	}
	err := error(&BlockedError{Blockers: j.Blockers})
	var ae *ActiveError
	if !errors.Is(err, ErrActive) || !errors.As(err, &ae) || ae.Tid != 10 {
		t.Errorf("BlockedError does not unwrap to the first *ActiveError: %v", err)
	}
	msg := err.Error()
	for _, s := range []string{"4 frames block", "--allow-active accept_conn", "--allow-active main", "thread 12", "thread 13"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error lacks %q: %s", s, msg)
		}
	}
	if got := Blockers(err); len(got) != 4 {
		t.Errorf("Blockers: %d", len(got))
	}

	// The operator's name lets the clone stay; its own name too.
	for _, n := range []string{"accept_conn", "accept_conn.constprop.0"} {
		spec.AllowActive = []string{n, "main"}
		j = Judge(map[int][]Frame{10: stacks[10]}, spec)
		if len(j.Blockers) != 0 || len(j.Stayed) != 2 || !j.Stayed[0].Allowed {
			t.Errorf("allow %s: blockers %v stayed %+v", n, j.Blockers, j.Stayed)
		}
	}
}
