//! The engine alone, under a fake clock: every timer, the output bound, end of stream at each
//! stage, and the close reasons.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smtps_proto::{Event, Reply, SessionConfig, Verdict};
use smtps_testkit::acceptor;

use super::*;

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig::new("mx.test"))
}

fn timeouts() -> Timeouts {
    Timeouts {
        handshake: Duration::from_secs(10),
        command: Duration::from_secs(300),
        data_block: Duration::from_secs(180),
        decision: Duration::from_secs(300),
        session: Duration::from_secs(3600),
        close_linger: Duration::from_secs(5),
        proxy_header: Duration::from_secs(3),
    }
}

fn plain(now: Instant) -> Connection {
    let mut conn = Connection::new(Mode::Plain, config(), None, now).expect("plain connection");
    conn.set_timeouts(timeouts());
    conn
}

/// Accepts every decision; returns the notices seen, by name.
fn accept_all(conn: &mut Connection) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        let Some(event) = conn.poll_event() else {
            break;
        };
        seen.push(format!("{event:?}"));
        if let Some(decision) = event.decision() {
            conn.decide(decision, Verdict::Accept).expect("decide");
        }
    }
    seen
}

fn drain(conn: &mut Connection) -> String {
    let out = String::from_utf8_lossy(conn.output()).into_owned();
    let n = out.len();
    conn.consume_output(n);
    out
}

fn ready(now: Instant) -> Connection {
    let mut conn = plain(now);
    accept_all(&mut conn);
    conn.feed(now, b"EHLO c.test\r\n").expect("feed");
    accept_all(&mut conn);
    drain(&mut conn);
    conn
}

/// Sends a whole message, accepting every step, and stops at its end: the host is
/// committing it. Returns that decision.
fn message_awaiting_commit(conn: &mut Connection, now: Instant) -> smtps_proto::DecisionId {
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nbody\r\n.\r\n",
    )
    .expect("feed");
    for _ in 0..100 {
        let event = conn
            .poll_event()
            .expect("an event before the message's end");
        if let Event::MessageEnd { decision, .. } = event {
            return decision;
        }
        if let Some(decision) = event.decision() {
            conn.decide(decision, Verdict::Accept).expect("decide");
        }
    }
    panic!("the message never ended");
}

#[test]
fn tls_mode_without_acceptor_is_refused() {
    let now = Instant::now();
    for mode in [Mode::ImplicitTls, Mode::StartTls, Mode::StartTlsRequired] {
        assert!(matches!(
            Connection::new(mode, config(), None, now),
            Err(Error::TlsNotConfigured)
        ));
    }
}

#[test]
fn plain_connection_greets_once_connect_is_accepted() {
    let mut conn = plain(Instant::now());
    let Some(Event::Connect { decision }) = conn.poll_event() else {
        panic!("no connect event");
    };
    assert!(conn.output().is_empty(), "greeting before the decision");
    conn.decide(decision, Verdict::Accept).expect("decide");
    let mut buf = [0u8; 3];
    assert_eq!(conn.take_output(&mut buf), 3);
    assert_eq!(&buf, b"220");
    assert!(conn.output().ends_with(b"\r\n"));
}

#[test]
fn starttls_required_mode_refuses_mail_before_tls_rfc8314_3_1() {
    let now = Instant::now();
    let mut conn =
        Connection::new(Mode::StartTlsRequired, config(), Some(acceptor()), now).expect("conn");
    accept_all(&mut conn);
    conn.feed(now, b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n")
        .expect("feed");
    accept_all(&mut conn);
    let out = drain(&mut conn);
    assert!(out.contains("530 5.7.0"), "{out}");
}

#[test]
fn end_of_stream_before_the_greeting_closes_the_connection_once_the_host_decided() {
    let now = Instant::now();
    let mut conn = plain(now);
    conn.feed_eof();
    let connect = conn
        .poll_event()
        .and_then(|e| e.decision())
        .expect("connect decision");
    assert!(!conn.is_closed(), "the host's decision is still awaited");
    conn.decide(connect, Verdict::Accept).expect("decide");
    while conn.poll_event().is_some() {}
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), Some(&CloseReason::ClientClosed));
    assert_eq!(conn.feed(now, b"NOOP\r\n").expect("ignored"), 6);
    assert!(!conn.wants_read());
}

