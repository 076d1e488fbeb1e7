package tracer

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Borrowing one thread while the others run.
//
// Remote system calls (mmap, memfd_create, munmap) need one thread of the
// target, not all of them. Borrow interrupts a single seized thread and
// leaves every other thread running; Syscall then runs on it exactly as in
// a stop of the whole process (remote.go: the same self-restoring frame, so
// a graft killed at any moment leaves the thread to return through it).
// Return lets it go again. A Stop while a thread is borrowed stops the
// others and takes the borrowed thread into the stopped world, without
// letting it run in between: a thread borrowed for loading and then held
// through the pause is stopped once. EndPause ends a pause by detaching
// from the threads instead of resuming them (so Close need not stop them
// all once more to detach), optionally keeping one thread stopped and
// borrowed for the system calls that must follow the pause (unmapping an
// image nothing runs in any more).
//
// While a thread is borrowed and the others run, whatever the others stop
// for (signals, clone events) is passed on as usual; the borrowed thread
// is never resumed by that (release skips it).
//
// Which thread: one asleep in a system call that waits for work (accept,
// epoll_wait, poll, sigsuspend, ...), which loses nothing by being held
// for a millisecond, then one in read or a futex wait, before a timed
// sleeper (nanosleep: a heartbeat would see the hold), before a running
// thread; never one in uninterruptible sleep if anything else is there. An interrupted
// blocking call keeps its restart semantics (remote.go: orig_rax and the
// -ERESTART* rax are restored and the kernel enters the call again).
//
// Held time. Every stop tracer makes is booked per thread, from the
// interrupt to the resume or detach, under its cause: the whole-process
// pause, or borrowed for system calls (Holds).

// HoldCause is why a thread was held stopped.
type HoldCause int

const (
	HoldPause    HoldCause = iota // stopped with every other thread
	HoldSyscalls                  // borrowed alone for remote system calls
)

// Hold is the stopped time of one thread since Attach.
type Hold struct {
	Tid int
	// Stops counts the times tracer stopped the thread (a thread
	// borrowed and then held through a pause is stopped once).
	Stops int
	// Pause and Syscalls split its stopped time by cause.
	Pause, Syscalls time.Duration
}

// holdBook is the per-thread record of held time. It is written on the
// tracer goroutine and read from any (Holds works after Close).
type holdBook struct {
	mu      sync.Mutex
	threads map[int]*holdEntry
}

type holdEntry struct {
	Hold
	since time.Time // zero: not held now
	cause HoldCause
}

func (b *holdBook) entry(tid int) *holdEntry {
	if b.threads == nil {
		b.threads = map[int]*holdEntry{}
	}
	e := b.threads[tid]
	if e == nil {
		e = &holdEntry{Hold: Hold{Tid: tid}}
		b.threads[tid] = e
	}
	return e
}

// begin: tid is being stopped now for cause.
func (b *holdBook) begin(tid int, cause HoldCause) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entry(tid)
	if !e.since.IsZero() {
		return
	}
	e.Stops++
	e.since, e.cause = time.Now(), cause
}

func (e *holdEntry) close(now time.Time) {
	if e.since.IsZero() {
		return
	}
	d := now.Sub(e.since)
	if e.cause == HoldPause {
		e.Pause += d
	} else {
		e.Syscalls += d
	}
	e.since = time.Time{}
}

// end: tid goes on (resumed or detached).
func (b *holdBook) end(tid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e := b.threads[tid]; e != nil {
		e.close(time.Now())
	}
}

// recause: tid stays stopped, for another cause from now on.
func (b *holdBook) recause(tid int, cause HoldCause) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.threads[tid]
	if e == nil || e.since.IsZero() || e.cause == cause {
		return
	}
	now := time.Now()
	e.close(now)
	e.since, e.cause = now, cause
}

