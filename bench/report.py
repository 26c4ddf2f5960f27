"""Renders bench/RESULTS.md from the raw numbers that bench/run collects (results.json)."""

MODE_TITLE = {
    "plain": "plain — as is: orphaned services are reaped by this machine's PID 1 (every ~2 s)",
    "reaper": "reaper — under bench/reaper.py, a prompt PR_SET_CHILD_SUBREAPER (as init on a "
              "normal host)",
}
REF = {  # the pm row each table's ratios are taken against
    "1 stop latency": "pm-stop",
    "2 status": "pm-status --json",
    "3 stopall": "pm-stopall --parallel 16",
    "4 start and readiness": None,  # the pm row of the same case
}
PM_TOOLS = ("pm-start", "pm-stop", "pm-status", "pm-stopall")


def f(x, digits=1):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits + 1}f}"


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def med(e, metric):
    s = e.get("stats", {}).get(metric)
    return s["median"] if s else None


def entries(run, scenario):
    return [e for e in run["results"] if e["scenario"] == scenario]


def cases(es):
    seen = []
    for e in es:
        if e["case"] not in seen:
            seen.append(e["case"])
    return seen


def table_time(es, ref_tool, metric="time_ms", extra=()):
    """extra: (header, fn(entry)) columns after the ratio."""
    head = f"| tool | runs | min ms | median ms | p95 ms | ratio to pm |"
    sep = "|---|---:|---:|---:|---:|---:|"
    for h, _ in extra:
        head += f" {h} |"
        sep += "---:|"
    lines = [head, sep]
    ref = None
    for e in es:
        if (ref_tool and e["tool"] == ref_tool) or (not ref_tool and e["tool"].startswith("pm")):
            ref = med(e, metric)
            break
    for e in es:
        s = e["stats"].get(metric)
        if not s:
            continue
        row = (f"| {e['tool']} | {s['n']} | {f(s['min'])} | {f(s['median'])} | {f(s['p95'])} | "
               f"{ratio(s['median'], ref)} |")
        for _, fn in extra:
            row += f" {fn(e)} |"
        lines.append(row)
    return "\n".join(lines)


def targets(doc):
    """[(target, mode -> (verdict, detail))]"""
    out = []

    def find(run, sc, case, tool):
        for e in run["results"]:
            if e["scenario"] == sc and e["case"].startswith(case) and e["tool"].startswith(tool):
                return e
        return None

    rows = []
    for mode, run in doc["runs"].items():
        res = {}
        pm = find(run, "1 stop latency", "TERM", "pm-stop")
        ssd = find(run, "1 stop latency", "TERM", "start-stop-daemon")
        s6 = find(run, "1 stop latency", "TERM", "s6-svc")
        if pm:
            t, o = med(pm, "time_ms"), med(pm, "overshoot_ms")
            ok = True
            det = [f"pm {f(t)} ms"]
            if ssd:
                ok &= t <= 0.2 * med(ssd, "time_ms")
                det.append(f"{ratio(t, med(ssd, 'time_ms'))} start-stop-daemon")
            if s6:
                ok &= t < med(s6, "time_ms")
                det.append(f"{ratio(t, med(s6, 'time_ms'))} s6")
            ok &= o <= 2.0
            det.append(f"overshoot {f(o)} ms")
            res["stop"] = (ok, ", ".join(det))
        st100 = find(run, "2 status", "100 ", "pm-status --json")
        sv100 = find(run, "2 status", "100 ", "sv status")
        st1000 = find(run, "2 status", "1000 ", "pm-status --json")
        if st100 and sv100:
            a, b = med(st100, "time_ms"), med(sv100, "time_ms")
            res["status100"] = (a <= b, f"pm --json {f(a)} ms vs sv {f(b)} ms ({ratio(a, b)})")
        if st1000 and st100:
            a, b = med(st1000, "time_ms"), med(st100, "time_ms")
            res["status1000"] = (a <= 50 and a / b <= 12,
                                 f"{f(a)} ms at 1000 = {a / b:.1f}× the time at 100")
        p16 = find(run, "3 stopall", "", "pm-stopall --parallel 16")
        if p16 and "100 x" in p16["case"]:
            a = med(p16, "time_ms")
            res["stopall"] = (a < 1000, f"{f(a)} ms")
        tcp = find(run, "4 start and readiness", "tcp", "pm-start")
        ntf = find(run, "4 start and readiness", "READY", "pm-start")
        if tcp:
            a = med(tcp, "after_ready_ms")
            res["tcp"] = (a <= 10, f"{f(a)} ms after the port opened")
        if ntf:
            a = med(ntf, "after_ready_ms")
            res["notify"] = (a <= 2, f"{f(a)} ms after READY=1")
        peaks = {}
        for e in run["results"]:
            for t in PM_TOOLS:
                if e["tool"].split()[0] == t and e["stats"].get("maxrss_kb"):
                    peaks[t] = max(peaks.get(t, 0), e["stats"]["maxrss_kb"]["max"])
        if peaks:
            worst = max(peaks.values())
            res["rss"] = (worst <= 5120, ", ".join(f"{t} {v / 1024:.1f} MB" for t, v in
                                                   sorted(peaks.items())))
        rows.append((mode, res))
    names = [
        ("stop", "stop of a TERM-exiting service ≤ 0.2× start-stop-daemon, faster than s6, "
                 "≤ ~2 ms after the service's exit"),
        ("status100", "`pm-status --json` at 100 services no slower than `sv status` over 100"),
        ("status1000", "`pm-status --json` at 1000: a few tens of ms (≤ 50), linear (≤ 12× the "
                       "time at 100)"),
        ("stopall", "`pm-stopall --parallel 16` over 100 × 0.3 s services < 1 s"),
        ("tcp", "pm-start returns ≤ ~10 ms after the port opens"),
        ("notify", "pm-start returns ≤ ~2 ms after READY=1"),
        ("rss", "each pm tool's peak RSS ≤ 5 MB"),
    ]
    for key, title in names:
        out.append((title, {m: r.get(key) for m, r in rows}))
    return out


