//! What the C-program tests share: the C library brought up to date, a work directory, tools
//! looked up, commands run with a deadline.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long building the C library may take.
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The test binary's profile directory, where `libsmtps.a` is. `cargo test` builds the
/// library only as an rlib for the tests, so the C library is brought up to date here, once
/// (the target directory is not locked while tests run).
pub(crate) fn lib_dir() -> PathBuf {
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

/// A directory of this test process's own under the profile directory, `<prefix>-<pid>`.
pub(crate) fn work_dir(prefix: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile = exe.parent().unwrap().parent().unwrap();
        let dir = profile.join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Whether `tool` runs; without it a test is skipped, unless `SMTPS_C_TESTS_REQUIRED` is set.
pub(crate) fn have(tool: &str, arg: &str) -> bool {
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

/// Runs a command to completion within `timeout`; returns its output.
pub(crate) fn run(mut command: Command, timeout: Duration) -> std::process::Output {
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

/// Waits for `child` up to `timeout`; kills it and fails the test after.
pub(crate) fn wait_for(
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
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

/// `cc` (or `$CC`) with the flags every C program here is held to (C11, all warnings as
/// errors) and the repository's `include/`.
pub(crate) fn cc(root: &str) -> Command {
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
    .arg(format!("-I{root}/include"));
    cc
}
