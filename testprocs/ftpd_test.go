package testprocs_test

// Tests of the ftpd sample server: every version is built from source,
// started on a fresh directory and driven by real clients (Python's ftplib,
// curl, and a small textproto client here), and every behaviour difference
// documented in ftpd/VERSIONS.md is asserted on both sides of its pair.

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"graft/internal/testutil"
)

// ftpBehaviour is what a client can see of one ftpd version; each field is
// one documented change of testprocs/ftpd/VERSIONS.md.
type ftpBehaviour struct {
	banner         string // v1->v2: FTPD_VERSION, the greeting
	sizeDirRefused bool   // v2->v3: SIZE of a directory is 550 (cmd_size)
	confined       bool   // v3->v4: ".." cannot leave the root (path_normalize)
	openNamesWhat  bool   // v4->v5: 150 names what is sent (data_start's new parameter)
	filesSent      bool   // v5->v6: STAT reports ftpd_files_sent
	filesReceived  bool   // v6->v7: STAT reports ftpd_stats.files_received
	maxClients     bool   // v7->v8: accept_loop enforces -m
}

// ftpLatest is the newest version this file knows; a new version directory
// must come with its row here (and in VERSIONS.md).
const ftpLatest = 8

func ftpExpect(t *testing.T, v int) ftpBehaviour {
	t.Helper()
	if v < 1 || v > ftpLatest {
		t.Fatalf("ftpd v%d: no documented behaviour for this version; add it to ftpExpect and VERSIONS.md", v)
	}
	b := ftpBehaviour{
		banner:         "(graftftpd 1.0)",
		sizeDirRefused: v >= 3,
		confined:       v >= 4,
		openNamesWhat:  v >= 5,
		filesSent:      v >= 6,
		filesReceived:  v >= 7,
		maxClients:     v >= 8,
	}
	if v >= 2 {
		b.banner = "(graftftpd 1.1)"
	}
	return b
}

// ftpVersions lists the version numbers under testprocs/ftpd.
func ftpVersions(t *testing.T) []int {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(testutil.TestprocsDir(), "ftpd", "v*"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []int
	for _, d := range dirs {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "v"))
		if err == nil {
			vs = append(vs, n)
		}
	}
	sort.Ints(vs)
	if len(vs) < 6 || vs[0] != 1 || vs[len(vs)-1] != len(vs) {
		t.Fatalf("ftpd versions %v: want v1..vN, N >= 6, without gaps", vs)
	}
	return vs
}

const (
	ftpHello  = "hello world\n"
	ftpSecret = "secret\n"
	ftpInner  = "inner file\n"
)

// ftpTree makes DIR/root (served: hello.txt, .hidden, sub/inner.txt) and
// DIR/secret.txt beside it, which no client may reach once confined.
func ftpTree(t *testing.T) (root string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	for _, f := range []struct{ path, data string }{
		{"root/hello.txt", ftpHello},
		{"root/.hidden", "hidden\n"},
		{"root/sub/inner.txt", ftpInner},
		{"secret.txt", ftpSecret},
	} {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// ftpStart builds and starts ftpd-vN serving root and checks its
// "listening on" line.
func ftpStart(t *testing.T, v int, root string, extra ...string) (*testutil.Proc, int) {
	t.Helper()
	p, port := testutil.StartServer(t, fmt.Sprintf("ftpd-v%d", v), append([]string{"-d", root}, extra...)...)
	listening := fmt.Sprintf("listening on 127.0.0.1:%d\n", port)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Stderr(), listening) {
		if time.Now().After(deadline) {
			t.Fatalf("ftpd-v%d: no %q on stderr: %q", v, listening, p.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Whatever readiness probing did must not count as a live session.
	ftpWaitNoChildren(t, p.Pid)
	return p, port
}

// ftpChildren returns "pid:state" of every child process of pid.
func ftpChildren(pid int) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) { // state, ppid, ...
			out = append(out, e.Name()+":"+f[0])
		}
	}
	return out
}

// ftpWaitNoChildren waits until every session process of the listener has
// exited and been reaped (a zombie counts as a child).
func ftpWaitNoChildren(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids := ftpChildren(pid)
		if len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener %d still has children %v", pid, kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ftpClient is a minimal FTP client: passive mode, one command at a time.
type ftpClient struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

// ftpDial connects and returns the client and the greeting.
func ftpDial(t *testing.T, port int) (*ftpClient, int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &ftpClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	code, msg := c.read()
	return c, code, msg
}

func (c *ftpClient) read() (int, string) {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return code, msg
}

func (c *ftpClient) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send %q: %v", fmt.Sprintf(format, args...), err)
	}
	return c.read()
}

