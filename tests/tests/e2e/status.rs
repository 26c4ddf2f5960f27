//! End-to-end tests of `pm-status` (issue 6): every state decided from the record, the PID
//! file and the kernel; the human table; `--json` (and jq); LSB exit codes and `-q`;
//! read-only behaviour; corrupt records; a closed stdout.
//!
//! Real processes only. Processes the test starts itself (the "unrelated" process of the
//! PID-reuse cases, the python lock holder) carry this sandbox's `PM_STATE_DIR` in their
//! environment, so the sandbox kills them on drop even when a test fails; they are also
//! killed by their `Owned` guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use pm_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// An unrelated process (not started by pm): `sleep 1000`.
fn sleeper(sb: &Sandbox) -> Owned {
    let o = sb.own(&["sleep", "1000"]);
    let pid = o.pid();
    wait_until("the sleeper runs", || is_alive(pid));
    o
}

fn json_of(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", describe(out)))
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a JSON array: {}", describe(out)))
}

fn names_of(arr: &[Value]) -> Vec<String> {
    arr.iter()
        .map(|o| o["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The table row for `name` (the line whose first word is `name`).
fn row(table: &str, name: &str) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
        .to_string()
}

/// The whitespace-separated words of a line with their [start, end) character columns.
fn words(line: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    let mut n = 0;
    for (i, ch) in line.chars().enumerate() {
        n = i + 1;
        if ch.is_whitespace() {
            if let Some((s, w)) = cur.take() {
                out.push((s, i, w));
            }
        } else {
            match &mut cur {
                Some((_, w)) => w.push(ch),
                None => cur = Some((i, ch.to_string())),
            }
        }
    }
    if let Some((s, w)) = cur {
        out.push((s, n, w));
    }
    out
}

/// Sets a file's mtime one minute into the past, as the brief says: `touch -d '-1 min'`.
fn backdate(path: &Path) {
    let out = StdCommand::new("touch")
        .args(["-d", "-1 min"])
        .arg(path)
        .output()
        .expect("run touch");
    assert_success(&out, "touch -d '-1 min'");
}

/// `STATE/NAME.json` as raw bytes.
fn record_bytes(sb: &Sandbox, name: &str) -> Vec<u8> {
    fs::read(sb.state.join(format!("{name}.json"))).expect("record")
}

/// `pm-stop [ARGS...]`, asserting success.
fn stop_ok(sb: &Sandbox, args: &[&str]) {
    assert_success(&sb.stop(args), "pm-stop");
}

/// Uptime as pm prints it: `42s`, `3m12s`, `2h5m`, `4d1h`.
fn is_short_duration(s: &str) -> bool {
    let mut parts = Vec::new();
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if digits.is_empty() {
                return false;
            }
            parts.push(c);
            digits.clear();
        }
    }
    digits.is_empty()
        && matches!(
            parts.as_slice(),
            ['s'] | ['m', 's'] | ['h', 'm'] | ['d', 'h']
        )
}

/// `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, UTC).
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

// ---------------------------------------------------------------------------------------
// Which services, in which order
// ---------------------------------------------------------------------------------------

