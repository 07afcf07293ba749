//! Engine regressions: the `smtpsd` binary, whose mio worker is a driver of
//! `smtps_conn::Connection`, against real clients, for the bugs that rewrite fixed.
//!
//! - Large messages stalled when every core was busy: the worker stopped serving a
//!   connection after a fixed number of passes and, edge-triggered, never came back to it.
//! - Abandoned connections leaked their slot (descriptor, per-IP count) at several stages.
//! - A STARTTLS behind thousands of pipelined EHLOs.
//!
//! Each test starts its own daemon (implicit TLS and STARTTLS-required listeners on
//! `127.0.0.1` port 0, a temporary maildir, a certificate made here, the default timeouts and
//! limits unless a test says otherwise); a guard kills it when the test ends. The clients are
//! Python's `smtplib` and `ssl` (`tests/clients/engine_clients.py`), `openssl s_client` and
//! `ss`; they are required when `SMTPS_C_TESTS_REQUIRED` is set, and a test without them is
//! skipped otherwise. Every child process runs under a deadline, every wait is a bounded
//! poll. The tests of this binary run one at a time (see [`serial`]): one of them keeps every
//! core busy on purpose, and the others bound how soon the server releases a connection.
#![allow(missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Background, ChildGuard, ClientRun, Daemon, SMTPSD, TempDir, TestCert, run, spawn_smtpsd,
    tools_present,
};

/// Deadline for starting the daemon, and for one short client run.
const STEP_DEADLINE: Duration = Duration::from_secs(20);
/// How soon an abandoned connection must be gone: its descriptor closed, no socket of the
/// server's left in CLOSE-WAIT. A bound, not a speed figure: the server notices the end of a
/// stream in microseconds. It is below the engine's 5 s close linger, so a connection that
/// is only dropped when the linger runs out does not pass.
const RELEASE_BOUND: Duration = Duration::from_secs(2);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Listener indexes in [`Daemon::addrs`].
const IMPLICIT: usize = 0;
const STARTTLS: usize = 1;
const LISTENERS: [(usize, &str); 2] = [(IMPLICIT, "implicit"), (STARTTLS, "starttls")];

// --- large messages with every core busy ------------------------------------------------------

/// 50 messages of 5 MiB over implicit TLS (`SMTP_SSL`) and 50 over STARTTLS (`SMTP` +
/// `starttls()`), then 3 of 50 MiB over each, while one `yes > /dev/null` per core keeps the
/// CPUs busy. Each batch runs as concurrent sessions, implicit TLS and STARTTLS at the same
/// time: the 5 MiB ones as 5 sessions of 10 messages per mode, the 50 MiB ones as 3 sessions of
/// one message per mode: about 800 MiB in all, some 50 s in a debug build on 2 cores.
#[test]
fn messages_of_5_and_50_mib_get_250_and_arrive_byte_exact_while_every_core_is_busy() {
    let _serial = serial();
    if !tools_present(
        "messages_of_5_and_50_mib",
        &[("python3", "--version"), ("yes", "--version")],
    ) {
        return;
    }
    let daemon = start(&["--max-message-size", "64M"]);
    let hogs = cpu_hogs();
    let started = Instant::now();
    let mut ledgers = Vec::new();
    for (label, size, sessions, per_session) in
        [("5mib", 5 << 20, 5, 10), ("50mib", 50 << 20, 3, 1)]
    {
        let clients: Vec<_> = LISTENERS
            .iter()
            .map(|&(listener, tls)| {
                let ledger = daemon
                    .dir
                    .path()
                    .join(format!("ledger-{label}-{tls}.jsonl"));
                let client = Background::spawn(daemon.python(
                    "bulk",
                    listener,
                    &[
                        "--sessions",
                        &sessions.to_string(),
                        "--per-session",
                        &per_session.to_string(),
                        "--size",
                        &size.to_string(),
                        "--prefix",
                        &format!("{label}-{tls}"),
                        "--ledger",
                        &ledger.display().to_string(),
                    ],
                ));
                ledgers.push(ledger);
                (tls, client)
            })
            .collect();
        for (tls, client) in clients {
            // Each message's steps have the client's 120 s socket timeout; this is a backstop.
            let run = client.finish(
                Duration::from_secs(600),
                &format!("smtpsd log (tail):\n{}", tail(&daemon.log(), 40)),
            );
            println!("{label} over {tls}: {}", run.summary());
            assert_eq!(
                run.value("acked"),
                (sessions * per_session).to_string(),
                "{label} over {tls}:\n{}",
                run.stdout
            );
        }
    }
    drop(hogs);
    let mut command = python_script();
    command
        .arg("--maildir")
        .arg(daemon.dir.path().join("mail"))
        .arg("check")
        .args(&ledgers);
    let output = run(command, None, Duration::from_secs(300));
    let check = ClientRun::parse(&output.stdout);
    assert!(
        output.status.success(),
        "maildir check failed ({}):\n{}\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    println!(
        "maildir: {} ({:?} in all)",
        check.summary(),
        started.elapsed()
    );
    assert_eq!(check.value("stored"), "106");
    assert_eq!(check.value("violations"), "0");
    assert_eq!(check.value("tmp_files"), "0");
}

