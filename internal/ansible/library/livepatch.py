#!/usr/bin/python3
# -*- coding: utf-8 -*-
# Ansible module: live-patch running processes on the managed host with the
# graft command (graft play PLAYBOOK, or graft apply -p PID).
# The file is not named after graft because paths in this repository may not
# contain that word (a test quirk); the module is called livepatch.

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: livepatch
short_description: Live-patch running processes with graft
description:
  - Runs C(graft play PLAYBOOK --json) (a patch playbook run on this host:
    targets, canary batches, checks, rollback) or C(graft apply -p PID --json)
    on the managed host and reports per host whether anything changed.
  - Rolling out across hosts is left to Ansible itself: use the play's
    C(serial) and C(max_fail_percentage); graft's own batches work within a
    host.
  - Check mode runs C(graft play --check) (resolve targets, build the patch,
    run the baseline checks, write nothing) or C(graft apply --dry-run).
options:
  playbook:
    description: Path of a graft playbook on the managed host. Mutually
      exclusive with I(pid).
    type: path
  pid:
    description: Process to patch with C(graft apply); needs I(patch_file)
      or I(new).
    type: int
  patch_file:
    description: Patch file from C(graft diff -o) (with I(pid)).
    type: path
  new:
    description: NEW binary to diff against what the process runs (with
      I(pid)).
    type: path
  state_description:
    description: With I(new), the operator's state description, the rules
      for globals whose layout changed, as C(graft diff --state). Named so
      that it does not read as Ansible's usual C(state).
    type: path
  timeout:
    description: Safe-point wait for C(graft apply) (e.g. C(5s)).
    type: str
  binary:
    description: The graft executable on the managed host.
    type: path
    default: graft
'''

EXAMPLES = r'''
- hosts: kvs
  serial: 1                 # one host at a time
  max_fail_percentage: 0
  tasks:
    - name: roll the kvs 2.0 fix out on this host
      livepatch:
        playbook: /etc/kvs/patch-2.0.yaml
      register: patched

- hosts: kvs
  tasks:
    - name: patch one process
      livepatch:
        pid: "{{ kvs_pid }}"
        patch_file: /srv/fix.graft
'''

RETURN = r'''
rc:
  description: graft's exit status (graft play - 0 all patched or already,
    1 invalid playbook, 2 failed and rolled back, 3 rollback failed,
    4 aborted before touching anything, 5 some target skipped as unhealthy).
  type: int
report:
  description: graft play's JSON report (targets with their outcome,
    counts, failure), or graft apply's JSON result.
  type: dict
counts:
  description: Outcome counts of graft play (APPLIED, ALREADY_APPLIED, ...).
  type: dict
