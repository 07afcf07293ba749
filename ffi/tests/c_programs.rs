//! Builds the C programs in `tests/c/` against the staticlib and the cdylib with `cc`, and
//! drives them with real clients (Python `smtplib`, `openssl s_client`) on 127.0.0.1 ephemeral
//! ports: messages over both ports arrive byte-exact in the spool, also from behind a pretend
//! load balancer (a PROXY protocol header first). Also runs the C misuse tests, and an
//! AddressSanitizer build of the host through clients that vanish mid-message and a stop with
//! sessions open. Every blocking step has a timeout.
//!
//! Needs `cc`, `python3` and `openssl` on the PATH; a test whose tool is missing says so and
//! passes (set `SMTPS_C_TESTS_REQUIRED=1`, as `ffi/run-c-tests.sh` does, to fail instead).
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::{have, lib_dir, wait_for};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn work_dir() -> &'static Path {
    common::work_dir("c-tests")
}

/// Runs a command to completion within the step timeout; returns its output.
fn run(command: Command) -> std::process::Output {
    common::run(command, STEP_TIMEOUT)
}

fn build(name: &str, flavour: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lib_dir = lib_dir();
    let out = work_dir().join(format!("{name}-{flavour}"));
    if out.exists() {
        return out;
    }
    let mut cc = common::cc(ROOT);
    cc.arg(format!("{ROOT}/tests/c/{name}.c"));
    match flavour {
        "static" | "asan" => {
            if flavour == "asan" {
                cc.args([
                    "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer",
                ]);
            }
            cc.arg(lib_dir.join("libsmtps.a"))
                .args(["-lpthread", "-ldl", "-lm"]);
        }
        _ => {
            cc.arg(format!("-L{}", lib_dir.display()))
                .arg("-lsmtps")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
        }
    }
    cc.arg("-o").arg(&out);
    let output = run(cc);
    assert!(
        output.status.success(),
        "building {name} ({flavour}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A certificate for `localhost`, written as PEM files.
fn certificate() -> (PathBuf, PathBuf) {
    static FILES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let cert_path = work_dir().join("cert.pem");
            let key_path = work_dir().join("key.pem");
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        })
        .clone()
}

/// A running C server: stdin held open (closing it stops the program), ports from stdout.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    ports: Vec<u16>,
    spool: PathBuf,
    name: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Program {
    fn start(binary: &Path, args: &[&str], spool_name: &str, env: &[(&str, &str)]) -> Self {
        let spool = work_dir().join(spool_name);
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool).unwrap();
        let (cert, key) = certificate();
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg(&spool)
            .arg(&cert)
            .arg(&key)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(STEP_TIMEOUT)
            .expect("the program printed no ports");
        let ports = line
            .split_whitespace()
            .skip(1)
            .map(|port| port.parse().unwrap())
            .collect::<Vec<u16>>();
        assert!(!ports.is_empty(), "{binary:?} said {line:?}");
        Self {
            child,
            stdin,
            ports,
            spool,
            name: binary.file_name().unwrap().to_string_lossy().into_owned(),
            stderr,
        }
    }

    /// Closes stdin (the program stops) and checks it exits 0. Returns its stderr.
    fn stop(mut self) -> String {
        drop(self.stdin.take());
        let status = wait_for(&mut self.child, STEP_TIMEOUT, &self.name);
        let stderr = self.stderr.join().unwrap();
        assert!(
            status.success(),
            "{} exited with {status}:\n{stderr}",
            self.name
        );
        stderr
    }

    /// Every spooled message, sorted.
    fn spooled(&self) -> Vec<Vec<u8>> {
        let mut files = Vec::new();
        collect_eml(&self.spool, &mut files);
        let mut messages: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        messages.sort();
        messages
    }
}

fn collect_eml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_eml(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            out.push(path);
        }
    }
}

/// A message with dot-stuffing to undo, long and binary-ish lines, CRLF endings.
fn message(tag: &str) -> Vec<u8> {
    let mut text = format!(
        "From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: {tag}\r\n\r\nHello {tag}.\r\n\
         .a line that starts with a dot\r\n..two dots\r\n.\r\nnot the end\r\n"
    )
    .into_bytes();
    for i in 0..300 {
        text.extend_from_slice(format!("line {i:04} {}\r\n", "x".repeat(70)).as_bytes());
    }
    text.extend_from_slice("caf\u{e9} \u{2603}\r\n".as_bytes());
    text
}

