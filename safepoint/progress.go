package safepoint

import "time"

// Waiting is what WaitSafe reports, about once a second, while it waits:
// how long it has waited, how long until it gives up, and the check that
// failed last (an *ActiveError: the thread, function and frame in the way).
type Waiting struct {
	Elapsed, Left time.Duration
	Checks        int
	Blocker       error
}

// progressEvery is how often Spec.Progress is called.
const progressEvery = time.Second

// reportProgress calls s.Progress if a second has passed since *last.
func (s Spec) reportProgress(last *time.Time, start, deadline, now time.Time, checks int, cerr error) {
	if s.Progress == nil || now.Sub(*last) < progressEvery {
		return
	}
	*last = now
	s.Progress(Waiting{Elapsed: now.Sub(start), Left: deadline.Sub(now), Checks: checks, Blocker: cerr})
}
