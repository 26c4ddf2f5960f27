//! The logger of `--log-max-size` / `--log-keep` / `--log-timestamps`: whole lines, in
//! order, across rotated files; nothing lost at a stop; no symlink followed.

use std::fs;
use std::time::{Duration, SystemTime};

use pm_tests::*;

/// Two writers at once, each numbering its lines, as fast as they can.
const WRITERS: &str = r#"
for w in a b; do
  python3 -c '
import sys
w = sys.argv[1]
for i in range(3000):
    sys.stdout.write("%s %05d %s\n" % (w, i, "x" * (i % 50)))
    if i % 5 == 0:
        sys.stdout.flush()
' $w &
done
wait
echo done
exec sleep 1000
"#;

/// Every rotated file and the log, oldest first.
fn files_oldest_first(sb: &Sandbox, name: &str, keep: usize) -> Vec<(String, String)> {
    let log = sb.state.join(format!("{name}.log"));
    let mut out = Vec::new();
    for n in (1..=keep).rev() {
        let p = format!("{}.{n}", log.display());
        if let Ok(t) = fs::read_to_string(&p) {
            out.push((p, t));
        }
    }
    out.push((log.display().to_string(), fs::read_to_string(&log).unwrap()));
    out
}

#[test]
fn rotation_keeps_every_line_whole_and_in_order() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.start(
        "w",
        &[
            "--log-max-size",
            "4096",
            "--log-keep",
            "500",
            "--ready",
            "log:^done$",
            "--",
            "sh",
            "-c",
            WRITERS,
        ],
    );
    assert_success(&out, "pm-start w");
    let files = files_oldest_first(&sb, "w", 500);
    assert!(files.len() > 10, "rotated only {} times", files.len() - 1);
    let mut next = [0usize; 2];
    for (path, text) in &files {
        assert!(text.len() <= 4096, "{path} has {} bytes", text.len());
        assert!(text.ends_with('\n'), "{path} ends inside a line");
        for line in text.lines() {
            if line == "done" {
                continue;
            }
            let mut f = line.split(' ');
            let (w, i, pad) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
            let i: usize = i
                .parse()
                .unwrap_or_else(|_| panic!("{path}: broken line {line:?}"));
            let k = match w {
                "a" => 0,
                "b" => 1,
                _ => panic!("{path}: broken line {line:?}"),
            };
            assert_eq!(i, next[k], "{path}: writer {w} out of order or a line lost");
            assert_eq!(pad.len(), i % 50, "{path}: line {line:?} cut");
            next[k] += 1;
        }
    }
    assert_eq!(next, [3000, 3000]);
    assert_success(&sb.stop(&["w"]), "pm-stop w");
    assert!(sb.processes().is_empty(), "left: {:?}", sb.processes());
}

#[test]
fn old_files_beyond_keep_are_dropped() {
    let sb = Sandbox::new();
    let out = sb.start(
        "k",
        &[
            "--log-max-size",
            "100",
            "--log-keep",
            "2",
            "--ready",
            "log:^end$",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; echo end; exec sleep 1000",
        ],
    );
    assert_success(&out, "pm-start k");
    let log = sb.state.join("k.log");
    assert!(sb.state.join("k.log.1").is_file());
    assert!(sb.state.join("k.log.2").is_file());
    assert!(
        !sb.state.join("k.log.3").exists(),
        "more than --log-keep files"
    );
    let all: String = files_oldest_first(&sb, "k", 2)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(all.ends_with("line 99\nend\n"), "{all:?}");
    assert!(
        !all.contains("line 0\n"),
        "the oldest lines were kept: {all:?}"
    );
    assert!(fs::metadata(&log).unwrap().len() <= 100);
    assert_success(&sb.stop(&["k"]), "pm-stop k");
}

#[test]
fn timestamps_prefix_each_line_with_its_time() {
    let sb = Sandbox::new();
    let before = SystemTime::now() - Duration::from_secs(1);
    let out = sb.start(
        "t",
        &[
            "--log-timestamps",
            "--ready",
            "log:two$",
            "--",
            "sh",
            "-c",
            "echo one; echo two >&2; exec sleep 1000",
        ],
    );
    assert_success(&out, "pm-start t");
    let after = SystemTime::now() + Duration::from_secs(1);
    let log = sb.log("t");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log:?}");
    for (line, text) in lines.iter().zip(["one", "two"]) {
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, text);
        let t = parse_stamp(stamp).unwrap_or_else(|| panic!("{stamp:?} is not RFC 3339 UTC"));
        assert!(
            t >= before && t <= after,
            "{stamp} is not the time of writing"
        );
    }
    assert_success(&sb.stop(&["t"]), "pm-stop t");
}

