package testutil

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// RequirePtrace skips the test when this process cannot ptrace the targets
// it starts (they are not its tracees: attaching needs root or
// CAP_SYS_PTRACE), except when CI=true: CI promises ptrace, so the test
// fails instead of hiding behind a skip.
func RequirePtrace(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 || hasCapSysPtrace() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("ptrace needs root or CAP_SYS_PTRACE, and CI=true says it is available")
	}
	t.Skip("needs root or CAP_SYS_PTRACE (ptrace of processes that are not our children)")
}

// hasCapSysPtrace reads this process's effective capabilities.
func hasCapSysPtrace() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			const capSysPtrace = 19
			return err == nil && caps&(1<<capSysPtrace) != 0
		}
	}
	return false
}
