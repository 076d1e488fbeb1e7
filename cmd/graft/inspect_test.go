package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"graft/internal/testutil"
)

func TestInspect(t *testing.T) {
	testutil.RequirePtrace(t)
	path := testutil.Build(t, "spin")
	target := testutil.Start(t, path, "3")
	target.WaitLine(t, "ready", 10*time.Second)

	var out, errb bytes.Buffer
	if code := run(&out, &errb, []string{"inspect", "-p", strconv.Itoa(target.Pid), "--json"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got inspectJSON
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	if got.Pid != target.Pid {
		t.Errorf("pid %d, want %d", got.Pid, target.Pid)
	}
	states, err := testutil.ThreadStates(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Threads) != 4 || len(states) != 4 {
		t.Fatalf("threads %+v, /proc has %v", got.Threads, states)
	}
	busy := 0
	for _, th := range got.Threads {
		if _, ok := states[th.Tid]; !ok {
			t.Errorf("tid %d not a thread of %d", th.Tid, target.Pid)
		}
		if th.State == "" || !strings.HasPrefix(th.PC, "0x") || th.PC == "0x0" {
			t.Errorf("thread %+v", th)
		}
		if strings.HasPrefix(th.Function, "busy+") {
			busy++
			if th.Module != path {
				t.Errorf("busy in module %q, want %q", th.Module, path)
			}
		}
	}
	if busy == 0 {
		t.Errorf("no thread reported in busy(): %+v", got.Threads)
	}
	var main, libc bool
	for _, m := range got.Modules {
		if m.Main {
			main = true
			if m.Path != path || len(m.BuildID) < 16 || !strings.HasPrefix(m.Base, "0x") {
				t.Errorf("main module %+v", m)
			}
		}
		if strings.HasPrefix(filepath.Base(m.Path), "libc") {
			libc = true
		}
	}
	if !main || !libc {
		t.Errorf("main %v libc %v in %+v", main, libc, got.Modules)
	}
	testutil.RequireReleased(t, target.Pid)
	if target.Exited() {
		t.Fatal("target died")
	}

	// Text output names the same things.
	out.Reset()
	if code := run(&out, &errb, []string{"inspect", "-p", strconv.Itoa(target.Pid)}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"TID", "busy+", "(main)", "BUILD-ID"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, out.String())
		}
	}
	testutil.RequireReleased(t, target.Pid)
}

func TestInspectErrors(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(&out, &errb, []string{"inspect", "-p", strconv.Itoa(cmd.Process.Pid)})
	if code != 1 || !strings.Contains(errb.String(), "no such process") {
		t.Errorf("missing pid: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run(&out, &errb, []string{"inspect"}); code != 2 || !strings.Contains(errb.String(), "-p PID") {
		t.Errorf("no -p: exit %d, stderr %q", code, errb.String())
	}
}

// TestInspectInterrupted: a SIGINT/SIGTERM (here: the cancelled channel
// interruptible would close) detaches and reports it; the target runs on.
func TestInspectInterrupted(t *testing.T) {
	testutil.RequirePtrace(t)
	target := testutil.Start(t, testutil.Build(t, "spin"), "2")
	target.WaitLine(t, "ready", 10*time.Second)
	intr := make(chan struct{})
	close(intr)
	_, err := inspect(target.Pid, intr)
	if err == nil {
		t.Fatal("inspect ignored the interrupt")
	}
	testutil.RequireReleased(t, target.Pid)
	if target.Exited() {
		t.Fatal("target died")
	}
}