#[test]
fn end_of_stream_during_the_implicit_tls_handshake_closes_at_once() {
    let now = Instant::now();
    let mut conn =
        Connection::new(Mode::ImplicitTls, config(), Some(acceptor()), now).expect("implicit");
    // A partial ClientHello record header, then the client goes.
    conn.feed(now, &[0x16, 0x03, 0x01]).expect("partial hello");
    assert!(!conn.is_closed());
    conn.feed_eof();
    assert!(conn.is_finished(), "{conn:?}");
    assert_eq!(conn.close_reason(), Some(&CloseReason::ClientClosed));
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn end_of_stream_mid_message_aborts_it_and_closes() {
    let now = Instant::now();
    let mut conn = ready(now);
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nhalf a bo",
    )
    .expect("feed");
    accept_all(&mut conn);
    conn.feed_eof();
    let seen = accept_all(&mut conn);
    assert!(
        seen.iter().any(|e| e.contains("MessageAborted")),
        "{seen:?}"
    );
    drain(&mut conn);
    assert!(conn.is_finished());
    assert_eq!(conn.close_reason(), Some(&CloseReason::ClientClosed));
}

#[test]
fn a_client_that_half_closes_after_pipelining_gets_every_reply() {
    let now = Instant::now();
    let mut conn = ready(now);
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n",
    )
    .expect("feed");
    conn.feed_eof();
    let seen = accept_all(&mut conn);
    assert!(seen.iter().any(|e| e.contains("MessageEnd")), "{seen:?}");
    assert!(
        !seen.iter().any(|e| e.contains("MessageAborted")),
        "{seen:?}"
    );
    let out = drain(&mut conn);
    assert!(
        out.contains("250 2.0.0") && out.ends_with("221 2.0.0 Bye\r\n"),
        "{out}"
    );
    assert_eq!(conn.close_reason(), Some(&CloseReason::Quit));
}

#[test]
fn end_of_stream_while_the_host_commits_a_message_waits_for_its_answer() {
    let now = Instant::now();
    let mut conn = ready(now);
    let end = message_awaiting_commit(&mut conn, now);
    conn.feed_eof();
    assert!(conn.poll_event().is_none());
    assert!(!conn.is_closed(), "closed while the host commits");
    conn.decide(end, Verdict::Accept)
        .expect("the commit is still awaited");
    let seen = accept_all(&mut conn);
    assert!(
        !seen.iter().any(|e| e.contains("MessageAborted")),
        "{seen:?}"
    );
    assert!(drain(&mut conn).contains("250 2.0.0"));
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), Some(&CloseReason::ClientClosed));
}

#[test]
fn a_reset_mid_message_aborts_it_at_once() {
    let now = Instant::now();
    let mut conn = ready(now);
    let end = message_awaiting_commit(&mut conn, now);
    conn.socket_failed(std::io::ErrorKind::ConnectionReset);
    let seen = accept_all(&mut conn);
    assert!(
        seen.iter().any(|e| e.contains("MessageAborted")),
        "{seen:?}"
    );
    assert!(
        conn.decide(end, Verdict::Accept).is_err(),
        "nobody to answer"
    );
    assert!(conn.is_finished());
}

#[test]
fn a_socket_error_drops_output_and_closes_with_its_kind() {
    let now = Instant::now();
    let mut conn = ready(now);
    conn.feed(now, b"NOOP\r\n").expect("feed");
    accept_all(&mut conn);
    assert!(conn.wants_write());
    conn.socket_failed(std::io::ErrorKind::ConnectionReset);
    accept_all(&mut conn);
    assert!(conn.is_finished());
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Io(std::io::ErrorKind::ConnectionReset))
    );
}

