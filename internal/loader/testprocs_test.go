package loader

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"graft/elfpatch"
	"graft/internal/testutil"
	"graft/tracer"
	"graft/trampoline"
)

// planPair diffs and plans testprocs build/<prog>-v<from> -> v<to>.
func planPair(t *testing.T, prog string, from, to int) (*elfpatch.Report, *elfpatch.Image, error) {
	t.Helper()
	old, err := elfpatch.Open(testutil.Build(t, fmt.Sprintf("%s-v%d", prog, from)))
	if err != nil {
		t.Fatal(err)
	}
	new, err := elfpatch.Open(testutil.Build(t, fmt.Sprintf("%s-v%d", prog, to)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := elfpatch.Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	im, err := elfpatch.PlanImage(old, new, r)
	return r, im, err
}

// session connects to a testprocs server and returns its first line and
// the replies to cmds (one line each).
func session(t *testing.T, port int, cmds ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read banner: %v", err)
	}
	out = append(out, strings.TrimSpace(line))
	for _, cmd := range cmds {
		if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply to %q: %v", cmd, err)
		}
		out = append(out, strings.TrimSpace(line))
	}
	return out
}

// loadLive starts the server, loads the planned image and writes the
// redirects; it returns what undo needs.
type live struct {
	proc  *testutil.Proc
	port  int
	p     *tracer.Process
	l     *Loaded
	bias  uint64 // OLD's load bias
	saved []*trampoline.Site
}

func startAndLoad(t *testing.T, target string, im *elfpatch.Image, extra ...string) *live {
	t.Helper()
	proc, port := testutil.StartServer(t, target, extra...)
	a := attach(t, proc)
	l, err := Load(a.p, im, a.main, a.res.Resolve, Options{ID: target})
	if err != nil {
		t.Fatal(err)
	}
	return &live{proc: proc, port: port, p: a.p, l: l, bias: a.main.Bias}
}

func (lv *live) unload(t *testing.T) {
	t.Helper()
	if lv.saved != nil {
		revertRedirects(t, lv.p, lv.saved)
	}
	if err := lv.l.Unload(lv.p); err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", lv.proc.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(maps), "/memfd:graft-") {
		t.Fatalf("image still mapped after Unload:\n%s", maps)
	}
}