#[test]
fn lists_every_record_in_start_order_and_named_ones_in_given_order() {
    let sb = Sandbox::new();
    // Started in an order that is neither alphabetical nor reverse-alphabetical.
    for n in ["cc", "aa", "bb"] {
        sb.start_sh(n, &[], "exec sleep 1000");
    }
    let all = sb.status_json(&[]);
    assert_eq!(names_of(&all), ["cc", "aa", "bb"]);
    assert!(all.iter().all(|o| o["state"] == "running"), "{all:?}");

    let out = sb.status(&[]);
    assert_code(&out, 0);
    let table = stdout(&out);
    let first_words: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(first_words, ["NAME", "cc", "aa", "bb"], "{table}");

    // Named: exactly those, in the given order, repeats and unknown names included.
    let named = sb.status_json(&["bb", "nope", "cc", "aa"]);
    assert_eq!(names_of(&named), ["bb", "nope", "cc", "aa"]);
    assert_eq!(named[1]["state"], "unknown");

    // Names known only through --pidfile: a process the test started, PID file by the test.
    let ext = sleeper(&sb);
    let pf = sb.path("ext.pid");
    fs::write(&pf, format!("{}\n", ext.pid())).unwrap();
    let template = format!("{}/{{name}}.pid", sb.dir.path().display());
    let out = sb.status(&["--json", "--pidfile", &template, "aa", "ext", "cc"]);
    assert_code(&out, 0);
    let arr = json_of(&out);
    assert_eq!(names_of(&arr), ["aa", "ext", "cc"]);
    assert_eq!(arr[1]["state"], "running", "{arr:?}");
    assert_eq!(arr[1]["pid"], ext.pid());
    assert_eq!(arr[1]["pidfile"], pf.display().to_string());
    assert_eq!(arr[1]["command"], Value::Null);
    // A record's own pidfile wins over the template: aa still reports its pm PID file.
    assert_eq!(
        arr[0]["pidfile"],
        sb.state.join("aa.pid").display().to_string()
    );

    // The same through PM_PIDFILE, and a listing without names stays records-only.
    let out = sb
        .cmd("pm-status")
        .env("PM_PIDFILE", &template)
        .args(["--json", "ext", "bb"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let arr = json_of(&out);
    assert_eq!(names_of(&arr), ["ext", "bb"]);
    assert_eq!(arr[0]["state"], "running");
    let out = sb
        .cmd("pm-status")
        .env("PM_PIDFILE", &template)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(names_of(&json_of(&out)), ["cc", "aa", "bb"]);

    // A template that names no file: unknown.
    let out = sb.status(&["--pidfile", &template, "ghost"]);
    assert_code(&out, 4);
}

// ---------------------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------------------

#[test]
fn running_service_is_verified_against_the_kernel() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("web", &[], "exec sleep 1000");
    let o = &sb.status_json(&["web"])[0];
    assert_eq!(o["state"], "running", "{o}");
    assert_eq!(o["pid"], pid);
    assert_eq!(o["pgid"], pid, "pm-start makes the service a group leader");
    let out = sb.status(&["web"]);
    assert_code(&out, 0);
    let r = row(&stdout(&out), "web");
    let w = words(&r);
    assert_eq!(w[1].2, "running", "{r}");
    assert_eq!(w[2].2, pid.to_string(), "{r}");
    assert!(is_short_duration(&w[3].2), "uptime {:?} in {r}", w[3].2);
    assert!(
        w[3].2.ends_with('s'),
        "a fresh service has seconds of uptime: {r}"
    );
    assert!(r.ends_with("sh -c 'exec sleep 1000'"), "{r}");
}

#[test]
fn starting_while_pm_start_waits_for_readiness() {
    let sb = Sandbox::new();
    let ready = sb.path("ready-flag");
    let mut starter = sb
        .std_cmd(bin_dir().join("pm-start"))
        .arg("slow")
        .arg("--ready")
        .arg(format!("file:{}", ready.display()))
        .args([
            "--ready-timeout",
            "120s",
            "--",
            "sh",
            "-c",
            "exec sleep 1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pm-start");
    wait_until("pm-status says starting", || {
        sb.state_of("slow") == "starting"
    });

    let o = &sb.status_json(&["slow"])[0];
    let pid = o["pid"].as_i64().expect("a starting service has a pid") as i32;
    assert!(is_alive(pid));
    assert_eq!(sb.pid("slow"), Some(pid));
    let out = sb.status(&["slow"]);
    assert_code(&out, 150); // documented: LSB's application range, "still starting"
    let r = row(&stdout(&out), "slow");
    assert_eq!(words(&r)[1].2, "starting", "{r}");
    assert_eq!(words(&r)[2].2, pid.to_string(), "{r}");
    let q = sb.status(&["-q", "slow"]);
    assert_code(&q, 150);
    assert!(
        q.stdout.is_empty() && q.stderr.is_empty(),
        "{}",
        describe(&q)
    );
    // pm-start is still waiting: checking did not make it return.
    assert!(
        starter.try_wait().unwrap().is_none(),
        "pm-start returned early"
    );

    fs::write(&ready, "").unwrap();
    let out = starter.wait_with_output().expect("pm-start");
    assert_success(&out, "pm-start --ready file:");
    assert_eq!(sb.state_of("slow"), "running");
    assert_code(&sb.status(&["slow"]), 0);
}

#[test]
fn stopped_rows_show_the_last_stops_signal_and_escalation() {
    let sb = Sandbox::new();
    sb.start_sh("plain", &["--stop-signal", "USR1"], "exec sleep 1000");
    let flag = sb.path("stubborn-ready");
    // Ignores TERM (inherited across exec), so pm-stop must escalate to SIGKILL.
    sb.start_sh(
        "stubborn",
        &["--ready", &format!("file:{}", flag.display())],
        &format!("trap '' TERM; touch '{}'; exec sleep 1000", flag.display()),
    );
    let stubborn_pid = sb.pid("stubborn").unwrap();
    stop_ok(&sb, &["plain"]);
    stop_ok(&sb, &["--timeout", "1s", "stubborn"]);
    assert_gone(stubborn_pid);

    let out = sb.status(&["plain", "stubborn"]);
    assert_code(&out, 3);
    let table = stdout(&out);
    let plain = row(&table, "plain");
    assert_eq!(words(&plain)[1].2, "stopped", "{table}");
    assert!(plain.contains("SIGUSR1"), "{plain}");
    assert!(
        !plain.contains("SIGKILL") && !plain.contains("escalat"),
        "{plain}"
    );
    let stubborn = row(&table, "stubborn");
    assert_eq!(words(&stubborn)[1].2, "stopped", "{table}");
    assert!(stubborn.contains("SIGTERM"), "{stubborn}");
    assert!(stubborn.contains("escalated to SIGKILL"), "{stubborn}");
    // No PID for a stopped service: that process ended and its PID may be anyone's now.
    assert_eq!(words(&plain)[2].2, "-", "{plain}");
    assert_eq!(words(&stubborn)[2].2, "-", "{stubborn}");

    let arr = sb.status_json(&["plain", "stubborn"]);
    for o in &arr {
        assert_eq!(o["state"], "stopped", "{o}");
        assert_eq!(o["pid"], Value::Null, "{o}");
        assert_eq!(o["pgid"], Value::Null, "{o}");
        assert_eq!(o["uptime_secs"], Value::Null, "{o}");
        assert_eq!(o["rss_bytes"], Value::Null, "{o}");
        assert_eq!(o["cpu_secs"], Value::Null, "{o}");
        assert_eq!(
            o["started_at"].as_str().map(is_rfc3339_utc),
            Some(true),
            "{o}"
        );
    }
    assert_eq!(arr[0]["stop_signal"], "USR1");
    assert_eq!(arr[0]["last_stop"]["signal"], "USR1");
    assert_eq!(arr[0]["last_stop"]["escalated"], false);
    assert_eq!(arr[1]["last_stop"]["signal"], "TERM");
    assert_eq!(arr[1]["last_stop"]["escalated"], true);
    assert!(arr[1]["last_stop"]["at"].is_string(), "{}", arr[1]);
}

#[test]
fn killed_behind_pms_back_is_dead() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("victim", &[], "exec sleep 1000");
    sb.start_sh("other", &[], "exec sleep 1000");
    assert_eq!(sb.state_of("victim"), "running");
    sigkill(pid);

    let out = sb.status(&["victim"]);
    assert_code(&out, 1);
    let r = row(&stdout(&out), "victim");
    assert_eq!(words(&r)[1].2, "dead", "{r}");
    assert!(
        r.contains(&format!("pid {pid} is gone")),
        "dead rows say why: {r}"
    );
    let o = &sb.status_json(&["victim"])[0];
    assert_eq!(o["state"], "dead");
    assert_eq!(o["uptime_secs"], Value::Null);
    assert_eq!(o["rss_bytes"], Value::Null);
    assert_eq!(o["cpu_secs"], Value::Null);
    assert!(o["note"].as_str().unwrap_or("").contains("gone"), "{o}");
    // The other service is unaffected.
    assert_eq!(sb.state_of("other"), "running");
}

#[test]
fn failed_start_is_dead_and_says_since_when() {
    let sb = Sandbox::new();
    let out = sb.start("crash", &["--", "sh", "-c", "exit 7"]);
    assert_code(&out, 1);
    let out = sb.status(&["crash"]);
    assert_code(&out, 1);
    let r = row(&stdout(&out), "crash");
    assert_eq!(words(&r)[1].2, "dead", "{r}");
    assert!(
        r.contains(" since ") && r.contains(" ago"),
        "since when: {r}"
    );
    assert!(r.contains('7'), "why (exit status 7): {r}");
    let o = &sb.status_json(&["crash"])[0];
    assert!(o["failure"].is_object(), "{o}");
}

#[test]
fn pid_file_naming_a_process_born_after_it_was_written_is_dead() {
    let sb = Sandbox::new();
    let pf = sb.path("reuse.pid");

    // No record: the PID file (via --pidfile) names an unrelated process that started after
    // the file was last written.
    let unrelated = sleeper(&sb);
    fs::write(&pf, format!("{}\n", unrelated.pid())).unwrap();
    let pf_s = pf.display().to_string();
    // Control: written after the process started, it is accepted as the writer.
    let out = sb.status(&["--json", "--pidfile", &pf_s, "reuse"]);
    assert_code(&out, 0);
    assert_eq!(json_of(&out)[0]["state"], "running");
    backdate(&pf);
    let out = sb.status(&["--json", "--pidfile", &pf_s, "reuse"]);
    assert_code(&out, 1);
    let o = &json_of(&out)[0];
    assert_eq!(o["state"], "dead", "{o}");
    assert_ne!(o["rss_bytes"].as_u64().map(|_| ()), Some(()), "{o}");
    let note = o["note"].as_str().unwrap_or("");
    assert!(note.contains(&unrelated.pid().to_string()), "{o}");
    assert!(note.contains("another process"), "{o}");
    let out = sb.status(&["--pidfile", &pf_s, "reuse"]);
    assert_code(&out, 1);
    assert_eq!(words(&row(&stdout(&out), "reuse"))[1].2, "dead");
    assert!(is_alive(unrelated.pid()), "pm-status must not touch it");

    // With a record whose service writes its own PID file: the service dies, its PID file
    // is later found naming an unrelated, younger process.
    let svc_pf = sb.path("svc.pid");
    let svc_pf_s = svc_pf.display().to_string();
    sb.start_sh(
        "svc",
        &["--pidfile", &svc_pf_s, "--ready", "pidfile"],
        &format!("echo $$ > '{svc_pf_s}'; exec sleep 1000"),
    );
    let svc_pid = sb.pid("svc").unwrap();
    assert_eq!(sb.state_of("svc"), "running");
    sigkill(svc_pid);
    let newcomer = sleeper(&sb);
    fs::write(&svc_pf, format!("{}\n", newcomer.pid())).unwrap();
    backdate(&svc_pf);
    let out = sb.status(&["--json", "svc"]);
    assert_code(&out, 1);
    let o = &json_of(&out)[0];
    assert_eq!(o["state"], "dead", "{o}");
    assert_ne!(o["pid"], newcomer.pid(), "{o}");
    assert!(is_alive(newcomer.pid()));
}

#[test]
fn record_from_an_earlier_boot_is_not_running() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("old", &[], "exec sleep 1000");
    assert_eq!(sb.state_of("old"), "running");
    let path = sb.state.join("old.json");
    let mut rec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let boot = rec["boot_id"]
        .as_str()
        .expect("record has boot_id")
        .to_string();
    let other = match boot.strip_prefix('0') {
        Some(rest) => format!("1{rest}"),
        None => format!("0{}", &boot[1..]),
    };
    rec["boot_id"] = Value::String(other);
    fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();

    // The same PID and start time are alive right now, yet the record is from "another boot".
    assert!(is_alive(pid));
    let out = sb.status(&["--json", "old"]);
    let o = &json_of(&out)[0];
    assert_ne!(o["state"], "running", "{o}");
    assert_eq!(o["state"], "dead", "{o}");
    assert_code(&out, 1);
    assert!(o["note"].as_str().unwrap_or("").contains("reboot"), "{o}");
    assert_eq!(o["rss_bytes"], Value::Null, "{o}");
}

