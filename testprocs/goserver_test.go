package testprocs_test

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"graft/internal/testutil"
)

// gosrvVersion is what testprocs/goserver/VERSIONS.md promises about one
// version; each field is one pair's documented difference.
type gosrvVersion struct {
	target string
	// maxKey is validKey's key length limit (v1->v2, inlined function).
	maxKey int
	// countFrom is what the first /count returns (v2->v3, bug fix).
	countFrom int
	// version is the /version body (v3->v4, v4->v5, string constant).
	version string
	// hello and helloGoPher are the /hello bodies without a name and
	// for name=go-pher (v5->v6 stdlib function, v6->v7 closure, v9->v10
	// method called through an interface).
	hello, helloGoPher string
	// slashKeyOK: keys starting with '/' are accepted (v7->v8, inlined
	// helper).
	slashKeyOK bool
}

var gosrvVersions = []gosrvVersion{
	{"goserver-v1", 16, 0, "goserver/1.0\n", "hello, world\n", "hello, go-pher\n", true},
	{"goserver-v2", 32, 0, "goserver/1.0\n", "hello, world\n", "hello, go-pher\n", true},
	{"goserver-v3", 32, 1, "goserver/1.0\n", "hello, world\n", "hello, go-pher\n", true},
	{"goserver-v4", 32, 1, "goserver/1.1\n", "hello, world\n", "hello, go-pher\n", true},
	{"goserver-v5", 32, 1, "goserver/1.2.0\n", "hello, world\n", "hello, go-pher\n", true},
	{"goserver-v6", 32, 1, "goserver/1.2.0\n", "hello, WORLD\n", "hello, GO-PHER\n", true},
	{"goserver-v7", 32, 1, "goserver/1.2.0\n", "hello, WORLD\n", "hello, GO PHER\n", true},
	{"goserver-v8", 32, 1, "goserver/1.2.0\n", "hello, WORLD\n", "hello, GO PHER\n", false},
	{"goserver-v9", 32, 1, "goserver/1.2.0\n", "hello, WORLD\n", "hello, GO PHER\n", false},
	{"goserver-v10", 32, 1, "goserver/1.2.0\n", "hello, WORLD!\n", "hello, GO PHER!\n", false},
}

var gosrvClient = &http.Client{Timeout: 10 * time.Second}

// gosrvDo sends one request and returns the status and body.
func gosrvDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gosrvClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

func gosrvExpect(t *testing.T, method, url, body string, wantCode int, wantBody string) {
	t.Helper()
	code, got := gosrvDo(t, method, url, body)
	if code != wantCode || got != wantBody {
		t.Errorf("%s %s: got %d %q, want %d %q", method, url, code, got, wantCode, wantBody)
	}
}

func gosrvStart(t *testing.T, target string) string {
	t.Helper()
	_, port := sshStartServer(t, target) // waits for "listening on" in the log
	return "http://127.0.0.1:" + strconv.Itoa(port)
}

// TestGoserverHandlers checks every documented behaviour of every version.
func TestGoserverHandlers(t *testing.T) {
	for _, v := range gosrvVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			base := gosrvStart(t, v.target)

			gosrvExpect(t, "GET", base+"/version", "", 200, v.version)
			gosrvExpect(t, "GET", base+"/hello", "", 200, v.hello)
			gosrvExpect(t, "GET", base+"/hello?name=go-pher", "", 200, v.helloGoPher)

			// /count: consecutive values from countFrom, whatever the method.
			for i := 0; i < 3; i++ {
				gosrvExpect(t, "GET", base+"/count", "", 200, fmt.Sprintf("%d\n", v.countFrom+i))
			}
			gosrvExpect(t, "POST", base+"/count", "", 200, fmt.Sprintf("%d\n", v.countFrom+3))

			// /kv keeps state between requests.
			gosrvExpect(t, "PUT", base+"/kv?key=a", "one", 200, "stored\n")
			gosrvExpect(t, "GET", base+"/kv?key=a", "", 200, "one")
			gosrvExpect(t, "PUT", base+"/kv?key=a", "two", 200, "stored\n")
			gosrvExpect(t, "GET", base+"/kv?key=a", "", 200, "two")
			gosrvExpect(t, "PUT", base+"/kv?key=b", "", 200, "stored\n")
			gosrvExpect(t, "GET", base+"/kv?key=b", "", 200, "")
			gosrvExpect(t, "GET", base+"/kv?key=a", "", 200, "two")
			// A missing key reads as empty in every version.
			gosrvExpect(t, "GET", base+"/kv?key=missing", "", 200, "")
			gosrvExpect(t, "GET", base+"/kv", "", 400, "bad key\n")
			gosrvExpect(t, "PUT", base+"/kv?key=big", strings.Repeat("x", 1025), 413, "value too long\n")
			gosrvExpect(t, "PUT", base+"/kv?key=big", strings.Repeat("x", 1024), 200, "stored\n")
			gosrvExpect(t, "DELETE", base+"/kv?key=a", "", 405, "method not allowed\n")
			gosrvExpect(t, "GET", base+"/kv?key=a", "", 200, "two")
			gosrvExpect(t, "GET", base+"/nothing", "", 404, "404 page not found\n")
		})
	}
}

