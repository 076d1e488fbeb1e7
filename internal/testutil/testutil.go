// Package testutil builds the sample targets in testprocs and runs them as
// real processes for tests. Builds go through make (so `make -C testprocs`
// and the tests agree on flags) under a file lock, because go test runs the
// packages' test binaries in parallel.
package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Root returns the repository root (the directory holding go.mod).
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// TestprocsDir is the directory of the sample target sources.
func TestprocsDir() string { return filepath.Join(Root(), "testprocs") }

var (
	buildMu   sync.Mutex
	buildDone = map[string]error{}
)

// Build makes testprocs/build/<target> (e.g. "ftpd-v1", "spin") and returns
// its absolute path. Builds are cached for the test binary's lifetime and
// by make's own timestamps across runs.
func Build(t testing.TB, target string) string {
	t.Helper()
	path, err := BuildE(target)
	if err != nil {
		t.Fatalf("build %s: %v", target, err)
	}
	return path
}

// BuildE is Build without a testing.TB, for benchmarks' setup and tools.
func BuildE(target string) (string, error) {
	dir := TestprocsDir()
	path := filepath.Join(dir, "build", target)
	buildMu.Lock()
	defer buildMu.Unlock()
	if err, ok := buildDone[target]; ok {
		return path, err
	}
	err := withFileLock(filepath.Join(os.TempDir(), "graft-testprocs.lock"), func() error {
		cmd := exec.Command("make", "-s", "-C", dir, "build/"+target)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("make build/%s: %v\n%s", target, err, out)
		}
		return nil
	})
	buildDone[target] = err
	return path, err
}

func withFileLock(path string, fn func() error) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

// Proc is a running target started by Start.
type Proc struct {
	Cmd    *exec.Cmd
	Pid    int
	Stdout *bufio.Reader // the target's stdout, for "ready" lines
	stderr *bytes.Buffer
	mu     sync.Mutex
	done   chan struct{}
}

// Stderr returns what the target wrote to stderr so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Exited reports whether the target has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(b)
}

// Start runs path with args as a real process and kills it when the test
// ends. On failure the target's stderr is logged.
func Start(t testing.TB, path string, args ...string) *Proc {
	t.Helper()
	p, _ := start(t, path, false, args...)
	return p
}

// StartInteractive is Start with a pipe to the target's stdin, for targets
// driven by commands (testprocs/idlers).
func StartInteractive(t testing.TB, path string, args ...string) (*Proc, io.WriteCloser) {
	t.Helper()
	return start(t, path, true, args...)
}

func start(t testing.TB, path string, withStdin bool, args ...string) (*Proc, io.WriteCloser) {
	t.Helper()
	p := &Proc{stderr: &bytes.Buffer{}, done: make(chan struct{})}
	var in io.WriteCloser
	var out io.ReadCloser
	var cmd *exec.Cmd
	// A binary a test just wrote can be "busy" for a moment: a fork by
	// another goroutine (a parallel test starting its own target) may
	// still hold the writer's descriptor (golang.org/issue/22315).
	var err error
	for i := 0; i == 0 || errors.Is(err, syscall.ETXTBSY) && i < 100; i++ {
		if i > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		cmd = exec.Command(path, args...)
		cmd.Stderr = lockedWriter{&p.mu, p.stderr}
		if withStdin {
			if in, err = cmd.StdinPipe(); err != nil {
				t.Fatal(err)
			}
		}
		if out, err = cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
		// Its own process group, so a Ctrl-C to the test run does not
		// reach it mid-patch and so cleanup can kill forks (ftpd's
		// session processes).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		err = cmd.Start()
	}
	if err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	p.Cmd = cmd
	p.Pid = cmd.Process.Pid
	p.Stdout = bufio.NewReader(out)
	go func() {
		// Reap only once the target has exited. A wait blocked on our own
		// child is, for the kernel, a ptrace wait when a thread of this
		// process traces it: it would swallow the ptrace-stops of the
		// target's main thread meant for the tracer under test.
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

// WaitLine reads the target's stdout until a line containing want appears.
func (p *Proc) WaitLine(t testing.TB, want string, timeout time.Duration) string {
	t.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			line, err := p.Stdout.ReadString('\n')
			if strings.Contains(line, want) || err != nil {
				ch <- res{line, err}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil && !strings.Contains(r.line, want) {
			t.Fatalf("target %d: waiting for %q: %v (stderr: %s)", p.Pid, want, r.err, p.Stderr())
		}
		return r.line
	case <-time.After(timeout):
		t.Fatalf("target %d: no %q on stdout within %v (stderr: %s)", p.Pid, want, timeout, p.Stderr())
	}
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitListen waits until something accepts TCP connections on port.
func WaitListen(t testing.TB, port int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s after %v: %v", addr, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartServer starts a testprocs server (port as its first argument, then
// extra args) and waits until that very process listens on the port. It
// returns the process and port.
//
// A port from FreePort can be taken by another test binary (go test runs
// packages in parallel) before the server binds it; so readiness is judged
// by the server's own listening socket, not by any connect succeeding, and a
// server that exits at start (bind failed) is retried on a fresh port.
func StartServer(t testing.TB, target string, extra ...string) (*Proc, int) {
	t.Helper()
	path := Build(t, target)
	var lastErr string
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(t)
		p := Start(t, path, append([]string{strconv.Itoa(port)}, extra...)...)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !p.Exited() {
			if ListensOn(p.Pid, port) {
				return p, port
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !p.Exited() {
			t.Fatalf("%s (pid %d) does not listen on port %d after 10s; stderr:\n%s", target, p.Pid, port, p.Stderr())
		}
		lastErr = p.Stderr()
	}
	t.Fatalf("%s exited at start 5 times; last stderr:\n%s", target, lastErr)
	return nil, 0
}

// ListensOn reports whether process pid itself holds a TCP socket listening
// on port (matched through the socket inodes of its open descriptors).
func ListensOn(pid, port int) bool {
	inodes := map[string]bool{}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(fs) < 10 || fs[3] != "0A" || !strings.HasSuffix(fs[1], want) {
				continue
			}
			if inodes[fs[9]] {
				return true
			}
		}
	}
	return false
}

// ThreadStates returns tid -> state letter (R, S, t, T, Z, ...) of every
// thread of pid, from /proc.
func ThreadStates(pid int) (map[int]string, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			continue
		}
		out[tid] = s[i+2 : i+3]
	}
	return out, nil
}

// TracerPid returns the TracerPid of pid from /proc/PID/status (0: none).
func TracerPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no TracerPid in /proc/%d/status", pid)
}

// RequireReleased fails the test if any thread of pid is still traced or in
// a ptrace/job-control stop: what every test must check after graft lets go.
func RequireReleased(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var bad []string
		states, err := ThreadStates(pid)
		if err != nil {
			t.Fatalf("read threads of %d: %v", pid, err)
		}
		for tid, st := range states {
			if st == "t" || st == "T" {
				bad = append(bad, fmt.Sprintf("tid %d in state %s", tid, st))
			}
			if tp, err := TracerPid(tid); err == nil && tp != 0 {
				bad = append(bad, fmt.Sprintf("tid %d traced by %d", tid, tp))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("target %d not released: %s", pid, strings.Join(bad, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExited blocks until pid has exited (it may still be unreaped),
// without reaping it: poll a pidfd, which turns readable then, or, on
// kernels without pidfd_open, /proc.
func waitExited(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		for {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				return
			}
			if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return
		}
		if fds[0].Revents != 0 {
			return
		}
	}
}