// Holds returns, for every thread tracer has stopped since Attach, how
// often and how long (a stop still under way counts up to now). It works
// after Close.
func (p *Process) Holds() []Hold {
	b := &p.holds
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	out := make([]Hold, 0, len(b.threads))
	for _, e := range b.threads {
		h := e.Hold
		if !e.since.IsZero() {
			d := now.Sub(e.since)
			if e.cause == HoldPause {
				h.Pause += d
			} else {
				h.Syscalls += d
			}
		}
		out = append(out, h)
	}
	sortHolds(out)
	return out
}

func sortHolds(h []Hold) {
	for i := 1; i < len(h); i++ {
		for j := i; j > 0 && h[j].Tid < h[j-1].Tid; j-- {
			h[j], h[j-1] = h[j-1], h[j]
		}
	}
}

// Borrow interrupts one thread of the running process, the others going
// on, so that Syscall can run on it (tid 0: tracer picks an idle one, see
// above). It returns the thread's ID. Borrowing while a thread is borrowed
// returns that one. A stopped process needs no borrowing (an error).
func (p *Process) Borrow(tid int) (int, error) {
	var got int
	err := p.do(func() error {
		if err := p.usable(); err != nil {
			return err
		}
		if p.stopped {
			return fmt.Errorf("borrow a thread of pid %d: the process is stopped already", p.pid)
		}
		if p.lent != nil {
			got = p.lent.tid
			return nil
		}
		var t *thread
		if tid != 0 {
			t = p.threads[tid]
			if t == nil || t.zombie {
				return fmt.Errorf("borrow tid %d in pid %d: %w", tid, p.pid, ErrNoThread)
			}
		} else if t = p.pickIdle(); t == nil {
			return fmt.Errorf("borrow a thread of pid %d: no thread to borrow", p.pid)
		}
		if err := p.interruptOne(t); err != nil {
			return err
		}
		p.setLent(t)
		got = t.tid
		return nil
	})
	return got, err
}

// interruptOne stops t alone and waits for its stop (a signal or clone
// event it reports first will do: remote.go handles those stops).
func (p *Process) interruptOne(t *thread) error {
	if t.state != running && !t.listening {
		p.holds.begin(t.tid, HoldSyscalls)
		return nil // already stopped (a signal not yet passed on)
	}
	if err := ptraceInterrupt(t.tid); err != nil {
		return p.opErr("interrupt", t.tid, err)
	}
	p.holds.begin(t.tid, HoldSyscalls)
	deadline := time.Now().Add(p.stopTimeout)
	for t.state == running || t.listening {
		ws, err := p.waitRaw(t, deadline, false)
		if err == errTimedOut {
			// Its interrupt is still pending: it stops later, and poll
			// sends it on.
			p.holds.end(t.tid)
			return fmt.Errorf("borrow tid %d in pid %d (state %s): %w within %v",
				t.tid, p.pid, ThreadState(p.pid, t.tid), ErrStopTimeout, p.stopTimeout)
		}
		if err != nil {
			p.gone(t.tid, "")
		} else {
			p.record(t.tid, ws)
		}
		if p.exited != nil {
			return p.exited
		}
		if p.threads[t.tid] != t {
			return fmt.Errorf("borrow tid %d in pid %d: thread exited: %w", t.tid, p.pid, ErrNoThread)
		}
	}
	return nil
}

func (p *Process) setLent(t *thread) {
	p.lent = t
	if t == nil {
		p.lentTid.Store(0)
		return
	}
	p.lastLent = t.tid
	p.lentTid.Store(int64(t.tid))
}

// Lent returns the ID of the thread borrowed while the others run (0:
// none).
func (p *Process) Lent() int { return int(p.lentTid.Load()) }

// Return lets the borrowed thread go on (its registers and stack as they
// were, a signal it stopped for delivered). After a Stop that took it in,
// there is nothing to return: Resume lets it go with the others.
func (p *Process) Return() error {
	return p.do(func() error {
		t := p.lent
		if t == nil {
			return nil
		}
		p.setLent(nil)
		if p.closed || p.exited != nil || p.threads[t.tid] != t {
			return nil
		}
		if p.partial {
			// The others are detached: so is it.
			return p.detachOne(t)
		}
		err := p.resumeThread(t)
		p.holds.end(t.tid)
		return err
	})
}