// TestGoserverKeyLimit is the v1->v2 change of the inlined validKey.
func TestGoserverKeyLimit(t *testing.T) {
	for _, v := range gosrvVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			base := gosrvStart(t, v.target)
			for _, n := range []int{1, 16, 17, 32, 33} {
				key := strings.Repeat("k", n)
				if n <= v.maxKey {
					gosrvExpect(t, "PUT", base+"/kv?key="+key, strconv.Itoa(n), 200, "stored\n")
					gosrvExpect(t, "GET", base+"/kv?key="+key, "", 200, strconv.Itoa(n))
				} else {
					gosrvExpect(t, "PUT", base+"/kv?key="+key, strconv.Itoa(n), 400, "bad key\n")
					gosrvExpect(t, "GET", base+"/kv?key="+key, "", 400, "bad key\n")
				}
			}
			if v.slashKeyOK {
				gosrvExpect(t, "PUT", base+"/kv?key=/a", "slash", 200, "stored\n")
				gosrvExpect(t, "GET", base+"/kv?key=/a", "", 200, "slash")
			} else {
				gosrvExpect(t, "PUT", base+"/kv?key=/a", "slash", 400, "bad key\n")
			}
		})
	}
}

// TestGoserverConcurrentCount checks that /count under concurrent clients
// hands out every value exactly once (the counter's mutex), from countFrom.
func TestGoserverConcurrentCount(t *testing.T) {
	const clients, each = 8, 10
	for _, v := range gosrvVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			base := gosrvStart(t, v.target)
			var (
				mu   sync.Mutex
				got  []int
				errs []string
				wg   sync.WaitGroup
			)
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						resp, err := gosrvClient.Get(base + "/count")
						if err != nil {
							mu.Lock()
							errs = append(errs, err.Error())
							mu.Unlock()
							return
						}
						b, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						n, perr := strconv.Atoi(strings.TrimSpace(string(b)))
						mu.Lock()
						if err != nil || perr != nil || resp.StatusCode != 200 {
							errs = append(errs, fmt.Sprintf("%d %q %v %v", resp.StatusCode, b, err, perr))
						} else {
							got = append(got, n)
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(errs) > 0 {
				t.Fatalf("requests failed: %v", errs)
			}
			sort.Ints(got)
			for i, n := range got {
				if n != v.countFrom+i {
					t.Fatalf("counts %v: want each of %d..%d once", got, v.countFrom, v.countFrom+clients*each-1)
				}
			}
			gosrvExpect(t, "GET", base+"/count", "", 200, fmt.Sprintf("%d\n", v.countFrom+clients*each))
		})
	}
}

// TestGoserverConcurrentKV writes distinct keys from concurrent clients and
// reads every one back: the map behind its mutex keeps them all.
func TestGoserverConcurrentKV(t *testing.T) {
	const clients, each = 6, 10
	for _, v := range gosrvVersions {
		t.Run(v.target, func(t *testing.T) {
			t.Parallel()
			base := gosrvStart(t, v.target)
			var wg sync.WaitGroup
			errs := make(chan error, clients*each)
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/kv?key=c%d-%d", base, c, i), strings.NewReader(fmt.Sprintf("v%d.%d", c, i)))
						resp, err := gosrvClient.Do(req)
						if err != nil {
							errs <- err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							errs <- fmt.Errorf("PUT c%d-%d: status %d", c, i, resp.StatusCode)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for c := 0; c < clients; c++ {
				for i := 0; i < each; i++ {
					gosrvExpect(t, "GET", fmt.Sprintf("%s/kv?key=c%d-%d", base, c, i), "", 200, fmt.Sprintf("v%d.%d", c, i))
				}
			}
		})
	}
}

// TestGoserverInlining pins the binary facts of the v1->v2 pair that
// VERSIONS.md documents: validKey has no out-of-line copy in any version
// and is inlined into main.handleKV (DWARF inlined subroutine), and the
// handlers are ordinary functions.
func TestGoserverInlining(t *testing.T) {
	for _, v := range gosrvVersions {
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
			funcs := map[string]bool{}
			for _, s := range syms {
				if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
					funcs[s.Name] = true
				}
			}
			for _, n := range []string{"main.handleKV", "main.handleCount", "main.handleVersion", "main.handleHello", "main.main"} {
				if !funcs[n] {
					t.Errorf("no function symbol %s", n)
				}
			}
			if funcs["main.validKey"] {
				t.Errorf("main.validKey has an out-of-line copy; VERSIONS.md says it is only inlined")
			}
			d, err := f.DWARF()
			if err != nil {
				t.Fatal(err)
			}
			if got := gosrvInlinedInto(t, d, "main.validKey"); len(got) != 1 || got[0] != "main.handleKV" {
				t.Errorf("main.validKey inlined into %v, want exactly [main.handleKV]", got)
			}
		})
	}
}

