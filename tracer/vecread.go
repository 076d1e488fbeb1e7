package tracer

import "golang.org/x/sys/unix"

// vecChunk is how many ranges one process_vm_readv reads (IOV_MAX).
const vecChunk = 1024

// ReadVec reads many ranges of target memory: bufs[i] from addrs[i], up to
// 1024 per system call, for a reader of thousands of small objects (the
// goroutines of a Go process). ok[i] says whether bufs[i] was filled
// completely; a range that cannot be read is left short and its neighbours
// are still read. Like ReadAt it shows memory as it was before a remote
// call's frame was written.
func (p *Process) ReadVec(bufs [][]byte, addrs []uint64) (ok []bool) {
	ok = make([]bool, len(bufs))
	for lo := 0; lo < len(bufs); {
		hi := min(lo+vecChunk, len(bufs))
		var local []unix.Iovec
		var remote []unix.RemoteIovec
		var idx []int
		for i := lo; i < hi; i++ {
			if len(bufs[i]) == 0 {
				ok[i] = true
				continue
			}
			v := unix.Iovec{Base: &bufs[i][0]}
			v.SetLen(len(bufs[i]))
			local = append(local, v)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(addrs[i]), Len: len(bufs[i])})
			idx = append(idx, i)
		}
		n, _ := unix.ProcessVMReadv(p.pid, local, remote, 0)
		// The call stops at the first range it cannot read: the ranges
		// wholly read before it are good; retry after it.
		next := hi
		for k, i := range idx {
			if n >= len(bufs[i]) {
				n -= len(bufs[i])
				ok[i] = true
				p.overlay(bufs[i], int64(addrs[i]))
				continue
			}
			next = i + 1 // i failed (or was cut short)
			if k == len(idx)-1 {
				next = hi
			}
			break
		}
		if next == lo {
			next = lo + 1
		}
		lo = next
	}
	return ok
}
