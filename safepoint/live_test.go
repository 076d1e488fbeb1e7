package safepoint

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"graft/internal/symtab"
	"graft/internal/testutil"
	"graft/tracer"
)

func attach(t testing.TB, pid int) *tracer.Process {
	t.Helper()
	p, err := tracer.Attach(pid)
	if err != nil {
		t.Fatalf("attach %d: %v", pid, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		testutil.RequireReleased(t, pid)
	})
	return p
}

// funcRange returns the runtime range of a function of the main executable.
func funcRange(t testing.TB, pid int, name string) Range {
	t.Helper()
	mods, err := tracer.Modules(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if !m.Main {
			continue
		}
		st, err := symtab.Open(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		fs := st.Find(name)
		if len(fs) != 1 || fs[0].Size == 0 {
			t.Fatalf("function %s in %s: %v", name, m.Path, fs)
		}
		return Range{Start: fs[0].Addr + m.Bias, End: fs[0].Addr + fs[0].Size + m.Bias, Name: name}
	}
	t.Fatalf("no main module in pid %d", pid)
	return Range{}
}

// tidsOf reads "tid <role> <n>" lines until "ready".
func tidsOf(t testing.TB, p *testutil.Proc) map[string]int {
	t.Helper()
	out := map[string]int{}
	for {
		line := strings.TrimSpace(p.WaitLine(t, "", 10*time.Second))
		if line == "ready" {
			return out
		}
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "tid" {
			n, _ := strconv.Atoi(f[2])
			out[f[1]] = n
		}
	}
}

// gdbFrame is one frame as gdb's Python API sees it.
type gdbFrame struct {
	typ  int // gdb.NORMAL_FRAME 0, INLINE 2, TAILCALL 3, SIGTRAMP 4
	pc   uint64
	name string
}

const gdbScript = `
import gdb
for t in sorted(gdb.selected_inferior().threads(), key=lambda t: t.ptid[1]):
    t.switch()
    print("THREAD %d" % t.ptid[1])
    f = gdb.newest_frame()
    while f is not None:
        try:
            n = f.name()
        except Exception:
            n = None
        print("FRAME %d %#x %s" % (f.type(), f.pc(), n or "??"))
        try:
            f = f.older()
        except Exception as e:
            print("ERROR %s" % e)
            break
`

// gdbStacks runs gdb in batch mode against the running target (graft does
// not hold it meanwhile) and returns tid -> frames, outermost included.
func gdbStacks(t *testing.T, pid int) map[int][]gdbFrame {
	t.Helper()
	if _, err := exec.LookPath("gdb"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("gdb not installed")
		}
		t.Skip("gdb not installed")
	}
	script := filepath.Join(t.TempDir(), "bt.py")
	if err := os.WriteFile(script, []byte(gdbScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("gdb", "-nx", "-p", strconv.Itoa(pid), "-batch",
		"-ex", "set backtrace past-main on", "-ex", "set backtrace limit 200", "-x", script)
	cmd.Env = append(os.Environ(), "DEBUGINFOD_URLS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	stacks := map[int][]gdbFrame{}
	tid := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "THREAD":
			tid, _ = strconv.Atoi(f[1])
			stacks[tid] = nil
		case len(f) == 4 && f[0] == "FRAME":
			typ, _ := strconv.Atoi(f[1])
			pc, _ := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 64)
			stacks[tid] = append(stacks[tid], gdbFrame{typ, pc, f[3]})
		case len(f) > 0 && f[0] == "ERROR":
			t.Fatalf("gdb could not unwind thread %d: %s", tid, line)
		}
	}
	if len(stacks) == 0 {
		t.Fatalf("no threads in gdb output:\n%s", out)
	}
	return stacks
}

// sameFunction says whether gdb's name and ours denote the same function:
// equal, or aliases at the same address in the module (gdb names libc
// frames from DWARF, e.g. __GI___libc_read for our read), or gdb's
// "<signal handler called>" frame and our __restore_rt.
func sameFunction(u *Unwinder, g gdbFrame, f Frame) bool {
	if g.name == f.Function {
		return true
	}
	if g.typ == 4 {
		return f.Function == "__restore_rt"
	}
	if g.name == "??" || f.Function == "" {
		return false
	}
	for _, m := range u.mods {
		if m.name != f.Module || m.syms == nil {
			continue
		}
		ours, ok := m.syms.Lookup(f.lookupPC() - m.mod.Bias)
		if !ok {
			return false
		}
		for _, name := range aliasesAt(m, ours.Addr) {
			if name == g.name {
				return true
			}
		}
	}
	return false
}

