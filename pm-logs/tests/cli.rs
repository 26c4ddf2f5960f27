//! The binary's own command line: help with examples, version, usage errors.

#[test]
fn help_version_and_usage_errors() {
    pm_tests::assert_cli_basics(env!("CARGO_BIN_EXE_pm-logs").as_ref(), "pm-logs");
}
