package tracer

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stopKind is what the tracer last saw a thread do.
type stopKind int

const (
	running    stopKind = iota // resumed (or just seized): not in a stop we have seen
	stopEvent                  // PTRACE_EVENT_STOP, SIGTRAP: our interrupt, or a new thread's first stop
	stopGroup                  // PTRACE_EVENT_STOP with a stop signal: job-control group-stop
	stopSignal                 // signal-delivery-stop: thread.sig goes back in on resume
	stopClone                  // PTRACE_EVENT_CLONE: stopped inside clone()
	stopOther                  // any other ptrace-event stop (exec, ...)
)

// thread is the tracer's view of one seized thread. Only the tracer
// goroutine touches it.
type thread struct {
	tid   int
	state stopKind
	// listening: PTRACE_LISTEN'd while the process is job-control stopped.
	// The thread is stopped, but for job control, not for us: it must be
	// interrupted like a running one.
	listening bool
	// zombie: a thread-group leader that called pthread_exit. It cannot be
	// stopped or detached and reports nothing until the whole group exits.
	zombie bool
	sig    int      // signal to deliver when the thread goes on (0: none)
	more   []int    // further signals to queue again then (deferSignal)
	info   *siginfo // sig's siginfo, when a remote syscall replaced the stop
	regs   *Regs    // register cache, valid while stopped
	// masked: a remote call blocked its signals; ownMask goes back
	// (remote_signals.go).
	masked  bool
	ownMask uint64
	// resumeSig: the signal the next PTRACE_SYSCALL passes; blocked, the
	// kernel queues it again itself (handOver).
	resumeSig int
	// early: signals delivered at once during the current stop
	// (signal_stops.go).
	early int
}

// Process is one traced process. All its ptrace and wait calls run on one
// goroutine locked to its OS thread (the kernel ties a tracee to the thread
// that seized it); exported methods send closures there and wait.
type Process struct {
	pid  int
	reqs chan func()
	quit chan struct{} // closed when the tracer goroutine has ended

	memMu sync.RWMutex
	mem   *os.File // /proc/PID/mem, opened at attach; nil once closed

	// snap is what Stopped, Threads and Regs answer from without a round
	// trip to the tracer goroutine (two goroutine hand-offs, tens of
	// microseconds on a loaded machine, per call). The tracer goroutine
	// publishes it after every request and poll.
	snapMu sync.Mutex
	snap   snapshot

	// Owned by the tracer goroutine.
	threads map[int]*thread
	stopped bool
	closed  bool
	exited  *ProcessExitedError
	gadget  uint64 // address of a `syscall` instruction in the target
	// retGadget (`syscall; ret`) and restorer (`mov $15,%rax; syscall`,
	// libc's __restore_rt) in the target, for the self-restoring remote
	// syscall (remote_frame.go); 0: not looked up yet, or absent (noFrame).
	retGadget, restorer uint64
	noFrame             bool
	forceStep           bool // tests: always use the single-step
	noSigmask           bool // PTRACE_SETSIGMASK unsupported (remote_signals.go)
	requeueing          bool // requeueKept's own remote call is running
	frameCalls          int  // remote syscalls run self-restoring (tests)
	// held: the thread left at its last remote call's syscall-exit-stop,
	// its frame still live, so that the next call on it in this stop
	// reuses the frame and skips the parking interrupt (see settle).
	held      *thread
	heldSaved Regs
	// frameMu guards live, the frame in target memory while a thread is
	// held: ReadAt shows its original bytes, WriteAt writes under it.
	frameMu sync.Mutex
	live    *sigframe
	// verified: a Stop has checked /proc/PID/task for threads that
	// escaped Attach (see stop).
	verified bool
	sigc     chan os.Signal // SIGCHLD notifications
	// stolenInfo: siginfo of signal stops rebuilt by stolenStatus.
	stolenInfo map[int]*siginfo
	// stopTimeout bounds how long Stop waits for one thread (a thread in
	// uninterruptible sleep stops only when it wakes).
	stopTimeout time.Duration
	// borrow.go: the thread borrowed while the others run (lentTid
	// mirrors it for other goroutines), the last one borrowed, whether
	// EndPause detached the others, and the held-time book.
	lent     *thread
	lentTid  atomic.Int64
	lastLent int
	partial  bool
	holds    holdBook
}