// --- abandoned connections --------------------------------------------------------------------

#[test]
fn tcp_connect_then_close_is_released_on_both_ports() {
    abandon_on_both_ports("connect-close");
}

/// Five octets of a TLS record header (`16 03 01 02 00`), then a FIN: on the implicit-TLS
/// port at once, on the STARTTLS port after `STARTTLS` and its `220`.
#[test]
fn partial_client_hello_then_close_is_released_on_both_ports() {
    abandon_on_both_ports("partial-hello");
}

/// The handshake completes (after `STARTTLS` on that port), then the client closes without
/// reading the greeting or the session tickets.
#[test]
fn completed_handshake_then_close_without_reading_is_released_on_both_ports() {
    abandon_on_both_ports("handshake-close");
}

/// The greeting is read (inside TLS on the implicit-TLS port), then the client closes without
/// `close_notify`.
#[test]
fn greeting_read_then_close_is_released_on_both_ports() {
    abandon_on_both_ports("banner-close");
}

/// A ClientHello, the first octets of the server's answer, then a TCP reset (`SO_LINGER` 0).
#[test]
fn reset_in_the_middle_of_the_handshake_is_released_on_both_ports() {
    abandon_on_both_ports("reset-handshake");
}

/// `openssl s_client -brief < /dev/null`: the handshake, then at the end of its input a
/// `close_notify` and a FIN (`-starttls smtp` on the STARTTLS port).
#[test]
fn openssl_s_client_with_empty_input_is_released_on_both_ports() {
    let _serial = serial();
    if !tools_present(
        "openssl_s_client_with_empty_input",
        &[
            ("python3", "--version"),
            ("openssl", "version"),
            ("ss", "-V"),
        ],
    ) {
        return;
    }
    let daemon = start(&[]);
    for (listener, tls) in LISTENERS {
        let baseline = settled_fds(&daemon);
        s_client_empty_input(&daemon, listener);
        assert_released(&daemon, listener, baseline, &format!("s_client over {tls}"));
    }
}

/// A client sends `close_notify` (`SSL_shutdown`) after the greeting (implicit TLS) or an
/// EHLO inside TLS (STARTTLS), then waits: the server's `close_notify` (or at least the end
/// of the stream) must come within [`RELEASE_BOUND`], and the connection be released.
#[test]
fn client_close_notify_is_answered_and_released_on_both_ports() {
    let _serial = serial();
    if !abandon_tools("client_close_notify_is_answered") {
        return;
    }
    let daemon = start(&[]);
    let wait = RELEASE_BOUND.as_secs_f64().to_string();
    for (listener, tls) in LISTENERS {
        let baseline = settled_fds(&daemon);
        let run = daemon.python_run(
            "abandon",
            listener,
            &["--stage", "close-notify-wait", "--wait", &wait],
        );
        let outcome = run.value("close_outcome");
        println!("{tls}: after the client's close_notify the server sent {outcome}");
        assert!(
            outcome == "close_notify+eof" || outcome == "eof",
            "{tls}: after the client's close_notify, within {RELEASE_BOUND:?}: {outcome} \
             (data: {})\nsmtpsd log:\n{}",
            run.value("close_extra"),
            daemon.log()
        );
        assert_released(
            &daemon,
            listener,
            baseline,
            &format!("close_notify over {tls}"),
        );
    }
}

