package tracer

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// A tracer killed with SIGKILL at a random moment while it loops remote
// syscalls on a thread blocked in read() and on a busy thread holding a
// value in ymm15/xmm15: whatever the moment, the target carries on. Its
// read still returns what is written later, the busy thread still counts
// and its vector register is intact (killvictim checks it on every
// iteration and exits otherwise).

func init() {
	spec := os.Getenv("GRAFT_TRACER_KILL_HELPER")
	if spec == "" {
		return
	}
	var pid, rd, busy int
	if _, err := fmt.Sscanf(spec, "%d,%d,%d", &pid, &rd, &busy); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	p, err := Attach(pid)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	p.forceStep = os.Getenv("GRAFT_TRACER_KILL_STEP") != ""
	for i := 0; ; i++ {
		err := p.Stop()
		// poll(NULL, 0, 2): 2 ms inside the call, so many kills land
		// there rather than between calls.
		for _, tid := range []int{rd, busy} {
			if err == nil {
				_, err = p.SyscallOn(tid, unix.SYS_POLL, 0, 0, 2)
			}
		}
		if err == nil {
			var got uint64
			if got, err = p.SyscallOn(busy, unix.SYS_GETTID); err == nil && int(got) != busy {
				err = fmt.Errorf("remote gettid on %d: %d", busy, got)
			}
		}
		if err == nil {
			err = p.Resume()
		}
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		if i == 0 {
			fmt.Printf("looping frame=%v\n", p.frameCalls == 3*(i+1))
		}
	}
}

// victim is a running killvictim with its thread ids.
type victim struct {
	proc     *testutil.Proc
	out      *output
	fifo     string
	rd, busy int
}

func startVictim(t *testing.T) *victim {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := testutil.Start(t, testutil.Build(t, "killvictim"), fifo)
	v := &victim{proc: p, out: collect(p), fifo: fifo}
	v.out.wait(t, "ready", 10*time.Second)
	for _, l := range v.out.all() {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "tid" {
			n, _ := strconv.Atoi(f[2])
			if f[1] == "read" {
				v.rd = n
			} else if f[1] == "busy" {
				v.busy = n
			}
		}
	}
	if v.rd == 0 || v.busy == 0 {
		t.Fatalf("killvictim did not report its threads: %q", v.out.all())
	}
	return v
}

// lastCount returns the last "count" value printed, -1 if none.
func (v *victim) lastCount() int64 {
	n := int64(-1)
	for _, l := range v.out.all() {
		if s, ok := strings.CutPrefix(l, "count "); ok {
			n, _ = strconv.ParseInt(s, 10, 64)
		}
	}
	return n
}

// alive checks that the victim carries on after its tracer died: not
// dead, no "error" line, its read returns the line written now, and the
// busy thread's counter moves on. It returns what went wrong, "" if
// nothing.
func (v *victim) alive(round int) string {
	if v.proc.Exited() {
		return fmt.Sprintf("target died (stderr %q, last lines %q)", v.proc.Stderr(), tail(v.out.all()))
	}
	for _, l := range v.out.all() {
		if strings.HasPrefix(l, "error") {
			return l
		}
	}
	w, err := os.OpenFile(v.fifo, os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Sprintf("open fifo for writing: %v", err)
	}
	msg := fmt.Sprintf("round %d", round)
	w.Write([]byte(msg + "\n"))
	w.Close()
	start := v.lastCount()
	deadline := time.Now().Add(5 * time.Second)
	for got := false; ; time.Sleep(5 * time.Millisecond) {
		lines := v.out.all()
		for _, l := range lines {
			if l == "read: "+msg {
				got = true
			}
			if strings.HasPrefix(l, "error") {
				return l
			}
		}
		if got && v.lastCount() > start && start >= 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("read returned %v, counter %d -> %d within 5 s (exited %v); last lines %q",
				got, start, v.lastCount(), v.proc.Exited(), tail(lines))
		}
	}
}

func tail(l []string) []string {
	return l[max(0, len(l)-6):]
}

func TestKilledDuringRemoteSyscallsTargetCarriesOn(t *testing.T) {
	testutil.RequirePtrace(t)
	step := os.Getenv("GRAFT_TRACER_KILL_STEP") != ""
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	v := startVictim(t)
	if l := v.out.wait(t, "avx ", time.Second); l != "avx 1" {
		t.Logf("no AVX2 on this CPU: the busy thread checks xmm15 only")
	}
	var failures []string
	for round := range rounds {
		helper := exec.Command(os.Args[0], "-test.run=^$")
		helper.Env = append(os.Environ(), fmt.Sprintf("GRAFT_TRACER_KILL_HELPER=%d,%d,%d", v.proc.Pid, v.rd, v.busy))
		out, err := helper.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := helper.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if !strings.HasPrefix(line, "looping") {
			helper.Process.Kill()
			helper.Wait()
			t.Fatalf("round %d: helper: %q", round, line)
		}
		if want := fmt.Sprintf("looping frame=%v\n", !step); line != want {
			// The self-restoring path is the one under test.
			helper.Process.Kill()
			helper.Wait()
			t.Fatalf("round %d: helper says %q, want %q", round, line, want)
		}
		time.Sleep(time.Duration(rand.Intn(40_000)) * time.Microsecond)
		if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		helper.Wait()
		time.Sleep(50 * time.Millisecond) // a pending SIGTRAP would have struck by now
		if !v.proc.Exited() {
			testutil.RequireReleased(t, v.proc.Pid)
		}
		if bad := v.alive(round); bad != "" {
			failures = append(failures, fmt.Sprintf("round %d: %s", round, bad))
			v = startVictim(t) // go on counting with a fresh target
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d kills hurt the target:\n%s", len(failures), rounds, strings.Join(failures, "\n"))
	}
}