def render(doc, analysis12=None, analysis13=None):
    """analysis12, analysis13: hand-written findings for the issue 12 and issue 13 sections
    (bench/analysis-cgroup.md, bench/analysis-supervision.md)."""
    m = doc["machine"]
    runs = doc["runs"]
    L = []
    L.append("# pm benchmark results\n")
    L.append("Generated by `bench/run`" + (" --quick (smoke pass, tiny sizes: not for "
                                           "comparison)" if m.get("quick") else "") +
             f" on {m.get('started', '?')}. Machine: {m.get('cpus')} CPUs, kernel "
             f"{m.get('kernel')}, PID 1 `{m.get('pid1')}`; load average at start "
             f"{' '.join(m.get('loadavg_start', []))}, at end {' '.join(m.get('loadavg_end', []))}"
             f"; wall time {m.get('wall_s')} s.\n")
    ld = m.get("load1_during")
    if ld:
        L.append(f"1-minute load average during the run (sampled every 5 s): min {ld['min']:.2f}, "
                 f"median {ld['median']:.2f}, max {ld['max']:.2f} on {m.get('cpus')} CPUs.\n")
    v = m.get("versions", {})
    L.append("Versions: " + "; ".join(f"{k} {v[k] or 'absent'}" for k in v) +
             (f" (pm tree `{m['pm_commit']}`)" if m.get("pm_commit") else "") + ".\n")
    L.append("All times are wall-clock milliseconds of the command, measured from the bench's "
             "own spawn to its reaped exit (CLOCK_MONOTONIC). `ratio to pm` = the tool's median "
             "÷ pm's median in the same table: above 1× pm is faster. The machine is noisy; "
             "ratios from one run matter, absolute times less so. See README.md.\n")
    L.append("Two modes, both reported: **" + MODE_TITLE["plain"] + "**; and **" +
             MODE_TITLE["reaper"] + "**. The ratios that count are the reaper ones.\n")
    if m.get("notes"):
        L.append(m["notes"] + "\n")
    for u in m.get("updates", []):
        L.append(f"Scenario {', '.join(u['scenarios'])} ({', '.join(u.get('modes', []))} "
                 f"modes) comes from a later run, `{u.get('command')}` on {u.get('started')} "
                 f"(pm tree `{u.get('pm_commit')}`), merged into this one; its section says "
                 f"more.\n")
    L.append(render_s7(doc, analysis13))
    L.append(render_s6(doc, analysis12))
    # The issue 8 scenarios (1-5), where the run has them.
    runs = {mode: {**r, "results": [e for e in r["results"] if e["scenario"] not in (S6, S7)],
                   "errors": [e for e in r.get("errors", [])
                              if e["scenario"] not in (S6, S7)]}
            for mode, r in runs.items()}
    runs = {mode: r for mode, r in runs.items() if r["results"] or r["errors"]}
    if not runs:
        return "\n".join(L) + "\n"
    doc = {**doc, "runs": runs}

    # Targets
    L.append("## Targets (issue 8)\n")
    L.append("| target | " + " | ".join(runs) + " |")
    L.append("|---|" + "---|" * len(runs))
    for title, per in targets(doc):
        cells = []
        for mode in runs:
            r = per.get(mode)
            cells.append("–" if r is None else ("**met**: " if r[0] else "**MISSED**: ") + r[1])
        L.append(f"| {title} | " + " | ".join(cells) + " |")
    L.append("")

    for mode, run in runs.items():
        L.append(f"## Mode: {MODE_TITLE[mode]}\n")
        peers = run.get("peers", {})
        absent = [p for p, ok in peers.items() if not ok]
        if absent:
            L.append("Peers absent (skipped): " + ", ".join(absent) + "\n")

        es = entries(run, "1 stop latency")
        if es:
            L.append("### 1. Stop latency\n")
            L.append("Time of the stop command; overshoot = the command's exit − the service's "
                     "own exit moment (it stamps CLOCK_MONOTONIC just before `_exit`).\n")
            for c in cases(es):
                L.append(f"**{c}**\n")
                ce = [e for e in es if e["case"] == c]
                L.append(table_time(ce, "pm-stop", extra=(
                    ("overshoot median ms", lambda e: f(med(e, "overshoot_ms"))),
                    ("overshoot p95 ms", lambda e: f(e["stats"]["overshoot_ms"]["p95"])))))
                L.append("")

        es = entries(run, "2 status")
        if es:
            L.append("### 2. Status\n")
            L.append("One status call over all running services (`start-stop-daemon` and "
                     "`s6-svstat` have no multi-service form: a shell loop, one call each). "
                     "Ratios against `pm-status --json`.\n")
            for c in cases(es):
                n = int(c.split()[0])
                L.append(f"**{c}**\n")
                ce = [e for e in es if e["case"] == c]
                L.append(table_time(ce, "pm-status --json", extra=(
                    ("µs per service", lambda e, n=n: f(med(e, "time_ms") * 1000 / n)),)))
                L.append("")
            # growth
            tools = []
            for e in es:
                if e["tool"] not in tools:
                    tools.append(e["tool"])
            sizes = [c for c in cases(es)]
            L.append("Growth (median ms by number of services; slope = extra ms per service "
                     "between the two largest sizes):\n")
            L.append("| tool | " + " | ".join(sizes) + " | slope ms/service | largest ÷ "
                     "second |")
            L.append("|---|" + "---:|" * (len(sizes) + 2))
            for t in tools:
                vals = []
                for c in sizes:
                    e = next((x for x in es if x["tool"] == t and x["case"] == c), None)
                    vals.append(med(e, "time_ms") if e else None)
                ns = [int(c.split()[0]) for c in sizes]
                slope = grow = None
                if len(vals) >= 2 and vals[-1] is not None and vals[-2] is not None:
                    slope = (vals[-1] - vals[-2]) / (ns[-1] - ns[-2])
                    grow = vals[-1] / vals[-2] if vals[-2] else None
                L.append(f"| {t} | " + " | ".join(f(x) for x in vals) +
                         f" | {f(slope, 3)} | {f(grow)} |")
            L.append("")

        es = entries(run, "3 stopall")
        if es:
            L.append("### 3. Stop all\n")
            ce = es
            L.append(f"**{ce[0]['case']}** — ratios against `pm-stopall --parallel 16`.\n")
            L.append(table_time(ce, "pm-stopall --parallel 16",
                                extra=(("note", lambda e: e.get("note", "")),)))
            L.append("")

        es = entries(run, "4 start and readiness")
        if es:
            L.append("### 4. Start and readiness\n")
            L.append("`after ready` = the start command's exit − the service's own ready "
                     "moment (it stamps CLOCK_MONOTONIC right after `listen()` / just before "
                     "sending READY=1); every service warms up 50 ms first. `start` = the whole "
                     "start command.\n")
            for c in cases(es):
                L.append(f"**{c}**\n")
                ce = [e for e in es if e["case"] == c]
                L.append(table_time(ce, None, metric="after_ready_ms", extra=(
                    ("start median ms", lambda e: f(med(e, "time_ms"))),)))
                L.append("")

        L.append("### 5. Cost\n")
        peaks = {}
        for e in run["results"]:
            for t in PM_TOOLS:
                if e["tool"].split()[0] == t and e["stats"].get("maxrss_kb"):
                    s = e["stats"]["maxrss_kb"]
                    p = peaks.setdefault(t, [0, 0, []])
                    p[0] = max(p[0], s["max"])
                    p[2].append(f"{e['scenario'][2:]}/{e['case']}")
        if peaks:
            L.append("Peak RSS of each pm tool over every run above (getrusage `ru_maxrss` of "
                     "the reaped process):\n")
            L.append("| tool | peak RSS MB | ≤ 5 MB |")
            L.append("|---|---:|---|")
            for t in PM_TOOLS:
                if t in peaks:
                    L.append(f"| {t} | {peaks[t][0] / 1024:.2f} | "
                             f"{'yes' if peaks[t][0] <= 5120 else '**no**'} |")
            L.append("")
        es = entries(run, "5 cost")
        if es:
            L.append("Resident memory a running service costs in its supervisor (the "
                     "supervisor processes' total ÷ number of services; PSS shares libraries "
                     "fairly between processes). pm has no daemon: 0.\n")
            L.append("| services | supervisor | processes | RSS kB per service | PSS kB per "
                     "service | RSS kB total |")
            L.append("|---|---|---:|---:|---:|---:|")
            for e in es:
                g = lambda k: e["stats"][k]["median"] if e["stats"].get(k) else None
                L.append(f"| {e['case'].split('(')[-1].rstrip(')')} | {e['tool']} | "
                         f"{f(g('processes'))} | {f(g('rss_kb_per_service'))} | "
                         f"{f(g('pss_kb_per_service'))} | {f(g('rss_kb_total'))} |")
            L.append("")
        errs = run.get("errors", [])
        if errs:
            L.append("### Failed measurements\n")
            for e in errs:
                L.append(f"- {e['scenario']} / {e['case']} / {e['tool']}: "
                         f"`{e['error'][:300].strip()}`")
            L.append("")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------- issue 12

