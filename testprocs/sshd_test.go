package testprocs_test

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"graft/internal/testutil"
)

// sshVersion is what testprocs/sshd/VERSIONS.md promises about one version.
// Every flag is a difference documented for one adjacent pair, so each is
// asserted on both sides of that pair.
type sshVersion struct {
	target string
	// banner is both the greeting and the VERSION reply (v3->v4).
	banner string
	// prefixLogin: a prefix of the password, or none, logs in (v1->v2).
	prefixLogin bool
	// echoWhole: ECHO returns all its text, not the first word (v2->v3).
	echoWhole bool
	// statsFailed: STATS reports failed=N (v4->v5).
	statsFailed bool
	// whoamiCommands: WHOAMI reports the session's commands=N (v5->v6).
	whoamiCommands bool
}

var sshVersions = []sshVersion{
	{"sshd-v1", "SSH-2.0-graftssh_1.0", true, false, false, false},
	{"sshd-v2", "SSH-2.0-graftssh_1.0", false, false, false, false},
	{"sshd-v3", "SSH-2.0-graftssh_1.0", false, true, false, false},
	{"sshd-v4", "SSH-2.0-graftssh_1.1", false, true, false, false},
	{"sshd-v5", "SSH-2.0-graftssh_1.1", false, true, true, false},
	{"sshd-v6", "SSH-2.0-graftssh_1.1", false, true, true, true},
}

// sshUsers is the user file the tests give the servers. alice and bob are
// built-in users too, with other passwords: a login with the built-in
// password shows that the file replaced the built-in list.
var sshUsers = map[string]string{
	"alice": "wonderland",
	"bob":   "builder42",
	"carol": "c4r0l",
	"dave":  "d4ve!",
	"erin":  "erin-pw",
	"frank": "fr4nk",
	"grace": "hopper",
	"heidi": "h31d1",
}

var sshUserOrder = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}