#[test]
fn unknown_name_without_record_or_pid_file() {
    let sb = Sandbox::new();
    sb.start_sh("known", &[], "exec sleep 1000");
    let out = sb.status(&["nobody"]);
    assert_code(&out, 4);
    let r = row(&stdout(&out), "nobody");
    let w = words(&r);
    assert_eq!(
        w.iter().map(|x| x.2.as_str()).collect::<Vec<_>>(),
        ["nobody", "unknown", "-", "-", "-"],
        "{r}"
    );
    let o = &sb.status_json(&["nobody"])[0];
    assert_eq!(o["state"], "unknown");
    for k in [
        "pid",
        "pgid",
        "pidfile",
        "log",
        "command",
        "cwd",
        "started_at",
        "uptime_secs",
    ] {
        assert_eq!(o[k], Value::Null, "{k}: {o}");
    }
    // An empty or missing state dir: no records, nothing listed, success.
    let empty = Sandbox::new();
    let out = empty.status(&["--json"]);
    assert_code(&out, 0);
    assert_eq!(json_of(&out), Vec::<Value>::new());
    assert!(
        !empty.state.exists(),
        "pm-status must not create the state dir"
    );
}

// ---------------------------------------------------------------------------------------
// Output forms
// ---------------------------------------------------------------------------------------

