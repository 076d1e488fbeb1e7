package tracer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"graft/internal/testutil"
)

// A tracer killed with SIGKILL (graft's one unhandleable end) while it
// holds a process that it borrowed a thread of for a remote syscall: the
// kernel releases the threads; the program must carry on, not die of the
// single-step's SIGTRAP.

func init() {
	// A helper process for the test below, started from this test binary
	// (runs before TestMain; the package's own helper modes are in
	// lifecycle_test.go).
	if spec := os.Getenv("GRAFT_TRACER_QA_HELPER"); spec != "" {
		pid, _ := strconv.Atoi(spec)
		p, err := Attach(pid)
		if err == nil {
			err = p.Stop()
		}
		if err == nil {
			for i := 0; i < 3 && err == nil; i++ {
				_, err = p.Syscall(unix.SYS_GETPID)
			}
		}
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("held after remote syscalls")
		select {} // hold it stopped until killed
	}
}

func TestKilledAfterRemoteSyscallTargetLives(t *testing.T) {
	testutil.RequirePtrace(t)
	for round := range 3 {
		target := testutil.Start(t, testutil.Build(t, "sleepers"), "2")
		target.WaitLine(t, "ready", 10*time.Second)

		helper := exec.Command(os.Args[0], "-test.run=^$")
		helper.Env = append(os.Environ(), "GRAFT_TRACER_QA_HELPER="+strconv.Itoa(target.Pid))
		out, err := helper.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := helper.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if !strings.HasPrefix(line, "held") {
			helper.Process.Kill()
			helper.Wait()
			t.Fatalf("helper: %q", line)
		}
		if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		helper.Wait()

		testutil.RequireReleased(t, target.Pid)
		// The kernel has released the threads; one left in a SIGTRAP
		// signal-delivery-stop would now take the default action.
		time.Sleep(200 * time.Millisecond)
		if target.Exited() {
			t.Fatalf("round %d: target died after its tracer was killed (stderr: %s)", round, target.Stderr())
		}
		if s := ThreadState(target.Pid, target.Pid); s == "" || s == "Z" {
			t.Fatalf("round %d: target gone (state %q)", round, s)
		}
	}
}
