#!/usr/bin/env python3
"""What a cgroup costs a start (issue 18): `pm-start NAME --grace 0 -- sleep 1000` with a
cgroup per service and with `--no-cgroup`, interleaved (one of each per round, so load
drifts hit both alike), each followed by its pm-stop (not timed). Run as root on a host
with a writable cgroup2 hierarchy, from the repository root, after
`cargo build --release --workspace`:

    bench/start-cost.py [ROUNDS]            # services born in their cgroups (clone3)
    PM_CLONE3=off bench/start-cost.py       # the fallback: fork, then a move into the cgroup
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    state = tempfile.mkdtemp(prefix="pm-start-cost-")
    env = dict(os.environ, PM_STATE_DIR=state)
    times = {"cgroup": [], "--no-cgroup": []}
    for i in range(rounds):
        for mode in times:
            name = f"s{i}{'n' if mode == '--no-cgroup' else 'c'}"
            args = [os.path.join(BIN, "pm-start"), name, "--grace", "0"]
            args += ["--no-cgroup"] if mode == "--no-cgroup" else []
            t0 = time.perf_counter()
            subprocess.run(args + ["--", "sleep", "1000"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[mode].append((time.perf_counter() - t0) * 1000)
            subprocess.run([os.path.join(BIN, "pm-stop"), name], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clone3 = os.environ.get("PM_CLONE3", "on")
    for mode, v in times.items():
        v.sort()
        q = lambda p: v[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
        print(f"pm-start, {mode} (PM_CLONE3={clone3}): median {statistics.median(v):.2f} ms, "
              f"p10 {q(0.1):.2f}, p90 {q(0.9):.2f}, min {v[0]:.2f}, max {v[-1]:.2f} (n={len(v)})")
    c, n = (statistics.median(times[m]) for m in times)
    print(f"cgroup − --no-cgroup: {c - n:+.2f} ms (medians)")
    subprocess.run(["rm", "-rf", state])


if __name__ == "__main__":
    main()