#[test]
fn table_columns_are_aligned_across_states() {
    let sb = Sandbox::new();
    sb.start_sh("a", &[], "exec sleep 1000");
    sb.start_sh("much-longer-name@x", &[], "exec sleep 1000");
    stop_ok(&sb, &["much-longer-name@x"]);
    let dead = sb.start_sh("mid", &[], "exec sleep 1000");
    sigkill(dead);
    let out = sb.status(&["a", "much-longer-name@x", "mid", "nothing"]);
    assert_code(&out, 3);
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    let rows: Vec<Vec<(usize, usize, String)>> = lines.iter().map(|l| words(l)).collect();
    let header: Vec<&str> = rows[0].iter().map(|w| w.2.as_str()).collect();
    assert_eq!(
        header,
        ["NAME", "STATE", "PID", "UPTIME", "COMMAND"],
        "{table}"
    );
    // Text columns (NAME, STATE, COMMAND) start in the same column on every line; the
    // numeric ones (PID, UPTIME) are right-aligned like ps(1): they end in the same column.
    for (field, left_aligned) in [(0, true), (1, true), (2, false), (3, false), (4, true)] {
        let cols: Vec<usize> = rows
            .iter()
            .map(|r| if left_aligned { r[field].0 } else { r[field].1 })
            .collect();
        assert!(
            cols.iter().all(|c| *c == cols[0]),
            "column {} misaligned ({cols:?}):\n{table}",
            header[field]
        );
    }
    // Columns never run into each other.
    for r in &rows {
        for pair in r[..5].windows(2) {
            assert!(pair[1].0 >= pair[0].1 + 2, "{table}");
        }
    }
    let states: Vec<&str> = rows[1..].iter().map(|r| r[1].2.as_str()).collect();
    assert_eq!(states, ["running", "stopped", "dead", "unknown"]);
    assert!(is_short_duration(&rows[1][3].2), "{table}");
    assert_eq!(rows[2][2].2, "-", "no PID when stopped: {table}");
    assert_eq!(rows[2][3].2, "-", "no uptime when stopped: {table}");
    assert!(
        rows[3][2].2.parse::<i32>().is_ok(),
        "dead rows keep the PID that died: {table}"
    );
    assert!(lines[3].contains("is gone"), "{table}");
    assert!(lines[2].contains("SIGTERM"), "{table}");
}

#[test]
fn long_commands_are_never_cut_when_piped() {
    let sb = Sandbox::new();
    let long: String = (0..80).map(|i| format!("word{i:03}-")).collect::<String>() + "END";
    assert!(long.len() > 500);
    sb.start("long", &["--", "sh", "-c", "exec sleep 1000", &long])
        .status
        .success()
        .then_some(())
        .expect("pm-start long");
    // Even a tiny COLUMNS must not matter when stdout is not a terminal.
    let out = sb.cmd("pm-status").env("COLUMNS", "40").output().unwrap();
    assert_code(&out, 0);
    let r = row(&stdout(&out), "long");
    assert!(
        r.ends_with(&format!("sh -c 'exec sleep 1000' {long}")),
        "{r}"
    );
    assert!(!r.contains('…'), "{r}");
}

