package playbook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// CheckResult is one check on one target at one phase.
type CheckResult struct {
	Name  string `json:"name"`
	Phase string `json:"phase"` // "before" or "after"
	OK    bool   `json:"ok"`
	// Attempts made; the check fails after failure_threshold in a row.
	Attempts int `json:"attempts"`
	// Detail says what the last attempt saw.
	Detail string `json:"detail"`
}

// runCheck runs c on the target with the vars varsFn gives (pid, port and
// the playbook's, read again per attempt: a server just started may not
// listen yet)
// until one attempt passes or FailureThreshold attempts failed in a row.
func runCheck(ctx context.Context, c Check, varsFn func() map[string]string, phase string) CheckResult {
	res := CheckResult{Name: c.Name, Phase: phase}
	for {
		res.Attempts++
		actx, cancel := context.WithTimeout(ctx, c.Timeout)
		err := attempt(actx, c, varsFn())
		cancel()
		if err == nil {
			res.OK, res.Detail = true, "passed"
			return res
		}
		res.Detail = err.Error()
		if res.Attempts >= c.FailureThreshold || ctx.Err() != nil {
			return res
		}
		select {
		case <-ctx.Done():
			return res
		case <-time.After(c.Period):
		}
	}
}

func attempt(ctx context.Context, c Check, vars map[string]string) error {
	if strings.Contains(strings.Join(c.Exec, " ")+tcpText(c.TCP)+httpText(c.HTTP), "${port}") && vars["port"] == "" {
		return errors.New("${port}: the target listens on no TCP port")
	}
	switch {
	case c.Exec != nil:
		return execAttempt(ctx, c, vars)
	case c.TCP != nil:
		return tcpAttempt(ctx, c.TCP, vars)
	case c.HTTP != nil:
		return httpAttempt(ctx, c.HTTP, vars)
	}
	return errors.New("check has no probe")
}

func tcpText(t *TCPCheck) string {
	if t == nil {
		return ""
	}
	return t.Host + t.Port + t.Send
}

func httpText(h *HTTPCheck) string {
	if h == nil {
		return ""
	}
	return h.URL
}

// trimNL drops trailing newlines (and the carriage returns of CRLF ones).
func trimNL(s string) string { return strings.TrimRight(s, "\r\n") }

func clip(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func execAttempt(ctx context.Context, c Check, vars map[string]string) error {
	argv := make([]string, len(c.Exec))
	for i, a := range c.Exec {
		argv[i] = Substitute(a, vars)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("%s: no answer within %v", strings.Join(argv, " "), c.Timeout)
		case errors.As(err, &ee) && ee.Exited():
			code = ee.ExitCode()
		default:
			return fmt.Errorf("%s: %v", strings.Join(argv, " "), err)
		}
	}
	out := trimNL(stdout.String())
	if code != c.ExpectExit {
		return fmt.Errorf("%s: exit status %d, want %d (stdout %q, stderr %q)", strings.Join(argv, " "), code, c.ExpectExit, clip(out), clip(trimNL(stderr.String())))
	}
	if c.ExpectStdout != nil && !c.ExpectStdout.MatchString(out) {
		return fmt.Errorf("%s: stdout %q does not match %q", strings.Join(argv, " "), clip(out), c.ExpectStdout)
	}
	return nil
}

func tcpAttempt(ctx context.Context, t *TCPCheck, vars map[string]string) error {
	addr := net.JoinHostPort(Substitute(t.Host, vars), Substitute(t.Port, vars))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connect %s: %v", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if t.Send != "" {
		if _, err := io.WriteString(conn, Substitute(t.Send, vars)); err != nil {
			return fmt.Errorf("send to %s: %v", addr, err)
		}
	}
	if t.Expect == nil {
		return nil
	}
	// Read until the reply matches, the peer closes or the time is up.
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if t.Expect.Match([]byte(trimNL(string(got)))) {
			return nil
		}
		if err != nil || len(got) > 1<<20 {
			return fmt.Errorf("%s: reply %q does not match %q", addr, clip(trimNL(string(got))), t.Expect)
		}
	}
}

func httpAttempt(ctx context.Context, h *HTTPCheck, vars map[string]string) error {
	url := Substitute(h.URL, vars)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %v", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s: read body: %v", url, err)
	}
	if h.Status != 0 && resp.StatusCode != h.Status {
		return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, h.Status)
	}
	if h.Status == 0 && (resp.StatusCode < 200 || resp.StatusCode >= 400) {
		return fmt.Errorf("GET %s: status %d, want 200-399", url, resp.StatusCode)
	}
	if h.Body != nil && !h.Body.Match([]byte(trimNL(string(body)))) {
		return fmt.Errorf("GET %s: body %q does not match %q", url, clip(trimNL(string(body))), h.Body)
	}
	return nil
}

// targetVars are the substitutions for one target.
func targetVars(pb *Playbook, pid int) map[string]string {
	vars := map[string]string{}
	for k, v := range pb.Vars {
		vars[k] = v
	}
	vars["pid"] = strconv.Itoa(pid)
	vars["port"] = ""
	if port := portOf(pid); port != 0 {
		vars["port"] = strconv.Itoa(port)
	}
	return vars
}

// portOf is the lowest TCP port pid listens on. A forked child that
// listens on none (a session process, which closed its copy of the
// listening socket) takes that of its nearest ancestor running the same
// executable: checks of a session are checks of its server.
func portOf(pid int) int {
	p, ok := readProc(pid)
	for depth := 0; ok && depth < 16; depth++ {
		if port, err := ListenPort(p.pid); err == nil && port != 0 {
			return port
		}
		parent, ok2 := readProc(p.ppid)
		if !ok2 || !parent.hasExe || parent.dev != p.dev || parent.ino != p.ino {
			return 0
		}
		p = parent
	}
	return 0
}
