#!/usr/bin/python3
"""Bench service: exits DELAY seconds after SIGTERM (0 = at once).

Usage: sigsvc.py READY_FILE STAMP_FILE DELAY
Writes READY_FILE once its TERM handler is installed; on TERM waits DELAY seconds, writes
its own exit moment (CLOCK_MONOTONIC, ns) to STAMP_FILE and exits 0. SIGCONT is harmless.
"""
import os
import signal
import sys
import time

ready, stamp, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])


def on_term(_sig, _frm):
    if delay > 0:
        time.sleep(delay)
    t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"%d\n" % t)
    os.close(fd)
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
with open(ready + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(ready + ".tmp", ready)
while True:
    signal.pause()