func sshUserFile(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test users\n")
	for _, u := range sshUserOrder {
		fmt.Fprintf(&b, "%s:%s\n", u, sshUsers[u])
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sshStart runs one sshd version with the test user file and extra flags.
func sshStart(t *testing.T, target string, extra ...string) (*testutil.Proc, int) {
	t.Helper()
	args := append([]string{"-u", sshUserFile(t)}, extra...)
	return sshStartServer(t, target, args...)
}

// sshStartServer is testutil.StartServer plus proof that the process
// listening is ours: its "listening on" log line, written after listen().
// StartServer picks a free port and then lets the target bind it, and its
// probe can reach another process's socket that took the same port
// meanwhile (seen as resets under parallel tests); a target that lost the
// port exits, and then a new port is tried.
func sshStartServer(t *testing.T, target string, args ...string) (*testutil.Proc, int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, port := testutil.StartServer(t, target, args...)
		if sshWaitLog(t, p, fmt.Sprintf("listening on 127.0.0.1:%d", port)) {
			return p, port
		}
		if attempt == 3 {
			t.Fatalf("%s exited before listening, 3 times; last stderr: %s", target, p.Stderr())
		}
		t.Logf("%s (pid %d) exited before listening on %d, retrying: %s", target, p.Pid, port, p.Stderr())
	}
}

// sshWaitLog waits until the target's stderr contains want (true) or the
// target exits without it (false).
func sshWaitLog(t *testing.T, p *testutil.Proc, want string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Stderr(), want) {
		if p.Exited() {
			return strings.Contains(p.Stderr(), want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("target %d: no %q in its log: %s", p.Pid, want, p.Stderr())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

type sshConn struct {
	t      *testing.T
	c      net.Conn
	r      *bufio.Reader
	banner string
}

// sshDial connects and reads the banner.
func sshDial(t *testing.T, port int) *sshConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatalf("dial sshd on port %d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	s := &sshConn{t: t, c: c, r: bufio.NewReader(c)}
	s.banner = s.line()
	return s
}

// line reads one reply line. A generous deadline keeps a hung server from
// hanging the test; it is not a speed assertion.
func (s *sshConn) line() string {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := s.r.ReadString('\n')
	if err != nil {
		s.t.Fatalf("read reply: %v (got %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

// do sends one command line and returns the reply line.
func (s *sshConn) do(cmd string) string {
	s.t.Helper()
	if _, err := io.WriteString(s.c, cmd+"\r\n"); err != nil {
		s.t.Fatalf("send %q: %v", cmd, err)
	}
	return s.line()
}

func (s *sshConn) expect(cmd, want string) {
	s.t.Helper()
	if got := s.do(cmd); got != want {
		s.t.Errorf("%s: got %q, want %q", cmd, got, want)
	}
}

// expectEOF checks that the server closed the connection.
func (s *sshConn) expectEOF() {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := s.r.ReadString('\n')
	if err != io.EOF || l != "" {
		s.t.Errorf("expected the server to close the connection, got %q, %v", l, err)
	}
}

func (s *sshConn) login(user string) {
	s.t.Helper()
	s.expect("LOGIN "+user+" "+sshUsers[user], "OK welcome "+user)
}

// sshStats parses "OK k=v k=v ..." from STATS.
func sshStats(t *testing.T, s *sshConn) map[string]uint64 {
	t.Helper()
	reply := s.do("STATS")
	f := strings.Fields(reply)
	if len(f) < 2 || f[0] != "OK" {
		t.Fatalf("STATS: %q", reply)
	}
	m := map[string]uint64{}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if !ok || err != nil {
			t.Fatalf("STATS: bad field %q in %q", kv, reply)
		}
		m[k] = n
	}
	return m
}

// sshSessions parses "OK N id:user ..." from SESSIONS into N and id -> user.
func sshSessions(t *testing.T, s *sshConn) (int, map[string]string) {
	t.Helper()
	reply := s.do("SESSIONS")
	f := strings.Fields(reply)
	if len(f) < 2 || f[0] != "OK" {
		t.Fatalf("SESSIONS: %q", reply)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n != len(f)-2 {
		t.Fatalf("SESSIONS: count %q does not match %d entries in %q", f[1], len(f)-2, reply)
	}
	m := map[string]string{}
	for _, e := range f[2:] {
		id, user, ok := strings.Cut(e, ":")
		if !ok {
			t.Fatalf("SESSIONS: bad entry %q in %q", e, reply)
		}
		m[id] = user
	}
	return n, m
}

// sshWaitSessions polls SESSIONS until want reports true: sessions of
// clients that just closed leave the table when their thread notices.
func sshWaitSessions(t *testing.T, s *sshConn, what string, want func(n int, m map[string]string) bool) (int, map[string]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, m := sshSessions(t, s)
		if want(n, m) {
			return n, m
		}
		if time.Now().After(deadline) {
			t.Fatalf("SESSIONS never showed %s; last: %d %v", what, n, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sshWhoami(v sshVersion, user string, commands int) string {
	if v.whoamiCommands {
		return fmt.Sprintf("OK %s commands=%d", user, commands)
	}
	return "OK " + user
}

// TestSSHDProtocol checks every documented behaviour of every version.
func TestSSHDProtocol(t *testing.T) {
	for _, v := range sshVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			_, port := sshStart(t, v.target)

			c := sshDial(t, port)
			if c.banner != v.banner {
				t.Errorf("banner: got %q, want %q", c.banner, v.banner)
			}
			c.expect("VERSION", "OK "+v.banner)
			for _, cmd := range []string{"WHOAMI", "ECHO hi", "SESSIONS", "UPTIME", "STATS", "LOGOUT"} {
				c.expect(cmd, "ERR not logged in")
			}
			c.expect("NOSUCH x", "ERR unknown command")
			c.expect("LOGIN", "ERR usage: LOGIN user password")
			c.expect("LOGIN nobody x", "FAIL login incorrect")
			c.expect("LOGIN alice secret", "FAIL login incorrect") // built-in password, not in the file
			c.expect("LOGIN alice wonderlandX", "FAIL login incorrect")
			c.login("alice")
			c.expect("LOGIN bob builder42", "FAIL already logged in as alice")
			// VERSION, 6 refused, NOSUCH, 6 LOGINs and this WHOAMI: 15
			// commands on this session.
			c.expect("WHOAMI", sshWhoami(v, "alice", 15))
			c.expect("whoami", sshWhoami(v, "alice", 16)) // verbs are case-insensitive
			if v.echoWhole {
				c.expect("ECHO hello big  world", "OK hello big  world")
			} else {
				c.expect("ECHO hello big  world", "OK hello")
			}
			c.expect("ECHO", "OK ")
			up := c.do("UPTIME")
			if f := strings.Fields(up); len(f) != 3 || f[0] != "OK" || f[2] != "s" {
				t.Errorf("UPTIME: %q", up)
			} else if _, err := strconv.ParseUint(f[1], 10, 64); err != nil {
				t.Errorf("UPTIME: %q", up)
			}

			st := sshStats(t, c)
			keys := []string{"connections", "logins", "commands", "expired", "ticks"}
			if v.statsFailed {
				keys = append(keys, "failed")
			}
			if len(st) != len(keys) {
				t.Errorf("STATS fields %v, want exactly %v", st, keys)
			}
			for _, k := range keys {
				if _, ok := st[k]; !ok {
					t.Errorf("STATS lacks %s: %v", k, st)
				}
			}
			if st["logins"] != 1 {
				t.Errorf("STATS logins = %d, want 1", st["logins"])
			}
			// The usage error and the second login are no failed logins.
			if v.statsFailed && st["failed"] != 3 {
				t.Errorf("STATS failed = %d, want 3 (nobody, alice twice)", st["failed"])
			}
			// The counter counts commands of every session: at least the
			// 20 sent here (the startup probe sent none).
			if st["commands"] != 20 {
				t.Errorf("STATS commands = %d, want 20", st["commands"])
			}
			c.expect("LOGOUT", "OK bye")
			c.expectEOF()

			q := sshDial(t, port)
			q.expect("QUIT", "OK bye")
			q.expectEOF()
		})
	}
}

// TestSSHDPasswordCheck is the v1->v2 security fix: v1 compares only as
// many characters as the client typed.
func TestSSHDPasswordCheck(t *testing.T) {
	for _, v := range sshVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			_, port := sshStart(t, v.target)
			for _, attempt := range []string{
				"LOGIN alice wonder", // a prefix
				"LOGIN alice ",       // empty password
				"LOGIN alice",        // no password at all
				"LOGIN alice w",
			} {
				c := sshDial(t, port)
				if v.prefixLogin {
					c.expect(attempt, "OK welcome alice")
					c.expect("WHOAMI", sshWhoami(v, "alice", 2))
				} else {
					c.expect(attempt, "FAIL login incorrect")
					c.expect("WHOAMI", "ERR not logged in")
				}
				c.expect("QUIT", "OK bye")
			}
			// Longer than the password, or a wrong character, fails in
			// every version; the right one works in every version.
			c := sshDial(t, port)
			c.expect("LOGIN alice wonderland2", "FAIL login incorrect")
			c.expect("LOGIN alice wonderlanD", "FAIL login incorrect")
			c.expect("LOGIN alice wonderland", "OK welcome alice")
		})
	}
}

// TestSSHDDefaultUsers runs without -u: the built-in user list applies.
func TestSSHDDefaultUsers(t *testing.T) {
	for _, v := range []sshVersion{sshVersions[0], sshVersions[len(sshVersions)-1]} {
		t.Run(v.target, func(t *testing.T) {
			_, port := sshStartServer(t, v.target)
			c := sshDial(t, port)
			c.expect("LOGIN bob builder42", "FAIL login incorrect")
			c.expect("LOGIN bob hunter2", "OK welcome bob")
		})
	}
}

// TestSSHDConcurrentSessions opens many sessions at once, one thread each
// in the server, and checks the shared session table and counters.
func TestSSHDConcurrentSessions(t *testing.T) {
	for _, v := range sshVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			_, port := sshStart(t, v.target)
			conns := make([]*sshConn, len(sshUserOrder))
			ids := make([]string, len(sshUserOrder))
			raw := make([]net.Conn, len(conns))
			t.Cleanup(func() {
				for _, c := range raw {
					if c != nil {
						c.Close()
					}
				}
			})
			var wg sync.WaitGroup
			errs := make(chan error, len(conns))
			for i, user := range sshUserOrder {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Fatal must not be called off the test goroutine:
					// do the protocol by hand here.
					c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
					if err != nil {
						errs <- err
						return
					}
					raw[i] = c
					c.SetDeadline(time.Now().Add(10 * time.Second))
					r := bufio.NewReader(c)
					if _, err := r.ReadString('\n'); err != nil {
						errs <- fmt.Errorf("%s: banner: %w", user, err)
						return
					}
					fmt.Fprintf(c, "LOGIN %s %s\n", user, sshUsers[user])
					if l, err := r.ReadString('\n'); l != "OK welcome "+user+"\n" {
						errs <- fmt.Errorf("%s: login: %q %v", user, l, err)
						return
					}
					for k := 0; k < 20; k++ {
						want := fmt.Sprintf("%s-%d", user, k)
						fmt.Fprintf(c, "ECHO %s\n", want)
						if l, err := r.ReadString('\n'); l != "OK "+want+"\n" {
							errs <- fmt.Errorf("%s: echo: %q %v", user, l, err)
							return
						}
					}
					c.SetDeadline(time.Time{})
					conns[i] = &sshConn{t: t, c: c, r: r}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}

			// The startup probe's session may linger for a moment.
			n, m := sshWaitSessions(t, conns[0], "exactly the test's sessions", func(n int, m map[string]string) bool {
				return n == len(conns)
			})
			byUser := map[string]string{}
			for id, user := range m {
				byUser[user] = id
			}
			for i, user := range sshUserOrder {
				if byUser[user] == "" {
					t.Errorf("SESSIONS (%d) lacks %s: %v", n, user, m)
				}
				ids[i] = byUser[user]
			}
			// Every session sees the same table.
			for _, c := range conns[1:] {
				if n2, m2 := sshSessions(t, c); n2 != n || fmt.Sprint(m2) != fmt.Sprint(m) {
					t.Errorf("sessions differ between clients: %d %v vs %d %v", n, m, n2, m2)
				}
			}
			for i, c := range conns {
				// login, 20 echos, SESSIONS, WHOAMI; conns[0] polled
				// SESSIONS an unknown number of times instead.
				if i > 0 {
					c.expect("WHOAMI", sshWhoami(v, sshUserOrder[i], 23))
				}
			}
			st := sshStats(t, conns[1])
			if st["logins"] != uint64(len(conns)) {
				t.Errorf("STATS logins = %d, want %d", st["logins"], len(conns))
			}
			// connections also counts testutil's listen probe.
			if st["connections"] < uint64(len(conns)) || st["connections"] > uint64(len(conns))+1 {
				t.Errorf("STATS connections = %d, want %d (+1 for the probe)", st["connections"], len(conns))
			}

			// Close half; their slots leave the table, the rest stay.
			for i := 0; i < len(conns); i += 2 {
				conns[i].expect("LOGOUT", "OK bye")
				conns[i].expectEOF()
			}
			_, m = sshWaitSessions(t, conns[1], "the closed half gone", func(n int, m map[string]string) bool {
				return n == len(conns)/2
			})
			for i, user := range sshUserOrder {
				_, open := m[ids[i]]
				if open != (i%2 == 1) {
					t.Errorf("after closing even sessions: %s (id %s) open=%v in %v", user, ids[i], open, m)
				}
			}
			// A new session takes a free slot and a new id.
			c := sshDial(t, port)
			c.login("alice")
			_, m = sshSessions(t, c)
			if len(m) != len(conns)/2+1 {
				t.Errorf("SESSIONS after a new login: %v", m)
			}
			for id, user := range m {
				if user == "alice" {
					if id == ids[0] {
						t.Errorf("new session reused id %s", id)
					}
				}
			}
		})
	}
}

// TestSSHDHousekeeping checks the background thread: ticks advance and an
// idle session is expired (-t 2) with a BYE line, while an active one is not.
func TestSSHDHousekeeping(t *testing.T) {
	for _, v := range sshVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			_, port := sshStart(t, v.target, "-t", "2")
			active := sshDial(t, port)
			active.login("bob")
			idle := sshDial(t, port)
			idle.login("carol")
			before := sshStats(t, active)
			if before["expired"] != 0 {
				t.Fatalf("expired before any idle time: %v", before)
			}
			// Keep one session busy while the other idles until the
			// housekeeper closes it.
			done := make(chan string, 1)
			go func() {
				idle.c.SetReadDeadline(time.Now().Add(30 * time.Second))
				l, err := idle.r.ReadString('\n')
				if err != nil {
					l = "error: " + err.Error()
				}
				done <- l
			}()
			var got string
		wait:
			for {
				select {
				case got = <-done:
					break wait
				case <-time.After(300 * time.Millisecond):
					active.expect("ECHO ping", "OK ping")
				}
			}
			if got != "BYE idle timeout\n" {
				t.Fatalf("idle session: got %q, want the BYE line", got)
			}
			idle.expectEOF()
			after := sshStats(t, active)
			if after["expired"] != 1 {
				t.Errorf("STATS expired = %d, want 1", after["expired"])
			}
			if after["ticks"] <= before["ticks"] {
				t.Errorf("ticks did not advance: %d -> %d", before["ticks"], after["ticks"])
			}
			sshWaitSessions(t, active, "only bob", func(n int, m map[string]string) bool {
				return n == 1
			})
			// The loop above ran an unknown number of commands: check
			// the user only.
			if who := active.do("WHOAMI"); !strings.HasPrefix(who, "OK bob") {
				t.Errorf("WHOAMI after expiry of another session: %q", who)
			}
		})
	}
}

