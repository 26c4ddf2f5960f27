#!/usr/bin/python3
"""Bench service: a TCP server on 127.0.0.1:PORT.

Usage: tcp_ready.py PORT STAMP_FILE
Writes the moment it starts listening (CLOCK_MONOTONIC, ns) to STAMP_FILE, then accepts and
closes connections until killed. A short warm-up (50 ms) precedes listen() so a readiness
checker has to wait for it.
"""
import os
import socket
import sys
import time

port, stamp = int(sys.argv[1]), sys.argv[2]
time.sleep(0.05)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
with open(stamp, "w") as f:
    f.write("%d\n" % t)
while True:
    c, _ = s.accept()
    c.close()
