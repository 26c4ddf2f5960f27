//! The install command's result: binaries, man pages and completions under a PREFIX.
//!
//! `make test` fills a temporary prefix with `make install` and passes it in
//! `PM_TEST_PREFIX` (as `.ci/run` does with its own); `cargo test` alone, without it, says
//! so and skips these.

use std::path::PathBuf;
use std::process::Command;

fn prefix() -> Option<PathBuf> {
    match std::env::var_os("PM_TEST_PREFIX") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI must run `make install PREFIX=...` and set PM_TEST_PREFIX")
        }
        None => {
            pm_tests::skip("set PM_TEST_PREFIX to a prefix `make install` filled");
            None
        }
    }
}

const TOOLS: [&str; 10] = [
    "pm-start",
    "pm-stop",
    "pm-status",
    "pm-stopall",
    "pm-signal",
    "pm-up",
    "pm-down",
    "pm-wait",
    "pm-restart",
    "pm-logs",
];

#[test]
fn installs_binaries_man_pages_and_completions() {
    let Some(p) = prefix() else { return };
    for t in TOOLS {
        let bin = p.join("bin").join(t);
        let out = Command::new(&bin).arg("--version").output().unwrap();
        assert!(out.status.success(), "{}", bin.display());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(t));
        let page = p.join(format!("share/man/man1/{t}.1"));
        assert!(page.is_file(), "{}", page.display());
        for c in [
            format!("share/bash-completion/completions/{t}"),
            format!("share/zsh/site-functions/_{t}"),
            format!("share/fish/vendor_completions.d/{t}.fish"),
        ] {
            assert!(p.join(&c).is_file(), "{c} missing");
        }
    }
    assert!(p.join("share/man/man7/pm.7").is_file());
}

#[test]
fn man_pages_render_without_warnings() {
    let Some(p) = prefix() else { return };
    if Command::new("man").arg("--version").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "man is missing in CI"
        );
        pm_tests::skip("man not installed (apt-get install man-db)");
        return;
    }
    let mut pages: Vec<PathBuf> = TOOLS
        .iter()
        .map(|t| p.join(format!("share/man/man1/{t}.1")))
        .collect();
    pages.push(p.join("share/man/man7/pm.7"));
    for page in pages {
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env_remove("MAN_KEEP_FORMATTING")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().is_empty(), "{}: warnings: {err}", page.display());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("EXIT STATUS"), "{}", page.display());
    }
}

#[test]
fn bash_completion_offers_recorded_names() {
    let Some(p) = prefix() else { return };
    let sb = pm_tests::Sandbox::new();
    // Two recorded services (one stopped at once, so nothing is left running).
    for name in ["web", "worker@2"] {
        let out = sb.start(name, &["--", "true"]);
        assert!(
            !out.status.success(),
            "`true` exits at once, so the start fails"
        );
    }
    let script = format!(
        "source {comp}\n\
         COMP_WORDS=(pm-stop w); COMP_CWORD=1; _pm_stop_with_names; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(pm-stop --signal ''); COMP_CWORD=2; _pm_complete_names || echo no-names-after-signal\n",
        comp = p.join("share/bash-completion/completions/pm-stop").display()
    );
    let path = format!(
        "{}:{}",
        p.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("PATH", path)
        .env("PM_STATE_DIR", &sb.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut names: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, ["web", "worker@2"], "{}", pm_tests::describe(&out));
    assert_eq!(lines.next(), Some("no-names-after-signal"));
}

#[test]
fn bash_completion_offers_signals_check_kinds_and_names_of_the_state_dir_typed() {
    let Some(p) = prefix() else { return };
    let here = pm_tests::Sandbox::new();
    let there = pm_tests::Sandbox::new();
    assert!(!there.start("elsewhere", &["--", "true"]).status.success());
    assert!(!here.start("local", &["--", "true"]).status.success());
    let comp = |t: &str| p.join("share/bash-completion/completions").join(t);
    // Called as bash calls a completion function: command, word, previous word.
    let script = format!(
        "source {stop}\nsource {start}\n\
         COMP_WORDS=(pm-stop --state-dir {there} ''); COMP_CWORD=3; _pm_stop_with_names pm-stop '' {there}; echo \"names: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(pm-stop --signal ''); COMP_CWORD=2; _pm_stop_with_names pm-stop '' --signal; echo \"signals: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(pm-start x --ready ''); COMP_CWORD=3; _pm_start_with_names pm-start '' --ready; echo \"checks: ${{COMPREPLY[*]}}\"\n",
        stop = comp("pm-stop").display(),
        start = comp("pm-start").display(),
        there = there.state.display(),
    );
    let path = format!(
        "{}:{}",
        p.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("PATH", path)
        .env("PM_STATE_DIR", &here.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |k: &str| -> Vec<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(line("names"), ["elsewhere"], "{}", pm_tests::describe(&out));
    let signals = line("signals");
    for s in ["TERM", "QUIT", "HUP", "KILL"] {
        assert!(
            signals.iter().any(|x| x == s),
            "{s} not offered: {signals:?}"
        );
    }
    let checks = line("checks");
    for c in ["tcp:", "notify", "exec:", "log:"] {
        assert!(checks.iter().any(|x| x == c), "{c} not offered: {checks:?}");
    }
}