// TestSSHDSymbols pins the binary facts VERSIONS.md names, so that the
// document stays true when the compiler or the sources change: the static
// functions the changes land in exist as local functions, the helpers
// documented as inlined do not, failed_logins appears in v5, and sessions
// grows in v6.
func TestSSHDSymbols(t *testing.T) {
	local := []string{"cmd_login", "cmd_echo", "cmd_version", "cmd_stats", "cmd_whoami",
		"cmd_sessions", "send_banner", "session_thread", "housekeeping_thread", "reply", "log_msg"}
	inlined := []string{"check_password", "find_user", "dispatch", "read_line", "session_new", "load_users"}
	for _, v := range sshVersions {
		t.Run(v.target, func(t *testing.T) {
			f, err := elf.Open(testutil.Build(t, v.target))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			syms, err := f.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]elf.Symbol{}
			for _, s := range syms {
				byName[s.Name] = s
			}
			for _, n := range local {
				s, ok := byName[n]
				if !ok || elf.ST_TYPE(s.Info) != elf.STT_FUNC || elf.ST_BIND(s.Info) != elf.STB_LOCAL {
					t.Errorf("%s: want a local (static) function, got %+v (present %v)", n, s, ok)
				}
			}
			if s, ok := byName["main"]; !ok || elf.ST_BIND(s.Info) != elf.STB_GLOBAL {
				t.Errorf("main: want a global function, got %+v", s)
			}
			for _, n := range inlined {
				if _, ok := byName[n]; ok {
					t.Errorf("%s: documented as inlined, but the binary has the symbol", n)
				}
			}
			_, hasFailed := byName["failed_logins"]
			if hasFailed != v.statsFailed {
				t.Errorf("failed_logins present = %v, want %v", hasFailed, v.statsFailed)
			}
			wantSize := uint64(64 * 120)
			if v.whoamiCommands {
				wantSize = 64 * 128
			}
			if s := byName["sessions"]; s.Size != wantSize || elf.ST_TYPE(s.Info) != elf.STT_OBJECT {
				t.Errorf("sessions: size %d, want %d (64 x struct session)", s.Size, wantSize)
			}
		})
	}
}

