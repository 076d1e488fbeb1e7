package main

import (
	"testing"

	"graft/internal/testutil"
)

// TestMain fails the run if a test left a target stopped or traced
// (testutil.Main): every package that attaches checks it, not only tracer.
func TestMain(m *testing.M) { testutil.Main(m) }
