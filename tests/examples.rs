//! Runs the Rust examples (`examples/maildir_host.rs`, `examples/tokio_host.rs`) as their users
//! would: the example binary with a test certificate, Python's smtplib as the client over
//! implicit TLS (RFC 8314), the stored file checked, then SIGTERM and a clean exit. Every wait
//! is bounded.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smtps_testkit::{IO_TIMEOUT, TempDir, TestCertificate};

/// The client: one session, its outcome on stdout as `key=value` lines.
const CLIENT: &str = r#"
import smtplib, ssl, sys
port, ca, user, password, sender, body_file = sys.argv[1:7]
recipients = sys.argv[7:]
ctx = ssl.create_default_context(cafile=ca)
with open(body_file, "rb") as f:
    body = f.read()
s = smtplib.SMTP_SSL("localhost", int(port), context=ctx, timeout=30)
s.ehlo("client.test")
print("auth_advertised=%s" % ("auth" in s.esmtp_features))
if user:
    try:
        s.login(user, "wrong " + password)
        print("bad_login=accepted")
    except smtplib.SMTPAuthenticationError as e:
        print("bad_login=%d" % e.smtp_code)
    s.login(user, password)
print("mail=%d" % s.mail(sender)[0])
for r in recipients:
    print("rcpt %s=%d" % (r, s.rcpt(r)[0]))
code, text = s.data(body)
print("data=%d %s" % (code, text.decode()))
s.quit()
"#;

/// A running example: its process and the address it listens on.
struct Example {
    child: Child,
    addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl Example {
    fn start(name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(example_binary(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} example: {e}"));
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let first = stdout
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|_| panic!("{name} did not say where it listens"));
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name}: {first}"))
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            stdout,
        }
    }

    /// SIGTERM, then the exit status within the grace; and whether it said "stopped".
    fn terminate(mut self) -> (bool, bool) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + IO_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the example did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stopped = self.stdout.try_iter().any(|line| line == "stopped");
        (status.success(), stopped)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example's executable, as `cargo test` builds it beside the test binaries (built here
/// when a narrower command, such as `cargo test --test examples`, did not).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--quiet", "--example", name])
            .status()
            .unwrap();
        assert!(built.success(), "cannot build the {name} example");
    }
    path
}

/// Runs the client; returns its `key=value` lines.
fn send(
    addr: SocketAddr,
    ca: &Path,
    auth: Option<(&str, &str)>,
    recipients: &[&str],
    body: &[u8],
    dir: &Path,
) -> Vec<(String, String)> {
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let body_file = dir.join("body.eml");
    std::fs::write(&body_file, body).unwrap();
    let (user, password) = auth.unwrap_or(("", ""));
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(addr.port().to_string())
        .arg(ca)
        .args([user, password, "sender@example.test"])
        .arg(&body_file)
        .args(recipients)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + IO_TIMEOUT * 3;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "client failed: {out}");
    out.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn value<'a>(outcome: &'a [(String, String)], key: &str) -> &'a str {
    outcome
        .iter()
        .find(|(k, _)| k == key)
        .map_or_else(|| panic!("no {key} in {outcome:?}"), |(_, v)| v.as_str())
}

/// A body with CRLF lines, some starting with a dot (dot-stuffed on the wire, RFC 5321
/// §4.5.2), of about `size` octets.
fn body_of(size: usize) -> Vec<u8> {
    let mut body = b"Subject: example\r\n\r\n".to_vec();
    let mut i = 0u32;
    while body.len() < size {
        if i.is_multiple_of(9) {
            body.push(b'.');
        }
        body.extend_from_slice(format!("line {i} of the message\r\n").as_bytes());
        i += 1;
    }
    body
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn maildir_example_authenticates_stores_durably_and_stops_on_sigterm() {
    let dir = TempDir::new("example-maildir");
    let files = TestCertificate::localhost().write_files(dir.path());
    let maildir = dir.path().join("maildir");
    let example = Example::start(
        "maildir_host",
        &[
            "--listen",
            "127.0.0.1:0",
            "--cert",
            files.cert.to_str().unwrap(),
            "--key",
            files.key.to_str().unwrap(),
            "--maildir",
            maildir.to_str().unwrap(),
        ],
    );
    let body = body_of(200 * 1024);
    let outcome = send(
        example.addr,
        &files.ca,
        Some(("alice", "correct horse battery staple")),
        &["bob@example.test"],
        &body,
        dir.path(),
    );
    assert_eq!(value(&outcome, "auth_advertised"), "True");
    assert_eq!(value(&outcome, "bad_login"), "535");
    let data = value(&outcome, "data");
    assert!(data.starts_with("250 2.0.0 queued as "), "{data}");
    let id = data.trim_start_matches("250 2.0.0 queued as ");

    // Answered 250 only after the commit: the file is in new/ already, named by the id.
    let stored = files_in(&maildir.join("new"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].to_string_lossy().contains(id), "{stored:?}");
    assert!(files_in(&maildir.join("tmp")).is_empty());
    let content = std::fs::read(&stored[0]).unwrap();
    assert!(content.starts_with(b"Received: from client.test"));
    assert!(content.ends_with(&body), "the body differs");

    let (exited_cleanly, said_stopped) = example.terminate();
    assert!(exited_cleanly && said_stopped);
}

#[test]
fn tokio_example_answers_from_async_tasks_and_stores_the_body_byte_exact() {
    let dir = TempDir::new("example-tokio");
    let files = TestCertificate::localhost().write_files(dir.path());
    let spool = dir.path().join("spool");
    let example = Example::start(
        "tokio_host",
        &[
            "--listen",
            "127.0.0.1:0",
            "--cert",
            files.cert.to_str().unwrap(),
            "--key",
            files.key.to_str().unwrap(),
            "--spool",
            spool.to_str().unwrap(),
        ],
    );
    // Large enough for many chunks, each written by the async task while input is paused.
    let body = body_of(2 * 1024 * 1024);
    let outcome = send(
        example.addr,
        &files.ca,
        None,
        &["bob@example.test", "nobody@elsewhere.test"],
        &body,
        dir.path(),
    );
    assert_eq!(value(&outcome, "auth_advertised"), "False");
    assert_eq!(value(&outcome, "rcpt bob@example.test"), "250");
    assert_eq!(value(&outcome, "rcpt nobody@elsewhere.test"), "550");
    let data = value(&outcome, "data");
    assert!(data.starts_with("250 2.0.0 queued as "), "{data}");
    let id = data.trim_start_matches("250 2.0.0 queued as ");

    let stored = files_in(&spool);
    assert_eq!(stored, vec![spool.join(format!("{id}.eml"))]);
    assert!(
        std::fs::read(&stored[0]).unwrap() == body,
        "the body differs"
    );

    let (exited_cleanly, said_stopped) = example.terminate();
    assert!(exited_cleanly && said_stopped);
}
