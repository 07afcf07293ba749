//! Infrastructure shared by the `smtpsd` integration tests (`e2e`, `faults`): the daemon under
//! test, its log, child processes with deadlines, temporary directories and certificates.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

pub(crate) const SMTPSD: &str = env!("CARGO_BIN_EXE_smtpsd");

// --- the daemon under test -------------------------------------------------------------------

/// A running smtpsd and the files it was started with; killed on drop (the guard goes before
/// the directory).
pub(crate) struct Daemon {
    pub(crate) guard: ChildGuard,
    pub(crate) log: Arc<Log>,
    pub(crate) addrs: Vec<SocketAddr>,
    /// How long [`Self::wait_log`] waits.
    pub(crate) step_deadline: Duration,
    pub(crate) cert: TestCert,
    /// More certificates, served by SNI.
    pub(crate) sni: Vec<TestCert>,
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
    /// The CA file clients are given.
    pub(crate) cafile: PathBuf,
    /// The test's directory; the maildir is `mail` in it unless a test chose another.
    pub(crate) dir: Arc<TempDir>,
}

/// Starts smtpsd (`command`, with its arguments) and waits up to `deadline` until it logs
/// `listeners` listening addresses; returns the process, its log and those addresses.
pub(crate) fn spawn_smtpsd(
    mut command: Command,
    listeners: usize,
    deadline: Duration,
) -> (ChildGuard, Arc<Log>, Vec<SocketAddr>) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(command);
    let log = Log::collect(guard.child.stderr.take().expect("stderr"));
    let started = log.wait(deadline, |lines| {
        lines.iter().filter(|l| l.contains("listening on")).count() >= listeners
    });
    assert!(started, "smtpsd did not start:\n{}", log.text());
    let addrs = log
        .text()
        .lines()
        .filter_map(|l| l.split("listening on ").nth(1))
        .map(|rest| {
            let addr = rest.split_whitespace().next().expect("address");
            addr.parse::<SocketAddr>().expect("socket address")
        })
        .collect();
    (guard, log, addrs)
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.guard.child.try_wait(), Ok(None))
    }

    pub(crate) fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped (the
        // guard reaps it only on drop, in `kill` or in `wait_deadline`).
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.guard.wait_deadline(timeout)
    }

    /// Waits until `needle` occurs in at least `count` log lines.
    pub(crate) fn wait_log(&self, needle: &str, count: usize) -> bool {
        self.log.wait(self.step_deadline, |lines| {
            lines.iter().filter(|l| l.contains(needle)).count() >= count
        })
    }

    pub(crate) fn log(&self) -> String {
        self.log.text()
    }

    /// Replaces the certificate files the way a renewal tool does: write aside, rename.
    pub(crate) fn replace_certificate(&self, cert_pem: &str, key_pem: &str) {
        replace_pem_files(&self.cert_path, &self.key_path, cert_pem, key_pem);
    }

    /// Messages in `new/` of the maildir in [`Self::dir`], in name order.
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        self.maildir_files("new")
            .iter()
            .map(|p| fs::read(p).expect("read message"))
            .collect()
    }

    pub(crate) fn maildir_files(&self, sub: &str) -> Vec<PathBuf> {
        list(&self.dir.path().join("mail").join(sub))
    }

    pub(crate) fn write_file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, bytes).expect("write file");
        path.display().to_string()
    }

    /// Open descriptors, from `/proc/PID/fd`.
    pub(crate) fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .expect("read /proc/PID/fd")
    }

    pub(crate) fn open_fds(&self) -> String {
        let dir = format!("/proc/{}/fd", self.pid());
        list(Path::new(&dir))
            .iter()
            .map(|p| format!("{} -> {:?}", p.display(), fs::read_link(p).ok()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// VmRSS from `/proc/PID/status`, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

/// The daemon's standard error, line by line, as it arrives.
pub(crate) struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Log {
    pub(crate) fn collect(stderr: impl Read + Send + 'static) -> Arc<Self> {
        let log = Arc::new(Self {
            lines: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        });
        let writer = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let mut lines = writer.lines.lock().unwrap_or_else(PoisonError::into_inner);
                lines.push(String::from_utf8_lossy(&line).into_owned());
                writer.changed.notify_all();
            }
            let mut lines = writer.lines.lock().unwrap_or_else(PoisonError::into_inner);
            lines.push("(end of stderr)".to_owned());
            writer.changed.notify_all();
        });
        log
    }

    /// Waits until `done` holds for the lines so far, or the end of stderr, or `timeout`.
    pub(crate) fn wait(&self, timeout: Duration, done: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if done(&lines) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || lines.last().is_some_and(|l| l == "(end of stderr)") {
                return false;
            }
            lines = self
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }
}

// --- clients and processes -------------------------------------------------------------------

/// `key=value` lines printed by a client scenario.
pub(crate) struct ClientRun {
    pub(crate) values: HashMap<String, String>,
    pub(crate) stdout: String,
}

impl ClientRun {
    pub(crate) fn parse(stdout: &str) -> Self {
        Self {
            values: parse_values(stdout),
            stdout: stdout.to_owned(),
        }
    }

    pub(crate) fn value(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in the client's output:\n{}", self.stdout))
    }

