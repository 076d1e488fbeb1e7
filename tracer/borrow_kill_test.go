package tracer

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// kill_remote_test.go with borrowing: the helper borrows the reader and
// the busy thread in turn while the other runs, loops remote calls on it
// and returns it; killed at a random moment, the target carries on.

func init() {
	spec := os.Getenv("GRAFT_TRACER_BORROW_KILL_HELPER")
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
	for i := 0; ; i++ {
		tid := []int{rd, busy}[i%2]
		_, err := p.Borrow(tid)
		for k := 0; k < 3 && err == nil; k++ {
			// 2 ms inside the call, so many kills land there.
			_, err = p.Syscall(unix.SYS_POLL, 0, 0, 2)
		}
		if err == nil {
			var got uint64
			if got, err = p.Syscall(unix.SYS_GETTID); err == nil && int(got) != tid {
				err = fmt.Errorf("remote gettid on %d: %d", tid, got)
			}
		}
		if err == nil {
			err = p.Return()
		}
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		if i == 0 {
			fmt.Printf("looping frame=%v\n", p.frameCalls == 4)
		}
	}
}

func TestKilledWhileBorrowingTargetCarriesOn(t *testing.T) {
	testutil.RequirePtrace(t)
	rounds := 30
	if testing.Short() {
		rounds = 10
	}
	v := startVictim(t)
	var failures []string
	for round := range rounds {
		helper := exec.Command(os.Args[0], "-test.run=^$")
		helper.Env = append(os.Environ(), fmt.Sprintf("GRAFT_TRACER_BORROW_KILL_HELPER=%d,%d,%d", v.proc.Pid, v.rd, v.busy))
		out, err := helper.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := helper.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "looping frame=true\n" {
			helper.Process.Kill()
			helper.Wait()
			t.Fatalf("round %d: helper: %q", round, line)
		}
		time.Sleep(time.Duration(rand.Intn(40_000)) * time.Microsecond)
		if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		helper.Wait()
		time.Sleep(50 * time.Millisecond)
		if !v.proc.Exited() {
			testutil.RequireReleased(t, v.proc.Pid)
		}
		if bad := v.alive(round); bad != "" {
			failures = append(failures, fmt.Sprintf("round %d: %s", round, bad))
			v = startVictim(t)
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d kills hurt the target:\n%s", len(failures), rounds, strings.Join(failures, "\n"))
	}
}
