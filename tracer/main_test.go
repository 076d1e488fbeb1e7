package tracer

import (
	"os"
	"testing"

	"graft/internal/testutil"
)

// TestMain fails the run if any child of the test binary (every target a
// test started) is left traced or in a ptrace or job-control stop
// (testutil.CheckLeftovers): the package's promise is that it never
// leaves a process behind stopped.
func TestMain(m *testing.M) {
	if spec := os.Getenv("GRAFT_TRACER_HELPER"); spec != "" {
		runHelper(spec) // a helper process some tests start; never returns
	}
	os.Exit(testutil.CheckLeftovers(m.Run()))
}
