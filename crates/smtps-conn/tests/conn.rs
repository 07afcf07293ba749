//! A `Connection` driven by a real rustls client, octet for octet as a socket would carry
//! them: implicit TLS (RFC 8314), STARTTLS (RFC 3207) with and without an injection attempt,
//! a corrupt record, and back-pressure.
#![allow(missing_docs)]

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use smtps_conn::{Connection, Error, Mode};
use smtps_proto::{Event, Reply, SessionConfig, Verdict};
use smtps_testkit::{MemoryClient, acceptor, client_config};

/// An event without its borrows, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Connect,
    Helo(String),
    Mail(String),
    Rcpt(String),
    DataStart,
    Body(Vec<u8>),
    End(u64),
    StartTls(usize),
    Other(String),
}

/// The host side: answers every decision with `accept` and records what it saw.
struct Host {
    conn: Connection,
    seen: Vec<Seen>,
}

impl Host {
    fn new(mode: Mode) -> Self {
        let mut config = SessionConfig::new("mx.test");
        config.policy.require_tls_for_mail = mode == Mode::StartTls;
        let conn = Connection::new(mode, Arc::new(config), Some(acceptor()), Instant::now())
            .expect("connection");
        Self {
            conn,
            seen: Vec::new(),
        }
    }

    /// Takes every event, accepting each decision.
    fn drain_events(&mut self) {
        drain_events(&mut self.conn, &mut self.seen);
    }

    /// Lets `client` and the connection exchange octets, taking every event on the way.
    fn exchange(&mut self, client: &mut MemoryClient) {
        let seen = &mut self.seen;
        client.exchange(&mut self.conn, |conn| drain_events(conn, seen));
    }

    fn body(&self) -> Vec<u8> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Body(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }
}

/// Takes every event of `conn` into `seen`, accepting each decision.
fn drain_events(conn: &mut Connection, seen: &mut Vec<Seen>) {
    for _ in 0..10_000 {
        let Some(event) = conn.poll_event() else {
            return;
        };
        let (event_seen, decision) = match event {
            Event::Connect { decision } => (Seen::Connect, Some(decision)),
            Event::Helo { decision, name, .. } => (Seen::Helo(name.to_string()), Some(decision)),
            Event::Mail { decision, from, .. } => (Seen::Mail(from.to_string()), Some(decision)),
            Event::Rcpt { decision, to, .. } => (Seen::Rcpt(to.to_string()), Some(decision)),
            Event::DataStart { decision, .. } => (Seen::DataStart, Some(decision)),
            Event::BodyChunk(chunk) => (Seen::Body(chunk.to_vec()), None),
            Event::MessageEnd { decision, size } => (Seen::End(size), Some(decision)),
            Event::StartTls { discarded } => (Seen::StartTls(discarded), None),
            other => (Seen::Other(format!("{other:?}")), None),
        };
        seen.push(event_seen);
        if let Some(decision) = decision {
            conn.decide(decision, Verdict::Accept).expect("decide");
        }
    }
    panic!("events never ran out");
}

#[test]
fn implicit_tls_session_starts_after_the_handshake_and_delivers_the_message() {
    let mut host = Host::new(Mode::ImplicitTls);
    host.drain_events();
    assert!(
        host.seen.is_empty(),
        "an event before the handshake: {:?}",
        host.seen
    );
    assert!(
        host.conn.output().is_empty(),
        "output before the ClientHello"
    );

    let mut client = MemoryClient::new(&client_config());
    client.start_tls();
    host.exchange(&mut client);
    assert_eq!(host.seen, [Seen::Connect]);
    let info = host.conn.tls_info().expect("TLS info after the handshake");
    assert_eq!(info.version_name(), "TLSv1.3");
    assert!(client.take_received().starts_with("220 mx.test"));

    client.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    host.exchange(&mut client);
    client.send(b"Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n");
    host.exchange(&mut client);
    assert_eq!(host.body(), b"Subject: hi\r\n\r\n.dot\r\n");
    assert!(host.seen.contains(&Seen::End(21)), "{:?}", host.seen);
    let replies = client.take_received();
    assert!(replies.contains("354 "), "{replies}");
    assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");
    assert!(host.conn.is_closed());
    assert!(!host.conn.wants_write(), "close_notify not sent");
    let tls = client.tls_mut().expect("tls");
    let mut rest = Vec::new();
    let eof = tls.reader().read_to_end(&mut rest);
    assert!(eof.is_ok(), "no close_notify from the server: {eof:?}");
}

