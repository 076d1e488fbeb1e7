package elfpatch

import (
	"debug/dwarf"
	"testing"

	"github.com/stretchr/testify/assert"
)

func enumOf(size int64, vals ...any) *dwarf.EnumType {
	e := &dwarf.EnumType{EnumName: "state"}
	e.ByteSize = size
	for i := 0; i < len(vals); i += 2 {
		e.Val = append(e.Val, &dwarf.EnumValue{Name: vals[i].(string), Val: int64(vals[i+1].(int))})
	}
	return e
}

// TestEnumsOnlyGain: gaining enumerators keeps an enum compatible; any
// other change to it (renumbered, removed, renamed, resized) does not.
func TestEnumsOnlyGain(t *testing.T) {
	old := enumOf(4, "IDLE", 0, "BUSY", 1)
	cases := []struct {
		name string
		new  *dwarf.EnumType
		want TypeClass
	}{
		{"gains one", enumOf(4, "IDLE", 0, "BUSY", 1, "DONE", 2), TypeCompatible},
		{"gains in the middle", enumOf(4, "IDLE", 0, "NEW", 5, "BUSY", 1), TypeCompatible},
		{"same", enumOf(4, "IDLE", 0, "BUSY", 1), TypeIdentical},
		{"renumbered", enumOf(4, "IDLE", 0, "BUSY", 2, "DONE", 1), TypeChanged},
		{"removed", enumOf(4, "IDLE", 0), TypeChanged},
		{"renamed", enumOf(4, "IDLE", 0, "WORKING", 1), TypeChanged},
		{"wider", enumOf(8, "IDLE", 0, "BUSY", 1, "HUGE", 1<<40), TypeChanged},
	}
	for _, tc := range cases {
		class, detail := compareTypes(old, tc.new)
		assert.Equal(t, tc.want, class, "%s: %s", tc.name, detail)
		// The same inside a struct, as a struct member.
		so := &dwarf.StructType{Kind: "struct", StructName: "job", Field: []*dwarf.StructField{{Name: "st", Type: old}}}
		sn := &dwarf.StructType{Kind: "struct", StructName: "job", Field: []*dwarf.StructField{{Name: "st", Type: tc.new}}}
		so.ByteSize, sn.ByteSize = old.ByteSize, tc.new.ByteSize
		class, detail = compareTypes(so, sn)
		assert.Equal(t, tc.want, class, "%s in a struct: %s", tc.name, detail)
	}
}