// expect sends a command and requires the exact reply "CODE MSG".
func (c *ftpClient) expect(want string, format string, args ...any) {
	c.t.Helper()
	code, msg := c.cmd(format, args...)
	if got := fmt.Sprintf("%d %s", code, msg); got != want {
		c.t.Errorf("%s: got %q, want %q", fmt.Sprintf(format, args...), got, want)
	}
}

func (c *ftpClient) login() {
	c.t.Helper()
	c.expect("331 Please specify the password.", "USER anonymous")
	c.expect("230 Login successful.", "PASS guest@")
}

var ftpPasvRe = regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`)

// transfer runs a data command over PASV: it returns the preliminary reply
// (empty if the command was refused), the data received, and the final reply.
func (c *ftpClient) transfer(upload []byte, format string, args ...any) (prelim string, data []byte, final string) {
	c.t.Helper()
	code, msg := c.cmd("PASV")
	m := ftpPasvRe.FindStringSubmatch(msg)
	if code != 227 || m == nil {
		c.t.Fatalf("PASV: %d %s", code, msg)
	}
	p1, _ := strconv.Atoi(m[5])
	p2, _ := strconv.Atoi(m[6])
	addr := fmt.Sprintf("%s.%s.%s.%s:%d", m[1], m[2], m[3], m[4], p1*256+p2)
	dc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		c.t.Fatalf("data connection to %s: %v", addr, err)
	}
	defer dc.Close()
	dc.SetDeadline(time.Now().Add(30 * time.Second))
	code, msg = c.cmd(format, args...)
	if code/100 != 1 {
		return "", nil, fmt.Sprintf("%d %s", code, msg)
	}
	prelim = fmt.Sprintf("%d %s", code, msg)
	if upload != nil {
		if _, err := dc.Write(upload); err != nil {
			c.t.Fatalf("upload: %v", err)
		}
		dc.Close()
	} else if data, err = io.ReadAll(dc); err != nil {
		c.t.Fatalf("read data of %s: %v", fmt.Sprintf(format, args...), err)
	}
	code, msg = c.read()
	return prelim, data, fmt.Sprintf("%d %s", code, msg)
}

// stat returns the lines of a STAT reply between its first and last.
func (c *ftpClient) stat() []string {
	c.t.Helper()
	code, msg := c.cmd("STAT")
	lines := strings.Split(msg, "\n")
	if code != 211 || len(lines) < 3 || lines[0] != "FTP server status:" || lines[len(lines)-1] != "End of status" {
		c.t.Fatalf("STAT: %d %q", code, msg)
	}
	return lines[1 : len(lines)-1]
}

// sessionNumber returns N of STAT's "Session number N since server start".
func (c *ftpClient) sessionNumber() int {
	c.t.Helper()
	for _, l := range c.stat() {
		var n int
		if _, err := fmt.Sscanf(l, "     Session number %d since server start", &n); err == nil {
			return n
		}
	}
	c.t.Fatalf("STAT has no session number")
	return 0
}

func TestFtpdMakeBuildsAllVersions(t *testing.T) {
	vs := ftpVersions(t)
	out := t.TempDir()
	args := []string{"-C", testutil.TestprocsDir(), "B=" + out}
	for _, v := range vs {
		args = append(args, fmt.Sprintf("%s/ftpd-v%d", out, v))
	}
	b, err := exec.Command("make", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, b)
	}
	if bytes.Contains(b, []byte("warning:")) {
		t.Errorf("compiler warnings building ftpd:\n%s", b)
	}
	for _, v := range vs {
		if fi, err := os.Stat(fmt.Sprintf("%s/ftpd-v%d", out, v)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("ftpd-v%d not built from clean: %v", v, err)
		}
	}
}

// ftpPythonScript logs in anonymously and prints one tagged line per result.
const ftpPythonScript = `
import ftplib, io, sys
f = ftplib.FTP()
f.connect('127.0.0.1', int(sys.argv[1]), timeout=20)
print('WELCOME', f.getwelcome())
print('LOGIN', f.login())
print('PWD', f.pwd())
f.retrlines('LIST', lambda l: print('LIST', l))
b = io.BytesIO()
f.retrbinary('RETR hello.txt', b.write)
print('RETR', repr(b.getvalue()))
print('NLST', ' '.join(f.nlst()))
f.cwd('sub')
print('PWD', f.pwd())
f.storbinary('STOR up.bin', io.BytesIO(b'\x00\x01uploaded\r\n'))
print('SIZE', f.size('up.bin'))
print('QUIT', f.quit())
`

func TestFtpdPythonFtplib(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatalf("python3 is required (README: its ftplib drives ftpd): %v", err)
	}
	for _, v := range ftpVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			want := ftpExpect(t, v)
			root := ftpTree(t)
			p, port := ftpStart(t, v, root)
			out, err := exec.Command("python3", "-c", ftpPythonScript, strconv.Itoa(port)).CombinedOutput()
			if err != nil {
				t.Fatalf("ftplib against ftpd-v%d: %v\n%s", v, err, out)
			}
			got := map[string][]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				tag, rest, _ := strings.Cut(line, " ")
				got[tag] = append(got[tag], rest)
			}
			check := func(tag string, want ...string) {
				t.Helper()
				if fmt.Sprint(got[tag]) != fmt.Sprint(want) {
					t.Errorf("%s: got %q, want %q\nfull output:\n%s", tag, got[tag], want, out)
				}
			}
			check("WELCOME", "220 "+want.banner)
			check("LOGIN", "230 Login successful.")
			check("PWD", "/", "/sub")
			check("RETR", `b'hello world\n'`)
			check("NLST", "hello.txt sub")
			check("SIZE", "12")
			check("QUIT", "221 Goodbye.")
			listRe := regexp.MustCompile(`^([-d])[-rwx]{9} +\d+ +\d+ +\d+ +(\d+) \w{3} \d\d (?:\d\d:\d\d| \d{4}) (.+)$`)
			var names []string
			for _, l := range got["LIST"] {
				m := listRe.FindStringSubmatch(l)
				if m == nil {
					t.Errorf("LIST line %q is not ls -l format", l)
					continue
				}
				names = append(names, m[1]+m[3])
				if m[3] == "hello.txt" && m[2] != "12" {
					t.Errorf("LIST size of hello.txt: %s", l)
				}
			}
			if fmt.Sprint(names) != "[-hello.txt dsub]" {
				t.Errorf("LIST entries %v, want [-hello.txt dsub] (no dot files)", names)
			}
			up, err := os.ReadFile(filepath.Join(root, "sub", "up.bin"))
			if err != nil || string(up) != "\x00\x01uploaded\r\n" {
				t.Errorf("STOR up.bin stored %q, %v", up, err)
			}
			ftpWaitNoChildren(t, p.Pid)
		})
	}
}

func TestFtpdCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("curl is required in CI (.ci/run installs it): %v", err)
		}
		t.Skipf("curl not installed: %v", err)
	}
	for _, v := range ftpVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			root := ftpTree(t)
			p, port := ftpStart(t, v, root)
			base := fmt.Sprintf("ftp://127.0.0.1:%d/", port)
			curl := func(args ...string) string {
				t.Helper()
				out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
				if err != nil {
					t.Fatalf("curl %v: %v\n%s", args, err, out)
				}
				// curl turns CRLF into LF on ASCII transfers (listings)
				return string(out)
			}
			if got := curl(base + "hello.txt"); got != ftpHello {
				t.Errorf("curl RETR hello.txt: %q", got)
			}
			if got := curl(base + "sub/inner.txt"); got != ftpInner {
				t.Errorf("curl RETR sub/inner.txt: %q", got)
			}
			if got := curl("--list-only", base); got != "hello.txt\nsub\n" {
				t.Errorf("curl NLST /: %q", got)
			}
			if got := curl(base + "sub/"); !strings.Contains(got, " inner.txt\n") || !strings.HasPrefix(got, "-rw-r--r--") {
				t.Errorf("curl LIST /sub/: %q", got)
			}
			src := filepath.Join(t.TempDir(), "curl-up.txt")
			if err := os.WriteFile(src, []byte("from curl\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			curl("-T", src, base+"sub/")
			if b, err := os.ReadFile(filepath.Join(root, "sub", "curl-up.txt")); err != nil || string(b) != "from curl\n" {
				t.Errorf("curl upload stored %q, %v", b, err)
			}
			ftpWaitNoChildren(t, p.Pid)
		})
	}
}

// TestFtpdVersionDifferences asserts every documented difference of
// VERSIONS.md on each version, so each pair is checked on both sides.
func TestFtpdVersionDifferences(t *testing.T) {
	for _, v := range ftpVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			want := ftpExpect(t, v)
			root := ftpTree(t)
			p, port := ftpStart(t, v, root)

			// A first session, so the test session's number is known
			// however often the server was probed before.
			w, _, _ := ftpDial(t, port)
			w.login()
			first := w.sessionNumber()
			w.expect("221 Goodbye.", "QUIT")
			ftpWaitNoChildren(t, p.Pid)

			c, code, msg := ftpDial(t, port)

			// v1->v2: the greeting.
			if got := fmt.Sprintf("%d %s", code, msg); got != "220 "+want.banner {
				t.Errorf("greeting %q, want %q", got, "220 "+want.banner)
			}
			c.login()

			// v2->v3: SIZE of a directory.
			c.expect("213 12", "SIZE hello.txt")
			code, msg = c.cmd("SIZE sub")
			if want.sizeDirRefused {
				if got := fmt.Sprintf("%d %s", code, msg); got != "550 Could not get file size." {
					t.Errorf("SIZE sub: %q, want 550", got)
				}
			} else if fi, err := os.Stat(filepath.Join(root, "sub")); err != nil || code != 213 || msg != strconv.FormatInt(fi.Size(), 10) {
				t.Errorf("SIZE sub: %d %q, want 213 and the directory's st_size (%v)", code, msg, err)
			}

			// v3->v4: ".." at the root.
			if want.confined {
				c.expect("550 Could not get file size.", "SIZE ../secret.txt")
				pre, _, final := c.transfer(nil, "RETR ../secret.txt")
				if pre != "" || final != "550 Failed to open file." {
					t.Errorf("RETR ../secret.txt: %q %q, want refused with 550", pre, final)
				}
				c.expect("250 Directory successfully changed.", "CWD ..")
				c.expect(`257 "/" is the current directory`, "PWD")
				c.expect("250 Directory successfully changed.", "CWD /sub/../../..")
				c.expect(`257 "/" is the current directory`, "PWD")
			} else {
				c.expect(fmt.Sprintf("213 %d", len(ftpSecret)), "SIZE ../secret.txt")
				_, data, final := c.transfer(nil, "RETR ../secret.txt")
				if string(data) != ftpSecret || final != "226 Transfer complete." {
					t.Errorf("RETR ../secret.txt: %q %q, want the file outside the root", data, final)
				}
				c.expect("250 Directory successfully changed.", "CWD ..")
				c.expect(`257 "/.." is the current directory`, "PWD")
				c.expect("213 7", "SIZE secret.txt")
				c.expect("250 Directory successfully changed.", "CWD /sub/../../..")
				c.expect(`257 "/sub/../../.." is the current directory`, "PWD")
			}
			c.expect("250 Directory successfully changed.", "CWD /")
			c.expect(`257 "/" is the current directory`, "PWD")

			// v4->v5: the 150 reply of LIST, RETR and STOR.
			c.expect("200 Switching to Binary mode.", "TYPE I")
			forWhat := func(what string) string {
				if want.openNamesWhat {
					return " for " + what
				}
				return ""
			}
			pre, data, final := c.transfer(nil, "RETR hello.txt")
			if pre != "150 Opening BINARY mode data connection"+forWhat("hello.txt")+"." ||
				string(data) != ftpHello || final != "226 Transfer complete." {
				t.Errorf("RETR hello.txt: %q %q %q", pre, data, final)
			}
			pre, _, final = c.transfer([]byte("up\n"), "STOR sub/up.txt")
			if pre != "150 Opening BINARY mode data connection"+forWhat("sub/up.txt")+"." || final != "226 Transfer complete." {
				t.Errorf("STOR sub/up.txt: %q %q", pre, final)
			}
			c.expect("200 Switching to ASCII mode.", "TYPE A")
			pre, data, final = c.transfer(nil, "NLST sub")
			if pre != "150 Opening ASCII mode data connection"+forWhat("directory listing")+"." ||
				string(data) != "inner.txt\r\nup.txt\r\n" || final != "226 Directory send OK." {
				t.Errorf("NLST sub: %q %q %q", pre, data, final)
			}
			pre, data, final = c.transfer(nil, "LIST")
			if pre != "150 Opening ASCII mode data connection"+forWhat("directory listing")+"." ||
				!bytes.Contains(data, []byte(" hello.txt\r\n")) || final != "226 Directory send OK." {
				t.Errorf("LIST: %q %q %q", pre, data, final)
			}

			// v5->v6 and v6->v7: STAT's counters. One RETR (two before v4,
			// where RETR ../secret.txt succeeded) and one STOR so far.
			sent := 1
			if !want.confined {
				sent = 2
			}
			wantStat := []string{
				"     Connected to 127.0.0.1",
				"     Logged in as ftp",
				"     TYPE: ASCII",
				"     At session startup, client count was 1",
				fmt.Sprintf("     Session number %d since server start", first+1),
			}
			if want.filesSent {
				wantStat = append(wantStat, fmt.Sprintf("     Files sent in this session: %d", sent))
			}
			if want.filesReceived {
				wantStat = append(wantStat, "     Files received in this session: 1")
			}
			if got := c.stat(); strings.Join(got, "\n") != strings.Join(wantStat, "\n") {
				t.Errorf("STAT:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantStat, "\n"))
			}
			c.expect("221 Goodbye.", "QUIT")
		})
	}
}

// TestFtpdMaxClients: -m is parsed by every version but only enforced by
// accept_loop from v8 on.
func TestFtpdMaxClients(t *testing.T) {
	for _, v := range ftpVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			want := ftpExpect(t, v)
			p, port := ftpStart(t, v, ftpTree(t), "-m", "2")
			a, code, _ := ftpDial(t, port)
			b, code2, _ := ftpDial(t, port)
			if code != 220 || code2 != 220 {
				t.Fatalf("first two sessions: greetings %d %d", code, code2)
			}
			a.login()
			b.login()
			third, code, msg := ftpDial(t, port)
			got := fmt.Sprintf("%d %s", code, msg)
			if want.maxClients {
				if got != "421 There are too many connected users, please try later." {
					t.Errorf("third session with -m 2: %q, want 421", got)
				}
			} else if got != "220 "+want.banner {
				t.Errorf("third session with -m 2: %q, want the greeting (limit not enforced)", got)
			}
			third.conn.Close()
			// Slots come back when sessions end (SIGCHLD reaping).
			a.expect("221 Goodbye.", "QUIT")
			b.expect("221 Goodbye.", "QUIT")
			ftpWaitNoChildren(t, p.Pid)
			c, code, msg := ftpDial(t, port)
			if code != 220 {
				t.Fatalf("after the sessions ended: %d %s", code, msg)
			}
			c.login()
			c.expect("221 Goodbye.", "QUIT")
		})
	}
}

func TestFtpdLocalUser(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("# name:password\nalice:wonderland\nbob:builder\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range ftpVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			_, port := ftpStart(t, v, ftpTree(t), "-u", users)
			c, _, _ := ftpDial(t, port)
			c.expect("530 Please login with USER and PASS.", "PWD")
			c.expect("503 Login with USER first.", "PASS x")
			c.expect("331 Please specify the password.", "USER bob")
			c.expect("530 Login incorrect.", "PASS wonderland")
			c.expect("331 Please specify the password.", "USER alice")
			c.expect("230 Login successful.", "PASS wonderland")
			c.expect("530 Can't change to another user.", "USER bob")
			if got := c.stat(); len(got) < 2 || got[1] != "     Logged in as alice" {
				t.Errorf("STAT as alice: %q", got)
			}
			c.expect("221 Goodbye.", "QUIT")
		})
	}
}

// TestFtpdRobustness: unknown commands, long lines, garbage and abrupt
// disconnects (idle, mid-line, after PASV, mid-transfer) leave the
// listener serving and every session process reaped.
func TestFtpdRobustness(t *testing.T) {
	for _, v := range ftpVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			root := ftpTree(t)
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
			if err := os.WriteFile(filepath.Join(root, "big.bin"), big, 0o644); err != nil {
				t.Fatal(err)
			}
			p, port := ftpStart(t, v, root)

			c, _, _ := ftpDial(t, port)
			c.expect("530 Please login with USER and PASS.", "LIST")
			c.expect("500 Unknown command.", "XYZZY foo")
			c.expect("500 Unknown command.", "")
			c.expect("500 Command line too long.", "NOOP %s", strings.Repeat("A", 5000))
			c.expect("500 Command line too long.", "%s", strings.Repeat("B", 100000))
			c.expect("200 NOOP ok.", "noop")
			c.login()
			c.expect("501 Missing argument.", "RETR")
			c.expect("500 Unrecognised TYPE command.", "TYPE Q")
			c.expect("522 Bad network protocol, use (1).", "EPSV 2")
			c.expect("425 Use PORT or PASV first.", "LIST")
			c.expect("550 Failed to open file.", "RETR nosuch")
			c.expect("550 Failed to change directory.", "CWD hello.txt")
			c.expect("215 UNIX Type: L8", "SYST")
			if _, err := c.conn.Write([]byte("\x00\xff\xfe\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			c.read()
			c.read()
			c.expect("200 NOOP ok.", "NOOP")

			// Abrupt disconnects: right after the greeting, in the middle of a
			// line, with a passive socket open, and in the middle of a RETR.
			d, _, _ := ftpDial(t, port)
			d.conn.Close()
			d, _, _ = ftpDial(t, port)
			d.conn.Write([]byte("USER anonym"))
			d.conn.Close()
			d, _, _ = ftpDial(t, port)
			d.login()
			d.cmd("PASV")
			d.conn.Close()
			d, _, _ = ftpDial(t, port)
			d.login()
			d.cmd("TYPE I")
			code, msg := d.cmd("EPSV")
			var dport int
			if _, err := fmt.Sscanf(msg, "Entering Extended Passive Mode (|||%d|).", &dport); code != 229 || err != nil {
				t.Fatalf("EPSV: %d %q: %v", code, msg, err)
			}
			dc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", dport))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.tp.PrintfLine("RETR big.bin"); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(dc, make([]byte, 4096)); err != nil {
				t.Fatalf("first bytes of big.bin: %v", err)
			}
			dc.Close()
			d.conn.Close()

			// The first session survived all of it, and so did the listener.
			c.expect(`257 "/" is the current directory`, "PWD")
			_, data, final := c.transfer(nil, "RETR big.bin")
			if !bytes.Equal(data, big) || final != "226 Transfer complete." {
				t.Errorf("RETR big.bin: %d bytes, %q", len(data), final)
			}
			c.expect("221 Goodbye.", "QUIT")
			ftpWaitNoChildren(t, p.Pid)
			if p.Exited() {
				t.Fatalf("listener exited: %s", p.Stderr())
			}
			e, code, _ := ftpDial(t, port)
			if code != 220 {
				t.Fatalf("greeting after the disconnects: %d", code)
			}
			e.login()
			e.expect("221 Goodbye.", "QUIT")
			ftpWaitNoChildren(t, p.Pid)
		})
	}
}

// TestFtpdRestartSamePort: a restarted server binds its port again while
// the previous one's closed connections are in TIME_WAIT (SO_REUSEADDR).
func TestFtpdRestartSamePort(t *testing.T) {
	vs := ftpVersions(t)
	v := vs[len(vs)-1]
	path := testutil.Build(t, fmt.Sprintf("ftpd-v%d", v))
	root := ftpTree(t)
	port := testutil.FreePort(t)
	for round := 0; round < 2; round++ {
		p := testutil.Start(t, path, strconv.Itoa(port), "-d", root)
		deadline := time.Now().Add(10 * time.Second)
		for !testutil.ListensOn(p.Pid, port) {
			if p.Exited() || time.Now().After(deadline) {
				t.Fatalf("round %d: ftpd does not listen on %d: %s", round, port, p.Stderr())
			}
			time.Sleep(10 * time.Millisecond)
		}
		c, _, _ := ftpDial(t, port)
		c.login()
		// The server closes first after QUIT, so its side of the connection
		// is left in TIME_WAIT on 127.0.0.1:port.
		c.expect("221 Goodbye.", "QUIT")
		if _, err := c.conn.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("round %d: after QUIT: %v, want EOF", round, err)
		}
		ftpWaitNoChildren(t, p.Pid)
		syscall.Kill(-p.Pid, syscall.SIGKILL)
		deadline = time.Now().Add(5 * time.Second)
		for !p.Exited() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: ftpd %d did not exit", round, p.Pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if strings.Contains(p.Stderr(), "Address already in use") {
			t.Fatalf("round %d: %s", round, p.Stderr())
		}
	}
}

// ftpImage is one ftpd build reduced to what VERSIONS.md's summary talks
// about: each function's code in a layout-independent form, and the size
// of each global.
type ftpImage struct {
	funcs   map[string]string
	globals map[string]uint64
}

// ftpLoadImage disassembles every function of an ftpd build. Addresses are
// replaced by what they reach (function or global by name, PLT entries by
// import, string literals and other anonymous read-only data by content),
// so two builds compare equal function by function exactly where the code
// is the same.
func ftpLoadImage(t *testing.T, path string) ftpImage {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("symbols of %s: %v", path, err)
	}
	img := ftpImage{funcs: map[string]string{}, globals: map[string]uint64{}}
	var funcs, objects []elf.Symbol
	for _, s := range syms {
		if s.Size == 0 || s.Section == elf.SHN_UNDEF || strings.HasPrefix(s.Name, "_") {
			continue
		}
		switch elf.ST_TYPE(s.Info) {
		case elf.STT_FUNC:
			funcs = append(funcs, s)
		case elf.STT_OBJECT:
			objects = append(objects, s)
			if s.Name != "completed.0" { // crtstuff's
				img.globals[s.Name] = s.Size
			}
		}
	}
	plt := map[uint64]string{}
	if sec, rela := f.Section(".plt"), f.Section(".rela.plt"); sec != nil && rela != nil {
		dyn, _ := f.DynamicSymbols()
		data, err := rela.Data()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; (i+1)*24 <= len(data); i++ {
			idx := int(binary.LittleEndian.Uint64(data[i*24+8:]) >> 32)
			if idx >= 1 && idx <= len(dyn) {
				plt[sec.Addr+uint64(i+1)*16] = dyn[idx-1].Name + "@plt"
			}
		}
	}
	within := func(list []elf.Symbol, addr uint64) (elf.Symbol, bool) {
		for _, s := range list {
			if addr >= s.Value && addr < s.Value+s.Size {
				return s, true
			}
		}
		return elf.Symbol{}, false
	}
	readAt := func(addr uint64, n int) []byte {
		for _, sec := range f.Sections {
			if sec.Type == elf.SHT_PROGBITS && addr >= sec.Addr && addr < sec.Addr+sec.Size {
				b, err := sec.Data()
				if err != nil {
					return nil
				}
				b = b[addr-sec.Addr:]
				if len(b) > n {
					b = b[:n]
				}
				return b
			}
		}
		return nil
	}
	describe := func(self elf.Symbol, addr uint64) string {
		if addr >= self.Value && addr < self.Value+self.Size {
			return fmt.Sprintf(".+%#x", addr-self.Value)
		}
		if name, ok := plt[addr]; ok {
			return name
		}
		if s, ok := within(funcs, addr); ok {
			return fmt.Sprintf("%s+%#x", s.Name, addr-s.Value)
		}
		if s, ok := within(objects, addr); ok {
			return fmt.Sprintf("%s+%#x", s.Name, addr-s.Value)
		}
		b := readAt(addr, 256)
		if i := bytes.IndexByte(b, 0); i >= 0 {
			return fmt.Sprintf("str:%q", b[:i])
		}
		return fmt.Sprintf("data:%x", b)
	}
	text := f.Section(".text")
	code, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range funcs {
		if fn.Value < text.Addr || fn.Value+fn.Size > text.Addr+text.Size {
			continue
		}
		body := code[fn.Value-text.Addr : fn.Value-text.Addr+fn.Size]
		var out strings.Builder
		for off := 0; off < len(body); {
			inst, err := x86asm.Decode(body[off:], 64)
			if err != nil {
				fmt.Fprintf(&out, "byte %#x\n", body[off])
				off++
				continue
			}
			next := fn.Value + uint64(off+inst.Len)
			fmt.Fprintf(&out, "%v %v %d %d", inst.Prefix, inst.Op, inst.DataSize, inst.MemBytes)
			for _, a := range inst.Args {
				switch a := a.(type) {
				case nil:
				case x86asm.Rel:
					out.WriteString(" " + describe(fn, next+uint64(int64(a))))
				case x86asm.Mem:
					if a.Base == x86asm.RIP {
						out.WriteString(" [" + describe(fn, next+uint64(a.Disp)) + "]")
					} else {
						out.WriteString(" " + a.String())
					}
				default:
					out.WriteString(" " + a.String())
				}
			}
			out.WriteByte('\n')
			off += inst.Len
		}
		img.funcs[fn.Name] = out.String()
	}
	return img
}

// ftpSummary reads the summary table of VERSIONS.md: for each pair "vN"
// (the newer side), the changed functions and the added or resized globals.
func ftpSummary(t *testing.T) map[int][2][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.TestprocsDir(), "ftpd", "VERSIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`^\| v(\d+) -> v(\d+) \|[^|]*\|([^|]*)\|([^|]*)\|$`)
	name := regexp.MustCompile("`([a-z_][a-z0-9_]*)`")
	names := func(cell string) []string {
		var out []string
		for _, m := range name.FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
		sort.Strings(out)
		return out
	}
	rows := map[int][2][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		from, _ := strconv.Atoi(m[1])
		to, _ := strconv.Atoi(m[2])
		if to != from+1 {
			t.Fatalf("VERSIONS.md summary row %q: not an adjacent pair", line)
		}
		rows[to] = [2][]string{names(m[3]), names(m[4])}
	}
	return rows
}

// TestFtpdVersionsSummary checks VERSIONS.md's summary against the builds:
// for every pair, exactly the listed functions differ in code and exactly
// the listed globals are added or resized.
func TestFtpdVersionsSummary(t *testing.T) {
	vs := ftpVersions(t)
	rows := ftpSummary(t)
	imgs := map[int]ftpImage{}
	for _, v := range vs {
		imgs[v] = ftpLoadImage(t, testutil.Build(t, fmt.Sprintf("ftpd-v%d", v)))
	}
	for _, v := range vs[1:] {
		row, ok := rows[v]
		if !ok {
			t.Errorf("VERSIONS.md summary has no row for v%d -> v%d", v-1, v)
			continue
		}
		old, cur := imgs[v-1], imgs[v]
		if len(cur.funcs) < 30 {
			t.Fatalf("ftpd-v%d: only %d functions found", v, len(cur.funcs))
		}
		var changed, globals []string
		for fn, code := range cur.funcs {
			if old.funcs[fn] != code {
				changed = append(changed, fn)
			}
		}
		for fn := range old.funcs {
			if _, ok := cur.funcs[fn]; !ok {
				changed = append(changed, fn)
			}
		}
		for g, size := range cur.globals {
			if old.globals[g] != size {
				globals = append(globals, g)
			}
		}
		for g := range old.globals {
			if _, ok := cur.globals[g]; !ok {
				globals = append(globals, g)
			}
		}
		sort.Strings(changed)
		sort.Strings(globals)
		if fmt.Sprint(changed) != fmt.Sprint(row[0]) {
			t.Errorf("v%d -> v%d: functions with different code %v, VERSIONS.md says %v", v-1, v, changed, row[0])
		}
		if fmt.Sprint(globals) != fmt.Sprint(row[1]) {
			t.Errorf("v%d -> v%d: globals added or resized %v, VERSIONS.md says %v", v-1, v, globals, row[1])
		}
	}
}