// aliasesAt lists every function symbol name at a link-time address of a
// module, from the file and its detached debug file (symtab keeps one
// name per address).
func aliasesAt(m *module, addr uint64) []string {
	var names []string
	paths := []string{m.mod.Path}
	if len(m.mod.BuildID) > 2 {
		paths = append(paths, filepath.Join(debugDir, m.mod.BuildID[:2], m.mod.BuildID[2:]+".debug"))
	}
	for _, p := range paths {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		syms, _ := f.Symbols()
		dyn, _ := f.DynamicSymbols()
		for _, s := range append(syms, dyn...) {
			if s.Value == addr && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				names = append(names, strings.SplitN(s.Name, "@", 2)[0])
			}
		}
		f.Close()
	}
	return names
}

func TestStacksMatchGDB(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sp_stacks"))
	target.WaitLine(t, "ready", 10*time.Second)
	// gdb first, while graft does not hold the process; every thread is
	// in a steady state (blocked, or spinning forever in one function).
	want := gdbStacks(t, target.Pid)
	testutil.RequireReleased(t, target.Pid)

	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	got, err := u.StacksOf(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 9 || len(want) != 9 {
		t.Fatalf("threads: graft %d, gdb %d, want 9 each", len(got), len(want))
	}
	for tid, gframes := range want {
		// gdb adds frames that are not on the stack: inlined functions
		// (same PC as the real frame that follows) and tail-call frames
		// reconstructed from DWARF call-site information.
		var real []gdbFrame
		for _, g := range gframes {
			if g.typ != 2 && g.typ != 3 {
				real = append(real, g)
			}
		}
		ours := got[tid]
		desc := fmt.Sprintf("thread %d:\n  gdb:   %s\n  graft: %s", tid, gdbString(real), FormatStack(ours))
		if len(ours) != len(real) {
			t.Errorf("%s\n  frame count %d, gdb %d", desc, len(ours), len(real))
			continue
		}
		for i := range real {
			f, g := ours[i], real[i]
			if f.Incomplete {
				t.Errorf("%s\n  frame %d incomplete: %s", desc, i, f.Reason)
			}
			// Frame 0 of the spinning thread moves; every other PC is a
			// return address or a blocked syscall and must be identical.
			if (i > 0 || g.name != "spin_leaf") && f.PC != g.pc {
				t.Errorf("%s\n  frame %d pc %#x, gdb %#x", desc, i, f.PC, g.pc)
			}
			if !sameFunction(u, g, f) {
				t.Errorf("%s\n  frame %d function %q, gdb %q", desc, i, f.Function, g.name)
			}
		}
		t.Logf("thread %d: %s", tid, FormatStack(ours))
	}
	// The shapes this target was written for are really there.
	all := ""
	for _, st := range got {
		all += FormatStack(st) + "\n"
	}
	for _, want := range []string{
		"spin_leaf <- spin_mid <- spinner",
		"block_accept <- acceptor",
		"block_cond <- conder",
		"in_handler <- __restore_rt",
		"recurse <- recurse <- recurse <- recurse <- recurse <- recurse <- recurser",
		"main <- __libc_start_call_main",
		"block_read <- fp_outer <- fpthread",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no stack contains %q:\n%s", want, all)
		}
	}
}

func gdbString(fs []gdbFrame) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.name)
	}
	return strings.Join(s, " <- ")
}

func TestUnwindIncomplete(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sp_stacks"))
	target.WaitLine(t, "ready", 10*time.Second)
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	defer p.Resume()
	regs, err := p.Regs(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// A PC in no module (as in JIT code): one frame, marked incomplete.
	bad := regs
	bad.Rip = 0x1000
	frames, err := u.Unwind(bad, p)
	var ie *IncompleteError
	if !errors.As(err, &ie) || len(frames) != 1 || !frames[0].Incomplete {
		t.Fatalf("unwind from pc 0x1000: frames %+v, err %v; want one incomplete frame", frames, err)
	}
	// A stack pointer into unmapped memory: the return address cannot be
	// read, so the stack is incomplete, never "ended".
	bad = regs
	bad.Rsp = 0x10
	frames, err = u.Unwind(bad, p)
	if !errors.As(err, &ie) || !frames[len(frames)-1].Incomplete {
		t.Fatalf("unwind with rsp 0x10: frames %+v, err %v; want incomplete", frames, err)
	}
	r := Range{Start: 0, End: 1, Name: "unrelated"}
	if err := Check(map[int][]Frame{1: frames}, Spec{Functions: []Range{r}}); !errors.Is(err, ErrActive) {
		t.Fatalf("Check of an incomplete stack: %v, want ErrActive", err)
	}
	// The real registers unwind to the end.
	frames, err = u.Unwind(regs, p)
	if err != nil || frames[len(frames)-1].Function != "_start" {
		t.Fatalf("main thread: %s, err %v", FormatStack(frames), err)
	}
}

// startActive runs sp_active with its command FIFO.
func startActive(t *testing.T) (*testutil.Proc, map[string]int, *os.File) {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "cmd")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	target := testutil.Start(t, testutil.Build(t, "sp_active"), fifo)
	tids := tidsOf(t, target)
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return target, tids, w
}