fn smtplib(action: &str, mode: &str, port: u16, extra: &[&str]) -> String {
    let (cert, _) = certificate();
    let mut command = Command::new("python3");
    command
        .arg(format!("{ROOT}/tests/c/client.py"))
        .args([action, mode, &port.to_string()])
        .arg(&cert)
        .args(extra);
    let output = run(command);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "client.py {action} {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn send_smtplib(mode: &str, port: u16, user: &str, password: &str, body: &[u8]) {
    let file = work_dir().join(format!("msg-{mode}-{port}-{}.txt", body.len()));
    std::fs::write(&file, body).unwrap();
    let out = smtplib(
        "send",
        mode,
        port,
        &[user, password, file.to_str().unwrap(), "rcpt@example.net"],
    );
    assert!(out.contains("SENT {}"), "{out}");
}

/// Sends one message with `openssl s_client`, pipelining the whole dialogue.
fn send_s_client(starttls: bool, port: u16, user: &str, password: &str, body: &[u8]) -> String {
    use std::fmt::Write as _;
    let (cert, _) = certificate();
    let mut auth = Vec::new();
    auth.push(0);
    auth.extend_from_slice(user.as_bytes());
    auth.push(0);
    auth.extend_from_slice(password.as_bytes());
    let mut script = String::new();
    let _ = write!(
        script,
        "EHLO s-client.test\r\nAUTH PLAIN {}\r\nMAIL FROM:<sender@example.org>\r\n\
         RCPT TO:<rcpt@example.net>\r\nDATA\r\n",
        base64(&auth)
    );
    let mut input = script.into_bytes();
    // Dot-stuff the body, as a client must.
    for line in body.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            input.push(b'.');
        }
        input.extend_from_slice(line);
    }
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-servername",
            "localhost",
            "-quiet",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&cert);
    if starttls {
        command.args(["-starttls", "smtp"]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Keep stdin open briefly: s_client sends as it reads, the server closes after QUIT.
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let status = wait_for(&mut child, STEP_TIMEOUT, "openssl s_client");
    writer.join().unwrap();
    let transcript = reader.join().unwrap();
    assert!(status.success(), "s_client failed:\n{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Queued"),
        "no 250 for the message:\n{transcript}"
    );
    assert!(transcript.contains("221"), "no 221:\n{transcript}");
    transcript
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn tools_present() -> bool {
    have("cc", "--version") && have("python3", "--version") && have("openssl", "version")
}

/// The host on both ports, with both clients; returns the messages sent.
fn exercise_host(program: &Program) -> Vec<Vec<u8>> {
    let (implicit, starttls) = (program.ports[0], program.ports[1]);
    let sent = vec![
        message("smtplib implicit"),
        message("smtplib starttls"),
        message("s_client implicit"),
        message("s_client starttls"),
    ];
    send_smtplib("implicit", implicit, "alice", "wonderland", &sent[0]);
    send_smtplib("starttls", starttls, "bob", "builder", &sent[1]);
    send_s_client(false, implicit, "alice", "wonderland", &sent[2]);
    send_s_client(true, starttls, "bob", "builder", &sent[3]);
    // Refusals: a wrong password, an unknown recipient (the host's own reply text).
    let file = work_dir().join("refused.txt");
    std::fs::write(&file, b"Subject: x\r\n\r\nx\r\n").unwrap();
    let (cert, _) = certificate();
    let mut command = Command::new("python3");
    command
        .arg(format!("{ROOT}/tests/c/client.py"))
        .args(["send", "implicit", &implicit.to_string()])
        .arg(&cert)
        .args(["alice", "wrong", file.to_str().unwrap(), "rcpt@example.net"]);
    let output = run(command);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("535"));
    let mut sent = sent;
    sent.sort();
    sent
}

/// Runs the C host built as `flavour` in `mode` through both clients on both ports: every
/// message is spooled byte-exact, and `on_helo` saw `smtps_session_helo_extended` true for the
/// clients' EHLO (smtplib and the `s_client` dialogue both send EHLO).
fn host_receives_byte_exact(flavour: &str, mode: &str) {
    if !tools_present() {
        return;
    }
    let host = build("host", flavour);
    let program = Program::start(&host, &[mode], &format!("spool-{mode}"), &[]);
    let sent = exercise_host(&program);
    let spooled = program.spooled();
    let log = program.stop();
    assert_eq!(spooled, sent);
    assert!(
        log.contains("greeted with EHLO s-client.test"),
        "on_helo did not see EHLO:\n{log}"
    );
    assert!(!log.contains("greeted with HELO"), "{log}");
}

#[test]
fn host_threads_static_receives_byte_exact() {
    host_receives_byte_exact("static", "threads");
}

#[test]
fn host_polled_shared_receives_byte_exact() {
    host_receives_byte_exact("shared", "polled");
}

