package trampoline

// TEMPORARY until the osrstub branch lands (same API).
type LocKind uint8

const (
	LocReg LocKind = iota
	LocSlot
	LocConst
)

type Loc struct {
	Kind  LocKind
	Reg   int
	Off   int64
	Value uint64
}
type Move struct {
	Dst, Src Loc
	Size     int
	Reloc    bool
}
type Reloc struct {
	OldBase, OldSize, OldStride, NewBase, NewStride uint64
	OffMap                                          []int32
}
type FrameSwitch struct {
	Addr, Scratch, CFA, OldSize, NewSize, Target uint64
	Moves                                        []Move
	Relocs                                       []Reloc
}

func ScratchSize(fs *FrameSwitch) int                  { return 4096 }
func BuildFrameSwitch(fs *FrameSwitch) ([]byte, error) { return make([]byte, 100), nil }
