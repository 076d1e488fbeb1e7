package tracer

import "errors"

// BareCycle stops every thread, reads every thread's registers and resumes
// them: the floor any ptrace patcher pays for a pause. graft's benchmarks
// report the pause of apply, the cost of unwinding and the like as ratios
// to this one operation, measured in the same run.
func (p *Process) BareCycle() error {
	if err := p.Stop(); err != nil {
		return err
	}
	for _, tid := range p.Threads() {
		if _, err := p.Regs(tid); err != nil {
			return errors.Join(err, p.Resume())
		}
	}
	return p.Resume()
}
