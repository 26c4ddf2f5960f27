//! pm's end-to-end tests: one test binary (ripgrep's `tests/tests.rs` habit), one module
//! per topic, all on the shared harness in `pm_tests` (the `Sandbox`, the /proc reader).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack;
mod cgroup;
mod faults;
mod install;
mod lifecycle;
mod logs;
mod logs_stream;
mod recipes;
mod restart;
mod services;
mod signal;
mod stack;
mod stack_faults;
mod start;
mod status;
mod stop;
mod supervise;
mod wait;
