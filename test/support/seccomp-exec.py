#!/usr/bin/python3
"""Runs a program under a system-call allow list, as systemd's SystemCallFilter= does.

    seccomp-exec.py ALLOWLIST_FILE PROGRAM [ARGS...]

Every system call not named in ALLOWLIST_FILE (whitespace-separated names) fails with EPERM, as with
SystemCallErrorNumber=EPERM; only the native architecture is allowed (SystemCallArchitectures=native).
Needs Debian's python3-seccomp. Names this libseccomp does not know are skipped.
"""
import errno
import os
import sys

import seccomp

allow_file, program = sys.argv[1], sys.argv[2]
with open(allow_file, encoding="ascii") as f:
    names = f.read().split()

flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for name in names:
    try:
        flt.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError, OSError):
        pass  # not a system call on this architecture or unknown to this libseccomp
flt.load()
os.execv(program, sys.argv[2:])
