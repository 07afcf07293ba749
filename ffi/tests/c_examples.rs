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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
const VALGRIND_TIMEOUT: Duration = Duration::from_secs(900);

/// The test binary's profile directory, where `libsmtps.a` is. `cargo test` builds the
/// library only as an rlib for the tests, so the C library is brought up to date here, once
/// (the target directory is not locked while tests run).
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "smtps-ffi", "--lib"]);
        if dir.file_name().is_some_and(|name| name == "release") {
            cargo.arg("--release");
        }
        cargo.env("CARGO_TARGET_DIR", dir.parent().unwrap());
        let output = run(cargo, BUILD_TIMEOUT);
        assert!(
            output.status.success(),
            "cargo build -p smtps-ffi failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
    .clone()
}

fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile = exe.parent().unwrap().parent().unwrap();
        let dir = profile.join(format!("c-examples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn have(tool: &str, arg: &str) -> bool {
    let found = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("SMTPS_C_TESTS_REQUIRED").is_none(),
            "{tool} is required"
        );
        eprintln!("skipped: {tool} not found");
    }
    found
}

fn tools_present() -> bool {
    have("cc", "--version") && have("python3", "--version") && have("openssl", "version")
}

/// Runs a command to completion within `timeout`; returns its output.
fn run(mut command: Command, timeout: Duration) -> std::process::Output {
    let described = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{described}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = wait_for(&mut child, timeout, &described);
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn wait_for(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Compiles `examples/c/<name>.c` against `libsmtps.a`, as the examples' Makefile does with
/// `LIBDIR=`; returns the binary.
fn build(name: &str) -> PathBuf {
    let lib_dir = lib_dir();
    let out = work_dir().join(name);
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-g",
        "-O1",
        "-pthread",
    ])
    .arg(format!("-I{ROOT}/include"))
    .arg(format!("{ROOT}/examples/c/{name}.c"))
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