'''

import json
import struct

from ansible.module_utils.basic import AnsibleModule


def elf_build_id(path):
    """The GNU build-id of an ELF file (hex), from its PT_NOTE segments;
    None when there is none."""
    with open(path, 'rb') as f:
        eh = f.read(64)
        if len(eh) < 64 or eh[:4] != b'\x7fELF' or eh[4] != 2 or eh[5] != 1:
            return None
        phoff, = struct.unpack_from('<Q', eh, 32)
        phentsize, phnum = struct.unpack_from('<HH', eh, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ptype, _, off, _, _, filesz = struct.unpack('<IIQQQQ', f.read(40))
            if ptype != 4:  # PT_NOTE
                continue
            f.seek(off)
            notes = f.read(filesz)
            while len(notes) >= 12:
                namesz, descsz, ntype = struct.unpack_from('<III', notes)
                name_end = 12 + ((namesz + 3) & ~3)
                desc_end = name_end + ((descsz + 3) & ~3)
                if ntype == 3 and notes[12:12 + namesz].rstrip(b'\0') == b'GNU':
                    return notes[name_end:name_end + descsz].hex()
                notes = notes[desc_end:]
    return None


def parse_json(text):
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def run_play(module, binary):
    cmd = [binary, 'play', '--json']
    if module.check_mode:
        cmd.append('--check')
    cmd.append(module.params['playbook'])
    rc, out, err = module.run_command(cmd)
    report = parse_json(out)
    result = dict(rc=rc, cmd=cmd, stderr=err, report=report, changed=False)
    if report is None:
        module.fail_json(msg='graft play printed no report (exit %d): %s' % (rc, err.strip()), **result)
    counts = report.get('counts') or {}
    result['counts'] = counts
    # Something changed on this host if a process now runs the patch
    # because of this run (or, in check mode, would).
    if module.check_mode:
        result['changed'] = counts.get('WOULD_APPLY', 0) > 0
    else:
        result['changed'] = any(
            t.get('patched') and t.get('outcome') != 'ALREADY_APPLIED'
            for t in report.get('targets', []))
    summary = ' '.join('%s=%d' % (k.lower(), v) for k, v in sorted(counts.items()) if v)
    if rc != 0:
        why = report.get('failure') or report.get('aborted') or ''
        module.fail_json(msg='graft play exit %d: %s %s' % (rc, summary, why), **result)
    result['msg'] = summary or 'no targets'
    module.exit_json(**result)


def run_apply(module, binary):
    p = module.params
    if bool(p['patch_file']) == bool(p['new']):
        module.fail_json(msg='with pid, give exactly one of patch_file or new')
    if p['state_description'] and not p['new']:
        module.fail_json(msg='state_description goes with new: a patch file carries the rules it was made with')
    # Already in effect? The newest patch in the process (graft status)
    # already brings the NEW build this apply would bring.
    if p['new']:
        want = elf_build_id(p['new'])
    else:
        rc, out, err = module.run_command([binary, 'show', '--json', p['patch_file']])
        shown = parse_json(out) if rc == 0 else None
        if shown is None:
            module.fail_json(msg='graft show %s: %s' % (p['patch_file'], err.strip()), rc=rc)
        want = shown.get('new_build_id')
    rc, out, err = module.run_command([binary, 'status', '-p', str(p['pid']), '--json'])
    status = parse_json(out) if rc == 0 else None
    if status is None:
        module.fail_json(msg='graft status -p %s: %s' % (p['pid'], err.strip()), rc=rc)
    patches = status.get('patches') or []
    if want and patches and patches[-1].get('new_build_id') == want:
        module.exit_json(changed=False, rc=0, status=status,
                         msg='pid %s already runs build %s (patch %s)' % (p['pid'], want, patches[-1].get('id')))

    cmd = [binary, 'apply', '-p', str(p['pid']), '--json']
    if p['timeout']:
        cmd += ['--timeout', p['timeout']]
    if module.check_mode:
        cmd.append('--dry-run')
    if p['new']:
        cmd += ['--new', p['new']]
        if p['state_description']:
            cmd += ['--state', p['state_description']]
    else:
        cmd.append(p['patch_file'])
    rc, out, err = module.run_command(cmd)
    result = dict(rc=rc, cmd=cmd, stderr=err, report=parse_json(out), changed=False)
    if rc == 0:
        result['changed'] = True
        module.exit_json(msg='patched pid %s' % p['pid'] if not module.check_mode else 'would patch pid %s' % p['pid'], **result)
    if 'already in effect' in err:
        # Applied meanwhile: nothing to do, not a failure.
        module.exit_json(msg='pid %s already runs the patch' % p['pid'], **result)
    module.fail_json(msg='graft apply exit %d: %s' % (rc, err.strip()), **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            playbook=dict(type='path'),
            pid=dict(type='int'),
            patch_file=dict(type='path'),
            new=dict(type='path'),
            state_description=dict(type='path'),
            timeout=dict(type='str'),
            binary=dict(type='path', default='graft'),
        ),
        mutually_exclusive=[('playbook', 'pid')],
        required_one_of=[('playbook', 'pid')],
        supports_check_mode=True,
    )
    binary = module.params['binary']
    if '/' not in binary:
        found = module.get_bin_path(binary)
        if not found:
            module.fail_json(msg='%s not found on the managed host (set binary: /path/to/graft)' % binary)
        binary = found
    if module.params['playbook']:
        run_play(module, binary)
    else:
        run_apply(module, binary)


if __name__ == '__main__':
    main()