#[test]
fn quit_and_too_many_errors_and_a_host_421_are_told_apart() {
    let now = Instant::now();
    let mut conn = ready(now);
    conn.feed(now, b"QUIT\r\n").expect("feed");
    accept_all(&mut conn);
    assert_eq!(conn.close_reason(), Some(&CloseReason::Quit));

    let mut conn = ready(now);
    conn.feed(now, &b"BOGUS\r\n".repeat(50)).expect("feed");
    accept_all(&mut conn);
    assert_eq!(conn.close_reason(), Some(&CloseReason::TooManyErrors));

    let mut conn = ready(now);
    conn.feed(now, b"MAIL FROM:<a@b.test>\r\n").expect("feed");
    let decision = conn
        .poll_event()
        .and_then(|e| e.decision())
        .expect("mail decision");
    let busy = Reply::from_parts(421, Some("4.3.2"), "busy").expect("reply");
    conn.decide(decision, Verdict::Reject(busy))
        .expect("decide");
    assert_eq!(conn.close_reason(), Some(&CloseReason::Refused));
    assert!(drain(&mut conn).starts_with("421 4.3.2 busy"));
}

#[test]
fn the_command_timer_fires_421_after_idle_rfc5321_4_5_3_2_7() {
    let start = Instant::now();
    let mut conn = ready(start);
    let deadline = conn.poll_timeout().expect("a timer runs");
    assert_eq!(deadline, start + Duration::from_secs(300));
    conn.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!conn.is_closed(), "fired early");
    conn.handle_timeout(deadline);
    assert!(conn.is_closed());
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Timeout(Timer::Command))
    );
    assert!(drain(&mut conn).starts_with("421 4.4.2 mx.test Timeout"));
    assert!(conn.is_finished());
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn input_restarts_the_command_timer() {
    let start = Instant::now();
    let mut conn = ready(start);
    let later = start + Duration::from_secs(200);
    conn.feed(later, b"NOOP\r\n").expect("feed");
    accept_all(&mut conn);
    assert_eq!(conn.poll_timeout(), Some(later + Duration::from_secs(300)));
    conn.handle_timeout(start + Duration::from_secs(300));
    assert!(!conn.is_closed());
}

#[test]
fn the_data_block_timer_runs_inside_a_message_rfc5321_4_5_3_2_5() {
    let start = Instant::now();
    let mut conn = ready(start);
    conn.feed(
        start,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nsome",
    )
    .expect("feed");
    accept_all(&mut conn);
    let deadline = conn.poll_timeout().expect("timer");
    assert_eq!(deadline, start + Duration::from_secs(180));
    conn.handle_timeout(deadline);
    let seen = accept_all(&mut conn);
    assert!(
        seen.iter().any(|e| e.contains("MessageAborted")),
        "{seen:?}"
    );
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Timeout(Timer::DataBlock))
    );
}

/// Starts a message and pauses input at its first body chunk, as a host writing to slow
/// storage would; returns the chunk seen.
fn paused_in_a_message(conn: &mut Connection, now: Instant) -> Vec<u8> {
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nfirst\r\n",
    )
    .expect("feed");
    for _ in 0..100 {
        let event = conn.poll_event().expect("an event before the body");
        if let Event::BodyChunk(chunk) = event {
            let chunk = chunk.to_vec();
            conn.pause_input(now);
            return chunk;
        }
        if let Some(decision) = event.decision() {
            conn.decide(decision, Verdict::Accept).expect("decide");
        }
    }
    panic!("no body chunk");
}

#[test]
fn paused_input_is_neither_read_nor_turned_into_events() {
    let start = Instant::now();
    let mut conn = ready(start);
    assert_eq!(paused_in_a_message(&mut conn, start), b"first\r\n");
    assert!(!conn.wants_read());
    // What the transport already holds stays there until the host resumes.
    assert_eq!(conn.feed(start, b"second\r\n.\r\n").expect("feed"), 0);
    assert!(conn.poll_event().is_none());
    // Replies already made still go out.
    assert!(drain(&mut conn).contains("354"));
    conn.resume_input(start);
    assert!(conn.wants_read());
    conn.feed(start, b"second\r\n.\r\n").expect("feed");
    let seen = accept_all(&mut conn);
    let second = format!("BodyChunk({:?})", b"second\r\n");
    assert_eq!(seen.first(), Some(&second), "{seen:?}");
    assert!(seen.iter().any(|e| e.contains("MessageEnd")), "{seen:?}");
}

