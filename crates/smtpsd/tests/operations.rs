//! Operating smtpsd (issue 15), through the binary: the log lines of `docs/LOGGING.md` parsed
//! with its grammar and key tables, AUTH brute force throttled before the password hash while
//! another client is served, and certificates near or past expiry warned about at start.
//!
//! Every blocking step has a deadline (socket timeouts, log waits); no test measures time.
#![allow(missing_docs)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smtps_tls::rustls;
use smtps_tls::rustls::pki_types::{CertificateDer, ServerName};

use common::{Daemon, SMTPSD, TempDir, TestCert, run, spawn_smtpsd};

const STEP_DEADLINE: Duration = Duration::from_secs(30);
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
/// The throttle's default `--auth-max-failures`.
const MAX_FAILURES: usize = 5;

// --- the log lines --------------------------------------------------------------------------

#[test]
fn session_and_message_lines_parse_with_the_documented_grammar_and_keys() {
    let daemon = start(&TestCert::new("smtpsd ops"), &[]);
    let mut client = Client::connect(&daemon, "127.0.0.1");
    client.ehlo();
    client.auth(USER, PASSWORD, 235);
    client.send_message(
        "<sender@example.org>",
        &["<a@example.net>", "<b@example.net>"],
    );
    client.quit();
    assert!(
        daemon.wait_log("event=session_summary ", 1),
        "{}",
        daemon.log()
    );

    let docs = documented_keys();
    let log = daemon.log();
    let mut seen: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for line in log.lines() {
        let parsed = parse_line(line, &docs).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let Some(pairs) = parsed else { continue };
        let event = pairs
            .iter()
            .find(|(k, _)| k == "event")
            .map(|(_, v)| v.clone())
            .expect("event");
        if let Some(keys) = docs.get(&event) {
            let got: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            let required: Vec<&str> = keys
                .iter()
                .map(String::as_str)
                .filter(|k| *k != "error")
                .collect();
            assert!(
                got.starts_with(&required) && got.len() <= keys.len(),
                "{event}: keys {got:?}, documented {keys:?}\n{line}"
            );
            seen.insert(event, pairs);
        }
    }
    let session = seen.get("session_summary").expect("a session line");
    let value = |pairs: &[(String, String)], key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert_eq!(value(session, "tls"), "TLSv1.3");
    assert_eq!(value(session, "sni"), "localhost");
    assert_eq!(value(session, "user"), USER);
    assert_eq!(value(session, "messages"), "1");
    assert_eq!(value(session, "result"), "quit");
    assert!(value(session, "client").starts_with("127.0.0.1:"));
    assert_eq!(
        value(session, "listener"),
        daemon.addrs[0].to_string(),
        "{session:?}"
    );
    let message = seen.get("message_summary").expect("a message line");
    assert_eq!(value(message, "from"), "<sender@example.org>");
    assert_eq!(value(message, "to"), "<a@example.net>,<b@example.net>");
    assert_eq!(value(message, "nrcpt"), "2");
    assert_eq!(value(message, "result"), "accepted");
    assert_eq!(value(message, "code"), "250");
    let queue_id = value(message, "queue_id");
    assert!(
        daemon
            .maildir_files("new")
            .iter()
            .any(|p| p.display().to_string().contains(&queue_id)),
        "queue id {queue_id} names the Maildir file"
    );
    assert_eq!(
        value(session, "bytes"),
        value(message, "size"),
        "one message"
    );
}

// --- AUTH brute force ------------------------------------------------------------------------