type snapshot struct {
	stopped bool
	tids    []int
	regs    map[int]Regs // while stopped: every held thread's registers
}

// publish refreshes the snapshot from the tracer goroutine's state.
func (p *Process) publish() {
	sn := snapshot{stopped: p.stopped && !p.closed && p.exited == nil}
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t.zombie {
			continue
		}
		sn.tids = append(sn.tids, tid)
		if sn.stopped && t.regs != nil {
			if sn.regs == nil {
				sn.regs = make(map[int]Regs, len(p.threads))
			}
			sn.regs[tid] = *t.regs
		}
	}
	p.snapMu.Lock()
	p.snap = sn
	p.snapMu.Unlock()
}

// DefaultStopTimeout is how long Stop waits for a thread to stop before it
// gives up, resumes the process and says which thread did not stop.
const DefaultStopTimeout = 10 * time.Second

// ErrStopTimeout: a thread did not stop in time (typically one in
// uninterruptible sleep, state D); the process was resumed.
var ErrStopTimeout = errors.New("thread did not stop")

// pollInterval bounds how long an event (a new thread's first stop, a
// signal to pass on) can wait when a SIGCHLD notification was coalesced or
// lost; normally SIGCHLD wakes the tracer goroutine at once.
const pollInterval = 50 * time.Millisecond

// Attach seizes every thread of pid with PTRACE_SEIZE (and
// PTRACE_O_TRACECLONE, so threads created later are seized by the kernel).
// The process keeps running. Close detaches.
func Attach(pid int) (*Process, error) {
	if err := precheck(pid); err != nil {
		return nil, err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("attach pid %d: %w", pid, ErrNoSuchProcess)
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, explainPerm(pid)
		}
		return nil, fmt.Errorf("attach pid %d: open memory: %w", pid, err)
	}
	p := &Process{
		pid:     pid,
		reqs:    make(chan func()),
		quit:    make(chan struct{}),
		mem:     mem,
		threads: map[int]*thread{},
		sigc:    make(chan os.Signal, 1),

		stolenInfo: map[int]*siginfo{},

		stopTimeout: DefaultStopTimeout,
	}
	ready := make(chan error, 1)
	go p.loop(ready)
	if err := <-ready; err != nil {
		<-p.quit
		p.closeMem()
		return nil, err
	}
	return p, nil
}

// Pid returns the process ID.
func (p *Process) Pid() int { return p.pid }

// loop is the tracer goroutine. It never unlocks its OS thread: should it
// ever end while tracees are still attached, the thread dies with it and
// the kernel detaches them, leaving them running, rather than a later
// goroutine inheriting a thread that owns tracees.
func (p *Process) loop(ready chan<- error) {
	runtime.LockOSThread()
	defer close(p.quit)

	// SIGCHLD tells us a tracee changed state while the process runs
	// (new thread, signal to pass on, thread exit).
	signal.Notify(p.sigc, syscall.SIGCHLD)
	defer signal.Stop(p.sigc)

	if err := p.seizeAll(); err != nil {
		p.detach()
		ready <- err
		return
	}
	ready <- nil

	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	p.publish()
	for !p.closed {
		select {
		case fn := <-p.reqs:
			fn()
			if p.lent != nil && !p.stopped {
				// The others run meanwhile: pass on what they stopped
				// for (the waits of a remote call may have taken the
				// SIGCHLD that said so).
				p.poll()
			}
		case <-p.sigc:
			p.poll()
		case <-tick.C:
			p.poll()
		}
		p.publish()
	}
	p.publish()
}

