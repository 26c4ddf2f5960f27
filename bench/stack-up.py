#!/usr/bin/env python3
"""What pm-up costs over the readiness it waits for (issue 19): a stack of N services that
each become ready D after they start (a `file:` check on a file the service touches after
`sleep D`), either independent (floor: D, as all start at once) or chained, each needing
the one before (floor: N x D). pm-up's time minus the floor is its own overhead: process
starts, records, cgroups, readiness polling. Each run is followed by pm-down (not timed).
From the repository root, after `cargo build --release --workspace`:

    bench/stack-up.py [RUNS] [N] [D]        # defaults: 5 runs, 20 services, 0.2 s
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")


def stack(n, delay, chained):
    out = []
    for i in range(n):
        out.append(f"[services.s{i}]")
        out.append(f'command = "sleep {delay}; touch s{i}.ready; exec sleep 1000"')
        out.append(f'ready = "file:s{i}.ready"')
        if chained and i > 0:
            out.append(f'needs = ["s{i - 1}"]')
        out.append("")
    return "\n".join(out)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
    for chained in (False, True):
        floor = delay * (n if chained else 1)
        over = []
        for _ in range(runs):
            d = tempfile.mkdtemp(prefix="pm-stack-bench-")
            env = dict(os.environ, PM_STATE_DIR=os.path.join(d, "state"))
            with open(os.path.join(d, "pm.toml"), "w") as f:
                f.write(stack(n, delay, chained))
            t = time.monotonic()
            subprocess.run([os.path.join(BIN, "pm-up")], cwd=d, env=env, check=True,
                           stderr=subprocess.DEVNULL)
            over.append((time.monotonic() - t - floor) * 1000)
            subprocess.run([os.path.join(BIN, "pm-down")], cwd=d, env=env, check=True,
                           stderr=subprocess.DEVNULL)
        q = statistics.quantiles(over, n=4) if len(over) > 1 else [over[0]] * 3
        kind = "chained" if chained else "independent"
        print(f"{n} {kind:11} floor {floor * 1000:6.0f} ms  pm-up over the floor: "
              f"median {statistics.median(over):6.1f} ms  (q1 {q[0]:.1f}, q3 {q[2]:.1f}, "
              f"min {min(over):.1f}, max {max(over):.1f}; {runs} runs)")


if __name__ == "__main__":
    main()
