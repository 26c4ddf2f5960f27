#!/usr/bin/python3
"""A prompt child subreaper, as init is on a normal host.

Usage: reaper.py COMMAND [ARG]...
Marks itself PR_SET_CHILD_SUBREAPER, runs COMMAND, and reaps every process that is
reparented to it the moment it exits (a blocking wait(), no polling), until COMMAND exits;
then it exits with COMMAND's status. SIGINT/SIGTERM/SIGHUP are passed on to COMMAND.
"""
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"reaper: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}\n")
        return 1
    child = os.fork()
    if child == 0:
        try:
            os.execvp(sys.argv[1], sys.argv[1:])
        finally:
            os._exit(127)

    def forward(sig, _frm):
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, forward)
    code = None
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            # Orphans still alive are reaped as they go; but do not outlive the bench:
            # stop waiting once no child is left.
            if code < 0:
                code = 128 - code
            # keep reaping whatever remains without blocking on long-lived leftovers
            break
    # Reap any zombie left right now, then exit (leftovers are reparented to init).
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return code if code is not None else 1


if __name__ == "__main__":
    sys.exit(main())
