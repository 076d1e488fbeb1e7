package goruntime

import (
	"encoding/binary"
	"fmt"
)

// VecMem is a Mem that also reads many ranges at once
// (*tracer.Process: process_vm_readv with many iovecs).
type VecMem interface {
	Mem
	ReadVec(bufs [][]byte, addrs []uint64) (ok []bool)
}

// G is one goroutine as the runtime records it.
type G struct {
	Addr uint64
	ID   int64
	// Status is atomicstatus without the scan bit; Scan is that bit.
	Status uint32
	Scan   bool
	// StackLo, StackHi bound its stack.
	StackLo, StackHi uint64
	// SchedPC/SP/BP: where it resumes when it is not running.
	SchedPC, SchedSP, SchedBP uint64
	// SyscallPC/SP: where it entered a system call or cgo call.
	SyscallPC, SyscallSP uint64
	// M is the m running it (0 if none); Tid that m's thread id.
	M   uint64
	Tid int
}

// maxGs bounds allglen: the list is read from a process that may be
// damaged.
const maxGs = 1 << 24

// StatusName is the runtime's word for a status, as a SIGQUIT dump says it.
func (l *Layout) StatusName(s uint32) string {
	names := map[string]string{
		"idle": "idle", "runnable": "runnable", "running": "running",
		"syscall": "syscall", "waiting": "waiting", "dead": "dead",
		"copystack": "copystack", "preempted": "preempted", "leaked": "leaked",
	}
	for k, v := range names {
		if c, ok := l.Status[k]; ok && c == s {
			return v
		}
	}
	return fmt.Sprintf("status %d", s)
}

// Goroutines reads every goroutine in runtime.allgs that is not dead.
func (l *Layout) Goroutines(mem Mem, bias uint64) ([]G, error) {
	var hdr [8]byte
	if _, err := mem.ReadAt(hdr[:], int64(bias+l.AllGLen)); err != nil {
		return nil, fmt.Errorf("read runtime.allglen: %w", err)
	}
	n := binary.LittleEndian.Uint64(hdr[:])
	if _, err := mem.ReadAt(hdr[:], int64(bias+l.AllGs)); err != nil {
		return nil, fmt.Errorf("read runtime.allgs: %w", err)
	}
	ptr := binary.LittleEndian.Uint64(hdr[:])
	if n > maxGs {
		return nil, fmt.Errorf("runtime.allglen is %d: implausible", n)
	}
	ptrs := make([]byte, 8*n)
	if n > 0 {
		if _, err := mem.ReadAt(ptrs, int64(ptr)); err != nil {
			return nil, fmt.Errorf("read runtime.allgs array at %#x: %w", ptr, err)
		}
	}
	g := &l.G
	size := max(g.StackLo, g.StackHi, g.SchedSP, g.SchedPC, g.SchedBP, g.SyscallSP, g.SyscallPC, g.Status, g.Goid, g.M) + 8
	buf := make([]byte, size)
	dead, scan := l.Status["dead"], l.Status["scan"]
	// Go 1.26's _Gdeadextra: a dead goroutine kept for a cgo callback's
	// extra M (absent before 1.26).
	deadExtra, hasDeadExtra := l.Status["deadextra"]
	mcache := map[uint64]int{}
	out := make([]G, 0, n)
	// With a vectored reader, every g is read in a few system calls.
	var pre [][]byte
	if vm, ok := mem.(VecMem); ok && n > 1 {
		pre = make([][]byte, n)
		addrs := make([]uint64, n)
		arena := make([]byte, int(n)*size)
		for i := range pre {
			pre[i] = arena[i*size : (i+1)*size]
			addrs[i] = binary.LittleEndian.Uint64(ptrs[8*i:])
			if addrs[i] == 0 {
				pre[i] = nil
			}
		}
		for i, ok := range vm.ReadVec(pre, addrs) {
			if !ok {
				pre[i] = nil // read again below, for its error
			}
		}
	}
	for i := uint64(0); i < n; i++ {
		a := binary.LittleEndian.Uint64(ptrs[8*i:])
		if a == 0 {
			continue
		}
		if pre != nil && pre[i] != nil {
			buf = pre[i]
		} else {
			if pre != nil {
				buf = make([]byte, size)
			}
			if _, err := mem.ReadAt(buf, int64(a)); err != nil {
				return nil, fmt.Errorf("read goroutine %d of %d at %#x: %w", i, n, a, err)
			}
		}
		st := binary.LittleEndian.Uint32(buf[g.Status:])
		x := G{
			Addr:      a,
			ID:        int64(le64(buf, g.Goid)),
			Status:    st &^ scan,
			Scan:      st&scan != 0,
			StackLo:   le64(buf, g.StackLo),
			StackHi:   le64(buf, g.StackHi),
			SchedPC:   le64(buf, g.SchedPC),
			SchedSP:   le64(buf, g.SchedSP),
			SchedBP:   le64(buf, g.SchedBP),
			SyscallPC: le64(buf, g.SyscallPC),
			SyscallSP: le64(buf, g.SyscallSP),
			M:         le64(buf, g.M),
		}
		if x.Status == dead || (hasDeadExtra && x.Status == deadExtra) {
			continue
		}
		if x.M != 0 {
			tid, ok := mcache[x.M]
			if !ok {
				if _, err := mem.ReadAt(hdr[:], int64(x.M)+int64(l.M.Procid)); err != nil {
					return nil, fmt.Errorf("read m of goroutine %d at %#x: %w", x.ID, x.M, err)
				}
				tid = int(binary.LittleEndian.Uint64(hdr[:]))
				mcache[x.M] = tid
			}
			x.Tid = tid
		}
		out = append(out, x)
	}
	return out, nil
}