// do runs fn on the tracer goroutine and returns its error. A panic in fn
// is turned into an error so the goroutine survives and Close still works.
func (p *Process) do(fn func() error) error { return p.doReq(fn, true) }

// doReq is do; settle false keeps a thread held by the last remote call
// (remote syscalls only: every other request may look at or move the
// thread, so it is put back first).
func (p *Process) doReq(fn func() error, settle bool) error {
	errc := make(chan error, 1)
	req := func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("tracer pid %d: internal error: %v\n%s", p.pid, r, debug.Stack())
			}
		}()
		var serr error
		if settle {
			serr = p.settle()
		}
		err := fn()
		if err == nil {
			err = serr
		}
		// Publish before answering: the caller's next Regs or Threads
		// must see what this request did.
		p.publish()
		errc <- err
	}
	select {
	case p.reqs <- req:
		return <-errc
	case <-p.quit:
		return fmt.Errorf("pid %d: %w", p.pid, ErrClosed)
	}
}

// usable is the common precondition of every request.
func (p *Process) usable() error {
	if p.closed {
		return fmt.Errorf("pid %d: %w", p.pid, ErrClosed)
	}
	if p.exited != nil {
		return p.exited
	}
	return nil
}

// seizeAll seizes every thread listed in /proc/PID/task, then lists again
// until no new thread shows up: threads created by a not-yet-seized thread
// are not auto-attached and only appear in a later listing.
func (p *Process) seizeAll() error {
	me := unix.Gettid() // TracerPid names the tracing thread, not its process
	for round := 0; ; round++ {
		tids, err := tasks(p.pid)
		if err != nil {
			return p.goneErr("attach", err)
		}
		added := 0
		for _, tid := range tids {
			if _, ok := p.threads[tid]; ok {
				continue
			}
			err := ptraceSeize(tid)
			switch {
			case err == nil:
			case err == unix.ESRCH:
				continue // exited between listing and seizing
			case err == unix.EPERM && tracerOf(p.pid, tid) == me:
				// Already ours: the kernel auto-attached it when a seized
				// thread cloned it; its clone event is still queued.
			case err == unix.EPERM && tid != p.pid && exiting(p.pid, tid):
				continue // the kernel refuses to seize exiting threads
			case err == unix.EPERM && tid == p.pid && threadState(p.pid, tid) == 'Z' && len(tids) > 1:
				// The leader called pthread_exit; its threads live on.
				p.threads[tid] = &thread{tid: tid, zombie: true}
				continue
			case err == unix.EPERM:
				if tid == p.pid || len(p.threads) == 0 {
					return explainPerm(p.pid)
				}
				return fmt.Errorf("attach pid %d: seize thread %d: %w", p.pid, tid, err)
			default:
				return fmt.Errorf("attach pid %d: seize thread %d: %w", p.pid, tid, err)
			}
			p.threads[tid] = &thread{tid: tid}
			added++
		}
		p.poll()
		if p.exited != nil {
			return p.exited
		}
		if len(p.threads) == 0 {
			return fmt.Errorf("attach pid %d: %w", p.pid, ErrNoSuchProcess)
		}
		if added == 0 {
			return nil
		}
		if round > 1000 {
			return fmt.Errorf("attach pid %d: thread list never settled", p.pid)
		}
	}
}

// seizeStragglers seizes and interrupts threads listed in /proc/PID/task
// that are not held yet, and returns how many it found.
func (p *Process) seizeStragglers() (int, error) {
	tids, err := tasks(p.pid)
	if err != nil {
		return 0, p.goneErr("list threads of", err)
	}
	me := unix.Gettid()
	n := 0
	for _, tid := range tids {
		if _, ok := p.threads[tid]; ok {
			continue
		}
		err := ptraceSeize(tid)
		switch {
		case err == nil:
			ptraceInterrupt(tid)
			p.holds.begin(tid, HoldPause)
		case err == unix.EPERM && tracerOf(p.pid, tid) == me:
		case err == unix.ESRCH || (err == unix.EPERM && exiting(p.pid, tid)):
			continue
		default:
			return n, fmt.Errorf("seize new thread %d of pid %d: %w", tid, p.pid, err)
		}
		p.threads[tid] = &thread{tid: tid}
		n++
	}
	return n, nil
}