S6 = "6 cgroup stop"
S6_KINDS = (
    ("a", "(a) simple service (`sleep`)"),
    ("b", "(b) leader SIGKILLed, its worker left"),
    ("c", "(c) a worker in its own session (`setsid`)"),
    ("all", "pm-stopall over one of each (a)+(b)+(c)"),
)
S6_TOOLS = (("pm-start", "start_rss_kb"), ("pm-stop", "stop_rss_kb"),
            ("pm-status", "status_rss_kb"), ("pm-stopall", "stopall_rss_kb"))
RSS_LIMIT_KB = 5 * 1024


def s6_run_info(doc):
    """The machine/run facts of the run that produced scenario 6 (a merged --only run, or
    the whole run)."""
    for u in reversed(doc["machine"].get("updates", [])):
        if "6" in u.get("scenarios", []):
            return u
    return doc["machine"]


def s6_cells(run):
    """{(kind, tracking, idle): entry} and the two host sizes (0 and the crowd)."""
    cells, sizes = {}, set()
    for e in entries(run, S6):
        if "kind" in e:
            cells[(e["kind"], e["tracking"], e["idle"])] = e
            sizes.add(e["idle"])
    return cells, sorted(sizes)


def stat(e, metric, key="median"):
    s = e.get("stats", {}).get(metric) if e else None
    return s[key] if s else None