func TestWaitSafeBusyThreadLeaves(t *testing.T) {
	testutil.RequirePtrace(t)
	target, tids, cmd := startActive(t)
	hot := funcRange(t, target.Pid, "hot_loop")
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	if _, err := fmt.Fprintln(cmd, "hot 400"); err != nil {
		t.Fatal(err)
	}
	target.WaitLine(t, "in hot", 10*time.Second)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Functions: []Range{hot}}
	stacks, err := u.StacksOf(p)
	if err != nil {
		t.Fatal(err)
	}
	var ae *ActiveError
	// The worker printed "in hot" just before calling hot_loop, which
	// runs for 400 ms: it is inside now (or at worst still on its way
	// in, in which case the next stop sees it; check a few times).
	for i := 0; ; i++ {
		err = Check(stacks, spec)
		if errors.As(err, &ae) || i == 20 {
			break
		}
		p.Resume()
		time.Sleep(time.Millisecond)
		p.Stop()
		if stacks, err = u.StacksOf(p); err != nil {
			t.Fatal(err)
		}
	}
	if ae == nil || ae.Tid != tids["hot"] || ae.Function != "hot_loop" {
		t.Fatalf("Check while the worker runs hot_loop: %v; want thread %d in hot_loop", err, tids["hot"])
	}
	if err := WaitSafe(context.Background(), p, u, spec, 30*time.Second); err != nil {
		t.Fatalf("WaitSafe: %v", err)
	}
	if !p.Stopped() {
		t.Fatal("WaitSafe returned safe with the process running")
	}
	stacks, err = u.StacksOf(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(stacks, spec); err != nil {
		t.Fatalf("after WaitSafe returned safe: %v", err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	target.WaitLine(t, "left hot", 10*time.Second)
}

func TestWaitSafeNeverReturns(t *testing.T) {
	testutil.RequirePtrace(t)
	target, tids, _ := startActive(t)
	forever := funcRange(t, target.Pid, "serve_forever")
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Functions: []Range{forever}}
	err = WaitSafe(context.Background(), p, u, spec, 300*time.Millisecond)
	var ae *ActiveError
	if !errors.As(err, &ae) || !errors.Is(err, ErrActive) {
		t.Fatalf("WaitSafe on a function that never returns: %v, want *ActiveError", err)
	}
	if !p.Stopped() {
		t.Error("process not left stopped after the timeout")
	}
	msg := err.Error()
	for _, want := range []string{"timed out", strconv.Itoa(tids["forever"]), "serve_forever", "forever <- start_thread"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if ae.Tid != tids["forever"] || len(ae.Stack) < 3 {
		t.Errorf("ActiveError tid %d stack %v, want tid %d with its stack", ae.Tid, ae.Stack, tids["forever"])
	}
	t.Logf("error: %v", err)

	// Allowed to stay active: safe at once, and still stopped.
	spec.AllowActive = []string{"serve_forever"}
	if err := WaitSafe(context.Background(), p, u, spec, 300*time.Millisecond); err != nil {
		t.Fatalf("WaitSafe with serve_forever allowed active: %v", err)
	}
	if !p.Stopped() {
		t.Error("process not stopped after WaitSafe returned safe")
	}

	// Cancellation ends the wait the same way.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	spec.AllowActive = nil
	if err := WaitSafe(ctx, p, u, spec, time.Minute); !errors.Is(err, ErrActive) || !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitSafe with a cancelled context: %v", err)
	}
	p.Resume()
}

func TestEntryBytesNeverPass(t *testing.T) {
	testutil.RequirePtrace(t)
	target, tids, _ := startActive(t)
	fn := funcRange(t, target.Pid, "entry_spin")
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Functions:   []Range{fn},
		Entries:     []Range{{Start: fn.Start, End: fn.Start + 5, Name: "entry_spin"}},
		AllowActive: []string{"entry_spin"},
	}
	err = WaitSafe(context.Background(), p, u, spec, 300*time.Millisecond)
	var ae *ActiveError
	if !errors.As(err, &ae) || !ae.Entry || ae.Tid != tids["entry"] || ae.Frame != 0 {
		t.Fatalf("WaitSafe with a thread spinning in entry bytes: %v; want an entry error for thread %d", err, tids["entry"])
	}
	if !strings.Contains(err.Error(), "entry bytes of entry_spin") {
		t.Errorf("error does not explain the entry bytes: %v", err)
	}
	// Without the entry bytes in the spec, allowing it active passes.
	spec.Entries = nil
	if err := WaitSafe(context.Background(), p, u, spec, 300*time.Millisecond); err != nil {
		t.Fatalf("entry_spin allowed active, no entries: %v", err)
	}
	p.Resume()
}

