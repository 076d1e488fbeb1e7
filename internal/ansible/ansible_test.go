package ansible

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"graft"
	"graft/internal/testutil"
)

// requireAnsible finds ansible-playbook; CI must have it (.ci/run installs
// ansible-core), elsewhere its absence skips.
func requireAnsible(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("ansible-playbook")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("ansible-playbook not found, and CI=true: .ci/run installs ansible-core")
	}
	t.Skip("ansible-playbook not found (apt-get install ansible-core)")
	return ""
}

var cli struct {
	once sync.Once
	dir  string
	err  error
}

// buildCLI builds the command once for every test of the package.
func buildCLI(t *testing.T) string {
	t.Helper()
	cli.once.Do(func() {
		if cli.dir, cli.err = os.MkdirTemp("", "ansible-cli-"); cli.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(cli.dir, "patcher"), "./cmd/graft")
		cmd.Dir = testutil.Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			cli.err = fmt.Errorf("go build ./cmd/graft: %v\n%s", err, out)
		}
	})
	if cli.err != nil {
		t.Fatal(cli.err)
	}
	return filepath.Join(cli.dir, "patcher")
}

func TestMain(m *testing.M) {
	code := testutil.CheckLeftovers(m.Run())
	if cli.dir != "" {
		os.RemoveAll(cli.dir)
	}
	os.Exit(code)
}

func startAt(t *testing.T, path string) (*testutil.Proc, int) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port := testutil.FreePort(t)
		p := testutil.Start(t, path, strconv.Itoa(port))
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !p.Exited() {
			if testutil.ListensOn(p.Pid, port) {
				return p, port
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !p.Exited() {
			t.Fatalf("%s does not listen on %d", path, port)
		}
	}
	t.Fatalf("%s exited at start 5 times", path)
	return nil, 0
}

func login(t *testing.T, port int, pass string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "LOGIN alice %s\n", pass)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(line, "\r\n")
}

func patchCount(t *testing.T, pid int) int {
	t.Helper()
	st, err := graft.Status(pid)
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Patches)
}

// ansibleResult is what the json stdout callback prints.
type ansibleResult struct {
	Plays []struct {
		Tasks []struct {
			Task  struct{ Name string }
			Hosts map[string]struct {
				Changed bool
				Failed  bool
				Msg     string
				RC      int
				Counts  map[string]int
			}
		}
	}
	Stats map[string]struct {
		Changed, Failures, Ok int
	}
}

// runAnsible runs site.yml over the inventory and returns the parsed json
// callback output.
func runAnsible(t *testing.T, ansible, dir string, extra ...string) (*ansibleResult, string) {
	t.Helper()
	return runSite(t, ansible, dir, "site.yml", extra...)
}

func runSite(t *testing.T, ansible, dir, site string, extra ...string) (*ansibleResult, string) {
	t.Helper()
	args := append([]string{"-i", filepath.Join(dir, "hosts"), filepath.Join(dir, site)}, extra...)
	cmd := exec.Command(ansible, args...)
	cmd.Env = append(os.Environ(),
		"ANSIBLE_LIBRARY="+filepath.Join(testutil.Root(), "internal", "ansible", "library"),
		"ANSIBLE_STDOUT_CALLBACK=json",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		"ANSIBLE_HOST_KEY_CHECKING=0",
	)
	out, err := cmd.Output()
	var res ansibleResult
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("ansible-playbook %v: %v; output not JSON (%v):\n%s\n%s", extra, err, jerr, out, stderr)
	}
	return &res, string(out)
}