#[test]
fn a_thousand_passwords_cost_at_most_max_failures_hashes_and_others_are_served() {
    let daemon = start(&TestCert::new("smtpsd ops"), &[]);
    let mut replies: HashMap<u16, usize> = HashMap::new();
    let mut attempts = 0;
    let mut connections = 0;
    let mut legit_done = false;
    while attempts < 1000 {
        connections += 1;
        assert!(connections <= 1000, "one attempt per connection at least");
        let mut attacker = Client::connect(&daemon, "127.0.0.2");
        attacker.ehlo();
        while attempts < 1000 {
            attempts += 1;
            let code = attacker.try_auth(USER, &format!("guess {attempts}"));
            *replies.entry(code).or_default() += 1;
            if code == 421 || code == 0 {
                break;
            }
            assert!(matches!(code, 535 | 454), "AUTH answered {code}");
            // Midway, with the attacker throttled, an honest client from another address
            // authenticates and sends.
            if attempts == 500 && !legit_done {
                let mut honest = Client::connect(&daemon, "127.0.0.1");
                honest.ehlo();
                honest.auth(USER, PASSWORD, 235);
                honest.send_message("<alice@example.org>", &["<bob@example.net>"]);
                honest.quit();
                legit_done = true;
            }
        }
    }
    assert!(legit_done);
    assert_eq!(daemon.messages().len(), 1, "the honest client's message");
    // The daemon's stderr is read by another thread: the last lines may still be on their way
    // when the last reply came (a CI run saw 972 of 995).
    let answered_454 = replies.get(&454).copied().unwrap_or(0);
    daemon.wait_log(" event=auth_throttled ", answered_454);
    let log = daemon.log();
    let verified_failures = log.matches(" event=auth_failed ").count();
    let verified_successes = log.matches("event=auth user=\"alice\" accepted").count();
    let throttled = log.matches(" event=auth_throttled ").count();
    assert!(
        verified_failures <= MAX_FAILURES + 1,
        "{verified_failures} failed verifications for {MAX_FAILURES} allowed"
    );
    assert_eq!(verified_successes, 1);
    assert_eq!(
        replies.get(&454).copied().unwrap_or(0),
        throttled,
        "{replies:?}"
    );
    assert!(
        throttled >= 1000 - MAX_FAILURES - 1 - replies.get(&421).copied().unwrap_or(0),
        "{replies:?}"
    );
    assert!(log.contains(
        " event=auth_throttled client=127.0.0.2 user=alice by=client failures=5 action=reply"
    ));
}

// --- certificate expiry ----------------------------------------------------------------------

#[test]
fn certificates_expiring_soon_or_expired_are_named_at_start() {
    let soon = cert_valid_for("soon.test", 5);
    let expired = cert_valid_for("expired.test", -2);
    let fine = cert_valid_for("fine.test", 60);
    let daemon = start(&soon, &[expired, fine]);
    assert!(
        daemon.wait_log("event=certificate_expir", 2),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{log}"))
            .to_owned()
    };
    let soon_line = line("event=certificate_expiring");
    assert!(soon_line.contains(" WARN "), "{soon_line}");
    assert!(
        soon_line.contains(&format!("file={}", daemon.cert_path.display())),
        "{soon_line}"
    );
    let expired_line = line("event=certificate_expired");
    assert!(expired_line.contains(" ERROR "), "{expired_line}");
    assert!(expired_line.contains("sni-0-cert.pem"), "{expired_line}");
    assert!(
        !log.contains("sni-1-cert.pem"),
        "fine.test is not warned about"
    );
    assert!(
        parse_line(&soon_line, &documented_keys())
            .expect("grammar")
            .is_some()
    );
}

// --- metrics ---------------------------------------------------------------------------------

#[test]
fn metrics_scrape_after_known_traffic_has_the_exact_counts() {
    let daemon = start_with(
        &TestCert::new("smtpsd metrics"),
        &[],
        &["--metrics", "127.0.0.1:0"],
    );
    let endpoint: SocketAddr = daemon
        .log()
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .expect("the metrics address in the log")
        .parse()
        .expect("an address");
    let mut client = Client::connect(&daemon, "127.0.0.1");
    client.ehlo();
    client.auth(USER, "wrong", 535);
    client.auth(USER, PASSWORD, 235);
    client.send_message("<sender@example.org>", &["<a@example.net>"]);
    client.quit();
    assert!(
        daemon.wait_log("event=session_summary ", 1),
        "{}",
        daemon.log()
    );
    let mut stream = TcpStream::connect(endpoint).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(STEP_DEADLINE))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let listener = daemon.addrs[0];
    for line in [
        format!(
            "smtps_sessions_total{{listener=\"{listener}\",mode=\"implicit-tls\",outcome=\"quit\"}} 1"
        ),
        "smtps_auth_total{result=\"success\"} 1".to_owned(),
        "smtps_auth_total{result=\"failure\"} 1".to_owned(),
        "smtps_messages_accepted_total 1".to_owned(),
        "smtps_tls_handshakes_total{version=\"TLSv1.3\"} 1".to_owned(),
        "smtps_open_connections 0".to_owned(),
    ] {
        assert!(
            response.lines().any(|l| l == line),
            "missing {line:?} in\n{response}"
        );
    }
    let expiry = response
        .lines()
        .find(|l| l.starts_with("smtpsd_certificate_expiry_seconds{"))
        .expect("the certificate's expiry gauge");
    let seconds: i64 = expiry
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(seconds > 0, "{expiry}");
}

// --- helpers ---------------------------------------------------------------------------------

/// smtpsd on one implicit-TLS listener with `cert` (and `sni` by SNI), a user file and a
/// maildir.
fn start(cert: &TestCert, sni: &[TestCert]) -> Daemon {
    start_with(cert, sni, &[])
}

