#!/usr/bin/python3
"""Bench service: tells its supervisor it is ready, after a 50 ms warm-up.

Usage: notify_ready.py STAMP_FILE [FD]
With FD (s6's notification-fd): writes a newline to FD. Without: sends READY=1 to the
sd_notify socket in $NOTIFY_SOCKET. The moment just before it notifies (CLOCK_MONOTONIC, ns)
goes to STAMP_FILE. Then it idles until killed.
"""
import os
import signal
import socket
import sys
import time

stamp = sys.argv[1]
fd = int(sys.argv[2]) if len(sys.argv) > 2 else None
time.sleep(0.05)
with open(stamp, "w") as f:
    f.write("%d\n" % time.clock_gettime_ns(time.CLOCK_MONOTONIC))
if fd is not None:
    os.write(fd, b"\n")
    os.close(fd)
else:
    path = os.environ["NOTIFY_SOCKET"]
    if path.startswith("@"):
        path = "\0" + path[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", path)
    s.close()
while True:
    signal.pause()