#[test]
fn long_commands_are_cut_to_the_terminal_width_on_a_terminal() {
    if !require("python3", "python3") {
        return;
    }
    let sb = Sandbox::new();
    let long: String = (0..40).map(|i| format!("arg{i:02}-")).collect::<String>() + "END";
    assert_success(
        &sb.start("wide", &["--", "sh", "-c", "exec sleep 1000", &long]),
        "pm-start",
    );
    // Run pm-status on a pty of 60 columns and capture what it printed.
    let py = r#"
import fcntl, os, pty, struct, sys, termios
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, st = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(st))
"#;
    let out = sb
        .std_cmd("python3")
        .arg("-c")
        .arg(py)
        .arg(bin_dir().join("pm-status"))
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = stdout(&out).replace('\r', "");
    let r = row(&text, "wide");
    assert!(r.chars().count() <= 60, "longer than the terminal: {r:?}");
    assert!(r.ends_with('…'), "cut lines end with an ellipsis: {r:?}");
    assert!(r.contains("sh -c"), "{r:?}");
}

#[test]
fn json_has_the_documented_fields_and_types() {
    let sb = Sandbox::new();
    let script = "exec sleep 1000";
    let pid = sb.start_sh("web", &["--stop-signal", "INT"], script);
    sb.start_sh("old", &[], script);
    stop_ok(&sb, &["old"]);
    let gone = sb.start_sh("gone", &[], script);
    sigkill(gone);

    let out = sb.status(&["--json", "web", "old", "gone", "nope"]);
    assert_code(&out, 3);
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.trim_start().starts_with('[') && text.trim_end().ends_with(']'));
    let arr = json_of(&out);
    assert_eq!(names_of(&arr), ["web", "old", "gone", "nope"]);
    let fields = [
        "name",
        "state",
        "pid",
        "pgid",
        "pidfile",
        "log",
        "command",
        "cwd",
        "started_at",
        "uptime_secs",
        "stop_signal",
        "last_stop",
        "rss_bytes",
        "cpu_secs",
        "log_error",
    ];
    for o in &arr {
        let obj = o.as_object().expect("objects");
        for f in fields {
            assert!(
                obj.contains_key(f),
                "{f} missing (present even when null): {o}"
            );
        }
    }

    // running
    let web = &arr[0];
    let rec = sb.record("web").unwrap();
    assert_eq!(web["state"], "running");
    assert_eq!(web["pid"], pid);
    assert_eq!(web["pgid"], pid);
    assert_eq!(
        web["pidfile"],
        sb.state.join("web.pid").display().to_string()
    );
    assert_eq!(web["log"], sb.state.join("web.log").display().to_string());
    assert_eq!(web["command"], serde_json::json!(["sh", "-c", script]));
    assert_eq!(web["cwd"], rec["cwd"]);
    assert_eq!(
        fs::canonicalize(web["cwd"].as_str().unwrap()).unwrap(),
        fs::canonicalize(sb.dir.path()).unwrap()
    );
    let started = web["started_at"].as_str().expect("started_at");
    assert!(is_rfc3339_utc(started), "{started}");
    let rec_started = rec["started_at"].as_str().unwrap();
    assert_eq!(
        &rec_started[..19],
        &started[..19],
        "same second as the record"
    );
    let up = web["uptime_secs"].as_u64().expect("uptime_secs integer");
    assert!(up < 600, "{web}");
    assert_eq!(web["stop_signal"], "INT");
    assert_eq!(web["last_stop"], Value::Null);
    assert!(web["rss_bytes"].as_u64().expect("rss_bytes") > 0, "{web}");
    assert!(web["cpu_secs"].as_f64().expect("cpu_secs") >= 0.0, "{web}");

    // stopped
    let old = &arr[1];
    assert_eq!(old["state"], "stopped");
    assert!(old["last_stop"].is_object(), "{old}");
    assert_eq!(old["last_stop"]["signal"], "TERM");
    assert_eq!(old["last_stop"]["escalated"], false);
    assert_eq!(old["stop_signal"], "TERM");
    assert!(old["command"].is_array());
    for k in ["uptime_secs", "rss_bytes", "cpu_secs"] {
        assert_eq!(old[k], Value::Null, "{k}: {old}");
    }

    // dead
    let g = &arr[2];
    assert_eq!(g["state"], "dead");
    assert!(g["pid"].is_i64() || g["pid"].is_null(), "{g}");
    assert!(
        g["started_at"]
            .as_str()
            .map(is_rfc3339_utc)
            .unwrap_or(false),
        "{g}"
    );
    for k in ["uptime_secs", "rss_bytes", "cpu_secs"] {
        assert_eq!(g[k], Value::Null, "{k}: {g}");
    }

    // unknown
    let n = &arr[3];
    assert_eq!(n["state"], "unknown");
    for k in fields.iter().filter(|k| !["name", "state"].contains(k)) {
        assert_eq!(n[*k], Value::Null, "{k}: {n}");
    }
}