def spread(e, metric):
    """`median (p10–p90)`."""
    s = e.get("stats", {}).get(metric) if e else None
    if not s:
        return "–"
    return f"{f(s['median'])} ({f(s.get('p10', s['min']))}–{f(s.get('p90', s['max']))})"


def growth(a, b):
    if a is None or b is None:
        return "–"
    d = b - a
    return f"{'+' if d >= 0 else '−'}{f(abs(d))} ms"


def flat(lo, hi):
    """The cgroup mode's cost 'does not grow': its median with the crowd is within
    max(1 ms, 25 %) of its median without."""
    return hi - lo <= max(1.0, 0.25 * lo)


def s6_targets(doc):
    rows = {}
    for mode, run in doc["runs"].items():
        cells, sizes = s6_cells(run)
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        res = {}
        ok, det = True, []
        for kind, _ in S6_KINDS:
            metric = "stopall_ms" if kind == "all" else "stop_ms"
            a = stat(cells.get((kind, "cgroup", lo)), metric)
            b = stat(cells.get((kind, "cgroup", hi)), metric)
            if a is None or b is None:
                continue
            ok &= flat(a, b)
            g0 = stat(cells.get((kind, "group", lo)), metric)
            g1 = stat(cells.get((kind, "group", hi)), metric)
            det.append(f"({kind}) cgroup {growth(a, b)}, group {growth(g0, g1)}")
        if det:
            res["flat"] = (ok, "; ".join(det))
        ok, det = True, []
        for kind, _ in S6_KINDS:
            a = stat(cells.get((kind, "cgroup", lo)), "proc_reads", "max")
            b = stat(cells.get((kind, "cgroup", hi)), "proc_reads", "max")
            if a is None or b is None:
                continue
            ok &= b - a <= max(2, 0.01 * (hi - lo))  # a scan reads ≥ 1 per process
            g0 = stat(cells.get((kind, "group", lo)), "proc_reads", "max")
            g1 = stat(cells.get((kind, "group", hi)), "proc_reads", "max")
            det.append(f"({kind}) cgroup {a:.0f} → {b:.0f}" +
                       (f", group {g0:.0f} → {g1:.0f}" if g0 is not None and g1 is not None
                        else ""))
        if det:
            res["work"] = (ok, "; ".join(det))
        peaks = {}
        for (kind, t, idle), e in cells.items():
            if t != "cgroup":
                continue
            for tool, metric in S6_TOOLS:
                v = stat(e, metric, "max")
                if v is not None:
                    peaks[tool] = max(peaks.get(tool, 0), v)
        if peaks:
            res["rss"] = (max(peaks.values()) <= RSS_LIMIT_KB,
                          ", ".join(f"{t} {v / 1024:.1f} MB" for t, v in peaks.items()))
        rows[mode] = res
    return rows


