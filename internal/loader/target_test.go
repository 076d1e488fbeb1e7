package loader

import (
	"debug/elf"
	"testing"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/tracer"
)

// attached is a running test target held by the tracer, with what Load
// needs: its modules, the main executable among them and a resolver for
// its libraries.
type attached struct {
	proc *testutil.Proc
	p    *tracer.Process
	mods []tracer.Module
	main *tracer.Module
	res  *Resolver
}

// attach attaches to proc. At cleanup (before testutil's kill, which was
// registered first) it detaches and requires every thread released.
func attach(t testing.TB, proc *testutil.Proc) *attached {
	t.Helper()
	p, err := tracer.Attach(proc.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		testutil.RequireReleased(t, proc.Pid)
	})
	mods, err := tracer.Modules(proc.Pid)
	if err != nil {
		t.Fatal(err)
	}
	a := &attached{proc: proc, p: p, mods: mods}
	for i := range mods {
		if mods[i].Main {
			a.main = &mods[i]
		}
	}
	if a.main == nil {
		t.Fatalf("no main module in %+v", mods)
	}
	if a.res, err = NewResolver(proc.Pid, mods, p); err != nil {
		t.Fatal(err)
	}
	return a
}

// startTick runs tick v1 until work() has run once (strlen and printf
// are bound), drains its output from then on, and attaches to it.
func startTick(t testing.TB) *attached {
	t.Helper()
	proc := testutil.Start(t, buildTick(t, "v1"))
	out := lines(proc.Stdout)
	if s := <-out; s != "ready" {
		t.Fatalf("first line %q", s)
	}
	nextTick(t, out, proc)
	go func() {
		for range out {
		}
	}()
	return attach(t, proc)
}

// planTick plans the tick builds v1 -> v2 at these paths: work changed
// (and main.c's helper too, with helper set), added new in v2.
func planTick(t testing.TB, v1, v2 string, helper bool) *elfpatch.Image {
	t.Helper()
	oldF, err := elf.Open(v1)
	if err != nil {
		t.Fatal(err)
	}
	defer oldF.Close()
	newF, err := elf.Open(v2)
	if err != nil {
		t.Fatal(err)
	}
	defer newF.Close()
	changed := []elfpatch.PlanFunc{planFunc(t, oldF, newF, "", "work")}
	if helper {
		changed = append(changed, planFunc(t, oldF, newF, "main.c", "helper"))
	}
	im, err := elfpatch.PlanELF(oldF, newF, changed, []elfpatch.PlanFunc{planFunc(t, nil, newF, "", "added")})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// tickImage plans tick v1 -> v2 as built by buildTick, work changed.
func tickImage(t testing.TB) *elfpatch.Image {
	t.Helper()
	return planTick(t, buildTick(t, "v1"), buildTick(t, "v2"), false)
}