/// As [`start`], with more arguments.
fn start_with(cert: &TestCert, sni: &[TestCert], extra: &[&str]) -> Daemon {
    let dir = TempDir::new("ops");
    let (cert_path, key_path) = cert.write_pem_files(dir.path());
    let users = dir.path().join("users");
    fs::write(&users, format!("{USER}:{}\n", password_hash())).expect("users");
    let mut command = Command::new(SMTPSD);
    command
        .args(["--listen", "127.0.0.1:0=implicit-tls"])
        .arg("--cert")
        .arg(&cert_path)
        .arg("--key")
        .arg(&key_path)
        .arg("--maildir")
        .arg(dir.path().join("mail"))
        .arg("--users")
        .arg(&users)
        .args(["--hostname", "mx.test", "--workers", "2"])
        .args(extra);
    for (index, other) in sni.iter().enumerate() {
        let chain = dir.path().join(format!("sni-{index}-cert.pem"));
        let key = dir.path().join(format!("sni-{index}-key.pem"));
        fs::write(&chain, &other.cert_pem).expect("write SNI cert");
        fs::write(&key, &other.key_pem).expect("write SNI key");
        command.arg("--cert").arg(chain).arg("--key").arg(key);
    }
    let (guard, log, addrs) = spawn_smtpsd(command, 1, STEP_DEADLINE);
    Daemon {
        guard,
        log,
        addrs,
        step_deadline: STEP_DEADLINE,
        cert: cert.clone(),
        sni: sni.to_vec(),
        cafile: cert_path.clone(),
        cert_path,
        key_path,
        dir: Arc::new(dir),
    }
}

fn password_hash() -> String {
    let mut command = Command::new(SMTPSD);
    command.arg("hash-password");
    let output = run(
        command,
        Some(format!("{PASSWORD}\n").into_bytes()),
        STEP_DEADLINE,
    );
    assert!(output.status.success(), "{}", output.stderr);
    output.stdout.trim().to_owned()
}

/// A self-signed certificate for `name`, valid from a year ago until `days` from today.
fn cert_valid_for(name: &str, days: i64) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).expect("certificate parameters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let today = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            / 86_400,
    )
    .expect("days fit");
    let ymd = |days: i64| {
        let (y, m, d) = civil_from_days(days);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = ymd(today - 365);
    params.not_after = ymd(today + days);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    TestCert {
        common_name: name.to_owned(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).expect("year"),
        u8::try_from(month).expect("month"),
        u8::try_from(day).expect("day"),
    )
}

/// The keys of each documented event, in order, from the tables of `docs/LOGGING.md`.
fn documented_keys() -> HashMap<String, Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/LOGGING.md");
    let text = fs::read_to_string(&path).expect("docs/LOGGING.md");
    let mut events = HashMap::new();
    let mut current: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut flush = |current: &mut Vec<String>, keys: &mut Vec<String>| {
        for event in current.drain(..) {
            events.insert(event, keys.clone());
        }
        keys.clear();
    };
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            flush(&mut current, &mut keys);
            current = heading
                .split(", ")
                .filter_map(|h| h.strip_prefix("event="))
                .map(str::to_owned)
                .collect();
        } else if let Some(row) = line.strip_prefix("| `") {
            if let Some((key, _)) = row.split_once('`') {
                keys.push(key.to_owned());
            }
        } else if line.starts_with("## ") {
            flush(&mut current, &mut keys);
        }
    }
    flush(&mut current, &mut keys);
    for event in [
        "session_summary",
        "message_summary",
        "auth_failed",
        "auth_throttled",
    ] {
        assert!(events.contains_key(event), "{event} documented: {events:?}");
    }
    events
}

/// Parses a stderr line with the grammar of `docs/LOGGING.md`: `Ok(None)` for a line that is
/// not one of the `documented` events (its body is free text), `Err` for one that breaks the
/// grammar.
fn parse_line(
    line: &str,
    documented: &HashMap<String, Vec<String>>,
) -> Result<Option<Vec<(String, String)>>, String> {
    let mut parts = line.splitn(3, ' ');
    let (Some(timestamp), Some(level), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("not TIMESTAMP LEVEL BODY".into());
    };
    check_timestamp(timestamp)?;
    if !matches!(level, "ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE") {
        return Err(format!("level {level:?}"));
    }
    let Some(mut rest) = body.strip_prefix("smtps: ") else {
        return Ok(None);
    };
    let event = rest
        .split(' ')
        .take(2)
        .find_map(|word| word.strip_prefix("event="));
    if !event.is_some_and(|e| documented.contains_key(e)) {
        return Ok(None);
    }
    if !(rest.starts_with("event=")
        || rest.starts_with("session=")
            && rest
                .split(' ')
                .nth(1)
                .is_some_and(|s| s.starts_with("event=")))
    {
        return Ok(None);
    }
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or("a key without =")?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("key {key:?}"));
        }
        let (value, after) = parse_value(after)?;
        pairs.push((key.to_owned(), value));
        rest = match after.strip_prefix(' ') {
            Some(more) => more,
            None if after.is_empty() => after,
            None => return Err(format!("no space after {key}")),
        };
    }
    Ok(Some(pairs))
}