def render_s6(doc, analysis=None):
    """The issue 12 section: pm-stop with cgroup containment and with process-group
    tracking, side by side, without and with many unrelated processes on the host."""
    runs = {m: r for m, r in doc["runs"].items() if entries(r, S6)}
    if not runs:
        return ""
    info = s6_run_info(doc)
    L = ["## Issue 12: stop cost with cgroup containment vs process-group tracking\n"]
    cmd = info.get("command") or "bench/run --only 6"
    L.append(f"Command: `{cmd}` (pm tree `{info.get('pm_commit', '?')}`, release build), "
             f"{info.get('started', '?')}, wall time {info.get('wall_s', '?')} s; "
             f"load average at start {' '.join(info.get('loadavg_start') or [])}, at end "
             f"{' '.join(info.get('loadavg_end') or [])}" +
             (f", 1-minute load during the run min {info['load1_during']['min']:.2f} / "
              f"median {info['load1_during']['median']:.2f} / max "
              f"{info['load1_during']['max']:.2f}" if info.get("load1_during") else "") +
             f" on {info.get('cpus', doc['machine'].get('cpus'))} CPUs." +
             (f" {info['notes']}" if info.get("notes") and info is not doc["machine"] else "")
             + "\n")
    L.append("Each service is started by `pm-start NAME --grace 0` and stopped by `pm-stop "
             "NAME` (timed: spawn to reaped exit, CLOCK_MONOTONIC), tracked either by **group** "
             "(`pm-start --no-cgroup`: process group, session, descendants) or by **cgroup** "
             "(`PM_CGROUP=on`: a cgroup v2 of its own; `pm-status --json` is checked to say "
             "`\"tracking\"` as intended on every run). Services: **(a)** `sleep` — the leader "
             "is alive and leads its group and session, so group mode takes its descendants "
             "from the kernel's children lists; **(b)** `sh -c 'sleep & exec sleep'` whose "
             "leader is SIGKILLed before the stop, leaving its worker — group mode must scan "
             "/proc for it (by group, session and the start's `PM_RUN_ID` marker); **(c)** "
             "`sh -c 'setsid sleep & exec sleep'` — a live leader whose worker left the "
             "session, swept by a second, /proc-wide look in group mode. Each runs on the "
             "host as it is and with more unrelated idle processes (`sleep 86400`, started "
             "by the bench in one process group of their own and killed by PID and group at "
             "the end). Group and cgroup runs are interleaved (order swapped every round). "
             "Every stop is checked: leader and worker gone, the cgroup removed. Cells: "
             "median (p10–p90) ms; min/max and every sample are in results.json. Growth = "
             "median with the crowd − median without.\n")
    tg = s6_targets(doc)
    if tg:
        L.append("### Targets (issue 12)\n")
        L.append("| target | " + " | ".join(tg) + " |")
        L.append("|---|" + "---|" * len(tg))
        for key, title in (
                ("work", "cgroup mode: a stop reads no more of /proc with the crowd than "
                         "without (files /proc/PID/… opened, strace; ≤ 1 % of the added "
                         "processes more, where a scan reads one per process)"),
                ("flat", "cgroup mode: the stop's time does not grow with the host's other "
                         "processes (median growth ≤ max(1 ms, 25 %))"),
                ("rss", "cgroup mode: each tool's peak RSS ≤ 5 MB")):
            cells = []
            for mode in tg:
                r = tg[mode].get(key)
                cells.append("–" if r is None else
                             ("**met**: " if r[0] else "**MISSED**: ") + r[1])
            L.append(f"| {title} | " + " | ".join(cells) + " |")
        L.append("")
    for mode, run in runs.items():
        cells, sizes = s6_cells(run)
        if not sizes:
            continue
        lo, hi = sizes[0], sizes[-1]
        hosts = {}
        for (k, t, idle), e in cells.items():
            hosts.setdefault(idle, []).extend(e["metrics"].get("host_procs", []))

        def procs(idle):
            v = sorted(hosts.get(idle) or [])
            return (f"{v[len(v) // 2]:.0f} (from {v[0]:.0f} to {v[-1]:.0f})" if v else "–")
        L.append(f"### {MODE_TITLE.get(mode, mode)}\n")
        L.append(f"Processes on the host at each stop (median, range; other work on the "
                 f"machine changes it too): {procs(lo)} as it is (+{lo}), {procs(hi)} with "
                 f"the crowd (+{hi}).\n")
        L.append("**pm-stop** (pm-stopall for the last row), ms — median (p10–p90):\n")
        L.append(f"| service | group, +{lo} | group, +{hi} | cgroup, +{lo} | cgroup, +{hi} | "
                 f"growth, group | growth, cgroup | runs |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind, label in S6_KINDS:
            metric = "stopall_ms" if kind == "all" else "stop_ms"
            es = [cells.get((kind, t, n)) for t in ("group", "cgroup") for n in (lo, hi)]
            if not any(es):
                continue
            ns = sorted({stat(e, metric, "n") for e in es if stat(e, metric, "n")})
            L.append(f"| {label} | " + " | ".join(spread(e, metric) for e in es) +
                     f" | {growth(stat(es[0], metric), stat(es[1], metric))}"
                     f" | {growth(stat(es[2], metric), stat(es[3], metric))}"
                     f" | {'/'.join(str(n) for n in ns)} |")
        L.append("")
        if any("proc_reads" in e["metrics"] for e in cells.values()):
            L.append("The work behind those times: files under /proc/PID/ that one more stop "
                     "of each cell opens (run under `strace -f`, not timed) — a scan of /proc "
                     "reads one per process on the host:\n")
            L.append(f"| service | group, +{lo} | group, +{hi} | cgroup, +{lo} | "
                     f"cgroup, +{hi} |")
            L.append("|---|---:|---:|---:|---:|")
            for kind, label in S6_KINDS:
                es = [cells.get((kind, t, n)) for t in ("group", "cgroup") for n in (lo, hi)]
                if any(es):
                    L.append(f"| {label} | " + " | ".join(
                        "–" if stat(e, "proc_reads", "max") is None
                        else f"{stat(e, 'proc_reads', 'max'):.0f}" for e in es) + " |")
            L.append("")
        L.append("The other tools in the same runs (medians, ms): `pm-start` of the service "
                 "(its start, before the leader of (b) is killed) and `pm-status --json NAME` "
                 "just before the stop (for (b): `dead`, the worker left):\n")
        L.append(f"| tool | service | group, +{lo} | group, +{hi} | cgroup, +{lo} | "
                 f"cgroup, +{hi} |")
        L.append("|---|---|---:|---:|---:|---:|")
        for tool, metric in (("pm-start", "start_ms"), ("pm-status --json", "status_ms")):
            for kind, label in S6_KINDS[:3]:
                es = [cells.get((kind, t, n)) for t in ("group", "cgroup") for n in (lo, hi)]
                L.append(f"| {tool} | {label.split(')')[0]}) | " +
                         " | ".join(f(stat(e, metric)) for e in es) + " |")
        L.append("")
        L.append("Peak RSS over all runs of this scenario (wait4 `ru_maxrss` of the reaped "
                 "tool), MB:\n")
        L.append("| tool | group | cgroup | ≤ 5 MB in cgroup mode |")
        L.append("|---|---:|---:|---|")
        for tool, metric in S6_TOOLS:
            peak = {}
            for (k, t, idle), e in cells.items():
                v = stat(e, metric, "max")
                if v is not None:
                    peak[t] = max(peak.get(t, 0), v)
            if not peak:
                continue
            c = peak.get("cgroup")
            L.append(f"| {tool} | {f(peak['group'] / 1024) if 'group' in peak else '–'} | "
                     f"{f(c / 1024) if c else '–'} | "
                     f"{'–' if c is None else ('yes' if c <= RSS_LIMIT_KB else '**no**')} |")
        L.append("")
        errs = [e for e in run.get("errors", []) if e["scenario"] == S6]
        if errs:
            L.append("Failed measurements:\n")
            for e in errs:
                L.append(f"- {e['case']} / {e['tool']}: `{e['error'][:300].strip()}`")
            L.append("")
    if analysis:
        L.append(analysis.rstrip() + "\n")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------- issue 13

S7 = "7 supervision"
S7_PER_SERVICE = ("pm", "s6", "runit", "supervisord")
S7_NAME = {"pm": "pm monitor", "pm-nocg": "pm monitor, `--no-cgroup`",
           "s6": "s6-supervise", "s6-ready": "s6-supervise, notification-fd",
           "runit": "runsv", "supervisord": "supervisord"}
FEW_MS = 10.0  # "restart latency after a crash a few ms plus the delay" (delay 0 here)


def run_info(doc, key):
    """The machine/run facts of the run that produced scenario `key` (a merged --only run,
    or the whole run)."""
    for u in reversed(doc["machine"].get("updates", [])):
        if key in u.get("scenarios", []):
            return u
    return doc["machine"]


def s7_find(run, case, sup, role="per service"):
    for e in entries(run, S7):
        if e["case"] == case and e.get("supervisor") == sup and e.get("role", role) == role:
            return e
    return None


def s7_case(run, prefix):
    for e in entries(run, S7):
        if e["case"].startswith(prefix):
            return e["case"]
    return None


def kb(x):
    return "–" if x is None else f"{x:.0f}"


def mib(x):
    return "–" if x is None else f"{x / 1024:.2f} MiB"


def obj_group(key, exe=None):
    """What a mapping of /proc/PID/smaps is ("BASENAME PERMS", or [heap] …; exe: the
    process's executable's basename), for the breakdown table."""
    name, _, perms = key.partition(" ")
    if name in ("[heap]", "[stack]", "[anon]"):
        return {"[heap]": "heap", "[stack]": "stack", "[anon]": "anonymous (no name)"}[name]
    if name.startswith("["):
        return "kernel ([vdso], …)"
    if name.startswith("libc.so"):
        return "libc"
    if name.startswith("ld-linux") or name.startswith("ld-"):
        return "ld.so"
    if ".so" in name:
        return "other shared libraries"
    if exe and name != exe:
        return "other files"
    return {"r-xp": "executable: code (r-xp)", "r--p": "executable: read-only data (r--p)",
            "rw-p": "executable: data (rw-p)"}.get(perms, "executable: other")


OBJ_ORDER = ("executable: code (r-xp)", "executable: read-only data (r--p)",
             "executable: data (rw-p)", "executable: other", "libc", "ld.so",
             "other shared libraries", "other files", "heap", "stack", "anonymous (no name)",
             "kernel ([vdso], …)")


def s7_targets(doc):
    rows = {}
    for mode, run in doc["runs"].items():
        res = {}
        pm = s7_find(run, "idle", "pm")
        pm = pm if pm and pm["stats"].get("ticks") else None
        if pm:
            t, w = stat(pm, "ticks"), stat(pm, "window_s")
            wk = stat(pm, "wakeups")
            res["idle"] = (t == 0, f"{t:.0f} ticks, {wk:.0f} wake-ups in {w:.0f} s"
                           + (f", {stat(pm, 'cpu_ms'):.3f} ms on CPU"
                              if stat(pm, "cpu_ms") is not None else ""))
            rv = s7_find(run, "idle", "runit")
            a = stat(pm, "rss_kb")
            if rv:
                b = stat(rv, "rss_kb")
                res["rss"] = (a <= b, f"monitor {mib(a)} vs runsv {mib(b)} "
                                      f"({'+' if a >= b else '−'}{abs(a - b) / 1024:.2f} MiB); "
                                      f"PSS {mib(stat(pm, 'pss_kb'))} vs "
                                      f"{mib(stat(rv, 'pss_kb'))}")
            elif a is not None:
                res["rss"] = (a <= 1.4 * 1024, f"monitor {mib(a)} (runsv absent: 1.4 MiB)")
        lat = s7_find(run, "restart latency", "pm")
        if lat:
            a = stat(lat, "restart_ms")
            det = (f"median {f(a)} ms (p90 {f(stat(lat, 'restart_ms', 'p90'))} ms) with "
                   f"`--restart-delay 0`")
            nc = s7_find(run, "restart latency", "pm-nocg")
            if nc:
                det += (f"; {f(stat(nc, 'restart_ms'))} ms (p90 "
                        f"{f(stat(nc, 'restart_ms', 'p90'))} ms) with `--no-cgroup`")
            res["latency"] = (a <= FEW_MS, det)
        rows[mode] = res
    return rows


def render_s7(doc, analysis=None):
    """The issue 13 section: what supervision costs while idle, and restart latency."""
    runs = {m: r for m, r in doc["runs"].items() if entries(r, S7)}
    if not runs:
        return ""
    info = run_info(doc, "7")
    L = ["## Issue 13: supervision\n"]
    cmd = info.get("command") or "bench/run --only 7"
    L.append(f"Command: `{cmd}` (pm tree `{info.get('pm_commit', '?')}`, release build), "
             f"{info.get('started', '?')}, wall time {info.get('wall_s', '?')} s; "
             f"load average at start {' '.join(info.get('loadavg_start') or [])}, at end "
             f"{' '.join(info.get('loadavg_end') or [])}" +
             (f", 1-minute load during the run min {info['load1_during']['min']:.2f} / "
              f"median {info['load1_during']['median']:.2f} / max "
              f"{info['load1_during']['max']:.2f}" if info.get("load1_during") else "") +
             f" on {info.get('cpus', doc['machine'].get('cpus'))} CPUs." +
             (f" {info['notes']}" if info.get("notes") and info is not doc["machine"] else "")
             + "\n")
    L.append("One service, `sleep 100000`, under each supervisor, all at the same time: pm "
             "(`pm-start idle --restart always --restart-delay 0 --max-restarts 0 --grace 0 -- "
             "sleep 100000`: a monitor, the pm-start binary in its monitor mode, is the "
             "service's parent; as root on a cgroup2 host the service gets a cgroup, pm's "
             "default), s6 (`s6-svscan` → `s6-supervise` → `./run`), runit (`runsvdir` → "
             "`runsv` → `./run`; both `run` scripts are `#!/bin/sh` + `exec sleep 100000`) "
             "and supervisord (one `supervisord` supervising one `[program]`, "
             "`autorestart=true`, `startsecs=0`). For the restart latency only, two more: pm "
             "with `--no-cgroup` (what the cgroup costs a restart) and s6 with a "
             "`notification-fd` whose `run` writes the readiness newline before `exec sleep` "
             "(s6-supervise ≥ 2.11 waits 1 s after a service ends, however long it ran, "
             "unless it notified readiness; then it waits until 1 s after the readiness).\n")
    L.append("**Idle**: every supervisor process's CPU over a window in which nothing "
             "happens (utime+stime from /proc/PID/stat in clock ticks of 10 ms, the time on "
             "CPU from /proc/PID/schedstat, and the context switches from /proc/PID/status: "
             "each wake-up is one), then its memory from /proc/PID/smaps_rollup (PSS shares "
             "each page among the processes that map it). **Restart latency**: the service's "
             "process is SIGKILLed and the clock runs until the supervisor's new child has "
             "exec'd (the service's program; `./run` for s6 and runit); the moments of the "
             "old process's exit, of the fork and of the exec are the kernel's own (process "
             "events connector, CLOCK_MONOTONIC; where it is not available, /proc is polled: "
             "the table says which), the kill's is taken just before kill(2); pm's record "
             "must name the new process. "
             "Every kill finds its service up for ≥ 1.25 s (runsv holds a restart until 1 s "
             "after the previous start); the services are killed one at a time, in turn, "
             "the order rotated every round.\n")
    tg = {m: v for m, v in s7_targets(doc).items() if m in runs}
    if any(tg.values()):
        L.append("### Targets (issue 13)\n")
        L.append("| target | " + " | ".join(tg) + " |")
        L.append("|---|" + "---|" * len(tg))
        for key, title in (
                ("idle", "pm's monitor idle: 0 CPU ticks over the window (blocks in the "
                         "kernel: no timers, no polling)"),
                ("rss", "pm's monitor RSS at or below runsv's (~1.4 MiB)"),
                ("latency", f"restart latency after a crash: a few ms plus the delay "
                            f"(median ≤ {FEW_MS:.0f} ms at delay 0)")):
            cells = []
            for mode in tg:
                r = tg[mode].get(key)
                cells.append("–" if r is None else
                             ("**met**: " if r[0] else "**MISSED**: ") + r[1])
            L.append(f"| {title} | " + " | ".join(cells) + " |")
        L.append("")
    for mode, run in runs.items():
        L.append(f"### {MODE_TITLE.get(mode, mode)}\n")
        es = [e for e in entries(run, S7) if e["case"] == "idle"]
        if es:
            w = stat(es[0], "window_s")
            L.append(f"**Idle, {w:.0f} s window** — CPU used in it, and memory at its end "
                     f"(kB). Per service: the supervisor process of one service; root: the "
                     f"one process above all of a tree's supervisors.\n")
            L.append("| supervisor process | role | CPU ticks | ms on CPU | wake-ups | RSS | PSS "
                     "| PSS anon | PSS file | private | note |")
            L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for e in es:
                cpu = stat(e, "cpu_ms")
                L.append(f"| {e['tool']} | {e.get('role', '')} | {stat(e, 'ticks'):.0f} | "
                         f"{'–' if cpu is None else f'{cpu:.3f}'} | "
                         f"{stat(e, 'wakeups'):.0f} | {kb(stat(e, 'rss_kb'))} | "
                         f"{kb(stat(e, 'pss_kb'))} | {kb(stat(e, 'pss_anon_kb'))} | "
                         f"{kb(stat(e, 'pss_file_kb'))} | {kb(stat(e, 'private_kb'))} | "
                         f"{e.get('note', '')} |")
            L.append("")
        es = [e for e in entries(run, S7) if e["case"] == "restart latency"]
        if es:
            method = es[0].get("method", "")
            L.append(f"**Restart latency** — SIGKILL of the service → its new process "
                     f"exec'd, ms ({method}). Exit: the old process's end; fork: the "
                     f"supervisor's fork of the new one.\n")
            L.append("| supervisor | delay configured | runs | median | p10–p90 | min–max | "
                     "ratio to pm | exit median | fork median |")
            L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            ref = next((stat(e, "restart_ms") for e in es if e.get("supervisor") == "pm"),
                       None)
            for e in es:
                s = e["stats"]["restart_ms"]
                L.append(f"| {S7_NAME.get(e.get('supervisor'), e['tool'])} | "
                         f"{e.get('delay', '')} | {s['n']} | {f(s['median'])} | "
                         f"{f(s['p10'])}–{f(s['p90'])} | {f(s['min'])}–{f(s['max'])} | "
                         f"{ratio(s['median'], ref)} | {f(stat(e, 'death_ms'), 2)} | "
                         f"{f(stat(e, 'fork_ms'))} |")
            L.append("")
        es = [e for e in entries(run, S7) if e["case"].startswith("memory after")]
        if es:
            L.append(f"**Memory after the restarts** ({es[0]['case']}; the same process as in "
                     f"the idle window), kB:\n")
            L.append("| supervisor | RSS | PSS | RSS change since the idle window |")
            L.append("|---|---:|---:|---:|")
            for e in es:
                idle = s7_find(run, "idle", e.get("supervisor"))
                a, b = stat(e, "rss_kb"), stat(idle, "rss_kb")
                L.append(f"| {S7_NAME.get(e.get('supervisor'), e['tool'])} | {kb(a)} | "
                         f"{kb(stat(e, 'pss_kb'))} | "
                         f"{'–' if a is None or b is None else f'{a - b:+.0f}'} |")
            L.append("")
        case = s7_case(run, "memory at ")
        if case:
            es = [e for e in entries(run, S7) if e["case"] == case]
            n = case.split()[2]
            L.append(f"**Memory per service with {n} services** under each supervisor (a "
                     f"tree of its own, started for this): the supervisor processes' PSS ÷ "
                     f"{n}, with and without the root (s6-svscan, runsvdir); pages of one "
                     f"binary are shared among its processes, so this is what one more "
                     f"service costs. kB:\n")
            L.append("| supervisor | processes | PSS per service | without the root | RSS "
                     "of each per-service process |")
            L.append("|---|---:|---:|---:|---:|")
            for e in es:
                L.append(f"| {S7_NAME.get(e.get('supervisor'), e['tool'])} | "
                         f"{stat(e, 'processes'):.0f} | {kb(stat(e, 'pss_kb_per_service'))} | "
                         f"{kb(stat(e, 'pss_kb_per_service_no_root'))} | "
                         f"{kb(stat(e, 'rss_kb_per_process'))} |")
            L.append("")
        es = [e for e in entries(run, S7) if e["case"] == "idle" and e.get("breakdown")
              and e.get("role") == "per service"]
        if es:
            L.append("**Where the idle RSS is** (/proc/PID/smaps summed by mapped object; "
                     "RSS / PSS kB):\n")
            groups = {}
            for e in es:
                g = {}
                for name, v in e["breakdown"].items():
                    x = g.setdefault(obj_group(name, e.get("exe")), [0, 0])
                    x[0] += v["rss"]
                    x[1] += v["pss"]
                groups[e["supervisor"]] = g
            L.append("| mapped | " + " | ".join(S7_NAME.get(e["supervisor"], e["tool"])
                                                 for e in es) + " |")
            L.append("|---|" + "---:|" * len(es))
            for obj in OBJ_ORDER:
                if not any(obj in g for g in groups.values()):
                    continue
                L.append(f"| {obj} | " + " | ".join(
                    (f"{groups[e['supervisor']][obj][0]} / {groups[e['supervisor']][obj][1]}"
                     if obj in groups[e["supervisor"]] else "–") for e in es) + " |")
            L.append("")
        errs = [e for e in run.get("errors", []) if e["scenario"] == S7]
        if errs:
            L.append("Failed measurements:\n")
            for e in errs:
                L.append(f"- {e['case']} / {e['tool']}: `{e['error'][:300].strip()}`")
            L.append("")
    if analysis:
        L.append(analysis.rstrip() + "\n")
    return "\n".join(L) + "\n"
