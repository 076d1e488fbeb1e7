//go:build tools

// This file pins the dependencies graft is designed around (see README) so
// that go.mod lists them before every package uses them.
package graft

import (
	_ "github.com/go-delve/delve/pkg/dwarf/frame"
	_ "github.com/stretchr/testify/require"
	_ "golang.org/x/arch/x86/x86asm"
	_ "golang.org/x/sys/unix"
)