func exiting(pid, tid int) bool {
	s := threadState(pid, tid)
	return s == 0 || s == 'Z' || s == 'X'
}

// poll collects the state changes of every thread not known to be stopped,
// without blocking. While the process is meant to run, whatever stopped is
// sent on its way again (see release).
func (p *Process) poll() {
	if p.closed {
		return
	}
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t == nil || t.zombie || (t.state != running && !t.listening) {
			continue
		}
		p.collect(t, true)
	}
	if !p.stopped {
		// A poll has no caller to report a failure to. PTRACE_CONT with
		// a valid signal fails only with ESRCH (the thread is going
		// away, and the next poll reaps it); anything else goes
		// unreported here.
		p.release()
	}
}

// collect waits for (nohang: polls) one state change of t and records it.
// It returns false if nothing was pending.
func (p *Process) collect(t *thread, nohang bool) bool {
	wpid, ws, err := wait4(t.tid, nohang)
	if err != nil {
		// ECHILD: the thread was reaped by someone else (the real parent
		// when it is also our process) or is gone.
		p.gone(t.tid, "")
		return true
	}
	if wpid == 0 {
		return false
	}
	p.record(t.tid, ws)
	return true
}

// gone drops a thread that exited; the leader's exit is the process's.
func (p *Process) gone(tid int, how string) {
	delete(p.threads, tid)
	if tid == p.pid || len(p.threads) == 0 {
		if p.exited == nil {
			p.exited = &ProcessExitedError{Pid: p.pid, Status: how}
		}
		return
	}
	// A zombie leader reports its exit once every other thread is
	// reaped: when only it is left, collect that report (or find the
	// process already reaped by its parent).
	if l := p.threads[p.pid]; l != nil && l.zombie && len(p.threads) == 1 {
		if tids, _ := tasks(p.pid); len(tids) <= 1 {
			p.collect(l, false)
		}
	}
}

// record updates the thread table with one wait status.
func (p *Process) record(tid int, ws unix.WaitStatus) {
	t := p.threads[tid]
	if t == nil {
		t = &thread{tid: tid}
		p.threads[tid] = t
	}
	switch {
	case ws.Exited():
		p.gone(tid, fmt.Sprintf("exit status %d", ws.ExitStatus()))
	case ws.Signaled():
		p.gone(tid, fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal()))
	case ws.Stopped():
		t.listening = false
		t.regs = nil
		sig := int(ws.StopSignal())
		switch int(ws) >> 16 {
		case unix.PTRACE_EVENT_CLONE:
			t.state = stopClone
			if msg, err := ptraceEventMsg(tid); err == nil {
				if _, ok := p.threads[int(msg)]; !ok {
					// Auto-attached and heading for its first stop.
					p.threads[int(msg)] = &thread{tid: int(msg)}
				}
			}
		case unix.PTRACE_EVENT_STOP:
			if isStopSignal(sig) {
				t.state = stopGroup
			} else {
				t.state = stopEvent
			}
		case 0:
			t.state = stopSignal
			t.sig = sig
			// A rebuilt (stolen) report: its siginfo is all we know.
			t.info = p.stolenInfo[tid]
			delete(p.stolenInfo, tid)
		default:
			t.state = stopOther
		}
	}
}

