#!/usr/bin/env python3
"""pm-status --json over N services (default 1000 `sleep`), interleaved between builds.

usage: bench/status-1000.py RUNS PM-STATUS... (the first pm-status's tree's pm-start makes
the services, in a state dir of their own; every one is stopped at the end)

Each run is wall time from spawn to exit (CLOCK_MONOTONIC); the order of the binaries is
swapped every round. Prints median, p10 and p90 per binary."""
import os, statistics, subprocess, sys, tempfile, time

runs, bins = int(sys.argv[1]), sys.argv[2:]
n = int(os.environ.get("SERVICES", "1000"))
tools = os.path.dirname(os.path.abspath(bins[0]))
state = tempfile.mkdtemp(prefix="pm-bench-status-")
env = dict(os.environ, PM_STATE_DIR=state)
try:
    for i in range(n):
        subprocess.run([os.path.join(tools, "pm-start"), f"s{i}", "--grace", "0", "--",
                        "sleep", "100000"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = {b: [] for b in bins}
    for r in range(runs):
        for b in (bins if r % 2 == 0 else bins[::-1]):
            t = time.perf_counter()
            subprocess.run([b, "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
            times[b].append((time.perf_counter() - t) * 1000)
    for b in bins:
        v = sorted(times[b])
        print(f"{b}: median {statistics.median(v):.1f} ms "
              f"(p10 {v[len(v) // 10]:.1f}, p90 {v[len(v) * 9 // 10]:.1f}, n={len(v)})")
finally:
    subprocess.run([os.path.join(tools, "pm-stopall")], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
