package elfpatch

// TEMPORARY until the dwarfvars branch lands.
type VarKind uint8

const (
	VarUnknown VarKind = iota
	VarReg
	VarFrame
	VarConst
)

type FrameVar struct {
	Path    string
	Size    int64
	Pointer bool
	Param   bool
	Kind    VarKind
	Reg     int
	Off     int64
	Value   uint64
	Why     string
}

func (b *Binary) FrameVarsAt(fn, pc uint64) ([]FrameVar, error) { return nil, nil }