    /// A counter: absent means zero.
    pub(crate) fn get(&self, key: &str) -> &str {
        self.values.get(key).map_or("0", String::as_str)
    }

    /// The figures on one line, notes left out.
    pub(crate) fn summary(&self) -> String {
        let mut pairs: Vec<_> = self
            .values
            .iter()
            .filter(|(k, _)| !k.starts_with("note"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.sort();
        let notes: Vec<_> = self
            .values
            .iter()
            .filter(|(k, _)| k.starts_with("note"))
            .map(|(_, v)| v.as_str())
            .collect();
        if notes.is_empty() {
            pairs.join(" ")
        } else {
            format!("{}\n  notes: {}", pairs.join(" "), notes.join("\n    "))
        }
    }
}

pub(crate) fn parse_values(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A child process killed (SIGKILL) and reaped on drop.
pub(crate) struct ChildGuard {
    pub(crate) child: Child,
    pub(crate) what: String,
}

impl ChildGuard {
    pub(crate) fn spawn(mut command: Command) -> Self {
        let what = format!("{command:?}");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self { child, what }
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn wait_deadline(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return None,
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `command` to its end, feeding it `stdin`; kills it and panics past `timeout`.
pub(crate) fn run(mut command: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(command);
    if let (Some(input), Some(mut pipe)) = (stdin, guard.child.stdin.take()) {
        thread::spawn(move || pipe.write_all(&input));
    }
    let stdout = read_all(guard.child.stdout.take().expect("stdout"));
    let stderr = read_all(guard.child.stderr.take().expect("stderr"));
    let status = guard.wait_deadline(timeout);
    if status.is_none() {
        guard.kill();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{} ran over {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            guard.what
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A client process running in the background, its output collected as it comes.
pub(crate) struct Background {
    guard: ChildGuard,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
}

impl Background {
    /// Starts `command` with no input and its output piped.
    pub(crate) fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(command);
        let stdout = read_all(guard.child.stdout.take().expect("stdout"));
        let stderr = read_all(guard.child.stderr.take().expect("stderr"));
        Self {
            guard,
            stdout,
            stderr,
        }
    }

    /// Waits for a successful exit and parses its output; panics past `timeout` (killing it)
    /// or on a failure, showing `context` (such as the daemon's log) with the client's output.
    pub(crate) fn finish(mut self, timeout: Duration, context: &str) -> ClientRun {
        let status = self.guard.wait_deadline(timeout);
        if status.is_none() {
            self.guard.kill();
        }
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        match status {
            Some(status) if status.success() => ClientRun::parse(&stdout),
            other => panic!(
                "{} ended {other:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{context}",
                self.guard.what
            ),
        }
    }
}

pub(crate) fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

// --- files and certificates ------------------------------------------------------------------

/// The entries of `dir`, in name order; none if it cannot be read.
pub(crate) fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// A directory under the system's temp dir, named after the test binary; removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "smtpsd-{}-{}-{}-{label}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A self-signed ECDSA P-256 certificate, by default for `localhost` and `127.0.0.1`.
#[derive(Clone)]
pub(crate) struct TestCert {
    pub(crate) common_name: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: Vec<u8>,
}

impl TestCert {
    pub(crate) fn new(common_name: &str) -> Self {
        Self::for_names(common_name, &["localhost", "127.0.0.1"])
    }

    pub(crate) fn for_names(common_name: &str, names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self {
            common_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Writes the certificate and key as `cert.pem` and `key.pem` in `dir`; returns their paths.
    pub(crate) fn write_pem_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        fs::write(&cert_path, &self.cert_pem).expect("write cert");
        fs::write(&key_path, &self.key_pem).expect("write key");
        (cert_path, key_path)
    }
}

/// Replaces certificate files the way a renewal tool does: write aside, rename.
pub(crate) fn replace_pem_files(cert_path: &Path, key_path: &Path, cert_pem: &str, key_pem: &str) {
    for (path, pem) in [(key_path, key_pem), (cert_path, cert_pem)] {
        let aside = path.with_extension("new");
        fs::write(&aside, pem).expect("write replacement");
        fs::rename(&aside, path).expect("rename replacement");
    }
}

// --- outside tools ---------------------------------------------------------------------------

/// Whether every tool runs (`(program, argument)`, e.g. `("openssl", "version")`). A missing
/// one fails the test when `SMTPS_C_TESTS_REQUIRED` is set (as CI does), and otherwise skips
/// it with a message on standard error.
pub(crate) fn tools_present(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(program, argument)| {
            let mut command = Command::new(program);
            command
                .arg(argument)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let Ok(child) = command.spawn() else {
                return true;
            };
            let what = format!("{command:?}");
            let mut guard = ChildGuard { child, what };
            guard.wait_deadline(Duration::from_secs(10)).is_none()
        })
        .map(|(program, _)| *program)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("SMTPS_C_TESTS_REQUIRED").is_none(),
        "{test}: {} not found on the PATH, and SMTPS_C_TESTS_REQUIRED is set",
        missing.join(", ")
    );
    eprintln!(
        "skipped {test}: {} not found on the PATH",
        missing.join(", ")
    );
    false
}