// absorbLent is called at the end of a Stop: the borrowed thread is now
// one of the stopped world, held for the pause.
func (p *Process) absorbLent() {
	if t := p.lent; t != nil {
		p.holds.recause(t.tid, HoldPause)
		p.setLent(nil)
	}
}

// EndPause ends a pause (the process stopped) by detaching from every
// thread, each with its pending signal, instead of resuming it: the
// threads run on untraced and Close has nothing left to stop. keepOne
// keeps one thread stopped and borrowed (the one last borrowed, else one
// that was asleep in a system call) for remote system calls after the
// pause; Return or Close lets it go. It returns the kept thread's ID.
// After EndPause the process cannot be stopped again.
func (p *Process) EndPause(keepOne bool) (int, error) {
	kept := 0
	err := p.do(func() error {
		if err := p.usable(); err != nil {
			return err
		}
		if !p.stopped {
			return fmt.Errorf("end pause of pid %d: %w", p.pid, ErrNotStopped)
		}
		var keep *thread
		if keepOne {
			keep = p.threads[p.lastLent]
			if keep == nil || keep.zombie {
				keep = p.pickStoppedIdle()
			}
		}
		var first error
		for _, tid := range p.tids() {
			t := p.threads[tid]
			if t.zombie || t == keep || t.state == running {
				continue
			}
			if err := p.detachOne(t); err != nil && first == nil {
				first = err
			}
		}
		p.stopped = false
		p.partial = true
		if keep != nil {
			p.holds.recause(keep.tid, HoldSyscalls)
			p.setLent(keep)
			kept = keep.tid
		}
		return first
	})
	return kept, err
}

// detachOne detaches stopped thread t with its pending signal.
func (p *Process) detachOne(t *thread) error {
	sig := p.prepareSignal(t)
	err := ptraceDetach(t.tid, sig)
	p.holds.end(t.tid)
	delete(p.threads, t.tid)
	if err != nil && err != unix.ESRCH {
		return fmt.Errorf("detach tid %d of pid %d: %w", t.tid, p.pid, err)
	}
	return nil
}

// detachPartial is Close after EndPause: only the kept thread (if still
// kept) is traced, and it is stopped.
func (p *Process) detachPartial() error {
	p.closed = true
	var first error
	if t := p.lent; t != nil && p.threads[t.tid] == t && p.exited == nil {
		first = p.detachOne(t)
	}
	p.setLent(nil)
	p.threads = map[int]*thread{}
	return first
}