#[test]
fn the_data_block_timer_stands_still_while_the_host_pauses_input() {
    let start = Instant::now();
    let mut conn = ready(start);
    paused_in_a_message(&mut conn, start);
    // Longer than data_block (180 s) but within decision (300 s): the host is slow, not the
    // client.
    let later = start + Duration::from_secs(250);
    assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(300)));
    conn.handle_timeout(later);
    assert!(!conn.is_closed());
    conn.resume_input(later);
    // The client's idle timer restarts at the resume.
    assert_eq!(conn.poll_timeout(), Some(later + Duration::from_secs(180)));
    conn.handle_timeout(later + Duration::from_secs(179));
    assert!(!conn.is_closed());
}

#[test]
fn a_pause_longer_than_the_decision_timeout_closes_with_421_and_aborts_the_message() {
    let start = Instant::now();
    let mut conn = ready(start);
    paused_in_a_message(&mut conn, start);
    drain(&mut conn);
    conn.handle_timeout(start + Duration::from_secs(300));
    assert!(conn.is_closed());
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Timeout(Timer::InputPaused))
    );
    // Closed, the paused connection still tells the host that the message is gone.
    let seen = accept_all(&mut conn);
    assert!(
        seen.iter().any(|e| e.contains("MessageAborted")),
        "{seen:?}"
    );
    assert!(drain(&mut conn).starts_with("421 4.3.0"));
}

#[test]
fn no_idle_timer_runs_while_the_host_decides() {
    let start = Instant::now();
    let mut conn = ready(start);
    conn.feed(start, b"MAIL FROM:<a@b.test>\r\n").expect("feed");
    let decision = conn
        .poll_event()
        .and_then(|e| e.decision())
        .expect("mail decision");
    // Only the session timer is left.
    assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(3600)));
    let answered = start + Duration::from_secs(1000);
    conn.handle_timeout(answered);
    conn.decide(decision, Verdict::Accept).expect("decide");
    conn.handle_timeout(answered);
    assert_eq!(
        conn.poll_timeout(),
        Some(answered + Duration::from_secs(300))
    );
}

#[test]
fn the_session_timer_bounds_even_a_busy_session() {
    let start = Instant::now();
    let mut conn = ready(start);
    for minute in 1..=61u64 {
        let now = start + Duration::from_secs(minute * 60);
        conn.handle_timeout(now);
        if conn.is_closed() {
            break;
        }
        conn.feed(now, b"NOOP\r\n").expect("feed");
        accept_all(&mut conn);
        drain(&mut conn);
    }
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Timeout(Timer::Session))
    );
}

#[test]
fn the_handshake_timer_closes_a_stalled_handshake() {
    let start = Instant::now();
    let mut conn =
        Connection::new(Mode::ImplicitTls, config(), Some(acceptor()), start).expect("implicit");
    conn.set_timeouts(timeouts());
    assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(10)));
    conn.handle_timeout(start + Duration::from_secs(10));
    assert!(conn.is_finished());
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Timeout(Timer::Handshake))
    );
}

#[test]
fn the_close_linger_drops_output_a_client_does_not_read() {
    let start = Instant::now();
    let mut conn = ready(start);
    conn.feed(start, b"QUIT\r\n").expect("feed");
    accept_all(&mut conn);
    assert!(conn.is_closed() && conn.wants_write());
    assert!(!conn.is_finished());
    let deadline = conn.poll_timeout().expect("linger");
    assert_eq!(deadline, start + Duration::from_secs(5));
    conn.handle_timeout(deadline);
    assert!(conn.is_finished());
    assert!(conn.output().is_empty());
}

#[test]
fn pipelined_input_with_nothing_drained_stays_within_the_output_bound() {
    let now = Instant::now();
    let mut conn = ready(now);
    // EHLO: not a junk command, and the longest reply per octet sent.
    let input = b"EHLO c.test\r\n".repeat(2_600_000 / 13);
    let mut offered = &input[..];
    let mut most_held = 0;
    for _ in 0..100_000 {
        let taken = conn.feed(now, offered).expect("feed");
        accept_all(&mut conn);
        most_held = most_held.max(conn.pending_output());
        offered = &offered[taken..];
        if taken == 0 {
            break;
        }
    }
    assert!(!offered.is_empty(), "took everything without draining");
    assert!(!conn.wants_read());
    assert!(
        most_held <= OUTPUT_LIMIT + 512,
        "held {most_held} octets of replies"
    );
    // Draining lets it go on, and every command is answered in the end.
    let mut answered = 0;
    for _ in 0..100_000 {
        answered += drain(&mut conn).matches("250 ").count();
        let taken = conn.feed(now, offered).expect("feed");
        offered = &offered[taken..];
        accept_all(&mut conn);
        assert!(conn.pending_output() <= OUTPUT_LIMIT + 512);
        if offered.is_empty() && conn.pending_output() == 0 {
            answered += drain(&mut conn).matches("250 ").count();
            break;
        }
    }
    assert_eq!(answered, input.len() / 13);
}

