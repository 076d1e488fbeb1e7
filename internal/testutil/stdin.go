package testutil

import (
	"bufio"
	"bytes"
	"io"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// StartInteractive is Start with a pipe to the target's stdin, for targets
// driven by commands (testprocs/idlers).
func StartInteractive(t testing.TB, path string, args ...string) (*Proc, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(path, args...)
	p := &Proc{Cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = lockedWriter{&p.mu, p.stderr}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	p.Pid = cmd.Process.Pid
	p.Stdout = bufio.NewReader(out)
	go func() {
		// As in Start: reap only once it has exited.
		waitExited(p.Pid)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("target %d did not exit after SIGKILL (left traced or stopped?)", p.Pid)
		}
		if t.Failed() {
			t.Logf("stderr of %s (pid %d):\n%s", filepath.Base(path), p.Pid, p.Stderr())
		}
	})
	return p, in
}
