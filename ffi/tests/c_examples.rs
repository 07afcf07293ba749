//! Builds the example hosts in `examples/c/` (threaded, event_loop, fork_per_connection) against
//! the staticlib with `cc`, exactly as a C user would (`-std=c11 -Wall -Wextra -Wpedantic
//! -Werror`), and runs `examples/c/test.py` on each: implicit TLS and STARTTLS with
//! `smtplib`, AUTH, a refused `nobody@` recipient, both messages byte-exact in the spool, and
//! exit status 0 after SIGTERM. Every step is bounded (`test.py` bounds its own waits).
//!
//! Needs `cc`, `python3` and `openssl` on the PATH; a test whose tool is missing says so and
//! passes (set `SMTPS_C_TESTS_REQUIRED=1` to fail instead). `SMTPS_EXAMPLES_VALGRIND=1` runs
//! the hosts under valgrind too (slow).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use common::{BUILD_TIMEOUT, have, lib_dir, run};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const VALGRIND_TIMEOUT: Duration = Duration::from_secs(900);

fn work_dir() -> &'static Path {
    common::work_dir("c-examples")
}

fn tools_present() -> bool {
    have("cc", "--version") && have("python3", "--version") && have("openssl", "version")
}

/// Compiles `examples/c/<name>.c` against `libsmtps.a`, as the examples' Makefile does with
/// `LIBDIR=`; returns the binary.
fn build(name: &str) -> PathBuf {
    let lib_dir = lib_dir();
    let out = work_dir().join(name);
    let mut cc = common::cc(ROOT);
    cc.arg(format!("{ROOT}/examples/c/{name}.c"))
        .arg(lib_dir.join("libsmtps.a"))
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&out);
    let output = run(cc, BUILD_TIMEOUT);
    assert!(
        output.status.success(),
        "building examples/c/{name}.c failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Runs `examples/c/test.py` on the example; fails with its report unless every check passed.
fn run_test_py(binary: &Path, valgrind: bool) {
    let mut command = Command::new("python3");
    command.arg(format!("{ROOT}/examples/c/test.py"));
    if valgrind {
        command.arg("--valgrind");
    }
    command.arg(binary);
    let timeout = if valgrind {
        VALGRIND_TIMEOUT
    } else {
        RUN_TIMEOUT
    };
    let output = run(command, timeout);
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(
        output.status.success(),
        "test.py {binary:?} failed ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!report.contains("FAIL"), "{report}");
}

fn example(name: &str) {
    if !tools_present() {
        return;
    }
    let binary = build(name);
    run_test_py(&binary, false);
    if std::env::var_os("SMTPS_EXAMPLES_VALGRIND").is_some() && have("valgrind", "--version") {
        run_test_py(&binary, true);
    }
}

#[test]
fn example_threaded() {
    example("threaded");
}

#[test]
fn example_event_loop() {
    example("event_loop");
}

#[test]
fn example_fork_per_connection() {
    example("fork_per_connection");
}