#[test]
fn input_read_before_the_end_of_stream_is_all_answered() {
    let now = Instant::now();
    let mut conn = ready(now);
    let mut sent = b"EHLO c.test\r\n".repeat(15_000);
    sent.extend_from_slice(b"QUIT\r\n");
    // One read larger than the transport takes: the rest stays inside the connection.
    let mut scratch = vec![0u8; sent.len()];
    let read = conn
        .read_from(now, &mut std::io::Cursor::new(&sent), &mut scratch)
        .expect("read");
    assert_eq!(read, sent.len());
    conn.feed_eof();
    let mut out = String::new();
    for _ in 0..100_000 {
        accept_all(&mut conn);
        out.push_str(&drain(&mut conn));
        if conn.is_finished() {
            break;
        }
    }
    assert!(conn.is_finished());
    assert_eq!(out.matches("250 LIMITS").count(), 15_000);
    assert!(
        out.ends_with("221 2.0.0 Bye\r\n"),
        "{}",
        &out[out.len() - 100..]
    );
    assert_eq!(conn.close_reason(), Some(&CloseReason::Quit));
}

/// A plain connection behind a load balancer: the PROXY header comes first.
fn proxied(now: Instant) -> Connection {
    let mut conn = plain(now);
    conn.expect_proxy_header();
    conn
}

#[test]
fn a_proxy_v1_header_is_read_before_the_session_in_any_split() {
    let wire = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\nEHLO c.test\r\nQUIT\r\n";
    for split in 1..wire.len() {
        let now = Instant::now();
        let mut conn = proxied(now);
        assert!(conn.poll_event().is_none(), "an event before the header");
        let (first, rest) = wire.split_at(split);
        let taken = conn.feed(now, first).expect("feed");
        assert_eq!(taken, first.len());
        let seen_before = accept_all(&mut conn);
        let mut rest = rest;
        while !rest.is_empty() {
            let taken = conn.feed(now, rest).expect("feed");
            rest = &rest[taken..];
            accept_all(&mut conn);
        }
        let header = conn.proxy_header().expect("the header was read");
        let addresses = header.addresses.expect("TCP4 has addresses");
        assert_eq!(addresses.source.to_string(), "192.0.2.1:56324");
        assert_eq!(addresses.destination.to_string(), "198.51.100.7:25");
        if split < 44 {
            assert!(seen_before.is_empty(), "split {split}: {seen_before:?}");
        }
        let out = drain(&mut conn);
        assert!(out.starts_with("220 "), "split {split}: {out}");
        assert!(out.ends_with("221 2.0.0 Bye\r\n"), "split {split}: {out}");
    }
}

#[test]
fn a_bad_or_missing_proxy_header_closes_without_a_banner() {
    for wire in [
        &b"EHLO c.test\r\n"[..],
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\n",
        b"\x16\x03\x01\x02\x00\x01",
    ] {
        let now = Instant::now();
        let mut conn = proxied(now);
        conn.feed(now, wire).expect("feed");
        assert!(accept_all(&mut conn).is_empty());
        assert!(conn.is_finished(), "{wire:?}");
        assert!(conn.output().is_empty(), "a banner went out for {wire:?}");
        assert!(
            matches!(conn.close_reason(), Some(CloseReason::ProxyHeader(_))),
            "{:?}",
            conn.close_reason()
        );
        assert!(conn.proxy_header().is_none());
    }
}

#[test]
fn closing_before_the_proxy_header_sends_nothing_not_even_tls() {
    for mode in [Mode::ImplicitTls, Mode::StartTls, Mode::Plain] {
        let now = Instant::now();
        let mut conn = Connection::new(mode, config(), Some(acceptor()), now).expect("new");
        assert!(conn.expect_proxy_header());
        conn.feed(now, b"PROXY TCP4 192.0").expect("feed");
        conn.close(&replies::shutting_down(), CloseReason::Shutdown);
        assert!(accept_all(&mut conn).is_empty());
        assert!(conn.output().is_empty(), "{mode}: {:?}", conn.output());
        assert!(conn.is_finished(), "{mode}");
        assert_eq!(conn.close_reason(), Some(&CloseReason::Shutdown));
    }
}

