package playbook

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func probe(c Check) CheckResult {
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = 1
	}
	c.Period = 10 * time.Millisecond
	return runCheck(context.Background(), c, func() map[string]string {
		return map[string]string{"pid": "42", "port": "", "who": "world"}
	}, "after")
}

func TestExecCheck(t *testing.T) {
	// Trailing newlines are trimmed before the match; ${...} substituted.
	r := probe(Check{Exec: []string{"printf", "hello %s\\n\\n", "${who}"}, ExpectStdout: regexp.MustCompile(`^hello world$`)})
	require.True(t, r.OK, r.Detail)
	r = probe(Check{Exec: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
	require.False(t, r.OK)
	require.Equal(t, `sh -c echo out; echo err >&2; exit 3: exit status 3, want 0 (stdout "out", stderr "err")`, r.Detail)
	r = probe(Check{Exec: []string{"sh", "-c", "exit 3"}, ExpectExit: 3})
	require.True(t, r.OK, r.Detail)
	r = probe(Check{Exec: []string{"echo", "kvs 1.0"}, ExpectStdout: regexp.MustCompile(`^kvs 2\.0$`), FailureThreshold: 3})
	require.False(t, r.OK)
	require.Equal(t, 3, r.Attempts)
	require.Contains(t, r.Detail, `stdout "kvs 1.0" does not match`)
	r = probe(Check{Exec: []string{"sleep", "5"}, Timeout: 100 * time.Millisecond})
	require.False(t, r.OK)
	require.Contains(t, r.Detail, "no answer within 100ms")
	r = probe(Check{Exec: []string{"/nonexistent/probe"}})
	require.False(t, r.OK)
	r = probe(Check{Exec: []string{"echo", "${port}"}})
	require.False(t, r.OK)
	require.Contains(t, r.Detail, "listens on no TCP port")
}

func TestTCPCheck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "BANNER 1\r\n")
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "GOT %s", line)
			}()
		}
	}()
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	r := probe(Check{TCP: &TCPCheck{Host: "127.0.0.1", Port: port}})
	require.True(t, r.OK, r.Detail)
	r = probe(Check{TCP: &TCPCheck{Host: "127.0.0.1", Port: port, Send: "PING ${pid}\n", Expect: regexp.MustCompile(`(?m)^GOT PING 42$`)}})
	require.True(t, r.OK, r.Detail)
	r = probe(Check{TCP: &TCPCheck{Host: "127.0.0.1", Port: port, Send: "PING\n", Expect: regexp.MustCompile(`(?m)^PONG$`)}})
	require.False(t, r.OK)
	require.Contains(t, r.Detail, `reply "BANNER 1\r\nGOT PING" does not match`)
	l.Close()
	r = probe(Check{TCP: &TCPCheck{Host: "127.0.0.1", Port: port}})
	require.False(t, r.OK)
	require.Contains(t, r.Detail, "connect 127.0.0.1:"+port)
}

func TestHTTPCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			fmt.Fprintln(w, "status: ok")
		case "/moved":
			w.WriteHeader(302)
		default:
			w.WriteHeader(503)
			fmt.Fprintln(w, "down")
		}
	}))
	defer srv.Close()
	r := probe(Check{HTTP: &HTTPCheck{URL: srv.URL + "/health", Body: regexp.MustCompile(`^status: ok$`)}})
	require.True(t, r.OK, r.Detail)
	r = probe(Check{HTTP: &HTTPCheck{URL: srv.URL + "/health", Status: 204}})
	require.False(t, r.OK)
	require.Contains(t, r.Detail, "status 200, want 204")
	r = probe(Check{HTTP: &HTTPCheck{URL: srv.URL + "/down"}})
	require.False(t, r.OK)
	require.Contains(t, r.Detail, "status 503, want 200-399")
	r = probe(Check{HTTP: &HTTPCheck{URL: srv.URL + "/health", Body: regexp.MustCompile(`fine`)}})
	require.False(t, r.OK)
	require.True(t, strings.Contains(r.Detail, `body "status: ok" does not match`), r.Detail)
}
