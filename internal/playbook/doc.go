// Package playbook runs a patch playbook on this host: a YAML file that
// names a patch, the processes it is for, how to roll it out (batches in
// Ansible's `serial` sense, a canary first), and the checks that decide
// whether a batch is healthy.
//
// Parse reads the file into a yaml.Node tree and validates it node by node,
// so every error names file:line:col and nothing runs on a file with any
// error (unknown keys included). Run then:
//
//  1. opens the patch once (`patch.new`: NEW's build-id; `patch.file`: the
//     patch file, read and checked), before any process is looked at; a
//     `patch.new` is diffed once per OLD build met (against the executable,
//     or the NEW of the newest patch in effect), into a temporary patch file
//     that every process of that build gets;
//  2. before each batch, resolves the selectors again over /proc (exe by
//     inode, pid, pidfile, comm glob, systemd MainPID, build-id read from
//     the process's memory) and adds the forked children of every target;
//     a target seen before that is no longer there is GONE;
//  3. per target of the batch: baseline checks (a failure marks the target
//     SKIPPED_UNHEALTHY: it is never patched), then graft.Apply, then the
//     checks again; a failure (busy, failed, a check failing afterwards)
//     ends the rollout: with `on_failure: rollback` every process this run
//     patched is reverted (graft.Revert of the patch id it recorded), and
//     later batches are never touched;
//  4. with `rollout.follow`, keeps resolving for a bounded time and patches
//     processes of the OLD build that started meanwhile.
//
// Every target ends with exactly one Outcome, so the recap's counts add up
// to the number of targets. Checks substitute ${pid}, ${port} (the
// target's lowest listening TCP port, read in its own network namespace)
// and the playbook's vars.
//
// The package prints nothing itself: progress goes through Options.Progress
// and the result is a Report.
package playbook