// Two hosts (local connections), serial: 1, each patching its own real
// server through the livepatch module: check mode writes nothing and
// reports what would change; the real run patches both; a second run
// changes nothing.
func TestAnsibleTwoLocalHostsSerial(t *testing.T) {
	ansible := requireAnsible(t)
	t.Parallel() // each has its own servers, files and inventory
	testutil.RequirePtrace(t)
	cli := buildCLI(t)
	dir := t.TempDir()
	b, err := os.ReadFile(testutil.Build(t, "sshd-v1"))
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "sshd-old")
	if err := os.WriteFile(old, b, 0o755); err != nil {
		t.Fatal(err)
	}
	var pids, ports []int
	for i := 0; i < 2; i++ {
		p, port := startAt(t, old)
		pids, ports = append(pids, p.Pid), append(ports, port)
	}
	newBin := testutil.Build(t, "sshd-v2")
	var inv strings.Builder
	inv.WriteString("[servers]\n")
	for i, pid := range pids {
		host := fmt.Sprintf("host%d", i+1)
		fmt.Fprintf(&inv, "%s ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n", host)
		pb := fmt.Sprintf(`name: %s login fix
patch: {new: %s}
targets: [{pid: %d}]
checks:
  - name: answers
    tcp: {send: "VERSION\n", expect: "OK SSH-2.0"}
    period: 100ms
`, host, newBin, pid)
		if err := os.WriteFile(filepath.Join(dir, host+".yaml"), []byte(pb), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site := fmt.Sprintf(`- hosts: servers
  serial: 1
  max_fail_percentage: 0
  gather_facts: false
  tasks:
    - name: live patch
      livepatch:
        playbook: "%s/{{ inventory_hostname }}.yaml"
        binary: %s
`, dir, cli)
	for name, text := range map[string]string{"hosts": inv.String(), "site.yml": site} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Check mode: both report a change they would make; nothing written.
	res, out := runAnsible(t, ansible, dir, "--check")
	for _, h := range []string{"host1", "host2"} {
		st := res.Stats[h]
		if st.Failures != 0 || st.Changed != 1 {
			t.Fatalf("--check: %s stats %+v\n%s", h, st, out)
		}
	}
	for _, pid := range pids {
		if n := patchCount(t, pid); n != 0 {
			t.Fatalf("--check patched pid %d (%d patches)", pid, n)
		}
	}
	// serial: 1 gives one play run per host, in inventory order.
	if len(res.Plays) != 2 {
		t.Fatalf("serial: 1 over 2 hosts should run 2 batches, got %d plays\n%s", len(res.Plays), out)
	}

	res, out = runAnsible(t, ansible, dir)
	for i, h := range []string{"host1", "host2"} {
		st := res.Stats[h]
		if st.Failures != 0 || st.Changed != 1 {
			t.Fatalf("%s stats %+v\n%s", h, st, out)
		}
		hr := res.Plays[i].Tasks[0].Hosts[h]
		if hr.Counts["APPLIED"] != 1 || hr.RC != 0 {
			t.Fatalf("%s: %+v", h, hr)
		}
		if n := patchCount(t, pids[i]); n != 1 {
			t.Fatalf("pid %d has %d patches, want 1", pids[i], n)
		}
		if got := login(t, ports[i], "sec"); got != "FAIL login incorrect" {
			t.Fatalf("%s's server still lets a password prefix in: %s", h, got)
		}
		testutil.RequireReleased(t, pids[i])
	}

	// Idempotent: a second run changes nothing.
	res, out = runAnsible(t, ansible, dir)
	for _, h := range []string{"host1", "host2"} {
		if st := res.Stats[h]; st.Failures != 0 || st.Changed != 0 {
			t.Fatalf("second run: %s stats %+v\n%s", h, st, out)
		}
	}
}

// A host whose run fails stops the rollout across hosts: with serial: 1
// and max_fail_percentage: 0 the second host is never run.
func TestAnsibleFailureStopsLaterHosts(t *testing.T) {
	ansible := requireAnsible(t)
	t.Parallel() // each has its own servers, files and inventory
	testutil.RequirePtrace(t)
	cli := buildCLI(t)
	dir := t.TempDir()
	b, err := os.ReadFile(testutil.Build(t, "sshd-v1"))
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "sshd-old")
	if err := os.WriteFile(old, b, 0o755); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for i := 0; i < 2; i++ {
		p, _ := startAt(t, old)
		pids = append(pids, p.Pid)
	}
	var inv strings.Builder
	inv.WriteString("[servers]\n")
	for i, pid := range pids {
		host := fmt.Sprintf("host%d", i+1)
		fmt.Fprintf(&inv, "%s ansible_connection=local ansible_python_interpreter=/usr/bin/python3 server_pid=%d\n", host, pid)
	}
	// The check passes on v1 only: host1's patch is rolled back.
	site := fmt.Sprintf(`- hosts: servers
  serial: 1
  max_fail_percentage: 0
  gather_facts: false
  tasks:
    - name: write this host's playbook
      ansible.builtin.copy:
        dest: "%[1]s/{{ inventory_hostname }}.yaml"
        content: |
          patch: {new: %[2]s}
          targets: [{pid: {{ server_pid }}}]
          checks:
            - name: prefix login still works
              tcp: {send: "LOGIN alice sec\n", expect: "OK welcome"}
              period: 50ms
              failure_threshold: 2
    - name: live patch
      livepatch:
        playbook: "%[1]s/{{ inventory_hostname }}.yaml"
        binary: %[3]s
`, dir, testutil.Build(t, "sshd-v2"), cli)
	for name, text := range map[string]string{"hosts": inv.String(), "site.yml": site} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, out := runAnsible(t, ansible, dir)
	if st := res.Stats["host1"]; st.Failures != 1 {
		t.Fatalf("host1 stats %+v\n%s", st, out)
	}
	hr := res.Plays[0].Tasks[1].Hosts["host1"]
	if hr.RC != 2 || hr.Counts["FAILED_ROLLED_BACK"] != 1 || !hr.Failed {
		t.Fatalf("host1: %+v\n%s", hr, out)
	}
	if _, ran := res.Stats["host2"]; ran && res.Stats["host2"].Ok+res.Stats["host2"].Changed > 0 {
		t.Fatalf("host2 ran after host1 failed: %+v\n%s", res.Stats["host2"], out)
	}
	for _, pid := range pids {
		if n := patchCount(t, pid); n != 0 {
			t.Fatalf("pid %d has %d patches after the failed run", pid, n)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "host2.yaml")); err == nil {
		t.Fatal("host2's tasks ran")
	}
}