/// `2026-11-26T14:50:35.860Z` as a time (days from the civil date, Howard Hinnant's way).
fn parse_stamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if s.len() != 24 || b[4] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms_total = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000 + ms) as u64;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms_total))
}

#[test]
fn output_written_while_stopping_is_kept_and_the_logger_ends() {
    let sb = Sandbox::new();
    let pid = sb.start_sh(
        "b",
        &["--log-timestamps", "--ready", "log:hi$"],
        // The worker that writes last has a session of its own: the stop signals it
        // together with the logger.
        "setsid sh -c 'trap \"sleep 0.3; echo bye; exit 0\" TERM; while :; do sleep 0.05; done' & echo hi; wait",
    );
    let procs = sb.processes();
    assert!(
        procs.len() >= 2,
        "no logger process next to the service: {procs:?}"
    );
    assert_success(&sb.stop(&["b"]), "pm-stop b");
    assert_gone(pid);
    assert!(
        sb.log("b").lines().any(|l| l.ends_with(" bye")),
        "{:?}",
        sb.log("b")
    );
    // The logger ended with the service: nothing of the start is left.
    assert!(sb.processes().is_empty(), "left: {:?}", sb.processes());
}

#[test]
fn a_symlink_planted_as_a_rotated_file_is_replaced_not_followed() {
    let sb = Sandbox::new();
    let victim = sb.path("victim");
    fs::write(&victim, "precious\n").unwrap();
    fs::create_dir_all(&sb.state).unwrap();
    std::os::unix::fs::symlink(&victim, sb.state.join("s.log.1")).unwrap();
    std::os::unix::fs::symlink(&victim, sb.state.join("s.log.2")).unwrap();
    let out = sb.start(
        "s",
        &[
            "--log-max-size",
            "50",
            "--log-keep",
            "2",
            "--ready",
            "log:^end$",
            "--",
            "sh",
            "-c",
            "i=1; while [ $i -le 30 ]; do echo line $i; i=$((i+1)); done; echo end; exec sleep 1000",
        ],
    );
    assert_success(&out, "pm-start s");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    for n in [1, 2] {
        let p = sb.state.join(format!("s.log.{n}"));
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(
            m.file_type().is_file(),
            "{} is still a symlink",
            p.display()
        );
    }
    assert_success(&sb.stop(&["s"]), "pm-stop s");
}

#[test]
fn a_log_directory_swapped_for_a_symlink_is_not_followed_by_the_root_logger() {
    let sb = Sandbox::new();
    let logs = sb.path("logs");
    let victim = sb.path("victim");
    fs::create_dir_all(&logs).unwrap();
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("app.log"), "precious\n").unwrap();
    let swapped = sb.path("swapped");
    let script = format!(
        "echo first; while [ ! -e {swapped} ]; do sleep 0.02; done; \
         i=0; while [ $i -lt 40 ]; do echo \"line $i xxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done; \
         echo end; exec sleep 1000",
        swapped = s(&swapped)
    );
    let log = logs.join("app.log");
    let out = sb.start(
        "d",
        &[
            "--log",
            s(&log),
            "--log-max-size",
            "200",
            "--log-keep",
            "0",
            "--ready",
            "log:^first$",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_success(&out, "pm-start d");
    // What the service's user could do in a directory it can write: swap it for a link.
    fs::rename(&logs, sb.path("logs.real")).unwrap();
    std::os::unix::fs::symlink(&victim, &logs).unwrap();
    fs::write(&swapped, "").unwrap();
    let real = sb.path("logs.real/app.log");
    wait_until("the last line is logged", || {
        fs::read_to_string(&real).is_ok_and(|t| t.ends_with("end\n"))
    });
    assert_eq!(
        fs::read_to_string(victim.join("app.log")).unwrap(),
        "precious\n",
        "the logger rotated through the symlink"
    );
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
    assert_success(&sb.stop(&["d"]), "pm-stop d");
}

/// A small tmpfs mounted for one test, lazily unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// What pm-status --json says about NAME's logger.
fn log_error(sb: &Sandbox, name: &str) -> Option<String> {
    sb.status_json(&[name])[0]["log_error"]
        .as_str()
        .map(str::to_string)
}

/// The numbers of the `line N` lines, in order; pm's notices are returned apart.
fn numbered_lines(text: &str) -> (Vec<u64>, Vec<String>) {
    let (mut nums, mut notices) = (Vec::new(), Vec::new());
    for l in text.lines() {
        if l.starts_with("[pm: ") {
            notices.push(l.to_string());
        } else if let Some(n) = l.strip_prefix("line ").and_then(|n| n.parse().ok()) {
            nums.push(n);
        } else if l != "end" {
            panic!("a broken line {l:?} in {text:?}");
        }
    }
    (nums, notices)
}

#[track_caller]
fn assert_consecutive(nums: &[u64], what: &str) {
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(
            *n, i as u64,
            "{what}: line {i} lost or out of order: {nums:?}"
        );
    }
}

