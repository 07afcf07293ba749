//! The server's counters after known traffic: each value exact.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use smtps_proto::{AbortReason, Reply, SessionConfig};
use smtps_server::{
    ABORT_REASONS, Answer, Context, Handler, MetricsSnapshot, Mode, SESSION_OUTCOMES, Server,
    ServerConfig, ServerHandle, TLS_FAILURE_REASONS, TLS_VERSIONS,
};
use smtps_testkit::{IO_TIMEOUT, SmtpClient, acceptor, client_config};

/// Accepts every message except one whose body says "refuse", which gets `554`; AUTH only for
/// alice with "secret".
struct Host;

impl Handler for Host {
    type Session = Vec<u8>;

    fn connect(&self, _cx: &mut Context<'_>) -> (Vec<u8>, Answer) {
        (Vec::new(), Answer::Accept)
    }

    fn offers_auth(&self) -> bool {
        true
    }

    fn auth(
        &self,
        _body: &mut Vec<u8>,
        _cx: &mut Context<'_>,
        credentials: &smtps_server::Credentials<'_>,
    ) -> Answer {
        if credentials.authentication_id == "alice" && credentials.password == "secret" {
            Answer::Accept
        } else {
            Answer::Reject(Reply::from_parts(535, Some("5.7.8"), "no").unwrap())
        }
    }

    fn body_chunk(
        &self,
        body: &mut Vec<u8>,
        _cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        body.extend_from_slice(chunk);
        Ok(())
    }

    fn message_end(&self, body: &mut Vec<u8>, _cx: &mut Context<'_>, _size: u64) -> Answer {
        let refuse = body.windows(6).any(|w| w == b"refuse");
        body.clear();
        if refuse {
            Answer::Reject(Reply::from_parts(554, Some("5.7.1"), "refused").unwrap())
        } else {
            Answer::Accept
        }
    }

    fn message_aborted(&self, body: &mut Vec<u8>, _cx: &mut Context<'_>, _reason: AbortReason) {
        body.clear();
    }
}

fn at(names: &[&str], values: &[u64], name: &str) -> u64 {
    let index = names
        .iter()
        .position(|n| *n == name)
        .expect("a known label");
    values[index]
}

