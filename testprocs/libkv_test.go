package testprocs_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"graft/internal/testutil"
)

// kvVersion is what testprocs/libkv/VERSIONS.md promises of one version of
// the library; each field is a difference of one adjacent pair, asserted on
// both sides of it.
type kvVersion struct {
	n int
	// strictKeys: kv_check_key refuses a key with a space (v1->v2).
	strictKeys bool
	// quoted: kv_format quotes the value (v2->v3).
	quoted bool
}

var kvVersions = []kvVersion{{1, false, false}, {2, true, false}, {3, true, true}}

// kvLibDir makes a directory holding version n of the library as
// libkv.so.1, the name kvd and kvstat look for.
func kvLibDir(t *testing.T, n int) string {
	t.Helper()
	b, err := os.ReadFile(testutil.Build(t, fmt.Sprintf("libkv-v%d", n)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "libkv.so.1"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func kvLine(t *testing.T, c net.Conn, r *bufio.Reader, cmd string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\n", cmd)
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return strings.TrimSpace(l)
}

func TestLibkvVersionDifferences(t *testing.T) {
	testutil.Build(t, "kvstat")
	for _, v := range kvVersions {
		t.Run(fmt.Sprintf("v%d", v.n), func(t *testing.T) {
			t.Setenv("LD_LIBRARY_PATH", kvLibDir(t, v.n))
			_, port := testutil.StartServer(t, "kvd")
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			expect := func(cmd, want string) {
				t.Helper()
				if got := kvLine(t, c, r, cmd); got != want {
					t.Errorf("kvd v%d: %s -> %q, want %q", v.n, cmd, got, want)
				}
			}
			expect("VERSION", fmt.Sprintf("libkv %d", v.n))
			expect("PUT a 1", "OK")
			expect("GET a", "VAL 1")
			expect("GET b", "NONE")
			wantFmt := "a=1"
			if v.quoted {
				wantFmt = `a="1"`
			}
			expect("FMT a", wantFmt)
			expect("FMT a", wantFmt)
			expect("TCALLS", "TCALLS 2")
			if v.strictKeys {
				// PUT, GET a, GET b and the gets of the two FMTs; the
				// refused put counts nothing.
				expect("PUTRAW x%20y 2", "ERR bad key")
				expect("OPS", "OPS 5")
			} else {
				expect("PUTRAW x%20y 2", "OK")
				expect("OPS", "OPS 6")
			}
			// Another connection is another thread: its own TLS counter.
			c2, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			if got := kvLine(t, c2, bufio.NewReader(c2), "TCALLS"); got != "TCALLS 0" {
				t.Errorf("a fresh connection's thread: %q", got)
			}

			_, sport := testutil.StartServer(t, "kvstat")
			ask := func(cmd string) string {
				c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(sport))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				return kvLine(t, c, bufio.NewReader(c), cmd)
			}
			wantCheck := "YES"
			if v.strictKeys {
				wantCheck = "NO"
			}
			if got := ask("CHECK a b"); got != wantCheck {
				t.Errorf("kvstat v%d: CHECK a b -> %q, want %q", v.n, got, wantCheck)
			}
			if got := ask("CHECK ab"); got != "YES" {
				t.Errorf("kvstat v%d: CHECK ab -> %q", v.n, got)
			}
			wantHost := "host=kvstat"
			if v.quoted {
				wantHost = `host="kvstat"`
			}
			if got := ask("FMT host"); got != wantHost {
				t.Errorf("kvstat v%d: FMT host -> %q, want %q", v.n, got, wantHost)
			}
		})
	}
}

var kvSourcePairs = []sshPair{
	{"v1", "v2", [][2]string{
		{"/* libkv v1 (see ../VERSIONS.md). */", "/* libkv v2 (see ../VERSIONS.md). */"},
		{"\tsize_t n = strlen(key);\n\treturn n > 0 && n < sizeof table[0].key;\n",
			"\tsize_t n = strlen(key);\n\tif (n == 0 || n >= sizeof table[0].key)\n\t\treturn 0;\n\tfor (; *key; key++)\n\t\tif (*key <= ' ' || *key == '=' || *key > '~')\n\t\t\treturn 0;\n\treturn 1;\n"},
		{`return "libkv 1";`, `return "libkv 2";`},
	}},
	{"v2", "v3", [][2]string{
		{"/* libkv v2 (see ../VERSIONS.md). */", "/* libkv v3 (see ../VERSIONS.md). */"},
		{`snprintf(out, len, "%s", in);`, `snprintf(out, len, "\"%s\"", in);`},
		{`return "libkv 2";`, `return "libkv 3";`},
	}},
}

// TestLibkvSourcePairs keeps adjacent versions byte-identical outside the
// documented change.
func TestLibkvSourcePairs(t *testing.T) {
	sshCheckPairs(t, "libkv", "libkv.c", kvSourcePairs)
}
