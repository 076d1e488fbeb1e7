package goruntime

import (
	"encoding/binary"
	"fmt"
)

// Frame is one frame of a goroutine's stack, innermost first.
type Frame struct {
	// PC is where the frame resumes: the goroutine's own PC for frame 0
	// and for a frame interrupted by an asynchronous preemption or a
	// signal panic (Exact), the return address otherwise.
	PC, SP uint64
	Exact  bool
	// Func is the function's name, Entry and End its bounds; Module the
	// address of the moduledata describing it.
	Func       string
	Entry, End uint64
	Module     uint64
	File       string
	Line       int
	// Inlined marks a call the compiler inlined into the next frame
	// (same PC and SP; only with Modules.Lines).
	Inlined bool
}

// maxFrames bounds one walk: deep recursion is legitimate, a loop is not.
const maxFrames = 1 << 17

// stackReader serves reads of one goroutine's stack from a single read.
type stackReader struct {
	mem    Mem
	lo, hi uint64
	buf    []byte
}

func (s *stackReader) word(a uint64) (uint64, error) {
	if a >= s.lo && a+8 <= s.hi && s.buf != nil {
		return binary.LittleEndian.Uint64(s.buf[a-s.lo:]), nil
	}
	var b [8]byte
	if _, err := s.mem.ReadAt(b[:], int64(a)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Unwind walks a Go stack from pc/sp (see unwind).
func (ms *Modules) Unwind(mem Mem, pc, sp uint64, exact bool, hi uint64) ([]Frame, string) {
	return ms.unwind(mem, pc, sp, exact, hi, nil, false)
}

// unwind walks a Go stack from pc/sp (exact: pc is where the code resumes,
// not a return address). hi, when not 0, is the top of the stack: the
// words in [sp, hi) are read at once. It returns the frames and, when the
// walk stopped before a top frame (goexit, mstart, ...), why.
//
// backUp makes frame 0 show the line before pc: a saved sched.pc is the
// return address of the call that switched stacks (mcall, systemstack),
// and the runtime's tracebacks show the line of that call.
func (ms *Modules) unwind(mem Mem, pc, sp uint64, exact bool, hi uint64, stack []byte, backUp bool) ([]Frame, string) {
	sr := &stackReader{mem: mem}
	if stack != nil {
		sr.lo, sr.hi, sr.buf = sp, sp+uint64(len(stack)), stack
	} else if hi > sp && hi-sp <= 64<<20 {
		if uint64(cap(ms.buf)) < hi-sp {
			ms.buf = make([]byte, hi-sp)
		}
		b := ms.buf[:hi-sp]
		if _, err := mem.ReadAt(b, int64(sp)); err == nil {
			sr.lo, sr.hi, sr.buf = sp, hi, b
		}
	}
	var frames []Frame
	for len(frames) < maxFrames {
		look := pc
		if !exact && pc > 0 {
			look = pc - 1
		}
		fi := ms.frameInfo(pc, look)
		f := fi.f
		if !fi.found {
			if pc == 0 && len(frames) > 0 {
				return frames, "return address 0 before a top frame"
			}
			return frames, fmt.Sprintf("pc %#x is in no Go module's code", pc)
		}
		fr := Frame{PC: pc, SP: sp, Exact: exact, Func: f.Name, Entry: f.Entry, End: fi.end, Module: f.mod.Addr}
		if ms.Lines {
			linePC := look
			if len(frames) == 0 && backUp && pc > f.Entry {
				linePC = pc - 1
			}
			in := f.Inlined(mem, linePC)
			for _, x := range in[:len(in)-1] {
				x.PC, x.SP, x.Exact, x.Entry, x.End, x.Module = fr.PC, fr.SP, fr.Exact, fr.Entry, fr.End, fr.Module
				frames = append(frames, x)
			}
			fr.File, fr.Line = in[len(in)-1].File, in[len(in)-1].Line
		}
		frames = append(frames, fr)
		flag := fi.flag
		if flag&flagTopFrame != 0 {
			return frames, ""
		}
		if flag&flagSPWrite != 0 {
			return frames, fmt.Sprintf("%s changes the stack pointer at pc %#x (switching stacks): its caller is not known", f.Name, pc)
		}
		delta := fi.delta
		if !fi.deltaOK || delta < 0 {
			return frames, fmt.Sprintf("no frame size for %s at pc %#x", f.Name, pc)
		}
		fp := sp + uint64(delta)
		ra, err := sr.word(fp)
		if err != nil {
			return frames, fmt.Sprintf("read return address of %s at %#x: %v", f.Name, fp, err)
		}
		nsp := fp + 8
		if nsp <= sp {
			return frames, fmt.Sprintf("stack does not grow at %s (sp %#x)", f.Name, sp)
		}
		// An asynchronous preemption or a signal panic is a call the
		// signal handler injected: the address it pushed is where the
		// interrupted function resumes, not after a call.
		exact = fi.injected
		pc, sp = ra, nsp
	}
	return frames, fmt.Sprintf("more than %d frames", maxFrames)
}

// frameFacts is what unwinding needs of one PC, the same for every
// goroutine stopped there (thousands park at the same few return
// addresses), so it is computed once: the pclntab never changes.
type frameFacts struct {
	f        Func
	found    bool
	end      uint64
	flag     uint8
	delta    int32
	deltaOK  bool
	injected bool // asyncPreempt or sigpanic: the caller resumes exactly
}

// frameInfo looks pc up (look: pc itself or pc-1 for a return address).
func (ms *Modules) frameInfo(pc, look uint64) frameFacts {
	key := [2]uint64{pc, look}
	if fi, ok := ms.facts[key]; ok {
		return fi
	}
	var fi frameFacts
	fi.f, fi.found = ms.FindFunc(look)
	if fi.found {
		f := fi.f
		fi.end = f.End()
		fi.flag = f.flag()
		spl := pc
		if spl >= fi.end {
			spl = look
		}
		fi.delta, fi.deltaOK = f.SPDelta(spl)
		fi.injected = f.Name == "runtime.asyncPreempt" || f.Name == "runtime.sigpanic"
	}
	if fi.found { // a PC in no module may be in one registered later
		if ms.facts == nil {
			ms.facts = map[[2]uint64]frameFacts{}
		}
		ms.facts[key] = fi
	}
	return fi
}

// ThreadRegs are the registers of one stopped thread.
type ThreadRegs struct {
	PC, SP uint64
}

// Stack is one goroutine's stack.
type Stack struct {
	G      G
	Frames []Frame
	// From says where the walk started: "thread" (a running goroutine's
	// thread registers), "vdso" (m.vdsoPC/SP, for one in a vDSO call on
	// the system stack), "syscall" (syscallpc/sp), "sched" (its saved
	// registers).
	From string
	// Incomplete says why the walk stopped before the stack's end ("" if
	// it reached a top frame). Such a stack is never called safe.
	Incomplete string
}

// GoroutineStack unwinds g, starting from where its status says it is: a
// running goroutine from its thread's registers (from its saved state if
// the thread is on its system stack, which saves it on the switch), one in
// a system call from where it entered the call, any other from its saved
// state. g0Stack gives the system stack bounds of the thread running g
// (0, 0 if unknown).
func (ms *Modules) GoroutineStack(mem Mem, g G, regs map[int]ThreadRegs) Stack {
	st, s := ms.start(mem, g, regs)
	if st.Incomplete != "" {
		return st
	}
	return ms.walk(mem, st, s, nil)
}

// GoroutineStacks is GoroutineStack for many goroutines: with a vectored
// reader, their stacks are read in a few system calls.
func (ms *Modules) GoroutineStacks(mem Mem, gs []G, regs map[int]ThreadRegs) []Stack {
	out := make([]Stack, len(gs))
	starts := make([]startPoint, len(gs))
	vm, vec := mem.(VecMem)
	var bufs [][]byte
	var addrs []uint64
	var idx []int
	total := 0
	for i, g := range gs {
		out[i], starts[i] = ms.start(mem, g, regs)
		if s := starts[i]; vec && out[i].Incomplete == "" && g.StackHi > s.sp && g.StackHi-s.sp <= 1<<20 {
			total += int(g.StackHi - s.sp)
			idx = append(idx, i)
		}
	}
	stacks := make([][]byte, len(gs))
	if vec && len(idx) > 0 {
		arena := make([]byte, total)
		for _, i := range idx {
			n := int(gs[i].StackHi - starts[i].sp)
			bufs = append(bufs, arena[:n:n])
			arena = arena[n:]
			addrs = append(addrs, starts[i].sp)
		}
		for k, ok := range vm.ReadVec(bufs, addrs) {
			if ok {
				stacks[idx[k]] = bufs[k]
			}
		}
	}
	for i := range gs {
		if out[i].Incomplete == "" {
			out[i] = ms.walk(mem, out[i], starts[i], stacks[i])
		}
	}
	return out
}

type startPoint struct {
	pc, sp uint64
	exact  bool
}

// start decides where g's walk begins.
func (ms *Modules) start(mem Mem, g G, regs map[int]ThreadRegs) (Stack, startPoint) {
	st := Stack{G: g}
	pc, sp, exact := g.SchedPC, g.SchedSP, true
	st.From = "sched"
	switch g.Status {
	case ms.L.Status["running"]:
		r, ok := regs[g.Tid]
		if !ok {
			st.Incomplete = fmt.Sprintf("running on thread %d, which was not stopped", g.Tid)
			return st, startPoint{}
		}
		if r.SP >= g.StackLo && r.SP < g.StackHi {
			pc, sp, st.From = r.PC, r.SP, "thread"
		} else if vpc, vsp := ms.inVDSO(mem, g); vsp != 0 {
			// In a vDSO call (nanotime, walltime), which runs on
			// the system stack without saving g.sched: the runtime
			// left where the goroutine's own stack is in m.
			pc, sp, exact, st.From = vpc, vsp, false, "vdso"
		} else if !ms.onSystemStack(mem, g, r.SP) {
			st.Incomplete = fmt.Sprintf("running on thread %d, whose sp %#x is neither on the goroutine's stack nor on the thread's system stack (in a signal handler?)", g.Tid, r.SP)
			return st, startPoint{}
		}
	case ms.L.Status["copystack"]:
		// Its stack is being moved (by a thread stopped mid-copy):
		// neither the bounds nor the frames can be trusted yet.
		st.Incomplete = "its stack is being copied"
		return st, startPoint{}
	case ms.L.Status["syscall"]:
		if g.SyscallSP != 0 {
			pc, sp, exact, st.From = g.SyscallPC, g.SyscallSP, false, "syscall"
		}
	}
	if sp == 0 || pc == 0 {
		st.Incomplete = "no saved registers"
		return st, startPoint{}
	}
	return st, startPoint{pc, sp, exact}
}

// walk unwinds from s (stack: the words from s.sp up, when already read).
func (ms *Modules) walk(mem Mem, st Stack, s startPoint, stack []byte) Stack {
	g := st.G
	st.Frames, st.Incomplete = ms.unwind(mem, s.pc, s.sp, s.exact, g.StackHi, stack, st.From == "sched")
	return st
}

// inVDSO returns m.vdsoPC and m.vdsoSP of g's m (sp 0: not in a vDSO
// call).
func (ms *Modules) inVDSO(mem Mem, g G) (pc, sp uint64) {
	if g.M == 0 {
		return 0, 0
	}
	var b [8]byte
	if _, err := mem.ReadAt(b[:], int64(g.M)+int64(ms.L.M.VdsoSP)); err != nil {
		return 0, 0
	}
	sp = binary.LittleEndian.Uint64(b[:])
	if sp == 0 || sp < g.StackLo || sp >= g.StackHi {
		return 0, 0
	}
	if _, err := mem.ReadAt(b[:], int64(g.M)+int64(ms.L.M.VdsoPC)); err != nil {
		return 0, 0
	}
	return binary.LittleEndian.Uint64(b[:]), sp
}

// onSystemStack reports whether sp lies on the g0 stack of g's m (the
// runtime saves the goroutine's state in g.sched before switching there).
func (ms *Modules) onSystemStack(mem Mem, g G, sp uint64) bool {
	if g.M == 0 {
		return false
	}
	var b [8]byte
	if _, err := mem.ReadAt(b[:], int64(g.M)+int64(ms.L.M.G0)); err != nil {
		return false
	}
	g0 := binary.LittleEndian.Uint64(b[:])
	var s [16]byte
	if g0 == 0 || ms.L.G.StackHi != ms.L.G.StackLo+8 {
		return false
	}
	if _, err := mem.ReadAt(s[:], int64(g0)+int64(ms.L.G.StackLo)); err != nil {
		return false
	}
	lo, hi := binary.LittleEndian.Uint64(s[:]), binary.LittleEndian.Uint64(s[8:])
	return sp >= lo && sp < hi
}