// gosrvInlinedInto returns the functions holding an inlined copy of fn.
func gosrvInlinedInto(t *testing.T, d *dwarf.Data, fn string) []string {
	t.Helper()
	r := d.Reader()
	var abstract []dwarf.Offset
	var into []string
	var cur string
	type inl struct {
		origin dwarf.Offset
		in     string
	}
	var inls []inl
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatalf("read DWARF: %v", err)
		}
		if e == nil {
			break
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			name, _ := e.Val(dwarf.AttrName).(string)
			if _, ok := e.Val(dwarf.AttrInline).(int64); ok && name == fn {
				abstract = append(abstract, e.Offset)
			}
			if e.Val(dwarf.AttrLowpc) != nil {
				cur = name
			}
		case dwarf.TagInlinedSubroutine:
			if o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset); ok {
				inls = append(inls, inl{o, cur})
			}
		}
	}
	for _, i := range inls {
		for _, a := range abstract {
			if i.origin == a {
				into = append(into, i.in)
			}
		}
	}
	return into
}

var gosrvSourcePairs = []sshPair{
	{"v1", "v2", [][2]string{
		{"\treturn k != \"\" && len(k) <= 16\n",
			"\treturn k != \"\" && len(k) <= 32\n"},
	}},
	{"v2", "v3", [][2]string{
		{"\tn := counter\n\tcounter++\n",
			"\tcounter++\n\tn := counter\n"},
	}},
	{"v3", "v4", [][2]string{
		{"const version = \"goserver/1.0\"\n",
			"const version = \"goserver/1.1\"\n"},
	}},
	{"v4", "v5", [][2]string{
		{"const version = \"goserver/1.1\"\n",
			"const version = \"goserver/1.2.0\"\n"},
	}},
	{"v5", "v6", [][2]string{
		{"\t\"sync\"\n)", "\t\"strings\"\n\t\"sync\"\n\t\"unicode\"\n)"},
		{"\tfmt.Fprintf(w, \"hello, %s\\n\", name)\n",
			"\tfmt.Fprintf(w, \"hello, %s\\n\", strings.Map(func(r rune) rune { return unicode.ToUpper(r) }, name))\n"},
	}},
	{"v6", "v7", [][2]string{
		{"strings.Map(func(r rune) rune { return unicode.ToUpper(r) }, name)",
			"strings.Map(func(r rune) rune {\n\t\tif r == '-' {\n\t\t\treturn ' '\n\t\t}\n\t\treturn unicode.ToUpper(r)\n\t}, name)"},
	}},
	{"v7", "v8", [][2]string{
		{"\treturn k != \"\" && len(k) <= 32\n",
			"\treturn k != \"\" && len(k) <= 32 && k[0] != '/'\n"},
	}},
	{"v8", "v9", [][2]string{
		{"func handleHello(w http.ResponseWriter, r *http.Request) {",
			"// greeter makes the /hello reply.\ntype greeter interface {\n\tgreet(name string) string\n}\n\ntype plainGreeter struct{}\n\nfunc (plainGreeter) greet(name string) string {\n\treturn \"hello, \" + name + \"\\n\"\n}\n\nvar defaultGreeter greeter = plainGreeter{}\n\nfunc handleHello(w http.ResponseWriter, r *http.Request) {"},
		{"\tfmt.Fprintf(w, \"hello, %s\\n\", strings.Map(", "\tio.WriteString(w, defaultGreeter.greet(strings.Map("},
		{"\t\treturn unicode.ToUpper(r)\n\t}, name))\n", "\t\treturn unicode.ToUpper(r)\n\t}, name)))\n"},
	}},
	{"v9", "v10", [][2]string{
		{"\treturn \"hello, \" + name + \"\\n\"\n",
			"\treturn \"hello, \" + name + \"!\\n\"\n"},
	}},
}

// TestGoserverSourcePairs keeps adjacent versions byte-identical outside
// the documented change (go.mod too).
func TestGoserverSourcePairs(t *testing.T) {
	sshCheckPairs(t, "goserver", "main.go", gosrvSourcePairs)
	var same []sshPair
	for _, p := range gosrvSourcePairs {
		same = append(same, sshPair{p.old, p.new, nil})
	}
	sshCheckPairs(t, "goserver", "go.mod", same)
}