#[test]
fn conn_server_implicit_and_starttls() {
    if !tools_present() {
        return;
    }
    for (flavour, mode, fd_helpers) in [
        ("static", "implicit", false),
        ("shared", "starttls", false),
        ("static", "implicit", true),
        ("shared", "starttls", true),
    ] {
        let binary = build("conn_server", flavour);
        let env: &[(&str, &str)] = if fd_helpers {
            &[("CONN_FD_HELPERS", "1")]
        } else {
            &[]
        };
        let spool = format!("spool-conn-{mode}-{fd_helpers}");
        let program = Program::start(&binary, &[mode], &spool, env);
        let port = program.ports[0];
        let sent = vec![message("conn smtplib"), message("conn s_client")];
        send_smtplib(mode, port, "carol", "secret", &sent[0]);
        send_s_client(mode == "starttls", port, "carol", "secret", &sent[1]);
        smtplib("abort", mode, port, &["carol", "secret"]);
        let spooled = program.spooled();
        program.stop();
        let mut sent = sent;
        sent.sort();
        assert_eq!(spooled, sent, "{mode}, fd helpers: {fd_helpers}");
    }
}

/// The connection level's timers are the library's (`smtps_conn_next_timeout_ms` as the
/// `poll()` timeout, `smtps_conn_handle_timeout` when it passes): a client that says nothing
/// after the banner gets `421` from the configured command timer, and the program then
/// serves the next client.
#[test]
fn conn_server_idle_client_gets_421_from_the_library_timer() {
    if !tools_present() {
        return;
    }
    let binary = build("conn_server", "static");
    let program = Program::start(
        &binary,
        &["starttls"],
        "spool-conn-idle",
        &[("CONN_COMMAND_TIMEOUT_MS", "300")],
    );
    let port = program.ports[0];
    for _ in 0..2 {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut banner = String::new();
        reader.read_line(&mut banner).unwrap();
        assert!(banner.starts_with("220 "), "{banner}");
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        assert!(
            // No enhanced status before EHLO (RFC 2034 §3).
            rest.starts_with("421 conn.test Timeout"),
            "the idle client got {rest:?}"
        );
    }
    program.stop();
}

