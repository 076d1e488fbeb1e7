package tracer

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"graft/internal/testutil"
)

// ExeBuildID reads from memory what the file's note says, and still answers
// once the file is gone from disk.
func TestExeBuildIDFromMemory(t *testing.T) {
	testutil.RequirePtrace(t)
	b, err := os.ReadFile(testutil.Build(t, "sshd-v1"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sshd-copy")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	want := fileBuildID(t, path)
	target, _ := startServerAt(t, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	got, err := ExeBuildID(target.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("build-id from memory %q, file says %q", got, want)
	}
	if _, err := ExeBuildID(1 << 22); err == nil {
		t.Fatal("no error for a pid that does not exist")
	}
}

func startServerAt(t *testing.T, path string) (*testutil.Proc, int) {
	t.Helper()
	port := testutil.FreePort(t)
	p := testutil.Start(t, path, strconv.Itoa(port))
	testutil.WaitListen(t, port, 10*time.Second)
	return p, port
}