#[test]
fn a_proxy_header_that_does_not_come_in_time_closes_the_connection() {
    let start = Instant::now();
    let mut conn = proxied(start);
    conn.feed(start, b"PROXY TCP4 192.0").expect("feed");
    let deadline = conn.poll_timeout().expect("the header timer");
    assert_eq!(deadline, start + Duration::from_secs(3));
    conn.handle_timeout(deadline);
    assert!(conn.is_finished());
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Timeout(Timer::ProxyHeader))
    );
}

#[test]
fn a_client_leaving_inside_the_proxy_header_closes_the_connection() {
    let now = Instant::now();
    let mut conn = proxied(now);
    conn.feed(now, b"PROXY TCP6 2001:db8::1").expect("feed");
    conn.feed_eof();
    assert!(accept_all(&mut conn).is_empty());
    assert!(conn.is_finished());
    assert_eq!(conn.close_reason(), Some(&CloseReason::ClientClosed));
}

#[test]
fn expecting_a_proxy_header_too_late_is_refused_and_changes_nothing() {
    let now = Instant::now();
    let mut conn = plain(now);
    assert!(conn.expect_proxy_header(), "right after new");
    assert!(conn.expect_proxy_header(), "twice is still expecting");

    // Once the session started (any call that polls it), a header is no longer read.
    let mut conn = plain(now);
    assert!(conn.poll_event().is_some(), "connect");
    assert!(!conn.expect_proxy_header());

    // Implicit TLS: a partial ClientHello taken leaves no session yet, but it is too late.
    let mut conn =
        Connection::new(Mode::ImplicitTls, config(), Some(acceptor()), now).expect("implicit");
    conn.feed(now, &[0x16, 0x03, 0x01]).expect("partial hello");
    assert!(!conn.expect_proxy_header());
    assert!(conn.proxy_header().is_none());
    assert!(!conn.is_closed(), "the handshake goes on: {conn:?}");

    // After the header was read.
    let mut conn = proxied(now);
    conn.feed(now, b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n")
        .expect("feed");
    assert!(conn.proxy_header().is_some());
    assert!(!conn.expect_proxy_header());

    // After the client's end of stream.
    let mut conn =
        Connection::new(Mode::ImplicitTls, config(), Some(acceptor()), now).expect("implicit");
    conn.feed_eof();
    assert!(!conn.expect_proxy_header());
}

/// Answers each decision with `verdict_for(event)`, until no event is left.
fn decide_each(conn: &mut Connection, mut verdict_for: impl FnMut(&Event<'_>) -> Verdict) {
    for _ in 0..100 {
        let Some(event) = conn.poll_event() else {
            return;
        };
        let verdict = verdict_for(&event);
        if let Some(decision) = event.decision() {
            conn.decide(decision, verdict).expect("decide");
        }
    }
}

#[test]
fn envelope_holds_what_the_host_accepted_until_the_transaction_ends_rfc5321_3_3() {
    let now = Instant::now();
    let mut conn = ready(now);
    assert_eq!(conn.mail_from(), None);
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<nobody@d.test>\r\nRCPT TO:<e@d.test>\r\n",
    )
    .expect("feed");
    let refused = Reply::from_parts(550, Some("5.1.1"), "No such user").expect("reply");
    decide_each(&mut conn, |event| match event {
        Event::Rcpt { to, .. } if to.address().starts_with("nobody") => {
            Verdict::Reject(refused.clone())
        }
        _ => Verdict::Accept,
    });
    assert_eq!(conn.mail_from(), Some("a@b.test"));
    assert_eq!(
        conn.recipients(),
        ["c@d.test", "e@d.test"],
        "the refused one is not in"
    );
    // RSET ends the transaction (RFC 5321 §4.1.1.5).
    conn.feed(now, b"RSET\r\n").expect("feed");
    accept_all(&mut conn);
    assert_eq!(conn.mail_from(), None);
    assert!(conn.recipients().is_empty());
    // A whole message: the envelope is there while the host commits, gone after.
    let end = message_awaiting_commit(&mut conn, now);
    assert_eq!(conn.mail_from(), Some("a@b.test"));
    assert_eq!(conn.recipients(), ["c@d.test"]);
    conn.decide(end, Verdict::Accept).expect("commit");
    assert_eq!(conn.mail_from(), None);
    // A message refused mid-body ends its transaction though no event says so.
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n",
    )
    .expect("feed");
    accept_all(&mut conn);
    conn.feed(now, b"part of the body\r\n").expect("feed");
    let _ = conn.poll_event();
    conn.refuse_message(Reply::from_parts(452, Some("4.3.1"), "Spool full").expect("reply"));
    conn.feed(now, b"rest\r\n.\r\n").expect("feed");
    accept_all(&mut conn);
    assert_eq!(conn.mail_from(), None);
    assert!(conn.recipients().is_empty());
    // A refused MAIL opens nothing; `<>` is the empty reverse path.
    conn.feed(now, b"MAIL FROM:<>\r\n").expect("feed");
    decide_each(&mut conn, |_| {
        Verdict::Reject(Reply::from_parts(550, None, "no").expect("reply"))
    });
    assert_eq!(conn.mail_from(), None);
    conn.feed(now, b"MAIL FROM:<>\r\n").expect("feed");
    accept_all(&mut conn);
    assert_eq!(conn.mail_from(), Some(""));
}