#[test]
fn starttls_upgrades_at_the_boundary_and_drops_injected_plaintext() {
    let mut host = Host::new(Mode::StartTls);
    let mut client = MemoryClient::new(&client_config());
    host.exchange(&mut client);
    client.send(b"EHLO c.test\r\n");
    host.exchange(&mut client);
    assert!(client.take_received().contains("250-STARTTLS"));

    // CVE-2011-0411: commands pipelined after STARTTLS in the same packet.
    let injected = b"MAIL FROM:<evil@inject.test>\r\n";
    client.send(b"STARTTLS\r\n");
    client.send(injected);
    host.exchange(&mut client);
    assert_eq!(client.take_received(), "220 2.0.0 Ready to start TLS\r\n");
    assert!(
        host.seen.contains(&Seen::StartTls(injected.len())),
        "{:?}",
        host.seen
    );

    client.start_tls();
    host.exchange(&mut client);
    assert!(host.conn.tls_info().is_some(), "handshake not complete");
    assert_eq!(
        client.take_received(),
        "",
        "a reply to the injected command"
    );
    assert!(
        !host.seen.iter().any(|s| matches!(s, Seen::Mail(_))),
        "{:?}",
        host.seen
    );

    // The session starts afresh under TLS: EHLO again, then MAIL is allowed.
    client.send(b"EHLO c.test\r\nMAIL FROM:<good@c.test>\r\n");
    host.exchange(&mut client);
    let replies = client.take_received();
    assert!(
        !replies.contains("STARTTLS"),
        "STARTTLS offered twice: {replies}"
    );
    assert!(replies.ends_with("250 2.1.0 Sender OK\r\n"), "{replies}");
    assert_eq!(
        host.seen
            .iter()
            .filter(|s| matches!(s, Seen::Mail(_)))
            .count(),
        1
    );
}

#[test]
fn replies_queued_before_starttls_go_out_in_plaintext_in_order_even_when_not_drained() {
    let mut config = SessionConfig::new("mx.test");
    config.limits.junk_commands = 10_000;
    let acceptor = Some(acceptor());
    let conn = Connection::new(Mode::StartTls, Arc::new(config), acceptor, Instant::now())
        .expect("connection");
    let mut host = Host {
        conn,
        seen: Vec::new(),
    };
    host.drain_events();
    // 6,000 pipelined NOOPs (84 kB of replies, more than the transport buffers) and STARTTLS,
    // fed without taking any output in between.
    let mut batch = b"EHLO c.test\r\n".to_vec();
    for _ in 0..6_000 {
        batch.extend_from_slice(b"NOOP\r\n");
    }
    batch.extend_from_slice(b"STARTTLS\r\n");
    let mut fed = 0;
    while fed < batch.len() {
        let taken = host.conn.feed(Instant::now(), &batch[fed..]).expect("feed");
        host.drain_events();
        fed += taken;
        assert!(taken > 0 || host.conn.wants_read(), "stuck at {fed}");
    }
    host.drain_events();
    let mut wire = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = host.conn.take_output(&mut buf);
        if n == 0 {
            break;
        }
        wire.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(wire).expect("plaintext");
    assert!(text.starts_with("220 mx.test"), "{}", &text[..40]);
    assert_eq!(
        text.matches("250 2.0.0 OK\r\n").count(),
        6_000,
        "a NOOP reply lost"
    );
    assert!(
        text.ends_with("220 2.0.0 Ready to start TLS\r\n"),
        "the 220 is not last"
    );
    assert!(!host.conn.is_closed());
}

#[test]
fn a_corrupt_record_fails_the_connection_with_an_alert() {
    let mut host = Host::new(Mode::ImplicitTls);
    let mut client = MemoryClient::new(&client_config());
    client.start_tls();
    host.exchange(&mut client);
    client.take_received();
    client.send(b"NOOP\r\n");
    let tls = client.tls_mut().expect("tls");
    let mut record = Vec::new();
    tls.write_tls(&mut record).expect("record");
    let last = record.len() - 1;
    record[last] ^= 0x40;
    let failed = host.conn.feed(Instant::now(), &record);
    assert!(matches!(failed, Err(Error::Tls(_))), "{failed:?}");
    assert!(host.conn.is_closed());
    let alert = host.conn.output().to_vec();
    assert_eq!(alert.first(), Some(&0x17), "no alert record: {alert:?}");
    host.drain_events();
    assert!(
        !host
            .seen
            .iter()
            .any(|s| matches!(s, Seen::Other(o) if o.contains("Noop")))
    );
    assert_eq!(
        host.conn
            .feed(Instant::now(), b"more")
            .expect("ignored after failure"),
        4
    );
}