/// One value: bare, `-`, or quoted with `\"`, `\\` and `\xHH` escapes; returns it (unquoted)
/// and the rest.
fn parse_value(text: &str) -> Result<(String, &str), String> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find(' ').unwrap_or(text.len());
        let value = &text[..end];
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='))
        {
            return Err(format!("bare value {value:?}"));
        }
        return Ok((value.to_owned(), &text[end..]));
    };
    let mut octets = Vec::new();
    let bytes = quoted.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = String::from_utf8(octets).map_err(|e| e.to_string())?;
                return Ok((value, &quoted[i + 1..]));
            }
            b'\\' => match bytes.get(i + 1) {
                Some(b'"') => octets.push(b'"'),
                Some(b'\\') => octets.push(b'\\'),
                Some(b'x') => {
                    let hex = quoted.get(i + 2..i + 4).ok_or("short \\x")?;
                    octets.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                    i += 2;
                }
                _ => return Err("bad escape".into()),
            },
            b if b == b' ' || b.is_ascii_graphic() => {
                octets.push(b);
                i += 1;
                continue;
            }
            b => return Err(format!("octet {b:#x} in a quoted value")),
        }
        i += 2;
    }
    Err("unterminated quoted value".into())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds).
fn check_timestamp(text: &str) -> Result<(), String> {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    let ok = text.len() == shape.len()
        && text.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        });
    if ok {
        Ok(())
    } else {
        Err(format!("timestamp {text:?} is not RFC 3339 UTC"))
    }
}

/// A blocking SMTP client over implicit TLS (rustls), bound to a chosen loopback address so
/// that two clients are two addresses. Every read has a timeout.
struct Client {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buffered: Vec<u8>,
}

impl Client {
    fn connect(daemon: &Daemon, from: &str) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let local: SocketAddr = format!("{from}:0").parse().expect("address");
        socket.bind(&local.into()).expect("bind the client address");
        socket
            .connect_timeout(&daemon.addrs[0].into(), STEP_DEADLINE)
            .expect("connect");
        let tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(STEP_DEADLINE)).expect("timeout");
        tcp.set_write_timeout(Some(STEP_DEADLINE)).expect("timeout");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(daemon.cert.der.clone()))
            .expect("trust the test certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut client = Self {
            stream: rustls::StreamOwned::new(conn, tcp),
            buffered: Vec::new(),
        };
        assert_eq!(client.reply().0, 220, "greeting");
        client
    }

    fn ehlo(&mut self) {
        self.command("EHLO client.test", 250);
    }

    fn auth(&mut self, user: &str, password: &str, expected: u16) {
        assert_eq!(self.try_auth(user, password), expected);
    }

    /// AUTH PLAIN; the reply code, or 0 if the server closed the connection.
    fn try_auth(&mut self, user: &str, password: &str) -> u16 {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        if self.send(&format!("AUTH PLAIN {token}")).is_err() {
            return 0;
        }
        self.try_reply().map_or(0, |(code, _)| code)
    }

    fn send_message(&mut self, from: &str, to: &[&str]) {
        self.command(&format!("MAIL FROM:{from}"), 250);
        for rcpt in to {
            self.command(&format!("RCPT TO:{rcpt}"), 250);
        }
        self.command("DATA", 354);
        self.command("Subject: ops\r\n\r\nhello\r\n.", 250);
    }

    fn quit(&mut self) {
        self.command("QUIT", 221);
    }

    fn command(&mut self, line: &str, expected: u16) {
        self.send(line).expect("send");
        let (code, text) = self.reply();
        assert_eq!(code, expected, "{line}: {text}");
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{line}\r\n").as_bytes())?;
        self.stream.flush()
    }

    fn reply(&mut self) -> (u16, String) {
        self.try_reply().expect("a reply")
    }

    fn try_reply(&mut self) -> Option<(u16, String)> {
        let mut text = String::new();
        loop {
            let line = self.line()?;
            text.push_str(&line);
            text.push('\n');
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Some((line.get(..3)?.parse().ok()?, text));
            }
        }
    }

    fn line(&mut self) -> Option<String> {
        // Bounded: each pass reads at least one octet or returns.
        loop {
            if let Some(end) = self.buffered.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let mut chunk = [0_u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