#[test]
fn jq_pipeline_lists_the_running_names() {
    if !require("jq", "jq") {
        return;
    }
    let sb = Sandbox::new();
    sb.start_sh("db", &[], "exec sleep 1000");
    sb.start_sh("cache", &[], "exec sleep 1000");
    stop_ok(&sb, &["cache"]);
    sb.start_sh("web", &[], "exec sleep 1000");
    let dead = sb.start_sh("worker", &[], "exec sleep 1000");
    sigkill(dead);
    sb.start_sh("api", &[], "exec sleep 1000");

    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb
        .std_cmd("sh")
        .env("PATH", path)
        .arg("-c")
        .arg(r#"pm-status --json | jq -r '.[] | select(.state=="running") | .name'"#)
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    assert_eq!(stdout(&out), "db\nweb\napi\n");
}

// ---------------------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------------------

#[test]
fn lsb_exit_codes_follow_the_first_name_not_running() {
    let sb = Sandbox::new();
    sb.start_sh("run", &[], "exec sleep 1000");
    sb.start_sh("run2", &[], "exec sleep 1000");
    sb.start_sh("stp", &[], "exec sleep 1000");
    stop_ok(&sb, &["stp"]);
    let d = sb.start_sh("dd", &[], "exec sleep 1000");
    sigkill(d);

    let cases: &[(&[&str], i32)] = &[
        (&["run"], 0),
        (&["run", "run2"], 0),
        (&["stp"], 3),
        (&["dd"], 1),
        (&["unk"], 4),
        (&["run", "stp", "unk"], 3),
        (&["unk", "dd"], 4),
        (&["dd", "unk", "stp"], 1),
        (&["run", "dd", "stp"], 1),
        (&["stp", "dd"], 3),
        (&["run", "run2", "unk"], 4),
        (&["run", "unk", "run2", "dd"], 4),
    ];
    for (names, code) in cases {
        let out = sb.status(names);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "pm-status {names:?}: {}",
            describe(&out)
        );
        assert!(!out.stdout.is_empty(), "{names:?}: the table is printed");
        let out = sb.status(&[&["--json"], *names].concat());
        assert_eq!(
            out.status.code(),
            Some(*code),
            "--json {names:?}: {}",
            describe(&out)
        );
        let out = sb.status(&[&["-q"], *names].concat());
        assert_eq!(
            out.status.code(),
            Some(*code),
            "-q {names:?}: {}",
            describe(&out)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "-q prints nothing: {}",
            describe(&out)
        );
    }
    // No names: every record in start order decides (run, run2, stp, dd -> stp first).
    assert_code(&sb.status(&[]), 3);
    let q = sb.status(&["--quiet"]);
    assert_code(&q, 3);
    assert!(
        q.stdout.is_empty() && q.stderr.is_empty(),
        "{}",
        describe(&q)
    );
    // `if pm-status -q NAME; then` in a shell.
    let out = sb.std_cmd("sh")
        .arg("-c")
        .arg(r#"if "$0" -q run; then echo up; else echo down; fi; if "$0" -q stp; then echo up; else echo down; fi"#)
        .arg(bin_dir().join("pm-status"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "up\ndown\n", "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------
// Read-only
// ---------------------------------------------------------------------------------------

type Snapshot = BTreeMap<PathBuf, (Vec<u8>, i64, i64, u64)>;

/// Every entry of the given directories (not recursive) and files: content (or link
/// target), mtime, ctime, inode.
fn snapshot(paths: &[PathBuf]) -> Snapshot {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.push(p.clone());
            for e in fs::read_dir(p).unwrap() {
                files.push(e.unwrap().path());
            }
        } else {
            files.push(p.clone());
        }
    }
    files
        .into_iter()
        .filter_map(|f| {
            let m = fs::symlink_metadata(&f).ok()?;
            let content = if m.file_type().is_symlink() {
                fs::read_link(&f)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                fs::read(&f).unwrap()
            } else {
                Vec::new()
            };
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            let ctime = m.ctime() * 1_000_000_000 + m.ctime_nsec();
            Some((f, (content, mtime, ctime, m.ino())))
        })
        .collect()
}

#[test]
fn status_changes_no_record_and_no_pid_file() {
    let sb = Sandbox::new();
    sb.start_sh("live", &[], "exec sleep 1000");
    sb.start_sh("stp", &[], "exec sleep 1000");
    stop_ok(&sb, &["stp"]);
    // Dead with its pm-written PID file left behind.
    let d = sb.start_sh("dd", &[], "exec sleep 1000");
    sigkill(d);
    assert!(sb.state.join("dd.pid").exists());
    // Dead with a stale service-written PID file naming a younger, unrelated process.
    let svc_pf = sb.path("svc.pid");
    let svc_pf_s = svc_pf.display().to_string();
    sb.start_sh(
        "svc",
        &["--pidfile", &svc_pf_s, "--ready", "pidfile"],
        &format!("echo $$ > '{svc_pf_s}'; exec sleep 1000"),
    );
    sigkill(sb.pid("svc").unwrap());
    let unrelated = sleeper(&sb);
    fs::write(&svc_pf, format!("{}\n", unrelated.pid())).unwrap();
    backdate(&svc_pf);
    // A PID file of a name without a record, naming a dead process.
    let ext_pf = sb.path("ext.pid");
    {
        let gone = sleeper(&sb);
        fs::write(&ext_pf, format!("{}\n", gone.pid())).unwrap();
    }
    backdate(&ext_pf);
    // And a corrupt record.
    fs::write(sb.state.join("junk.json"), "{ not json").unwrap();
    // Make any rewrite visible in mtime even on coarse-clock filesystems.
    for e in fs::read_dir(&sb.state).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            backdate(&p);
        }
    }

    let watched = vec![sb.state.clone(), svc_pf.clone(), ext_pf.clone()];
    let before = snapshot(&watched);
    let template = format!("{}/{{name}}.pid", sb.dir.path().display());
    let runs: &[&[&str]] = &[
        &[],
        &["--json"],
        &["-q"],
        &["live", "stp", "dd", "svc", "junk", "nobody"],
        &["--json", "--pidfile", &template, "ext", "dd", "svc"],
        &["-q", "--pidfile", &template, "ext", "svc"],
    ];
    let mut states = BTreeMap::new();
    for args in runs {
        let out = sb.status(args);
        assert_ne!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        if args.first() == Some(&"--json") {
            for o in json_of(&out) {
                states.insert(o["name"].as_str().unwrap().to_string(), o["state"].clone());
            }
        }
    }
    let after = snapshot(&watched);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "pm-status created or removed files"
    );
    for (path, b) in &before {
        assert_eq!(b, &after[path], "{} changed", path.display());
    }
    // It saw what it should have (so the runs above did look at these files).
    assert_eq!(states["dd"], "dead");
    assert_eq!(states["svc"], "dead");
    assert_eq!(states["ext"], "dead");
    assert_eq!(states["junk"], "unknown");
    assert_eq!(states["live"], "running");
    assert!(svc_pf.exists() && ext_pf.exists() && sb.state.join("dd.pid").exists());
    assert!(!sb.state.join("nobody.lock").exists());
}