/// The poll-loop mode turns the worker on the host's thread and calls `on_body` inline: a
/// 64 MiB message to a host whose spool is slow is never held in memory (before, every chunk
/// was copied into an unbounded queue for `smtps_server_dispatch`). The host's peak resident
/// memory stays far below the message's size, and the message is stored byte-exact.
#[test]
fn host_polled_holds_no_message_in_memory_with_a_slow_spool() {
    if !tools_present() {
        return;
    }
    let host = build("host", "static");
    let program = Program::start(
        &host,
        &["polled"],
        "spool-polled-big",
        &[("HOST_BODY_DELAY_US", "100")],
    );
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n";
    let mut body = b"Subject: 64 MiB\r\n\r\n".to_vec();
    while body.len() < 64 << 20 {
        body.extend_from_slice(line);
    }
    send_smtplib("implicit", program.ports[0], "alice", "wonderland", &body);
    let status = std::fs::read_to_string(format!("/proc/{}/status", program.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    eprintln!(
        "host peak resident memory: {peak_kib} KiB for a {} KiB message",
        body.len() >> 10
    );
    let spooled = program.spooled();
    program.stop();
    assert_eq!(spooled.len(), 1);
    assert!(
        spooled[0] == body,
        "the stored message differs from the one sent"
    );
    assert!(
        peak_kib < 32 * 1024,
        "the host peaked at {peak_kib} KiB resident for a 64 MiB message"
    );
}

/// The v2 PROXY header a balancer sends for `client` connecting to `destination`, with the
/// client's SNI (PP2_TYPE_AUTHORITY) and its TLS with the balancer (PP2_TYPE_SSL: version and
/// client certificate CN), in hex for `client.py send-proxied`. Built by the test kit's
/// encoder, written apart from the library's parser.
fn balancer_header(client: &str, destination: &str) -> String {
    let mut ssl = vec![0x01, 0, 0, 0, 0];
    for (kind, value) in [(0x21u8, &b"TLSv1.3"[..]), (0x22, b"client.example")] {
        ssl.push(kind);
        ssl.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        ssl.extend_from_slice(value);
    }
    let header = smtps_testkit::proxy_v2(
        client.parse().unwrap(),
        destination.parse().unwrap(),
        &[(0x02, b"mx.example.org"), (0x20, &ssl)],
    );
    header.iter().map(|b| format!("{b:02x}")).collect()
}

fn send_proxied(mode: &str, port: u16, user: &str, password: &str, header: &str, body: &[u8]) {
    let file = work_dir().join(format!("msg-proxied-{mode}-{port}.txt"));
    std::fs::write(&file, body).unwrap();
    let out = smtplib(
        "send-proxied",
        mode,
        port,
        &[
            user,
            password,
            header,
            file.to_str().unwrap(),
            "rcpt@example.net",
        ],
    );
    assert!(out.contains("SENT {}"), "{out}");
}

/// A client that sends no PROXY header where one is required: closed without a banner.
fn assert_closed_without_banner(port: u16) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let _ = stream.write_all(b"EHLO direct.test\r\n");
    let mut said = Vec::new();
    let _ = stream.read_to_end(&mut said);
    assert!(said.is_empty(), "{:?}", String::from_utf8_lossy(&said));
}

const SANITIZER_ENV: [(&str, &str); 2] = [
    (
        "ASAN_OPTIONS",
        "detect_leaks=1:abort_on_error=0:exitcode=23",
    ),
    ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
];

/// The server level behind a load balancer (ASan build): the host's third listener reads a
/// PROXY v2 header from 127.0.0.1 (`smtps_config_set_listener_proxy`,
/// `smtps_config_add_proxy_trusted`). `smtps_session_peer` is the client the header names,
/// `smtps_session_proxied_by` the balancer, and the TLVs are readable; a direct client on the
/// other listeners is reported as itself; a client without the header gets no banner.
#[test]
fn host_reports_the_client_behind_a_balancer() {
    if !tools_present() {
        return;
    }
    let host = build("host", "asan");
    let mut env = SANITIZER_ENV.to_vec();
    env.push(("HOST_PROXY_TRUSTED", "127.0.0.1"));
    let program = Program::start(&host, &["threads"], "spool-proxy-host", &env);
    assert_eq!(program.ports.len(), 3, "a PROXY listener");
    let header = balancer_header("192.0.2.7:40001", "198.51.100.1:587");
    let sent = vec![message("direct"), message("behind a balancer")];
    send_smtplib(
        "implicit",
        program.ports[0],
        "alice",
        "wonderland",
        &sent[0],
    );
    send_proxied(
        "starttls",
        program.ports[2],
        "bob",
        "builder",
        &header,
        &sent[1],
    );
    assert_closed_without_banner(program.ports[2]);
    let spooled = program.spooled();
    let log = program.stop();
    assert!(!log.contains("ERROR: "), "sanitizer:\n{log}");
    let mut sent = sent;
    sent.sort();
    assert_eq!(spooled, sent);
    let sessions: Vec<&str> = log.lines().filter(|l| l.contains(" from ")).collect();
    assert_eq!(sessions.len(), 2, "{log}");
    let proxied = sessions
        .iter()
        .find(|l| l.contains("from 192.0.2.7:40001 "))
        .unwrap_or_else(|| panic!("no session from the header's client:\n{log}"));
    assert!(proxied.contains(" proxied_by 127.0.0.1:"), "{proxied}");
    assert!(
        proxied.ends_with(" authority mx.example.org ssl_version TLSv1.3 ssl_cn client.example"),
        "{proxied}"
    );
    let direct = sessions
        .iter()
        .find(|l| l.contains("from 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no direct session:\n{log}"));
    assert!(
        direct.ends_with(" proxied_by - authority - ssl_version - ssl_cn -"),
        "{direct}"
    );
}

/// The connection level behind a load balancer: `conn_server` asks
/// `smtps_config_proxy_trusts` for the socket's peer and calls
/// `smtps_conn_expect_proxy_header`; `smtps_conn_proxy_client`, `_destination` and
/// `smtps_conn_proxy_tlv` report the header once read (in front of STARTTLS, under ASan, and in
/// front of the implicit-TLS ClientHello); a client without the header is closed without a
/// banner (`SMTPS_CLOSE_REASON_PROXY_HEADER`).
#[test]
fn conn_server_reports_the_client_behind_a_balancer() {
    if !tools_present() {
        return;
    }
    for (flavour, mode, destination) in [
        ("asan", "starttls", "198.51.100.1:587"),
        ("static", "implicit", "198.51.100.1:465"),
    ] {
        let binary = build("conn_server", flavour);
        let mut env = SANITIZER_ENV.to_vec();
        env.push(("CONN_PROXY_TRUSTED", "127.0.0.0/8"));
        let spool = format!("spool-proxy-conn-{mode}");
        let program = Program::start(&binary, &[mode], &spool, &env);
        let port = program.ports[0];
        let header = balancer_header("192.0.2.7:40001", destination);
        let sent = message("conn behind a balancer");
        send_proxied(mode, port, "carol", "secret", &header, &sent);
        assert_closed_without_banner(port);
        let spooled = program.spooled();
        let log = program.stop();
        assert!(!log.contains("ERROR: "), "sanitizer:\n{log}");
        assert_eq!(spooled, vec![sent], "{mode}");
        let want =
            format!("conn_server: connect from 192.0.2.7:40001 to {destination} via 127.0.0.1:");
        let connect = log
            .lines()
            .find(|l| l.starts_with(&want))
            .unwrap_or_else(|| panic!("{mode}: no {want:?} in\n{log}"));
        assert!(connect.ends_with(" authority mx.example.org"), "{connect}");
        assert!(
            log.contains("closed without a banner: bad or missing PROXY header"),
            "{mode}:\n{log}"
        );
    }
}

#[test]
fn misuse_returns_error_codes() {
    if !have("cc", "--version") {
        return;
    }
    let (cert, key) = certificate();
    for flavour in ["static", "shared"] {
        let binary = build("misuse", flavour);
        let mut command = Command::new(binary);
        command.arg(&cert).arg(&key);
        let output = run(command);
        assert!(
            output.status.success(),
            "misuse ({flavour}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The server-level promises hosts found broken (issue 14), performed by a C host that keeps
/// SIGPIPE's default action: a stale reply cannot answer the next pipelined RCPT, a reply after
/// the decision timeout is `UNKNOWN_DECISION`, a busy port fails unless shared, every failure
/// sets `smtps_last_error`, leaving clients cannot raise SIGPIPE (exit 141 before
/// `MSG_NOSIGNAL`), an invalid callback answer greets no one. Static, shared and sanitized.
#[test]
fn contract_holds_for_a_c_host() {
    if !have("cc", "--version") {
        return;
    }
    for flavour in ["static", "shared", "asan"] {
        let binary = build("contract", flavour);
        let mut command = Command::new(binary);
        for (key, value) in SANITIZER_ENV {
            command.env(key, value);
        }
        let output = run(command);
        assert!(
            output.status.success(),
            "contract ({flavour}) ended with {}:\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// ASan + UBSan (and LeakSanitizer at exit): clients vanish mid-message, then the server is
/// stopped while sessions are open in the middle of a message.
#[test]
fn sanitized_programs_survive_aborts_and_stop() {
    if !tools_present() {
        return;
    }
    let env = SANITIZER_ENV;
    for mode in ["threads", "polled"] {
        let host = build("host", "asan");
        let program = Program::start(&host, &[mode], &format!("spool-asan-{mode}"), &env);
        let (implicit, starttls) = (program.ports[0], program.ports[1]);
        send_smtplib("starttls", starttls, "bob", "builder", &message("asan"));
        smtplib("abort", "implicit", implicit, &["alice", "wonderland"]);
        smtplib("abort", "starttls", starttls, &["bob", "builder"]);
        // Two sessions held open mid-message while the server stops (2 s grace).
        let (cert, _) = certificate();
        let holders: Vec<Child> = [("implicit", implicit), ("starttls", starttls)]
            .iter()
            .map(|(m, port)| {
                Command::new("python3")
                    .arg(format!("{ROOT}/tests/c/client.py"))
                    .args(["hold", m, &port.to_string()])
                    .arg(&cert)
                    .args(["alice", "wonderland", "20"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut holders: Vec<(Child, BufReader<std::process::ChildStdout>)> = holders
            .into_iter()
            .map(|mut child| {
                let stdout = BufReader::new(child.stdout.take().unwrap());
                (child, stdout)
            })
            .collect();
        for (_, stdout) in &mut holders {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            assert!(line.starts_with("HOLDING"), "{line}");
        }
        let spooled = program.spooled();
        let stderr = program.stop();
        assert!(!stderr.contains("ERROR: "), "sanitizer:\n{stderr}");
        assert_eq!(spooled, vec![message("asan")]);
        for (mut child, mut stdout) in holders {
            let status = wait_for(&mut child, STEP_TIMEOUT, "hold client");
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            assert!(status.success());
            assert!(rest.contains("421"), "the held session got no 421: {rest}");
        }
    }
    let conn = build("conn_server", "asan");
    let program = Program::start(&conn, &["starttls"], "spool-asan-conn", &env);
    let port = program.ports[0];
    send_smtplib("starttls", port, "carol", "secret", &message("asan conn"));
    smtplib("abort", "starttls", port, &["carol", "secret"]);
    let spooled = program.spooled();
    let stderr = program.stop();
    assert!(!stderr.contains("ERROR: "), "sanitizer:\n{stderr}");
    assert_eq!(spooled, vec![message("asan conn")]);
}