func TestWaitSafeChurn(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "churn"), "1", "8")
	target.WaitLine(t, "ready", 10*time.Second)
	brief := funcRange(t, target.Pid, "brief")
	busy := funcRange(t, target.Pid, "busy")
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	seen := map[int]bool{}
	for i := 0; i < 20; i++ {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := WaitSafe(context.Background(), p, u, Spec{Functions: []Range{brief}}, 20*time.Second); err != nil {
			t.Fatalf("round %d: WaitSafe with short-lived threads: %v", i, err)
		}
		stacks, err := u.StacksOf(p)
		if err != nil {
			t.Fatal(err)
		}
		for tid, st := range stacks {
			seen[tid] = true
			if len(st) == 0 || st[len(st)-1].Incomplete {
				t.Errorf("round %d: thread %d: incomplete stack %s", i, tid, FormatStack(st))
			}
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// main and the busy thread, plus short-lived ones caught on the way.
	t.Logf("%d distinct threads seen over 20 rounds", len(seen))
	if len(seen) < 5 {
		t.Errorf("saw only %d distinct threads over 20 rounds: no churn?", len(seen))
	}
	// The long-lived busy thread never leaves busy(): a timeout naming it.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	err = WaitSafe(context.Background(), p, u, Spec{Functions: []Range{busy}}, 200*time.Millisecond)
	var ae *ActiveError
	if !errors.As(err, &ae) || ae.Function != "busy" {
		t.Fatalf("WaitSafe on busy: %v", err)
	}
	p.Resume()
}

// TestUnwindThroughVDSO samples a thread that calls clock_gettime in a
// loop: many samples land inside the vDSO, whose CFI is read from the
// target's memory. Every stack must unwind to its end.
func TestUnwindThroughVDSO(t *testing.T) {
	testutil.RequirePtrace(t)
	target, tids, cmd := startActive(t)
	u, err := ForProcess(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := attach(t, target.Pid)
	if _, err := fmt.Fprintln(cmd, "hot 3000"); err != nil {
		t.Fatal(err)
	}
	target.WaitLine(t, "in hot", 10*time.Second)
	inVDSO, samples := 0, 0
	for i := 0; i < 300 && inVDSO < 5; i++ {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		stacks, err := u.StacksOf(p)
		if err != nil {
			t.Fatal(err)
		}
		st := stacks[tids["hot"]]
		samples++
		if len(st) == 0 || st[len(st)-1].Incomplete {
			t.Fatalf("hot thread: incomplete stack %s", FormatStack(st))
		}
		if st[0].Module == "[vdso]" {
			inVDSO++
			if !strings.Contains(FormatStack(st), "hot_loop <- worker <- start_thread") {
				t.Errorf("stack through the vDSO: %s", FormatStack(st))
			}
			if inVDSO == 1 {
				t.Logf("in the vDSO: %s", FormatStack(st))
			}
		}
		if err := p.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if inVDSO == 0 {
		t.Fatalf("no sample of %d landed in the vDSO", samples)
	}
}

// A module whose file on disk is not the mapped one (other build ID) gets
// no CFI: PCs inside it make stacks incomplete instead of wrong.
func TestReplacedFileRefused(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "sp_stacks"))
	target.WaitLine(t, "ready", 10*time.Second)
	mods, err := tracer.Modules(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mods {
		if mods[i].Main {
			if mods[i].BuildID == "" {
				t.Fatal("main module without build ID")
			}
			mods[i].BuildID = strings.Repeat("ab", 20)
		}
	}
	u, err := NewUnwinder(mods)
	if err != nil {
		t.Fatal(err)
	}
	probs := u.Problems()
	if len(probs) == 0 || !strings.Contains(fmt.Sprint(probs), "not the mapped one") {
		t.Fatalf("problems %v, want the main module refused", probs)
	}
	p := attach(t, target.Pid)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	defer p.Resume()
	stacks, err := u.StacksOf(p)
	if err != nil {
		t.Fatal(err)
	}
	st := stacks[target.Pid]
	if last := st[len(st)-1]; !last.Incomplete || last.Module != "sp_stacks" {
		t.Fatalf("main thread: %s; want incomplete at the first frame in sp_stacks", FormatStack(st))
	}
}

func openELF(path string) (*elf.File, error) { return elf.Open(path) }