/// A connection past EHLO whose session hands out pipelined decisions.
fn ready_pipelined(now: Instant) -> Connection {
    let mut config = SessionConfig::new("mx.test");
    config.pipelined_decisions = true;
    let mut conn = Connection::new(Mode::Plain, Arc::new(config), None, now).expect("plain");
    conn.set_timeouts(timeouts());
    accept_all(&mut conn);
    conn.feed(now, b"EHLO c.test\r\n").expect("feed");
    accept_all(&mut conn);
    drain(&mut conn);
    conn
}

/// Every decision the connection hands out until it has no more, with its command's name.
fn collect_decisions(conn: &mut Connection) -> Vec<(String, smtps_proto::DecisionId)> {
    let mut held = Vec::new();
    for _ in 0..100 {
        let Some(event) = conn.poll_event() else {
            break;
        };
        let name = match &event {
            Event::Mail { from, .. } => format!("mail {}", from.address()),
            Event::Rcpt { to, .. } => format!("rcpt {}", to.address()),
            Event::DataStart { .. } => "data".to_owned(),
            other => format!("{other:?}"),
        };
        if let Some(decision) = event.decision() {
            held.push((name, decision));
        }
    }
    held
}

#[test]
fn envelope_follows_pipelined_verdicts_in_command_order_whatever_order_they_come_in() {
    let now = Instant::now();
    let mut conn = ready_pipelined(now);
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<nobody@d.test>\r\nDATA\r\n",
    )
    .expect("feed");
    let held = collect_decisions(&mut conn);
    let names: Vec<&str> = held.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mail a@b.test",
            "rcpt c@d.test",
            "rcpt nobody@d.test",
            "data"
        ]
    );
    let refused = Reply::from_parts(550, Some("5.1.1"), "No such user").expect("reply");
    // Last to first: nothing shows in the envelope until the MAIL's verdict is in.
    conn.decide(held[3].1, Verdict::Accept).expect("data");
    conn.decide(held[2].1, Verdict::Reject(refused))
        .expect("rcpt 2");
    conn.decide(held[1].1, Verdict::Accept).expect("rcpt 1");
    assert_eq!(conn.mail_from(), None);
    assert!(conn.recipients().is_empty());
    conn.decide(held[0].1, Verdict::Accept).expect("mail");
    assert_eq!(conn.mail_from(), Some("a@b.test"));
    assert_eq!(conn.recipients(), ["c@d.test"]);
    assert!(conn.poll_event().is_none(), "the body comes next");
    let replies = drain(&mut conn);
    assert!(replies.starts_with("250 2.1.0"), "{replies}");
    assert!(
        replies.ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n"),
        "{replies}"
    );
}