fn wait_for(handle: &ServerHandle, what: &str, done: impl Fn(&MetricsSnapshot) -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if done(&handle.metrics()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn counters_after_known_traffic_are_exact_and_scrape_in_prometheus_format() {
    let mut session = SessionConfig::new("mx.test");
    session.limits.message_size = 1000;
    let mut config = ServerConfig::new(session)
        .listener("127.0.0.1:0".parse().unwrap(), Mode::ImplicitTls)
        .tls(acceptor());
    config.workers = 1;
    config.limits.connections_per_ip = 2;
    let server = Server::bind(config, Host).unwrap();
    let addr: SocketAddr = server.local_addrs()[0];
    let server = server.start().unwrap();
    let handle = server.handle();
    let tls = client_config();

    // Session 1: AUTH fails then succeeds; one message accepted (its size counted), one
    // refused with 554, one too large; QUIT.
    let mut client = SmtpClient::connect_tls(addr, &tls);
    assert!(client.reply().starts_with("220"));
    client.command("EHLO c.test");
    // "alice\0alice\0wrong" and "alice\0alice\0secret" in base64.
    assert!(
        client
            .command("AUTH PLAIN YWxpY2UAYWxpY2UAd3Jvbmc=")
            .starts_with("535")
    );
    assert!(
        client
            .command("AUTH PLAIN YWxpY2UAYWxpY2UAc2VjcmV0")
            .starts_with("235")
    );
    let body = b"Subject: ok\r\n\r\nhello\r\n";
    let mut too_large = vec![b'a'; 2000];
    too_large.extend_from_slice(b"\r\n");
    for (text, expect) in [
        (&body[..], "250"),
        (&b"Subject: x\r\n\r\nrefuse\r\n"[..], "554"),
        (&too_large[..], "552"),
    ] {
        assert!(client.command("MAIL FROM:<a@x.test>").starts_with("250"));
        assert!(client.command("RCPT TO:<b@y.test>").starts_with("250"));
        assert!(client.command("DATA").starts_with("354"));
        client.send(text);
        assert!(client.command(".").starts_with(expect), "{expect}");
    }
    assert!(client.command("QUIT").starts_with("221"));
    drop(client);

    // A plaintext client on the implicit-TLS port: a handshake failure.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(b"EHLO plain.test\r\n").unwrap();
    wait_for(&handle, "the plaintext client's close", |m| {
        at(
            &TLS_FAILURE_REASONS,
            &m.listeners[0].tls_handshake_failures,
            "plaintext_client",
        ) == 1
    });
    drop(plain);

    // Three at once from one address with a limit of two: one limit hit.
    let held: Vec<SmtpClient> = (0..3)
        .map(|_| {
            let mut c = SmtpClient::connect_tls(addr, &tls);
            c.reply();
            c
        })
        .collect();
    wait_for(&handle, "the limit hit", |m| m.limit_hits_per_ip == 1);
    wait_for(&handle, "two held, the one over the limit closed", |m| {
        m.open_connections == 2
    });
    drop(held);
    wait_for(&handle, "every session's end", |m| m.open_connections == 0);

    let m = handle.metrics();
    let sessions = &m.listeners[0].sessions;
    assert_eq!(at(&SESSION_OUTCOMES, sessions, "quit"), 1);
    assert_eq!(at(&SESSION_OUTCOMES, sessions, "tls_error"), 1);
    assert_eq!(at(&SESSION_OUTCOMES, sessions, "limit"), 1);
    // The two held clients left: a FIN, or a reset when a session ticket was still unread.
    let left = at(&SESSION_OUTCOMES, sessions, "client_closed")
        + at(&SESSION_OUTCOMES, sessions, "io_error");
    assert_eq!(left, 2);
    let failures = &m.listeners[0].tls_handshake_failures;
    assert_eq!(
        failures.iter().sum::<u64>(),
        1,
        "only the plaintext client: {failures:?}"
    );
    assert_eq!(at(&TLS_VERSIONS, &m.tls_handshakes, "TLSv1.3"), 4);
    assert_eq!(m.messages_accepted, 1);
    assert_eq!(m.bytes_accepted, body.len() as u64);
    assert_eq!(m.messages_refused_permanent, 1);
    assert_eq!(m.messages_refused_temporary, 0);
    assert_eq!(at(&ABORT_REASONS, &m.messages_aborted, "too_large"), 1);
    assert_eq!((m.auth_successes, m.auth_failures), (1, 1));
    assert_eq!(m.limit_hits_connections, 0);
    // Three greetings (the one over the limit is refused before the host is asked), EHLO, two
    // AUTH, and per message MAIL, RCPT, DATA and its end (the too-large one has no end): each
    // decision lands in one bucket.
    let decisions: u64 = m.decision_buckets.iter().sum();
    assert_eq!(decisions, 3 + 1 + 2 + 4 + 4 + 3);

    let text = m.to_prometheus();
    let expected = [
        format!(
            "smtps_sessions_total{{listener=\"{addr}\",mode=\"implicit-tls\",outcome=\"quit\"}} 1"
        ),
        "smtps_messages_accepted_total 1".to_owned(),
        format!("smtps_message_bytes_accepted_total {}", body.len()),
        "smtps_messages_refused_total{class=\"5xx\"} 1".to_owned(),
        "smtps_auth_total{result=\"failure\"} 1".to_owned(),
        "smtps_limit_hits_total{limit=\"connections_per_ip\"} 1".to_owned(),
        "smtps_open_connections 0".to_owned(),
        format!("smtps_decision_seconds_count {decisions}"),
        format!("smtps_decision_seconds_bucket{{le=\"+Inf\"}} {decisions}"),
        "# TYPE smtps_decision_seconds histogram".to_owned(),
    ];
    for line in expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Every sample line is `name{labels} value` or `name value`, every family typed once.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("a value");
        assert!(name.starts_with("smtps_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    server.handle().shutdown(Duration::ZERO);
    server.join().unwrap();
}