// The module's apply mode (graft apply -p PID): check mode is a dry run that
// writes nothing, the apply patches, and a second apply of the same NEW
// build (as a binary or as a patch file) is ok, not changed.
func TestAnsibleApplyMode(t *testing.T) {
	ansible := requireAnsible(t)
	t.Parallel() // each has its own servers, files and inventory
	testutil.RequirePtrace(t)
	cli := buildCLI(t)
	dir := t.TempDir()
	b, err := os.ReadFile(testutil.Build(t, "sshd-v1"))
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "sshd-old")
	if err := os.WriteFile(old, b, 0o755); err != nil {
		t.Fatal(err)
	}
	p, port := startAt(t, old)
	newBin := testutil.Build(t, "sshd-v2")
	fix := filepath.Join(dir, "fix.patch")
	if out, err := exec.Command(cli, "diff", "-o", fix, old, newBin).CombinedOutput(); err != nil {
		t.Fatalf("diff: %v\n%s", err, out)
	}
	inv := "[servers]\nhost1 ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
	files := map[string]string{
		"hosts":    inv,
		"file.yml": fmt.Sprintf("- hosts: servers\n  gather_facts: false\n  tasks:\n    - livepatch: {pid: %d, patch_file: %s, binary: %s}\n", p.Pid, fix, cli),
		"new.yml":  fmt.Sprintf("- hosts: servers\n  gather_facts: false\n  tasks:\n    - livepatch: {pid: %d, new: %s, binary: %s, timeout: 3s}\n", p.Pid, newBin, cli),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, out := runSite(t, ansible, dir, "file.yml", "--check")
	if st := res.Stats["host1"]; st.Failures != 0 || st.Changed != 1 {
		t.Fatalf("--check: %+v\n%s", st, out)
	}
	if n := patchCount(t, p.Pid); n != 0 {
		t.Fatalf("--check patched (%d patches)", n)
	}
	res, out = runSite(t, ansible, dir, "file.yml")
	if st := res.Stats["host1"]; st.Failures != 0 || st.Changed != 1 {
		t.Fatalf("apply: %+v\n%s", st, out)
	}
	if n := patchCount(t, p.Pid); n != 1 {
		t.Fatalf("%d patches after apply, want 1", n)
	}
	if got := login(t, port, "sec"); got != "FAIL login incorrect" {
		t.Fatalf("not patched: %s", got)
	}
	for _, site := range []string{"file.yml", "new.yml"} {
		res, out = runSite(t, ansible, dir, site)
		if st := res.Stats["host1"]; st.Failures != 0 || st.Changed != 0 {
			t.Fatalf("%s again: %+v\n%s", site, st, out)
		}
	}
	if n := patchCount(t, p.Pid); n != 1 {
		t.Fatalf("%d patches after re-runs, want 1", n)
	}
	testutil.RequireReleased(t, p.Pid)
}