#[test]
fn a_refused_mail_leaves_no_envelope_though_its_pipelined_rcpts_were_accepted_first() {
    let now = Instant::now();
    let mut conn = ready_pipelined(now);
    conn.feed(
        now,
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\n",
    )
    .expect("feed");
    let held = collect_decisions(&mut conn);
    assert_eq!(held.len(), 3);
    conn.decide(held[1].1, Verdict::Accept).expect("rcpt 1");
    assert!(conn.awaits(held[2].1));
    let refused = Reply::from_parts(550, Some("5.7.1"), "Sender refused").expect("reply");
    conn.decide(held[0].1, Verdict::Reject(refused))
        .expect("mail");
    // Withdrawn: the second RCPT is no longer awaited, and nothing entered the envelope.
    assert!(!conn.awaits(held[2].1));
    assert!(conn.decide(held[2].1, Verdict::Accept).is_err());
    assert!(conn.poll_event().is_none());
    assert_eq!(conn.mail_from(), None);
    assert!(conn.recipients().is_empty());
    assert_eq!(
        drain(&mut conn),
        "550 5.7.1 Sender refused\r\n503 5.5.1 Need MAIL command\r\n503 5.5.1 Need MAIL command\r\n"
    );
}

/// Answers every decision at once; the greeting is the host's default.
fn greet_at_once(conn: &mut Connection) {
    accept_all(conn);
}

/// Feeds a server flight to a rustls client; returns the plaintext it can read then.
fn client_reads(client: &mut smtps_tls::rustls::ClientConnection, mut wire: &[u8]) -> String {
    use std::io::Read as _;
    while !wire.is_empty() {
        client.read_tls(&mut wire).expect("read");
        client.process_new_packets().expect("valid TLS");
    }
    let mut text = String::new();
    let _ = client.reader().read_to_string(&mut text);
    text
}

#[test]
fn implicit_tls_greeting_leaves_with_the_server_flight_rfc8446_half_rtt() {
    use std::io::Write as _;

    let now = Instant::now();
    let mut conn = Connection::new(Mode::ImplicitTls, config(), Some(acceptor()), now)
        .expect("implicit TLS connection");
    let mut client = smtps_testkit::client_connection(
        &smtps_testkit::client_config(),
        smtps_testkit::SERVER_NAME,
    );
    // Flight 1: the ClientHello.
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    conn.feed(now, &hello).expect("feed");
    greet_at_once(&mut conn);
    assert!(
        conn.tls_info().is_some(),
        "the host sees what TLS agreed from the first event"
    );
    // Flight 2: the server's whole answer — with the greeting in it.
    let flight = conn.output().to_vec();
    conn.consume_output(flight.len());
    let greeting = client_reads(&mut client, &flight);
    assert!(
        greeting.starts_with("220 "),
        "the 220 came before the client said anything more: {greeting:?}"
    );
    // Until the client's Finished arrives, nothing it could send reaches the session.
    assert!(conn.poll_event().is_none());
    let mut finished = Vec::new();
    client
        .writer()
        .write_all(b"EHLO c.test\r\n")
        .expect("write");
    while client.wants_write() {
        client.write_tls(&mut finished).expect("finished");
    }
    conn.feed(now, &finished).expect("feed");
    let events = accept_all(&mut conn);
    assert!(events.iter().any(|e| e.starts_with("Helo")), "{events:?}");
    assert!(!conn.is_handshaking());
}

#[test]
fn without_half_rtt_the_greeting_waits_for_the_clients_finished() {
    let now = Instant::now();
    let acceptor = std::sync::Arc::new(
        smtps_tls::TlsSettings::new()
            .default_certificate(smtps_testkit::TestCertificate::localhost().source())
            .half_rtt_data(false)
            .build()
            .expect("acceptor"),
    );
    let mut conn =
        Connection::new(Mode::ImplicitTls, config(), Some(acceptor), now).expect("connection");
    let mut client = smtps_testkit::client_connection(
        &smtps_testkit::client_config(),
        smtps_testkit::SERVER_NAME,
    );
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    conn.feed(now, &hello).expect("feed");
    let events = accept_all(&mut conn);
    assert!(
        events.is_empty(),
        "no session before the handshake ends: {events:?}"
    );
    let flight = conn.output().to_vec();
    let greeting = client_reads(&mut client, &flight);
    assert_eq!(greeting, "");
}