// idleRank orders threads for borrowing while the process runs: lower is
// better (see the comment at the top of this file).
func idleRank(pid, tid int) int {
	switch threadState(pid, tid) {
	case 'S':
	case 'R':
		return 4
	case 0, 'Z', 'X':
		return 9
	default: // D, stopped: may not stop in time
		return 8
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil {
		return 3
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 3
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil || nr < 0 {
		return 3 // "running", or asleep outside a system call
	}
	switch nr {
	case unix.SYS_ACCEPT, unix.SYS_ACCEPT4, unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT, 441, // epoll_pwait2
		unix.SYS_POLL, unix.SYS_PPOLL, unix.SYS_SELECT, unix.SYS_PSELECT6, unix.SYS_WAIT4,
		unix.SYS_WAITID, unix.SYS_PAUSE, unix.SYS_RT_SIGSUSPEND, unix.SYS_RT_SIGTIMEDWAIT,
		unix.SYS_IO_GETEVENTS:
		return 0
	case unix.SYS_READ, unix.SYS_READV, unix.SYS_PREAD64, unix.SYS_RECVFROM, unix.SYS_RECVMSG,
		unix.SYS_MSGRCV, unix.SYS_FUTEX:
		// Idle too, but in a Go program a goroutine blocked in a raw
		// read sits on its own small stack, whose neighbour the frame
		// could reach while the others run (doc.go); Go parks its
		// threads in futex and epoll_wait on their system stacks.
		return 1
	case unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP:
		return 2
	}
	return 1
}

// pickIdle chooses the thread to borrow while the process runs.
func (p *Process) pickIdle() *thread {
	var best *thread
	bestRank := 100
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t.zombie {
			continue
		}
		if t.state != running && !t.listening {
			// Stopped already (a signal about to be passed on): no
			// interrupt needed, but it would have run: as good as a
			// sleeper.
			if bestRank > 1 {
				best, bestRank = t, 1
			}
			continue
		}
		r := idleRank(p.pid, tid)
		if r < bestRank {
			best, bestRank = t, r
		}
		if r == 0 {
			break
		}
	}
	return best
}

// pickStoppedIdle chooses among stopped threads one that was asleep in a
// system call (orig_rax set, rax an -ERESTART* code), else any.
func (p *Process) pickStoppedIdle() *thread {
	var any *thread
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t.zombie || t.state != stopEvent {
			continue
		}
		if any == nil {
			any = t
		}
		r, err := p.regsOf(t)
		if err != nil || int64(r.OrigRax) < 0 {
			continue
		}
		switch -int64(r.Rax) {
		case erestartsys, erestartnointr, erestartnohand, erestartRestartblock:
			return t
		}
	}
	return any
}

// syscallThread is the thread a remote syscall runs on: with the process
// stopped, tid or one tracer picks; while it runs, the borrowed one.
func (p *Process) syscallThread(nr uint64, tid int) (*thread, error) {
	if p.stopped {
		if tid != 0 {
			return p.stoppedThread(tid)
		}
		if t := p.borrow(); t != nil {
			return t, nil
		}
		return nil, fmt.Errorf("remote syscall %d in pid %d: no stopped thread to borrow", nr, p.pid)
	}
	if t := p.lent; t != nil && (tid == 0 || tid == t.tid) && p.threads[t.tid] == t {
		return t, nil
	}
	return nil, fmt.Errorf("remote syscall %d in pid %d: %w (and no thread borrowed)", nr, p.pid, ErrNotStopped)
}

// Settle puts a thread held between remote calls (remote.go) back into its
// own state now (parked, registers and stack restored), rather than in the
// next request: a caller about to stop the process does this work before
// the pause instead of inside it. The thread stays borrowed.
func (p *Process) Settle() error {
	return p.do(func() error { return nil }) // do settles first
}

// unbookRunning closes the held-time entries of threads that never
// stopped (a failed Stop): their interrupt is still pending, and they
// will be sent on when it strikes.
func (p *Process) unbookRunning() {
	for _, tid := range p.tids() {
		if t := p.threads[tid]; t != nil && t.state == running {
			p.holds.end(tid)
		}
	}
}

// deferSignal notes a signal t dequeued while another was kept (or the
// same real-time one again), to be queued again with tgkill when t goes
// back to its own code (requeueDeferred): queued at once, it would stop a
// thread in a remote call again at its next step. A standard signal
// already kept or noted is dropped: standard signals do not queue, one
// delivery stands for both, as in the kernel.
func deferSignal(t *thread, sig int) {
	if sig < sigrtmin && (sig == t.sig || slices.Contains(t.more, sig)) {
		return
	}
	t.more = append(t.more, sig)
}

// sigrtmin is the first real-time signal (SIGRTMIN as the kernel counts).
const sigrtmin = 32

// requeueDeferred queues t's deferred signals again; t is about to run its
// own code.
func (p *Process) requeueDeferred(t *thread) {
	for _, sig := range t.more {
		unix.Tgkill(p.pid, t.tid, syscall.Signal(sig))
	}
	t.more = nil
}
