package playbook

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The issue's own example must parse and mean what the issue says.
func TestParseIssueExample(t *testing.T) {
	src := `name: kvs 1.0 to 2.0
patch:
  new: /srv/kvs-2.0/kvs          # or  file: fix.graft
targets:
  - exe: /srv/kvs-1.0/kvs        # every process running this executable
rollout:
  batches: [1, "100%"]           # a canary of one, then the rest
  on_failure: rollback           # revert every process this run patched
checks:
  - name: answers with the new version
    exec: ["kvs-check", "${port}", "VERSION"]
    expect: {exit: 0, stdout: "^kvs 2\\.0$"}
`
	pb, err := Parse("/etc/pb/kvs.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if pb.Name != "kvs 1.0 to 2.0" || pb.Patch.New != "/srv/kvs-2.0/kvs" || pb.Patch.File != "" {
		t.Errorf("patch: %+v", pb.Patch)
	}
	if len(pb.Targets) != 1 || pb.Targets[0].Kind != "exe" || pb.Targets[0].Value != "/srv/kvs-1.0/kvs" {
		t.Errorf("targets: %+v", pb.Targets)
	}
	if got := pb.Rollout.Batches; len(got) != 2 || got[0] != (Batch{N: 1}) || got[1] != (Batch{Percent: 100}) {
		t.Errorf("batches: %+v", got)
	}
	if pb.Rollout.OnFailure != "rollback" {
		t.Errorf("on_failure %q", pb.Rollout.OnFailure)
	}
	c := pb.Checks[0]
	if c.Name != "answers with the new version" || strings.Join(c.Exec, " ") != "kvs-check ${port} VERSION" || c.ExpectExit != 0 {
		t.Errorf("check: %+v", c)
	}
	if !c.ExpectStdout.MatchString("kvs 2.0") || c.ExpectStdout.MatchString("kvs 2x0") {
		t.Errorf("stdout regex %v", c.ExpectStdout)
	}
	if c.Timeout != 2*time.Second || c.Period != time.Second || c.FailureThreshold != 3 || c.When != "always" {
		t.Errorf("check defaults: %+v", c)
	}
}

