package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The usage pages under docs/ are what the commands say about themselves:
// regenerate them and compare. After changing a command, run
// `go generate ./cmd/graft` to update them.
func TestUsageDocs(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, writeDocs(newRoot(io.Discard, io.Discard), dir))
	want, err := filepath.Glob(filepath.Join(dir, "*.md"))
	require.NoError(t, err)
	have, err := filepath.Glob(filepath.Join("docs", "*.md"))
	require.NoError(t, err)
	require.Equal(t, len(want), len(have), "docs/ has other pages than the commands: run go generate ./cmd/graft")
	for _, w := range want {
		a, err := os.ReadFile(w)
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join("docs", filepath.Base(w)))
		require.NoError(t, err, "docs/%s missing: run go generate ./cmd/graft", filepath.Base(w))
		require.True(t, bytes.Equal(a, b), "docs/%s is stale: run go generate ./cmd/graft", filepath.Base(w))
	}
}