#[test]
fn a_full_disk_is_waited_out_and_nothing_is_lost_or_silent() {
    if !root_or_skip("mount a small tmpfs") {
        return;
    }
    let sb = Sandbox::new();
    let Some(disk) = Tmpfs::mount(&sb.path("disk"), "256k") else {
        skip("cannot mount a tmpfs here");
        return;
    };
    let log = disk.0.join("f.log");
    sb.start_sh(
        "f",
        &[
            "--log",
            s(&log),
            "--log-max-size",
            "10M",
            "--ready",
            "log:^line 3$",
        ],
        "i=0; while :; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done",
    );
    // Fill the file system up.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
    wait_until("pm-status says the log is failing", || {
        log_error(&sb, "f").is_some()
    });
    let said = log_error(&sb, "f").unwrap_or_default();
    assert!(said.contains("ENOSPC"), "{said}");
    assert_eq!(sb.state_of("f"), "running");
    let table = stdout(&sb.status(&["f"]));
    assert!(table.contains("[log: "), "{table}");
    // The service was not blocked meanwhile: it went on writing.
    fs::remove_file(&filler).unwrap();
    wait_until("pm-status says the log works again", || {
        log_error(&sb, "f").is_none()
    });
    let recovered_at = numbered_lines(&fs::read_to_string(&log).unwrap()).0.len() as u64;
    wait_until("more lines are logged", || {
        numbered_lines(&fs::read_to_string(&log).unwrap()).0.len() as u64 > recovered_at + 20
    });
    assert_success(&sb.stop(&["f"]), "pm-stop f");
    let text = fs::read_to_string(&log).unwrap();
    let (nums, notices) = numbered_lines(&text);
    // Every line made it, in order: the backlog held what the full disk refused.
    assert_consecutive(&nums, "f.log");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("log write failed") && n.contains("ENOSPC")),
        "no notice of the failure: {notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.contains("work again")),
        "no notice of the recovery: {notices:?}"
    );
    assert!(
        !sb.state.join(".f.logstatus").exists(),
        "the status file outlived the run"
    );
}

#[test]
fn a_directory_in_the_way_of_rotation_loses_nothing() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.state.join("r.log.1")).unwrap();
    fs::write(sb.state.join("r.log.1/mine"), "x").unwrap();
    nix::unistd::mkfifo(
        &sb.state.join("r.log.2"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = sb.start(
        "r",
        &[
            "--log-max-size",
            "200",
            "--log-keep",
            "2",
            "--ready",
            "log:^end$",
            "--ready-timeout",
            "10s",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; echo end; exec sleep 1000",
        ],
    );
    assert_success(&out, "pm-start r");
    let text = sb.log("r");
    let (nums, notices) = numbered_lines(&text);
    assert_eq!(nums.len(), 100, "{text}");
    assert_consecutive(&nums, "r.log");
    assert!(
        notices.iter().any(|n| n.contains("not rotated")),
        "no notice: {notices:?}"
    );
    assert_eq!(sb.state_of("r"), "running");
    let said = log_error(&sb, "r").unwrap_or_default();
    assert!(said.contains("not rotated"), "{said:?}");
    // What the user put there is left as it was.
    assert_eq!(
        fs::read_to_string(sb.state.join("r.log.1/mine")).unwrap(),
        "x"
    );
    assert_success(&sb.stop(&["r"]), "pm-stop r");
    assert!(!sb.state.join(".r.logstatus").exists());
}

#[test]
fn a_user_services_new_log_files_are_the_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !root_or_skip("--user") {
        return;
    }
    const NOBODY: u32 = 65534;
    let sb = Sandbox::new();
    fs::set_permissions(sb.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let d = sb.path("logs");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = d.join("u.log");
    let out = sb.start(
        "u",
        &[
            "--user",
            "nobody",
            "--log",
            s(&log),
            "--log-max-size",
            "100",
            "--log-keep",
            "2",
            "--ready",
            "log:^end$",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 30 ]; do echo line $i; i=$((i+1)); done; echo end; exec sleep 1000",
        ],
    );
    assert_success(&out, "pm-start u --user nobody");
    let mode = fs::metadata(d.join("u.log.2")).unwrap().mode() & 0o7777;
    assert_eq!(mode & 0o137, 0, "mode {mode:o}");
    for p in [log.clone(), d.join("u.log.1"), d.join("u.log.2")] {
        let m = fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (NOBODY, NOBODY),
            "{} is not nobody's",
            p.display()
        );
        assert_eq!(m.mode() & 0o7777, mode, "{}: the mode differs", p.display());
    }
    assert_success(&sb.stop(&["u"]), "pm-stop u");
}