#[test]
fn status_does_not_wait_behind_a_held_name_lock() {
    if !require("python3", "python3") {
        return;
    }
    let sb = Sandbox::new();
    sb.start_sh("locked", &[], "exec sleep 1000");
    sb.start_sh("free", &[], "exec sleep 1000");
    let lock = sb.state.join("locked.lock");
    let mut holder = sb
        .std_cmd("python3")
        .arg("-c")
        .arg(
            "import fcntl, sys\n\
             f = open(sys.argv[1], 'a')\n\
             fcntl.flock(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             sys.stdin.read()\n",
        )
        .arg(&lock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let stdin = holder.stdin.take();
    let holder = Owned(holder);
    // Control: the lock really is held (flock(1) cannot take it).
    if have("flock") {
        let probe = StdCommand::new("flock")
            .args(["-n"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        assert!(!probe.success(), "the test's lock is not held");
    }

    for args in [
        &["locked"][..],
        &["--json"][..],
        &["-q", "free", "locked"][..],
        &[][..],
    ] {
        let t = Instant::now();
        let out = sb
            .cmd("pm-status")
            .args(args)
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        let took = t.elapsed();
        assert_code(&out, 0);
        assert!(
            took < Duration::from_secs(15),
            "pm-status {args:?} took {took:?}"
        );
    }
    assert_eq!(sb.state_of("locked"), "running");
    assert!(is_alive(holder.pid()), "the lock holder is still there");
    drop(stdin);
}

// ---------------------------------------------------------------------------------------
// Corrupt records
// ---------------------------------------------------------------------------------------

#[test]
fn corrupt_records_are_reported_per_service_without_hiding_others() {
    let sb = Sandbox::new();
    sb.start_sh("good1", &[], "exec sleep 1000");
    sb.start_sh("trunc", &[], "exec sleep 1000");
    sb.start_sh("good2", &[], "exec sleep 1000");
    // Garbage, a truncated real record, and a symlink to a valid record.
    fs::write(sb.state.join("garbage.json"), b"\x00\xffnot json at all{{").unwrap();
    let full = record_bytes(&sb, "trunc");
    fs::write(sb.state.join("trunc.json"), &full[..full.len() / 2]).unwrap();
    std::os::unix::fs::symlink(sb.state.join("good1.json"), sb.state.join("link.json")).unwrap();

    let out = sb.status(&["--json"]);
    // Unreadable records have no start time and come first; the first not running decides.
    assert_code(&out, 4);
    let arr = json_of(&out);
    let by_name: BTreeMap<String, &Value> = arr
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_string(), o))
        .collect();
    assert_eq!(arr.len(), 5, "{arr:?}");
    for good in ["good1", "good2"] {
        assert_eq!(by_name[good]["state"], "running", "{}", by_name[good]);
    }
    // The good ones keep their start order.
    let order = names_of(&arr);
    let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(pos("good1") < pos("good2"), "{order:?}");
    for bad in ["garbage", "trunc", "link"] {
        let o = by_name[bad];
        assert_eq!(o["state"], "unknown", "{o}");
        let note = o["note"].as_str().unwrap_or("");
        assert!(
            note.contains(&format!("{bad}.json")),
            "the error names the file: {o}"
        );
        assert_eq!(o["pid"], Value::Null, "{o}");
    }
    assert!(by_name["link"]["note"]
        .as_str()
        .unwrap()
        .contains("symbolic link"));

    // Named: the good ones alone are fine; a corrupt one gives unknown's code.
    assert_code(&sb.status(&["good1", "good2"]), 0);
    assert_code(&sb.status(&["good1", "trunc", "good2"]), 4);
    assert_code(&sb.status(&["-q", "link"]), 4);

    // The table shows every row, with the error for the bad ones.
    let out = sb.status(&[]);
    assert_code(&out, 4);
    let table = stdout(&out);
    for n in ["good1", "good2"] {
        assert_eq!(words(&row(&table, n))[1].2, "running", "{table}");
    }
    for n in ["garbage", "trunc", "link"] {
        let r = row(&table, n);
        assert_eq!(words(&r)[1].2, "unknown", "{table}");
        assert!(r.contains(&format!("{n}.json")), "{r}");
    }
}

// ---------------------------------------------------------------------------------------
// Closed stdout
// ---------------------------------------------------------------------------------------

#[test]
fn closed_pipe_is_quiet() {
    let sb = Sandbox::new();
    // More output than a pipe holds (64 KiB), so pm-status really writes into a closed pipe.
    let big = "x".repeat(100_000);
    assert_success(
        &sb.start("big", &["--", "sh", "-c", "exec sleep 1000", &big]),
        "pm-start big",
    );
    sb.start_sh("small", &[], "exec sleep 1000");
    for (cmd, first) in [
        (r#"{ "$0"; echo "rc=$?" >&2; } | head -1"#, "NAME"),
        (r#"{ "$0" --json; echo "rc=$?" >&2; } | head -c 1"#, "["),
    ] {
        let out = sb
            .std_cmd("sh")
            .arg("-c")
            .arg(cmd)
            .arg(bin_dir().join("pm-status"))
            .output()
            .unwrap();
        assert!(stdout(&out).starts_with(first), "{}", describe(&out));
        assert_eq!(
            stderr(&out),
            "rc=0\n",
            "no error message, exit 0: {}",
            describe(&out)
        );
    }
}

#[test]
fn log_prints_the_log_path_for_tail_and_4_for_an_unknown_name() {
    let sb = Sandbox::new();
    let custom = sb.path("custom.log");
    sb.start_sh("web", &["--log", s(&custom)], "echo hello; exec sleep 100");
    sb.start_sh("db", &[], "exec sleep 100");
    let out = sb.cmd("pm-status").args(["--log", "web"]).output().unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&out), format!("{}\n", custom.display()));
    wait_until("the log has the line", || {
        fs::read_to_string(stdout(&out).trim()).is_ok_and(|t| t.contains("hello"))
    });
    // Every recorded service, in start order, without NAMEs.
    let out = sb.cmd("pm-status").arg("--log").output().unwrap();
    assert_eq!(
        stdout(&out),
        format!(
            "{}\n{}\n",
            custom.display(),
            sb.state.join("db.log").display()
        )
    );
    let out = sb
        .cmd("pm-status")
        .args(["--log", "web", "nope"])
        .output()
        .unwrap();
    assert_code(&out, 4);
    assert_eq!(stdout(&out), format!("{}\n", custom.display()));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    sb.stop(&["web", "db"]);
}

/// The cron watchdog line of pm(7), run the way cron runs it: `/bin/sh -c` with an empty
/// environment but for the crontab's own variables (PM_STATE_DIR) and a minimal PATH.
fn cron_watchdog(sb: &Sandbox) -> Output {
    let page =
        fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/pm.7"))
            .unwrap();
    let line = page
        .lines()
        .find(|l| l.starts_with("* * * * *"))
        .expect("pm(7) has a cron line")
        .replace("\\-", "-");
    let command = line.trim_start_matches("* * * * *").trim();
    std::process::Command::new("env")
        .arg("-i")
        .arg(format!("PATH={}:/usr/bin:/bin", bin_dir().display()))
        .arg(format!("PM_STATE_DIR={}", sb.state.display()))
        .args(["/bin/sh", "-c", command])
        .current_dir("/")
        .output()
        .unwrap()
}

#[test]
fn the_cron_watchdog_recipe_restarts_a_dead_service_and_only_that() {
    let sb = Sandbox::new();
    let first = sb.start_sh("web", &[], "exec sleep 100");
    // Running: left alone.
    cron_watchdog(&sb);
    assert_eq!(sb.pid("web"), Some(first));
    // Died: restarted from its record.
    sigkill(first);
    wait_until("web is dead", || sb.state_of("web") == "dead");
    let out = cron_watchdog(&sb);
    assert_eq!(sb.state_of("web"), "running", "{}", describe(&out));
    let second = sb.pid("web").unwrap();
    assert_ne!(second, first);
    // Stopped on purpose: stays stopped.
    assert_success(&sb.stop(&["web"]), "pm-stop");
    let out = cron_watchdog(&sb);
    assert_eq!(sb.state_of("web"), "stopped", "{}", describe(&out));
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
}