/// 60 `openssl s_client < /dev/null` connections in a row on each port, against the default
/// limit of 50 connections per address: none may stay counted, so a new client still gets its
/// `220` and not `421 4.7.0 Too many connections`.
#[test]
fn sixty_abandoned_s_client_connections_in_a_row_do_not_reach_the_per_ip_limit() {
    const ROUNDS: usize = 60;
    let _serial = serial();
    if !tools_present(
        "sixty_abandoned_s_client_connections",
        &[
            ("python3", "--version"),
            ("openssl", "version"),
            ("ss", "-V"),
        ],
    ) {
        return;
    }
    let daemon = start(&[]);
    let baseline = settled_fds(&daemon);
    for (listener, tls) in LISTENERS {
        for _ in 0..ROUNDS {
            s_client_empty_input(&daemon, listener);
        }
        assert_released(
            &daemon,
            listener,
            baseline,
            &format!("{ROUNDS} s_client connections over {tls}"),
        );
    }
}

// --- pipelining -------------------------------------------------------------------------------

/// 4000 `EHLO c.test` and a `STARTTLS` in one write: 4000 EHLO replies, then `220`, nothing
/// more in clear text, a TLS handshake on the same socket and `250` to an EHLO inside TLS.
#[test]
fn starttls_behind_4000_pipelined_ehlos_gets_220_and_a_working_tls_session() {
    let _serial = serial();
    if !tools_present(
        "starttls_behind_4000_pipelined_ehlos",
        &[("python3", "--version")],
    ) {
        return;
    }
    let daemon = start(&[]);
    let run = daemon.python_run("pipelined-starttls", STARTTLS, &["--count", "4000"]);
    assert_eq!(run.value("ehlo_replies"), "4000");
    assert!(run.value("ehlo_in_tls").starts_with("250 "));
    println!("{}", run.summary());
}

// --- helpers ----------------------------------------------------------------------------------

/// Runs `stage` of `engine_clients.py abandon` on each port, then checks the connection is
/// released and the port still greets.
fn abandon_on_both_ports(stage: &str) {
    let _serial = serial();
    if !abandon_tools(&format!("abandoned connections, stage {stage}")) {
        return;
    }
    let daemon = start(&[]);
    for (listener, tls) in LISTENERS {
        let baseline = settled_fds(&daemon);
        daemon.python_run("abandon", listener, &["--stage", stage]);
        assert_released(&daemon, listener, baseline, &format!("{stage} over {tls}"));
    }
}

fn abandon_tools(test: &str) -> bool {
    tools_present(test, &[("python3", "--version"), ("ss", "-V")])
}

/// Within [`RELEASE_BOUND`]: no socket of `listener`'s port in CLOSE-WAIT and no more
/// descriptors than `baseline`; then a new connection there gets `220`.
fn assert_released(daemon: &Daemon, listener: usize, baseline: usize, what: &str) {
    let port = daemon.addrs[listener].port();
    let started = Instant::now();
    let mut polls = 0;
    let (mut close_wait, mut fds) = (close_wait_sockets(port), daemon.fds());
    while (!close_wait.is_empty() || fds > baseline) && started.elapsed() < RELEASE_BOUND {
        polls += 1;
        assert!(polls < 1000, "unbounded poll");
        thread::sleep(POLL_EVERY);
        (close_wait, fds) = (close_wait_sockets(port), daemon.fds());
    }
    assert!(
        close_wait.is_empty(),
        "{what}: sockets of port {port} still in CLOSE-WAIT after {RELEASE_BOUND:?}:\n\
         {close_wait}\nsmtpsd log:\n{}",
        daemon.log()
    );
    assert!(
        fds <= baseline,
        "{what}: {fds} descriptors open after {RELEASE_BOUND:?}, {baseline} before:\n{}\n\
         smtpsd log:\n{}",
        daemon.open_fds(),
        daemon.log()
    );
    let tls = LISTENERS[listener].1;
    let banner = daemon.python_run("banner", listener, &[]);
    let banner = banner.value("banner");
    assert!(
        banner.starts_with("220 "),
        "{what}: a new connection over {tls} got {banner:?}\nsmtpsd log:\n{}",
        daemon.log()
    );
}

/// `ss -tanH state close-wait '( sport = :PORT )'`: the server's sockets on `port` whose peer
/// has closed and which the server has not.
fn close_wait_sockets(port: u16) -> String {
    let mut command = Command::new("ss");
    command.args([
        "-tanH",
        "state",
        "close-wait",
        &format!("( sport = :{port} )"),
    ]);
    let output = run(command, None, STEP_DEADLINE);
    assert!(
        output.status.success(),
        "ss failed ({}): {}",
        output.status,
        output.stderr
    );
    output.stdout.trim().to_owned()
}

