package main

import (
	"fmt"
	"io"

	"graft"
)

// printTransfers lists the globals a patch converted (apply, status).
func printTransfers(w io.Writer, ts []graft.TransferResult, irreversible string) {
	for _, t := range ts {
		where := fmt.Sprintf("moved %s -> %s", hex(t.Old), hex(t.New))
		if t.InPlace {
			where = "in place at " + hex(t.Old)
		}
		fmt.Fprintf(w, "  transferred %s (%s): %d -> %d bytes, %s", t.Name, t.Type, t.OldSize, t.NewSize, where)
		if t.Pointers > 0 {
			fmt.Fprintf(w, ", %d pointer(s) rewritten", t.Pointers)
		}
		fmt.Fprintln(w)
	}
	if irreversible != "" {
		fmt.Fprintf(w, "  IRREVERSIBLE: revert will refuse this patch: %s\n", irreversible)
	}
}