// ftpd forks a session process per connection: the patched parent must
// hand the new code (and its private data) to every child it forks.
func TestLoadFtpdBannerLive(t *testing.T) {
	testutil.RequirePtrace(t)
	_, im, err := planPair(t, "ftpd", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	lv := startAndLoad(t, "ftpd-v1", im)
	if b := session(t, lv.port)[0]; !strings.Contains(b, "graftftpd 1.0") {
		t.Fatalf("banner with the image loaded but no jumps: %q", b)
	}
	lv.saved = writeRedirects(t, lv.p, im, lv.bias, lv.l.Base)
	for i := 0; i < 3; i++ {
		if b := session(t, lv.port)[0]; !strings.Contains(b, "graftftpd 1.1") {
			t.Fatalf("banner after the jumps: %q", b)
		}
	}
	lv.unload(t)
	if b := session(t, lv.port)[0]; !strings.Contains(b, "graftftpd 1.0") {
		t.Fatalf("banner after revert and unload: %q", b)
	}
}

// sshd v1 accepts a password prefix (strncmp); v2 compares exactly.
// cmd_login is reached through the commands table in .data.rel.ro, so the
// jump at OLD's entry is what routes the call into the new code.
func TestLoadSshdLoginLive(t *testing.T) {
	testutil.RequirePtrace(t)
	_, im, err := planPair(t, "sshd", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	lv := startAndLoad(t, "sshd-v1", im)
	if r := session(t, lv.port, "LOGIN alice sec", "STATS"); r[1] != "OK welcome alice" {
		t.Fatalf("v1 login with a prefix: %q", r)
	}
	lv.saved = writeRedirects(t, lv.p, im, lv.bias, lv.l.Base)
	r := session(t, lv.port, "LOGIN alice sec", "LOGIN alice secret", "STATS")
	if r[1] != "FAIL login incorrect" || r[2] != "OK welcome alice" {
		t.Fatalf("v2 login: %q", r)
	}
	// The statistics the new cmd_login updates are OLD's: the first
	// session's login is still counted (logins=2: one per version).
	if !strings.Contains(r[3], "logins=2") {
		t.Fatalf("stats after the patch: %q (state not shared?)", r[3])
	}
	lv.unload(t)
	if r := session(t, lv.port, "LOGIN alice sec"); r[1] != "OK welcome alice" {
		t.Fatalf("login after revert and unload: %q", r)
	}
}

// Every version pair of the sample servers whose diff is applicable
// plans, links against the running process's libraries, loads and
// unloads. A pair whose globals changed layout plans with its state
// transformers (they run in the controller's pause, not here: see
// transfer_live_test.go); a refused one is refused by the diff.
func TestLoadTestprocsPairsLive(t *testing.T) {
	testutil.RequirePtrace(t)
	for _, prog := range []string{"ftpd", "sshd"} {
		n := 0
		for {
			if _, err := os.Stat(filepath.Join(testutil.TestprocsDir(), prog, fmt.Sprintf("v%d", n+1))); err != nil {
				break
			}
			n++
		}
		if n < 2 {
			t.Fatalf("testprocs/%s has %d versions", prog, n)
		}
		for v := 1; v < n; v++ {
			t.Run(fmt.Sprintf("%s-v%d-v%d", prog, v, v+1), func(t *testing.T) {
				r, im, err := planPair(t, prog, v, v+1)
				if r.Verdict != elfpatch.VerdictAuto {
					var pe *elfpatch.PlanError
					switch {
					case errors.As(err, &pe) && pe.Symbol != "":
						t.Logf("verdict %s; plan refused: %v", r.Verdict, err)
					case err == nil && len(r.Transfers) > 0:
						t.Logf("verdict %s; planned with %d state transformer(s); the controller runs them", r.Verdict, len(r.Transfers))
					default:
						t.Fatalf("verdict %s, plan error %v, %d transfers: want a PlanError naming the global or a transformer", r.Verdict, err, len(r.Transfers))
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				lv := startAndLoad(t, fmt.Sprintf("%s-v%d", prog, v), im)
				t.Logf("%d redirects, %d fixups, %d imports: loaded %#x bytes at %#x", len(im.Redirects), len(im.Fixups), len(im.Imports), lv.l.Size, lv.l.Base)
				lv.unload(t)
				// Again, now with the jumps, and a session before and
				// after them: the server keeps serving, and the counters
				// the listener keeps are the same ones (no second copy).
				lv = startAndLoad(t, fmt.Sprintf("%s-v%d", prog, v), im)
				smoke(t, prog, lv.port, 1)
				lv.saved = writeRedirects(t, lv.p, im, lv.bias, lv.l.Base)
				smoke(t, prog, lv.port, 2)
				// No unload here: a session thread or the housekeeper may
				// be inside the new code; making sure none is before
				// unmapping is the controller's safe-point check.
			})
		}
	}
}

// smoke runs one client session against a sample server and checks the
// replies, including the server's count of sessions so far (n).
func smoke(t *testing.T, prog string, port, n int) {
	t.Helper()
	switch prog {
	case "sshd":
		r := session(t, port, "LOGIN alice secret", "ECHO hi", "STATS", "QUIT")
		if !strings.HasPrefix(r[0], "SSH-2.0-") || r[1] != "OK welcome alice" || r[2] != "OK hi" ||
			!strings.HasPrefix(r[3], fmt.Sprintf("OK connections=%d logins=%d ", n, n)) || r[4] != "OK bye" {
			t.Fatalf("sshd session %d: %q", n, r)
		}
	case "ftpd":
		r := ftpSession(t, port, "USER anonymous", "PASS x", "SYST", "PWD", "STAT", "QUIT")
		want := []string{"220 ", "331 ", "230 ", "215 ", "257 ", "211", "221 "}
		for i, w := range want {
			if !strings.HasPrefix(r[i], w) {
				t.Fatalf("ftpd session %d: reply %d %q, want %q...: %q", n, i, r[i], w, r)
			}
		}
		if !strings.Contains(r[5], fmt.Sprintf("Session number %d since server start", n)) {
			t.Fatalf("ftpd session %d: STAT does not count it: %q", n, r[5])
		}
	default:
		t.Fatalf("no smoke test for %s", prog)
	}
}

// ftpSession is session for FTP: each reply is read up to its final line
// ("NNN text"), multi-line replies joined with "\n".
func ftpSession(t *testing.T, port int, cmds ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	reply := func() string {
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("ftp reply: %v (so far %q)", err, lines)
			}
			line = strings.TrimRight(line, "\r\n")
			lines = append(lines, line)
			if len(line) >= 4 && line[3] == ' ' && strings.Trim(line[:3], "0123456789") == "" {
				return strings.Join(lines, "\n")
			}
		}
	}
	out := []string{reply()}
	for _, cmd := range cmds {
		if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
			t.Fatal(err)
		}
		out = append(out, reply())
	}
	return out
}