/// One `openssl s_client` that completes its handshake, reads nothing, and at the end of its
/// (empty) input sends `close_notify` and a FIN.
fn s_client_empty_input(daemon: &Daemon, listener: usize) {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &daemon.addrs[listener].to_string()])
        .args(["-brief", "-verify_return_error"])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(&daemon.cafile);
    if listener == STARTTLS {
        command.args(["-starttls", "smtp"]);
    }
    let output = run(command, None, STEP_DEADLINE);
    assert!(
        output.status.success() && output.stderr.contains("CONNECTION ESTABLISHED"),
        "s_client ({}):\nstdout:\n{}\nstderr:\n{}\nsmtpsd log:\n{}",
        output.status,
        output.stdout,
        output.stderr,
        daemon.log()
    );
}

/// The daemon's descriptors once the count has stayed the same for three polls (bounded).
fn settled_fds(daemon: &Daemon) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = daemon.fds();
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        thread::sleep(POLL_EVERY);
        let now = daemon.fds();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// The tests of this binary run one at a time: one keeps every core busy, others bound how
/// soon a connection is released, and neither should disturb the other.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts smtpsd: implicit TLS and STARTTLS-required on `127.0.0.1` port 0, default timeouts
/// and limits, plus `args`.
fn start(args: &[&str]) -> Daemon {
    let dir = TempDir::new("engine");
    let cert = TestCert::new("smtpsd engine");
    let (cert_path, key_path) = cert.write_pem_files(dir.path());
    let mut command = Command::new(SMTPSD);
    command
        .args(["--listen", "127.0.0.1:0=implicit-tls"])
        .args(["--listen", "127.0.0.1:0=starttls-required"])
        .arg("--cert")
        .arg(&cert_path)
        .arg("--key")
        .arg(&key_path)
        .arg("--maildir")
        .arg(dir.path().join("mail"))
        .args(["--hostname", "mx.test", "--workers", "2"])
        .args(args);
    let (guard, log, addrs) = spawn_smtpsd(command, 2, STEP_DEADLINE);
    let text = log.text();
    for (listener, mode) in [(IMPLICIT, "implicit-tls"), (STARTTLS, "starttls-required")] {
        let line = format!("listening on {} ({mode})", addrs[listener]);
        assert!(text.contains(&line), "no {line:?} in the log:\n{text}");
    }
    Daemon {
        guard,
        log,
        addrs,
        step_deadline: STEP_DEADLINE,
        cert,
        sni: Vec::new(),
        cafile: cert_path.clone(),
        cert_path,
        key_path,
        dir: Arc::new(dir),
    }
}

fn python_script() -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/engine_clients.py");
    let mut command = Command::new("python3");
    command.arg(script);
    command
}

/// The scenarios of `tests/clients/engine_clients.py`.
trait EngineClients {
    fn python(&self, scenario: &str, listener: usize, args: &[&str]) -> Command;
    /// Runs a scenario to its end within [`STEP_DEADLINE`]; it must succeed.
    fn python_run(&self, scenario: &str, listener: usize, args: &[&str]) -> ClientRun;
}

impl EngineClients for Daemon {
    fn python(&self, scenario: &str, listener: usize, args: &[&str]) -> Command {
        let mut command = python_script();
        command
            .args(["--port", &self.addrs[listener].port().to_string()])
            .args(["--tls", LISTENERS[listener].1])
            .arg("--cafile")
            .arg(&self.cafile)
            .args(args)
            .arg(scenario);
        command
    }

    fn python_run(&self, scenario: &str, listener: usize, args: &[&str]) -> ClientRun {
        let output = run(self.python(scenario, listener, args), None, STEP_DEADLINE);
        assert!(
            output.status.success(),
            "python scenario {scenario} over {} failed ({})\nstdout:\n{}\nstderr:\n{}\n\
             smtpsd log:\n{}",
            LISTENERS[listener].1,
            output.status,
            output.stdout,
            output.stderr,
            self.log()
        );
        ClientRun::parse(&output.stdout)
    }
}

/// One busy loop (`yes > /dev/null`) per core; each is killed when its guard drops.
fn cpu_hogs() -> Vec<ChildGuard> {
    let cores = thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    (0..cores)
        .map(|_| {
            let mut command = Command::new("yes");
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            ChildGuard::spawn(command)
        })
        .collect()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
