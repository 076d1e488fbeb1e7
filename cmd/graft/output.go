package main

import (
	"encoding/json"
	"io"
	"strconv"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// hex formats an address the way every --json output does: "0x..." string.
func hex(v uint64) string { return "0x" + strconv.FormatUint(v, 16) }