// sshPair is one adjacent pair of a program's sources: NEW must be
// OLD with exactly these replacements (each old text occurring once, applied
// in order) and nothing else, the source form of VERSIONS.md's promise.
type sshPair struct {
	old, new string
	reps     [][2]string
}

var sshSourcePairs = []sshPair{
	{"v1", "v2", [][2]string{
		{"\t/* compare what the client typed */\n\treturn strncmp(u->pass, pass, strlen(pass)) == 0;\n",
			"\treturn strcmp(u->pass, pass) == 0;\n"},
	}},
	{"v2", "v3", [][2]string{
		{"\tchar word[LINE_LEN];\n\n\tif (sscanf(arg, \"%511s\", word) != 1)\n\t\tword[0] = '\\0';\n\treply(s, \"OK %s\", word);\n",
			"\treply(s, \"OK %s\", arg);\n"},
	}},
	{"v3", "v4", [][2]string{
		{"#define SSHD_VERSION\t\"SSH-2.0-graftssh_1.0\"\n",
			"#define SSHD_VERSION\t\"SSH-2.0-graftssh_1.1\"\n"},
	}},
	{"v4", "v5", [][2]string{
		{"static int idle_timeout = DEFAULT_IDLE;\n\n",
			"static int idle_timeout = DEFAULT_IDLE;\nstatic unsigned long failed_logins;\n\n"},
		{"\tif (u == NULL || !check_password(u, pass)) {\n\t\tlog_msg(\"session %u: failed login for %s from %s\", s->id, name, s->peer);\n",
			"\tif (u == NULL || !check_password(u, pass)) {\n\t\tpthread_mutex_lock(&sessions_lock);\n\t\tfailed_logins++;\n\t\tpthread_mutex_unlock(&sessions_lock);\n\t\tlog_msg(\"session %u: failed login for %s from %s\", s->id, name, s->peer);\n"},
		{"\tstruct server_stats st;\n\n",
			"\tstruct server_stats st;\n\tunsigned long failed;\n\n"},
		{"\tst = stats;\n\tpthread_mutex_unlock(&sessions_lock);\n",
			"\tst = stats;\n\tfailed = failed_logins;\n\tpthread_mutex_unlock(&sessions_lock);\n"},
		{"\treply(s, \"OK connections=%lu logins=%lu commands=%lu expired=%lu ticks=%lu\",\n\t      st.connections, st.logins, st.commands, st.expired, st.ticks);\n",
			"\treply(s, \"OK connections=%lu logins=%lu commands=%lu expired=%lu ticks=%lu failed=%lu\",\n\t      st.connections, st.logins, st.commands, st.expired, st.ticks, failed);\n"},
	}},
	{"v5", "v6", [][2]string{
		{"\ttime_t last_active;\n};\n",
			"\ttime_t last_active;\n\tunsigned long commands;\n};\n"},
		{"\treply(s, \"OK %s\", s->user);\n",
			"\treply(s, \"OK %s commands=%lu\", s->user, s->commands);\n"},
		{"\t\ts->last_active = time(NULL);\n\t\tpthread_mutex_unlock(&sessions_lock);\n",
			"\t\ts->last_active = time(NULL);\n\t\ts->commands++;\n\t\tpthread_mutex_unlock(&sessions_lock);\n"},
	}},
}

// TestSSHDSourcePairs keeps adjacent versions byte-identical outside the
// documented change.
func TestSSHDSourcePairs(t *testing.T) {
	sshCheckPairs(t, "sshd", "sshd.c", sshSourcePairs)
}

func sshCheckPairs(t *testing.T, prog, file string, pairs []sshPair) {
	for _, p := range pairs {
		t.Run(file+":"+p.old+"-"+p.new, func(t *testing.T) {
			read := func(v string) string {
				b, err := os.ReadFile(filepath.Join(testutil.TestprocsDir(), prog, v, file))
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
			src, want := read(p.old), read(p.new)
			for _, r := range p.reps {
				if n := strings.Count(src, r[0]); n != 1 {
					t.Fatalf("%s/%s: %q occurs %d times, want once", prog, p.old, r[0], n)
				}
				src = strings.Replace(src, r[0], r[1], 1)
			}
			if src != want {
				t.Errorf("%s/%s/%s differs from %s/%s with only the documented change applied", prog, p.new, file, prog, p.old)
			}
		})
	}
}