#[test]
fn client_leaving_mid_message_aborts_it_and_closes() {
    let mut host = Host::new(Mode::Plain);
    let mut client = MemoryClient::new(&client_config());
    client.send(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial body");
    host.exchange(&mut client);
    host.conn.feed_eof();
    host.drain_events();
    assert!(
        host.seen
            .iter()
            .any(|s| matches!(s, Seen::Other(o) if o.starts_with("MessageAborted"))),
        "{:?}",
        host.seen
    );
    assert!(!host.seen.iter().any(|s| matches!(s, Seen::End(_))));
    assert!(host.conn.is_closed());
    assert!(!host.conn.wants_read());
}

/// The engine's promise to drivers: when `poll_event` says `None`, the connection either wants
/// the socket, or waits for the host (a decision), the client (output backed up) or nothing
/// (closed). Found broken by the disk-full test: the rest of a refused body was read and
/// dropped without an event, with ciphertext still held inside, and nothing asked for more.
#[test]
fn a_refused_body_over_tls_is_read_to_its_end_in_64_kib_reads() {
    let now = Instant::now();
    let config = Arc::new(SessionConfig::new("mx.test"));
    let mut conn =
        Connection::new(Mode::ImplicitTls, config, Some(acceptor()), now).expect("implicit");
    let mut client = MemoryClient::new(&client_config());
    client.start_tls();
    let accept = |conn: &mut Connection| {
        while let Some(event) = conn.poll_event() {
            if let Some(decision) = event.decision() {
                conn.decide(decision, Verdict::Accept).expect("decide");
            }
        }
    };
    client.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    client.exchange(&mut conn, accept);
    assert!(client.take_received().contains("354 "));
    let mut body = Vec::new();
    while body.len() < 400_000 {
        body.extend_from_slice(b"a line of a message that the host cannot store\r\n");
    }
    body.extend_from_slice(b".\r\nQUIT\r\n");
    // The client's TLS buffers a bounded amount: encrypt piece by piece onto the "socket".
    let mut wire = Vec::new();
    let tls = client.tls_mut().expect("tls");
    for piece in body.chunks(8 * 1024) {
        std::io::Write::write_all(&mut tls.writer(), piece).expect("client write");
        while tls.wants_write() {
            tls.write_tls(&mut wire).expect("write_tls");
        }
    }
    let mut socket = std::io::Cursor::new(wire);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut replies = Vec::new();
    for _ in 0..10_000 {
        if conn.wants_read() {
            conn.read_from(now, &mut socket, &mut scratch)
                .expect("read");
        }
        while let Some(event) = conn.poll_event() {
            let refuse = matches!(event, Event::BodyChunk(_));
            let decision = event.decision();
            if refuse {
                let full = Reply::from_parts(452, Some("4.3.1"), "Spool full").expect("reply");
                conn.refuse_message(full);
            }
            if let Some(decision) = decision {
                conn.decide(decision, Verdict::Accept).expect("decide");
            }
        }
        let waits_for_host = conn
            .session()
            .is_some_and(smtps_proto::ServerSession::awaiting_decision);
        assert!(
            conn.wants_read() || conn.is_closed() || waits_for_host,
            "no event, yet the connection wants no input and waits for nobody: {conn:?}"
        );
        replies.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.consume_output(n);
        if conn.is_finished() {
            break;
        }
    }
    assert!(conn.is_finished(), "the session never ended");
    client.receive(&replies);
    let text = client.take_received();
    assert!(text.contains("452 4.3.1 Spool full"), "{text}");
    assert!(text.contains("221 "), "{text}");
}

/// Behind HAProxy's `send-proxy-v2` on an implicit-TLS port: the v2 header and the ClientHello
/// arrive in one read; the header is taken off exactly, TLS starts on the next octet, and the
/// session sees the real client's address.
#[test]
fn a_proxy_v2_header_in_front_of_implicit_tls_is_taken_off_before_the_handshake() {
    let now = Instant::now();
    let config = Arc::new(SessionConfig::new("mx.test"));
    let mut conn =
        Connection::new(Mode::ImplicitTls, config, Some(acceptor()), now).expect("implicit");
    conn.expect_proxy_header();
    let mut client = MemoryClient::new(&client_config());
    client.start_tls();
    // v2 PROXY, TCP over IPv4: 203.0.113.9:40000 -> 198.51.100.7:465, no TLVs.
    let mut wire = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    wire.extend_from_slice(&[203, 0, 113, 9, 198, 51, 100, 7]);
    wire.extend_from_slice(&40000u16.to_be_bytes());
    wire.extend_from_slice(&465u16.to_be_bytes());
    let tls = client.tls_mut().expect("tls");
    while tls.wants_write() {
        tls.write_tls(&mut wire).expect("ClientHello");
    }
    let mut scratch = vec![0u8; 64 * 1024];
    conn.read_from(now, &mut std::io::Cursor::new(wire), &mut scratch)
        .expect("read");
    let addresses = conn
        .proxy_header()
        .and_then(|h| h.addresses)
        .expect("the header's addresses");
    assert_eq!(addresses.source.to_string(), "203.0.113.9:40000");
    // The rest of the handshake and a session, as usual.
    client.send(b"EHLO c.test\r\nQUIT\r\n");
    client.exchange(&mut conn, |conn| {
        while let Some(event) = conn.poll_event() {
            if let Some(decision) = event.decision() {
                conn.decide(decision, Verdict::Accept).expect("decide");
            }
        }
    });
    let replies = client.take_received();
    assert!(replies.starts_with("220 "), "{replies}");
    assert!(replies.contains("221 "), "{replies}");
    assert!(conn.tls_info().is_some());
}