func isStopSignal(sig int) bool {
	switch syscall.Signal(sig) {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// release sends every stopped thread on its way while the process is
// meant to run: signals are delivered, group-stops honoured. It returns
// the first failure to continue a thread that still exists (one killed
// meanwhile is not a failure): such a thread stays stopped, and Resume
// must say so rather than report a running process.
func (p *Process) release() error {
	var first error
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t == nil || t.zombie || t.state == running || t == p.lent {
			continue
		}
		if err := p.resumeThread(t); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// resumeThread continues one stopped thread, delivering its pending
// signal. A thread in a job-control group-stop is PTRACE_LISTEN'd
// instead, so the process stays stopped until someone sends SIGCONT.
func (p *Process) resumeThread(t *thread) error {
	sig := p.prepareSignal(t)
	var err error
	op := "continue"
	if t.state == stopGroup {
		op = "listen"
		err = ptraceListen(t.tid)
		t.listening = err == nil
	} else {
		err = ptraceCont(t.tid, sig)
	}
	t.state = running
	t.sig = 0
	t.info = nil
	t.regs = nil
	p.holds.end(t.tid)
	// ESRCH: killed meanwhile (SIGKILL needs no resume); the next poll
	// reaps it.
	if err != nil && err != unix.ESRCH {
		return p.opErr(op, t.tid, err)
	}
	return nil
}

// prepareSignal returns the signal to pass to PTRACE_CONT/DETACH for t.
// Only a signal-delivery-stop can inject one; from an event stop the
// signal is queued again instead (a remote syscall or re-park moved the
// thread out of the stop it had for it), which loses its siginfo: the
// kernel lets no other process queue a signal with a non-negative si_code
// (EPERM), so the handler sees graft's tgkill. In a signal-delivery-stop
// a saved siginfo is put back.
func (p *Process) prepareSignal(t *thread) int {
	p.requeueDeferred(t)
	if t.sig == 0 {
		return 0
	}
	if t.state != stopSignal {
		unix.Tgkill(p.pid, t.tid, syscall.Signal(t.sig))
		return 0
	}
	if t.info != nil && t.info.signo() == t.sig {
		ptraceSetSiginfo(t.tid, t.info)
	}
	return t.sig
}

// tids returns the held thread IDs in order (a copy: callers mutate the map).
func (p *Process) tids() []int {
	out := make([]int, 0, len(p.threads))
	for tid := range p.threads {
		out = append(out, tid)
	}
	sort.Ints(out)
	return out
}

// Stop stops every thread (stop-the-world) and returns once each is in a
// ptrace-stop. Threads created meanwhile are caught and stopped too.
// Stopping a stopped process is a no-op, answered from the snapshot
// without a hand-off to the tracer goroutine (safepoint's check stops
// first, inside the caller's pause).
func (p *Process) Stop() error {
	if p.Stopped() {
		return nil
	}
	return p.do(p.stop)
}

func (p *Process) stop() error {
	if err := p.usable(); err != nil {
		return err
	}
	if p.stopped {
		return nil
	}
	if p.partial {
		return fmt.Errorf("stop pid %d: its threads were released (EndPause)", p.pid)
	}
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t.zombie || (t.state != running && !t.listening) {
			continue
		}
		// ESRCH: exiting; its exit status is collected below.
		ptraceInterrupt(tid)
		p.holds.begin(tid, HoldPause)
	}
	deadline := time.Now().Add(p.stopTimeout)
	for {
		waiting := false
		// The leader last: when the process is dying, its exit is
		// reported only after every other thread has been reaped.
		tids := p.tids()
		if i := sort.SearchInts(tids, p.pid); i < len(tids) && tids[i] == p.pid {
			tids = append(append(tids[:i:i], tids[i+1:]...), p.pid)
		}
		for _, tid := range tids {
			t := p.threads[tid]
			if t == nil || t.zombie || t.state != running {
				continue
			}
			waiting = true
			if p.collect(t, true) {
				p.deliverCaught(t) // signal_stops.go
				continue
			}
			if err := p.awaitStop(t, deadline); err != nil {
				// Never leave the process half stopped.
				if rerr := p.release(); rerr != nil {
					err = errors.Join(err, fmt.Errorf("resume after failed stop: %w", rerr))
				}
				p.unbookRunning()
				return err
			}
			p.deliverCaught(t)
		}
		if p.exited != nil {
			return p.exited
		}
		if waiting {
			// Threads seen for the first time in this pass (clone
			// events) head for their first stop on their own; the next
			// pass waits for them.
			continue
		}
		if p.verified {
			break
		}
		// First stop since Attach: a clone that was already under way
		// when its parent was seized creates a thread the kernel does not
		// attach, and it may have missed Attach's listings. Now that every
		// known thread is stopped, nothing of ours is mid-clone and any
		// such thread is listed: seize and stop it too.
		n, err := p.seizeStragglers()
		if err != nil {
			return err
		}
		if n == 0 {
			p.verified = true
			break
		}
	}
	p.stopped = true
	p.absorbLent()
	for _, t := range p.threads {
		t.early = 0
	}
	// Read every thread's registers now, in this one hand-off: every
	// caller of Stop wants them (unwinding, safety checks), and Regs can
	// then answer from the snapshot.
	for _, tid := range p.tids() {
		if t := p.threads[tid]; !t.zombie {
			if _, err := p.regsOf(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// awaitStop waits until t reports a state change and records it, giving
// up at deadline (see waitRaw). A zombie leader, which reports nothing
// until every other thread is reaped, is marked and not waited for.
func (p *Process) awaitStop(t *thread, deadline time.Time) error {
	ws, err := p.waitRaw(t, deadline, true)
	if err == errZombieLeader {
		t.zombie = true
		if len(p.threads) == 1 {
			p.gone(-1, "")
		}
		return nil
	}
	if err == errTimedOut {
		return p.stopTimeoutErr()
	}
	if err != nil {
		p.gone(t.tid, "") // ECHILD: reaped by someone else
		return nil
	}
	p.record(t.tid, ws)
	return nil
}

var (
	errZombieLeader = errors.New("zombie leader")
	errTimedOut     = errors.New("timed out")
)

// waitRaw waits for t's next wait status without blocking in wait4:
// WNOHANG polls, yielding the CPU for the first 2 ms (a thread interrupted
// in user space or an interruptible sleep stops within microseconds), then
// sleeping until SIGCHLD or 1 ms. So it cannot hang: it returns
// errTimedOut at deadline (a thread in uninterruptible sleep), and it
// notices reports that will never come:
//
//   - errZombieLeader (only if leaderCheck): a leader that called
//     pthread_exit, or whose process is dying, reports nothing until every
//     other thread is reaped;
//   - a stop whose report another thread of this process consumed: a wait
//     by the target's real parent is, for the kernel, a ptrace wait when
//     the parent's process is also the tracer (an exec.Cmd.Wait in the
//     program embedding tracer). The thread is in a ptrace-stop that
//     PTRACE_GETSIGINFO describes, and waitRaw rebuilds its status.
func (p *Process) waitRaw(t *thread, deadline time.Time, leaderCheck bool) (unix.WaitStatus, error) {
	start := time.Now()
	for {
		wpid, ws, err := wait4(t.tid, true)
		if err != nil {
			return 0, err
		}
		if wpid != 0 {
			return ws, nil
		}
		since := time.Since(start)
		if since < 2*time.Millisecond {
			yield()
			continue
		}
		if leaderCheck && t.tid == p.pid && threadState(p.pid, t.tid) == 'Z' {
			return 0, errZombieLeader
		}
		if since > 20*time.Millisecond {
			if ws, ok := p.stolenStatus(t.tid); ok {
				return ws, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, errTimedOut
		}
		select {
		case <-p.sigc:
		case <-time.After(time.Millisecond):
		}
	}
}

// stolenStatus rebuilds the wait status of a thread that sits in a
// ptrace-stop whose report someone else consumed (see waitRaw).
func (p *Process) stolenStatus(tid int) (unix.WaitStatus, bool) {
	if threadState(p.pid, tid) != 't' {
		return 0, false
	}
	si, err := ptraceGetSiginfo(tid)
	if err != nil {
		return 0, false // not in a ptrace-stop (listening, running)
	}
	// The stop is fully set up once GETSIGINFO works: if its report were
	// still there, this would see it.
	if wpid, ws, err := wait4(tid, true); err == nil && wpid != 0 {
		return ws, true
	}
	code, signo := si.code(), si.signo()
	// A ptrace event stop's siginfo carries the wait status's upper bits
	// in si_code: SIGTRAP (or the stop signal) | event<<8.
	if signo == int(unix.SIGTRAP) && code == signo|0x80 {
		return unix.WaitStatus(code<<8 | 0x7f), true // a syscall-stop
	}
	if code > 0 && code&0xff == signo && code>>8 != 0 {
		return unix.WaitStatus(code<<8 | 0x7f), true
	}
	if signo > 0 && signo < 65 {
		p.stolenInfo[tid] = si
		return unix.WaitStatus(signo<<8 | 0x7f), true
	}
	return 0, false
}

// stopTimeoutErr names the threads that did not stop, with their state.
func (p *Process) stopTimeoutErr() error {
	var late []string
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t.zombie || t.state != running {
			continue
		}
		st := ThreadState(p.pid, tid)
		what := ""
		if st == "D" {
			what = ", uninterruptible sleep"
		}
		late = append(late, fmt.Sprintf("tid %d (state %s%s)", tid, st, what))
	}
	return fmt.Errorf("stop pid %d: %w within %v: %s; the process was resumed",
		p.pid, ErrStopTimeout, p.stopTimeout, strings.Join(late, ", "))
}

// SetStopTimeout sets how long Stop waits for a thread to stop (default
// DefaultStopTimeout).
func (p *Process) SetStopTimeout(d time.Duration) {
	p.do(func() error { p.stopTimeout = d; return nil })
}

// Resume lets every thread run again. Signals that arrived while the
// process was stopped are delivered; a job-control stop stays in force.
func (p *Process) Resume() error { return p.do(p.resume) }

func (p *Process) resume() error {
	if err := p.usable(); err != nil {
		return err
	}
	if !p.stopped {
		return nil
	}
	p.stopped = false
	return p.release()
}

// Stopped reports whether the process is held stopped by Stop.
func (p *Process) Stopped() bool {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	return p.snap.stopped
}

// Threads returns the sorted IDs of the threads currently held.
func (p *Process) Threads() []int {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	return append([]int(nil), p.snap.tids...)
}

// stoppedThread returns thread tid, checking that the process is stopped.
func (p *Process) stoppedThread(tid int) (*thread, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	if !p.stopped {
		return nil, fmt.Errorf("pid %d: %w", p.pid, ErrNotStopped)
	}
	t := p.threads[tid]
	if t == nil || t.zombie {
		return nil, fmt.Errorf("tid %d in pid %d: %w", tid, p.pid, ErrNoThread)
	}
	return t, nil
}

// Regs returns the registers of a thread. Precondition: stopped. Stop
// reads every thread's registers, so this is normally a lookup.
func (p *Process) Regs(tid int) (Regs, error) {
	p.snapMu.Lock()
	r, ok := p.snap.regs[tid]
	p.snapMu.Unlock()
	if ok {
		return r, nil
	}
	err := p.do(func() error {
		t, err := p.stoppedThread(tid)
		if err != nil {
			return err
		}
		r, err = p.regsOf(t)
		return err
	})
	return r, err
}

func (p *Process) regsOf(t *thread) (Regs, error) {
	if t.regs != nil {
		return *t.regs, nil
	}
	r, err := ptraceGetRegs(t.tid)
	if err != nil {
		return Regs{}, p.opErr("read registers", t.tid, err)
	}
	t.regs = &r
	return r, nil
}

// SetRegs replaces the registers of a thread. Precondition: stopped.
//
// A thread stopped inside an interrupted system call (OrigRax >= 0, Rax
// one of -ERESTARTSYS -512, -ERESTARTNOINTR -513, -ERESTARTNOHAND -514,
// -ERESTART_RESTARTBLOCK -516) gets its call restarted when it resumes: the
// kernel moves Rip back two bytes and reloads Rax. To send such a thread
// elsewhere instead, set OrigRax to -1 (^uint64(0)).
func (p *Process) SetRegs(tid int, r Regs) error {
	return p.do(func() error {
		t, err := p.stoppedThread(tid)
		if err != nil {
			return err
		}
		if err := ptraceSetRegs(tid, r); err != nil {
			t.regs = nil
			return p.opErr("write registers", tid, err)
		}
		t.regs = &r
		return nil
	})
}

// opErr turns the error of a ptrace request on tid into a useful one.
// ESRCH on a thread we hold means it was killed: only SIGKILL takes a
// thread out of a ptrace-stop, and SIGKILL kills the whole process (or an
// exec by another thread replaced it).
func (p *Process) opErr(op string, tid int, err error) error {
	if err == unix.ESRCH {
		if p.dying() {
			return p.exited
		}
		return fmt.Errorf("%s of tid %d in pid %d: thread exited: %w", op, tid, p.pid, ErrNoThread)
	}
	return fmt.Errorf("%s of tid %d in pid %d: %w", op, tid, p.pid, err)
}

// dying reaps what exited and reports whether the process is gone,
// giving a process being killed a moment to finish dying: its threads
// exit one by one, the leader's report comes last.
func (p *Process) dying() bool {
	deadline := time.Now().Add(time.Second)
	for {
		for _, tid := range p.tids() {
			if t := p.threads[tid]; t != nil {
				p.collect(t, true)
			}
		}
		if p.exited != nil {
			return true
		}
		if processGone(p.pid) {
			p.exited = &ProcessExitedError{Pid: p.pid}
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// goneErr explains a failed /proc read: the process is gone, or not.
func (p *Process) goneErr(op string, err error) error {
	if errors.Is(err, os.ErrNotExist) || processGone(p.pid) {
		if p.exited == nil {
			p.exited = &ProcessExitedError{Pid: p.pid}
		}
		return p.exited
	}
	return fmt.Errorf("%s pid %d: %w", op, p.pid, err)
}

// Close detaches from every thread and leaves the process running (or
// job-control stopped, if it was), delivering any signal that arrived
// while it was held. Close is idempotent and safe to call from a deferred
// function after a panic; a process that exited meanwhile is not an error.
func (p *Process) Close() error {
	err := p.do(p.detach)
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	<-p.quit
	p.closeMem()
	return err
}

// detach stops the world (PTRACE_DETACH needs a ptrace-stopped tracee),
// then detaches every thread with its pending signal, if any.
func (p *Process) detach() error {
	if p.closed {
		return fmt.Errorf("pid %d: %w", p.pid, ErrClosed)
	}
	if p.exited != nil {
		p.closed = true // the loop ends after this request
		return nil
	}
	if p.partial {
		return p.detachPartial()
	}
	serr := p.stop()
	p.closed = true
	if p.exited != nil {
		return nil
	}
	var first error
	for _, tid := range p.tids() {
		t := p.threads[tid]
		if t.zombie || t.state == running {
			// A zombie leader cannot be detached; a thread that never
			// stopped (serr != nil) cannot either. Both are released by
			// the kernel when this goroutine's thread exits.
			continue
		}
		sig := p.prepareSignal(t)
		p.holds.end(tid)
		if err := ptraceDetach(tid, sig); err != nil && err != unix.ESRCH && first == nil {
			first = fmt.Errorf("detach tid %d of pid %d: %w", tid, p.pid, err)
		}
	}
	p.threads = map[int]*thread{}
	if serr != nil && first == nil {
		first = fmt.Errorf("detach pid %d: %w", p.pid, serr)
	}
	return first
}