func TestParseRelativePaths(t *testing.T) {
	pb, err := Parse("/etc/pb/x.yaml", []byte("patch: {file: fix.graft}\ntargets: [{pidfile: run/x.pid}, {pid: 42}, {name: 'kvs*'}, {build_id: ABCDEF0123456789}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if pb.Patch.File != "/etc/pb/fix.graft" || pb.Targets[0].Value != "/etc/pb/run/x.pid" || pb.Targets[1].Pid != 42 || pb.Targets[3].Value != "abcdef0123456789" {
		t.Errorf("%+v %+v", pb.Patch, pb.Targets)
	}
}

// Every mistake is reported at its line and column, all of them at once.
func TestParseErrorsAtLineCol(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"unknown top key", "patch: {new: /x}\ntargets: [{pid: 1}]\nrolout: {}\n",
			[]string{`pb.yaml:3:1: playbook: unknown key "rolout"`}},
		{"unknown nested key", "patch:\n  new: /x\n  tiemout: 3s\ntargets: [{pid: 1}]\n",
			[]string{`pb.yaml:3:3: patch: unknown key "tiemout"`}},
		{"both patch kinds", "patch: {new: /x, file: /y}\ntargets: [{pid: 1}]\n",
			[]string{`pb.yaml:1:18: patch: give new`}},
		{"no patch no targets", "name: x\n",
			[]string{"pb.yaml:1:1: playbook: no patch", "pb.yaml:1:1: playbook: no targets"}},
		{"bad pid", "patch: {new: /x}\ntargets:\n  - pid: -4\n  - pid: abc\n",
			[]string{"pb.yaml:3:10: pid must be a whole number of at least 1, not -4", `pb.yaml:4:10: pid must be a whole number, not "abc"`}},
		{"two selectors in one entry", "patch: {new: /x}\ntargets:\n  - {pid: 3, exe: /bin/x}\n",
			[]string{"pb.yaml:3:5: target: one selector per list entry (2 given)"}},
		{"unknown selector", "patch: {new: /x}\ntargets:\n  - comm: x\n",
			[]string{`pb.yaml:3:5: target: unknown key "comm"`}},
		{"bad batches", "patch: {new: /x}\ntargets: [{pid: 1}]\nrollout:\n  batches: [0, \"150%\", x]\n",
			[]string{`pb.yaml:4:13: rollout.batches: "0" is not`, `pb.yaml:4:16: rollout.batches: "150%" is not a percentage`, `pb.yaml:4:24: rollout.batches: "x" is not`}},
		{"bad on_failure", "patch: {new: /x}\ntargets: [{pid: 1}]\nrollout: {on_failure: ignore}\n",
			[]string{`pb.yaml:3:23: rollout.on_failure: "ignore" is not rollback`}},
		{"bad regex", "patch: {new: /x}\ntargets: [{pid: 1}]\nchecks:\n  - exec: [true]\n    expect: {stdout: \"(\"}\n",
			[]string{"pb.yaml:5:22: expect.stdout is not a valid regular expression"}},
		{"unknown placeholder", "patch: {new: /x}\ntargets: [{pid: 1}]\nchecks:\n  - exec: [probe, \"${prot}\"]\n",
			[]string{"pb.yaml:4:19: check \"check 1\": unknown placeholder ${prot}"}},
		{"two probe kinds", "patch: {new: /x}\ntargets: [{pid: 1}]\nchecks:\n  - exec: [true]\n    tcp: {port: 22}\n",
			[]string{`pb.yaml:4:5: check "check 1": needs exactly one of exec, tcp or http (2 given)`}},
		{"bad duration", "patch: {new: /x, timeout: 5}\ntargets: [{pid: 1}]\n",
			[]string{`pb.yaml:1:27: patch.timeout must be a duration such as 500ms, 2s or 1m, not "5"`}},
		{"duplicate key", "patch: {new: /x}\ntargets: [{pid: 1}]\npatch: {new: /y}\n",
			[]string{`pb.yaml:3:1: playbook: key "patch" given twice`}},
		{"yaml syntax", "patch: {new: /x\ntargets: [{pid: 1}]\n",
			[]string{"pb.yaml:", "YAML syntax"}},
		{"bad when", "patch: {new: /x}\ntargets: [{pid: 1}]\nchecks:\n  - {tcp: {}, when: later}\n",
			[]string{`pb.yaml:4:21: check "check 1": when is always`}},
		{"http without url", "patch: {new: /x}\ntargets: [{pid: 1}]\nchecks:\n  - http: {status: 200}\n",
			[]string{`pb.yaml:4:11: check "check 1": http needs url`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("pb.yaml", []byte(tc.src))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					if strings.Contains(l, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("want a line containing %q in:\n%s", w, err)
				}
			}
			if len(lines) != len(tc.want) && tc.name != "yaml syntax" {
				t.Errorf("want %d errors, got %d:\n%s", len(tc.want), len(lines), err)
			}
		})
	}
}

func TestBatchSizes(t *testing.T) {
	for _, tc := range []struct {
		b     Batch
		total int
		want  int
	}{
		{Batch{N: 1}, 10, 1}, {Batch{Percent: 25}, 10, 2}, {Batch{Percent: 25}, 3, 1},
		{Batch{Percent: 100}, 7, 7}, {Batch{N: 5}, 2, 5},
	} {
		if got := tc.b.Size(tc.total); got != tc.want {
			t.Errorf("%v of %d = %d, want %d", tc.b, tc.total, got, tc.want)
		}
	}
}

func TestSubstitute(t *testing.T) {
	got := Substitute("kvs ${port} ${pid} ${env} ${other}", map[string]string{"port": "2121", "pid": "7", "env": "prod"})
	if got != "kvs 2121 7 prod ${other}" {
		t.Errorf("got %q", got)
	}
}
