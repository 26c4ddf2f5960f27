//! The binary's own command line: help with examples, version, usage errors.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pm-start"))
}

#[test]
fn help_shows_examples_and_version_works() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:"), "{text}");
    assert!(text.contains("--state-dir"), "{text}");
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pm-start "));
}

#[test]
fn unknown_option_is_a_usage_error() {
    let out = bin().arg("--no-such-option").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
