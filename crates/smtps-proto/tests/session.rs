//! Session scenarios through the public API, with a fake peer: deferred decisions, back-pressure,
//! attacks (oversized lines, recipient floods, slow drips) and closing paths.

use std::sync::Arc;

use smtps_proto::{
    AbortReason, DecisionId, Error, Event, Reply, ReplyCode, Security, ServerSession,
    SessionConfig, Verdict,
};

/// An event with its borrowed data copied out, so the test can hold it across calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Decision(&'static str, DecisionId),
    Body(Vec<u8>),
    Aborted(AbortReason),
    Notice(String),
}

struct Peer {
    session: ServerSession,
    auto_accept: bool,
    seen: Vec<Seen>,
    output: Vec<u8>,
}

impl Peer {
    fn new(config: SessionConfig, security: Security) -> Self {
        let mut peer = Self {
            session: ServerSession::new(Arc::new(config), security),
            auto_accept: true,
            seen: Vec::new(),
            output: Vec::new(),
        };
        peer.pump();
        peer.take_output();
        peer
    }

    fn ready(config: SessionConfig) -> Self {
        let mut peer = Self::new(config, Security::Tls);
        peer.send(b"EHLO client.example\r\n");
        peer.take_output();
        peer
    }

    /// Feeds everything (pumping events between partial takes) and returns the output.
    fn send(&mut self, mut input: &[u8]) -> String {
        let mut rounds = 0;
        loop {
            let taken = self.session.handle_input(input);
            input = &input[taken..];
            self.pump();
            rounds += 1;
            if input.is_empty() || self.session.is_closed() || (taken == 0 && rounds > 3) {
                break;
            }
        }
        self.take_output()
    }

    fn pump(&mut self) {
        while let Some(event) = self.session.poll_event() {
            let seen = match event {
                Event::Connect { decision } => Seen::Decision("connect", decision),
                Event::Helo { decision, .. } => Seen::Decision("helo", decision),
                Event::Auth { decision, .. } => Seen::Decision("auth", decision),
                Event::Mail { decision, .. } => Seen::Decision("mail", decision),
                Event::Rcpt { decision, .. } => Seen::Decision("rcpt", decision),
                Event::DataStart { decision, .. } => Seen::Decision("data", decision),
                Event::MessageEnd { decision, .. } => Seen::Decision("end", decision),
                Event::BodyChunk(chunk) => Seen::Body(chunk.to_vec()),
                Event::MessageAborted { reason } => Seen::Aborted(reason),
                other => Seen::Notice(format!("{other:?}")),
            };
            if let (true, Seen::Decision(_, id)) = (self.auto_accept, &seen) {
                self.session
                    .decide(*id, Verdict::Accept)
                    .expect("outstanding");
            }
            self.seen.push(seen);
        }
    }

    fn take_output(&mut self) -> String {
        self.session.poll_transmit(&mut self.output);
        String::from_utf8(std::mem::take(&mut self.output)).expect("replies are UTF-8")
    }

    fn last_decision(&self, kind: &str) -> DecisionId {
        self.seen
            .iter()
            .rev()
            .find_map(|s| match s {
                Seen::Decision(k, id) if *k == kind => Some(*id),
                _ => None,
            })
            .expect("decision seen")
    }

    fn body(&self) -> Vec<u8> {
        self.seen
            .iter()
            .filter_map(|s| {
                if let Seen::Body(b) = s {
                    Some(b.clone())
                } else {
                    None
                }
            })
            .flatten()
            .collect()
    }
}

fn config() -> SessionConfig {
    SessionConfig::new("mx.test")
}

#[test]
fn deferred_rcpt_decision_holds_later_pipelined_commands_rfc2920() {
    let mut peer = Peer::ready(config());
    peer.auto_accept = false;
    let out =
        peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nRCPT TO:<c@x.org>\r\nDATA\r\n");
    assert_eq!(out, "", "nothing may be answered before MAIL is decided");
    let mail = peer.last_decision("mail");
    peer.session
        .decide(mail, Verdict::Accept)
        .expect("mail outstanding");
    peer.pump();
    assert_eq!(peer.take_output(), "250 2.1.0 Sender OK\r\n");
    // The first RCPT awaits the host; the second is not even parsed yet.
    let rcpt1 = peer.last_decision("rcpt");
    assert_eq!(
        peer.session.decide(mail, Verdict::Accept),
        Err(Error::UnknownDecision)
    );
    // The host answers from "later": the reply still comes out in order.
    peer.session
        .decide(
            rcpt1,
            Verdict::Reject(Reply::from_parts(450, Some("4.2.1"), "busy").expect("reply")),
        )
        .expect("rcpt outstanding");
    peer.pump();
    let rcpt2 = peer.last_decision("rcpt");
    assert_ne!(rcpt1, rcpt2);
    peer.session
        .decide(rcpt2, Verdict::Accept)
        .expect("rcpt outstanding");
    peer.pump();
    let data = peer.last_decision("data");
    peer.session
        .decide(data, Verdict::Accept)
        .expect("data outstanding");
    peer.pump();
    assert_eq!(
        peer.take_output(),
        "450 4.2.1 busy\r\n250 2.1.5 Recipient OK\r\n354 Start mail input; end with <CRLF>.<CRLF>\r\n"
    );
}

#[test]
fn message_is_acknowledged_only_after_the_host_accepts_it() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n");
    peer.auto_accept = false;
    let out = peer.send(b"hello\r\n.\r\n");
    assert_eq!(out, "", "no 250 before the host has committed the message");
    let end = peer.last_decision("end");
    let queued = Reply::from_parts(250, Some("2.0.0"), "queued as 4F2A1").expect("reply");
    assert_eq!(
        peer.session.decide(end, Verdict::Reject(queued.clone())),
        Err(Error::InvalidVerdict),
        "a 2xx is not a rejection"
    );
    peer.session
        .decide(end, Verdict::AcceptWith(queued))
        .expect("end outstanding");
    peer.pump();
    assert_eq!(peer.take_output(), "250 2.0.0 queued as 4F2A1\r\n");
    assert_eq!(peer.body(), b"hello\r\n");
}

#[test]
fn host_may_refuse_the_message_at_its_end() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n");
    peer.auto_accept = false;
    peer.send(b"spam\r\n.\r\n");
    let end = peer.last_decision("end");
    let refusal = Reply::from_parts(554, Some("5.7.1"), "spam").expect("reply");
    peer.session
        .decide(end, Verdict::Reject(refusal))
        .expect("end outstanding");
    peer.pump();
    assert_eq!(peer.take_output(), "554 5.7.1 spam\r\n");
    peer.auto_accept = true;
    assert_eq!(
        peer.send(b"RCPT TO:<b@x.org>\r\n"),
        "503 5.5.1 Need MAIL command\r\n"
    );
}

#[test]
fn host_421_closes_the_session() {
    let mut peer = Peer::ready(config());
    peer.auto_accept = false;
    peer.send(b"MAIL FROM:<a@x.org>\r\nNOOP\r\n");
    let mail = peer.last_decision("mail");
    let closing = Reply::from_parts(421, Some("4.3.2"), "shutting down").expect("reply");
    peer.session
        .decide(mail, Verdict::Reject(closing))
        .expect("outstanding");
    peer.pump();
    assert_eq!(peer.take_output(), "421 4.3.2 shutting down\r\n");
    assert!(peer.session.is_closed());
    assert_eq!(
        peer.session.handle_input(b"NOOP\r\n"),
        6,
        "input after close is swallowed"
    );
    assert!(peer.session.poll_event().is_none());
}

#[test]
fn greeting_421_closes_at_once() {
    let mut session = ServerSession::new(Arc::new(config()), Security::Tls);
    let Some(Event::Connect { decision }) = session.poll_event() else {
        panic!("connect first")
    };
    let busy = Reply::from_parts(421, Some("4.7.0"), "too busy").expect("reply");
    session
        .decide(decision, Verdict::Reject(busy))
        .expect("outstanding");
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    assert_eq!(out, b"421 4.7.0 too busy\r\n");
    assert!(session.is_closed());
}

#[test]
fn client_vanishing_mid_data_aborts_the_message() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\npartial body\r\n");
    peer.session.handle_eof();
    peer.pump();
    assert!(peer.seen.contains(&Seen::Aborted(AbortReason::ClientLeft)));
    assert!(
        !peer
            .seen
            .iter()
            .any(|s| matches!(s, Seen::Decision("end", _)))
    );
    assert!(peer.session.is_closed());
}

#[test]
fn client_vanishing_mid_bdat_aborts_the_message() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nBDAT 100 LAST\r\nonly some");
    peer.session.handle_eof();
    peer.pump();
    assert!(peer.seen.contains(&Seen::Aborted(AbortReason::ClientLeft)));
}

#[test]
fn close_on_timeout_sends_421_and_aborts_rfc5321_4_5_3_2() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\nslow");
    let timeout = Reply::from_parts(421, Some("4.4.2"), "mx.test Timeout, closing").expect("reply");
    peer.session.close(&timeout);
    peer.pump();
    assert_eq!(peer.take_output(), "421 4.4.2 mx.test Timeout, closing\r\n");
    assert!(peer.seen.contains(&Seen::Aborted(AbortReason::Closed)));
}

#[test]
fn command_line_of_100_kib_is_refused_without_buffering_it() {
    let mut peer = Peer::ready(config());
    let mut line = b"MAIL FROM:<".to_vec();
    line.extend(std::iter::repeat_n(b'a', 100 * 1024));
    line.extend_from_slice(b"@x.org>\r\nNOOP\r\n");
    // Fed in 4 KiB pieces, as a socket would deliver it.
    let mut out = String::new();
    for piece in line.chunks(4096) {
        out.push_str(&peer.send(piece));
    }
    assert_eq!(out, "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
}

#[test]
fn auth_line_may_reach_12288_octets_rfc4954_4() {
    let mut peer = Peer::ready(config());
    let mut line = b"AUTH PLAIN ".to_vec();
    line.extend(std::iter::repeat_n(b'A', 12000));
    line.extend_from_slice(b"\r\n");
    // Not "line too long": the base64 is checked instead (12000 'A's decode to NULs only).
    let out = peer.send(&line);
    assert!(out.starts_with("501 5.5.2"), "{out}");
}

#[test]
fn thousand_recipients_get_452_after_the_limit_rfc5321_4_5_3_1_10() {
    let mut peer = Peer::ready(config());
    let mut batch = b"MAIL FROM:<a@x.org>\r\n".to_vec();
    for i in 0..1000 {
        batch.extend_from_slice(format!("RCPT TO:<user{i}@x.org>\r\n").as_bytes());
    }
    let out = peer.send(&batch);
    let accepted = out.matches("250 2.1.5").count();
    let refused = out.matches("452 4.5.3 Too many recipients").count();
    assert_eq!((accepted, refused), (100, 900));
    assert!(
        !peer.session.is_closed(),
        "452s are not counted as protocol errors"
    );
}

#[test]
fn one_byte_at_a_time_gives_the_same_replies() {
    let script: &[u8] =
        b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let mut whole = Peer::new(config(), Security::Tls);
    let expected = whole.send(script);
    let mut drip = Peer::new(config(), Security::Tls);
    let mut out = String::new();
    for byte in script {
        out.push_str(&drip.send(std::slice::from_ref(byte)));
    }
    assert_eq!(out, expected);
    assert!(expected.ends_with("221 2.0.0 Bye\r\n"));
}

#[test]
fn unpolled_session_stops_taking_input_backpressure() {
    let mut session = ServerSession::new(Arc::new(config()), Security::Tls);
    let big = vec![b'x'; 1 << 20];
    let mut total = 0;
    for _ in 0..10 {
        total += session.handle_input(&big);
    }
    assert!(
        total < big.len(),
        "the session's input is bounded, took {total}"
    );
    assert!(!session.wants_input());
}

#[test]
fn body_is_streamed_in_bounded_chunks() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n");
    let line = [b'y'; 78];
    let mut body = Vec::new();
    for _ in 0..20_000 {
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let out = peer.send(&body);
    assert_eq!(out, "250 2.0.0 Message accepted\r\n");
    let limit = peer.session.config().limits.body_chunk;
    let chunks: Vec<usize> = peer
        .seen
        .iter()
        .filter_map(|s| {
            if let Seen::Body(b) = s {
                Some(b.len())
            } else {
                None
            }
        })
        .collect();
    assert!(
        chunks.len() > 1 && chunks.iter().all(|&n| n <= limit + 1),
        "{chunks:?}"
    );
    assert_eq!(peer.body().len(), 20_000 * 80);
}

#[test]
fn text_line_over_1000_octets_rejects_the_message_rfc5321_4_5_3_1_6() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n");
    let mut body = vec![b'z'; 1200];
    body.extend_from_slice(b"\r\n.\r\n");
    let out = peer.send(&body);
    assert!(out.starts_with("554 5.6.0"), "{out}");
    assert!(peer.seen.contains(&Seen::Aborted(AbortReason::LineTooLong)));
}

#[test]
fn transaction_limit_is_advertised_and_enforced_rfc9422() {
    let mut cfg = config();
    cfg.limits.transactions = Some(1);
    let mut peer = Peer::new(cfg, Security::Tls);
    let ehlo = peer.send(b"EHLO c\r\n");
    assert!(ehlo.contains("LIMITS RCPTMAX=100 MAILMAX=1\r\n"), "{ehlo}");
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(
        peer.send(b"MAIL FROM:<a@x.org>\r\n"),
        "452 4.5.3 Too many transactions in this session\r\n"
    );
}

#[test]
fn ehlo_in_the_middle_of_a_transaction_resets_it_rfc5321_4_1_4() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\n");
    peer.send(b"EHLO again\r\n");
    assert!(peer.seen.contains(&Seen::Notice("Reset".into())));
    assert_eq!(
        peer.send(b"RCPT TO:<b@x.org>\r\n"),
        "503 5.5.1 Need MAIL command\r\n"
    );
}

#[test]
fn dsn_and_requiretls_parameters_only_when_advertised_rfc3461_rfc8689() {
    let mut cfg = config();
    cfg.extensions |= smtps_proto::Extensions::REQUIRE_TLS;
    let mut tls = Peer::new(cfg.clone(), Security::Tls);
    let ehlo = tls.send(b"EHLO c\r\n");
    assert!(
        ehlo.contains("250-REQUIRETLS\r\n") && ehlo.contains("250-DSN\r\n"),
        "{ehlo}"
    );
    assert_eq!(
        tls.send(b"MAIL FROM:<a@x.org> RET=HDRS ENVID=abc REQUIRETLS\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
    assert_eq!(
        tls.send(b"RCPT TO:<b@x.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x.org\r\n"),
        "250 2.1.5 Recipient OK\r\n"
    );
    let mut plain = Peer::new(cfg, Security::StartTlsAvailable);
    let ehlo = plain.send(b"EHLO c\r\n");
    assert!(
        !ehlo.contains("REQUIRETLS"),
        "REQUIRETLS is offered only over TLS"
    );
    assert!(
        plain
            .send(b"MAIL FROM:<a@x.org> REQUIRETLS\r\n")
            .starts_with("555 5.5.4")
    );
}

#[test]
fn helo_client_gets_no_extensions() {
    let mut peer = Peer::new(config(), Security::Tls);
    assert_eq!(peer.send(b"HELO c\r\n"), "250 mx.test\r\n");
    assert!(
        peer.send(b"MAIL FROM:<a@x.org> SIZE=10\r\n")
            .starts_with("555")
    );
}

#[test]
fn vrfy_expn_help_noop_rfc5321_4_1_1() {
    let mut peer = Peer::ready(config());
    assert!(peer.send(b"VRFY bob\r\n").starts_with("252 2.5.0"));
    assert!(peer.send(b"EXPN staff\r\n").starts_with("502 5.5.1"));
    assert!(peer.send(b"HELP\r\n").starts_with("214 2.0.0"));
    assert_eq!(peer.send(b"NOOP\r\n"), "250 2.0.0 OK\r\n");
    let mut cfg = config();
    cfg.policy.vrfy = smtps_proto::VrfyPolicy::Disabled;
    let mut peer = Peer::ready(cfg);
    assert!(peer.send(b"VRFY bob\r\n").starts_with("502 5.5.1"));
}

#[test]
fn starttls_not_offered_on_plain_listener_rfc3207() {
    let mut peer = Peer::new(config(), Security::Plaintext);
    let ehlo = peer.send(b"EHLO c\r\n");
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(peer.send(b"STARTTLS\r\n").starts_with("502 5.5.1"));
    assert_eq!(
        peer.session.handle_tls_established(),
        Err(Error::NotAwaitingTls)
    );
}

#[test]
fn plaintext_auth_only_with_the_danger_flag() {
    let mut cfg = config();
    cfg.policy.danger_allow_plaintext_auth = true;
    let mut peer = Peer::new(cfg, Security::Plaintext);
    let ehlo = peer.send(b"EHLO c\r\n");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert_eq!(
        peer.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert!(peer.session.is_authenticated());
}

#[test]
fn require_auth_policy_refuses_mail_until_authenticated() {
    let mut cfg = config();
    cfg.policy.require_auth_for_mail = true;
    let mut peer = Peer::ready(cfg);
    assert_eq!(
        peer.send(b"MAIL FROM:<a@x.org>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    peer.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_eq!(
        peer.send(b"MAIL FROM:<a@x.org>\r\n"),
        "250 2.1.0 Sender OK\r\n"
    );
}

#[test]
fn refused_bdat_still_consumes_its_octets_rfc3030() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\n");
    peer.auto_accept = false;
    peer.send(b"BDAT 10\r\nMAIL FROM:");
    let data = peer.last_decision("data");
    let refusal = Reply::from_parts(452, Some("4.3.1"), "spool full").expect("reply");
    peer.session
        .decide(data, Verdict::Reject(refusal))
        .expect("outstanding");
    peer.pump();
    assert_eq!(peer.take_output(), "452 4.3.1 spool full\r\n");
    peer.auto_accept = true;
    // "MAIL FROM:" were chunk octets, not a command.
    assert_eq!(peer.send(b"NOOP\r\n"), "250 2.0.0 OK\r\n");
    assert!(peer.body().is_empty());
}

#[test]
fn reply_codes_follow_rfc5321_ranges() {
    assert_eq!(ReplyCode::new(250), Some(ReplyCode::OK));
    assert!(ReplyCode::new(610).is_none());
}

#[test]
fn host_refusing_mid_body_gets_its_reply_after_the_real_end() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\nfirst part\r\n");
    let full = Reply::from_parts(452, Some("4.3.1"), "Insufficient system storage").expect("reply");
    peer.session.refuse_message(full);
    let out = peer.send(b"MAIL FROM:<smuggled@x.org>\r\nrest\r\n.\r\nNOOP\r\n");
    assert_eq!(
        out,
        "452 4.3.1 Insufficient system storage\r\n250 2.0.0 OK\r\n"
    );
    let decisions: Vec<_> = peer
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Decision(..)))
        .collect();
    assert_eq!(
        decisions.len(),
        5,
        "helo, mail, rcpt, data — and no end, no smuggled mail: {decisions:?}"
    );
    assert_eq!(peer.body(), b"first part\r\n");
    assert!(!peer.session.in_transaction());
}

#[test]
fn host_refusing_mid_bdat_chunk_consumes_it() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nBDAT 15 LAST\r\nabc");
    let full = Reply::from_parts(452, Some("4.3.1"), "Insufficient system storage").expect("reply");
    peer.session.refuse_message(full);
    let out = peer.send(b"NOOP\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(
        out,
        "452 4.3.1 Insufficient system storage\r\n250 2.0.0 OK\r\n"
    );
}

#[test]
fn repeated_failed_authentication_ends_in_421() {
    let mut cfg = config();
    cfg.limits.errors = 3;
    let mut peer = Peer::ready(cfg);
    peer.auto_accept = false;
    let mut out = String::new();
    for _ in 0..3 {
        peer.send(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
        let auth = peer.last_decision("auth");
        let refusal = Reply::from_parts(535, Some("5.7.8"), "Authentication credentials invalid")
            .expect("reply");
        peer.session
            .decide(auth, Verdict::Reject(refusal))
            .expect("outstanding");
        peer.pump();
        out.push_str(&peer.take_output());
    }
    assert!(
        out.ends_with("421 4.7.0 Too many errors, closing connection\r\n"),
        "{out}"
    );
    assert!(peer.session.is_closed());
}

/// Fuzz finding `refused-bdat-aborted`: no message was started, so no abort is reported.
#[test]
fn client_leaving_during_a_refused_bdat_chunk_aborts_nothing() {
    let mut peer = Peer::ready(config());
    peer.send(b"BDAT 100\r\npartial");
    peer.session.handle_eof();
    peer.pump();
    assert!(
        !peer.seen.iter().any(|s| matches!(s, Seen::Aborted(_))),
        "{:?}",
        peer.seen
    );
}

/// Fuzz finding `bdat-shut-no-abort`: between two chunks of an accepted message the host has
/// seen DataStart and a chunk; closing must tell it the message is aborted.
#[test]
fn closing_between_bdat_chunks_aborts_the_message() {
    for close in [true, false] {
        let mut peer = Peer::ready(config());
        peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nBDAT 3\r\nabc");
        assert_eq!(peer.body(), b"abc");
        if close {
            let reply = Reply::from_parts(421, Some("4.4.2"), "timeout").expect("reply");
            peer.session.close(&reply);
        } else {
            peer.session.handle_eof();
        }
        peer.pump();
        let expected = if close {
            AbortReason::Closed
        } else {
            AbortReason::ClientLeft
        };
        assert!(
            peer.seen.contains(&Seen::Aborted(expected)),
            "{:?}",
            peer.seen
        );
    }
}

/// Fuzz finding `bdat-421-stays-open`: a 421 for the first BDAT chunk closes the session.
#[test]
fn host_421_for_bdat_closes_the_session() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\n");
    peer.auto_accept = false;
    peer.send(b"BDAT 3\r\nabcNOOP\r\n");
    let data = peer.last_decision("data");
    let closing = Reply::from_parts(421, Some("4.3.2"), "shutting down").expect("reply");
    peer.session
        .decide(data, Verdict::Reject(closing))
        .expect("outstanding");
    peer.pump();
    assert_eq!(peer.take_output(), "421 4.3.2 shutting down\r\n");
    assert!(peer.session.is_closed());
}

/// Found by the disk-full fault test: the last chunk and the end of the body arrive together,
/// and the host refuses while handling that chunk.
#[test]
fn host_refusing_the_last_chunk_of_a_complete_body_gets_its_reply() {
    let mut peer = Peer::ready(config());
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n");
    peer.session.handle_input(b"whole body\r\n.\r\nNOOP\r\n");
    let Some(Event::BodyChunk(chunk)) = peer.session.poll_event() else {
        panic!("body first")
    };
    assert_eq!(chunk, b"whole body\r\n");
    let full = Reply::from_parts(452, Some("4.3.1"), "Insufficient system storage").expect("reply");
    peer.session.refuse_message(full);
    peer.pump();
    assert_eq!(
        peer.take_output(),
        "452 4.3.1 Insufficient system storage\r\n250 2.0.0 OK\r\n"
    );
    assert!(
        !peer
            .seen
            .iter()
            .any(|s| matches!(s, Seen::Decision("end", _)))
    );
    assert!(!peer.session.in_transaction());
}

/// Fuzz finding `refuse-message-then-aborted`: a size abort decoded in the same piece as the
/// chunk the host refuses is not reported after the host's own refusal.
#[test]
fn host_refusal_suppresses_a_queued_abort_notice() {
    let mut cfg = config();
    cfg.limits.message_size = 10;
    let mut peer = Peer::ready(cfg);
    peer.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n");
    peer.session.handle_input(b"0123456789abcdef\r\n.\r\n");
    let Some(Event::BodyChunk(_)) = peer.session.poll_event() else {
        panic!("body first")
    };
    let full = Reply::from_parts(452, Some("4.3.1"), "Insufficient system storage").expect("reply");
    peer.session.refuse_message(full);
    peer.pump();
    assert!(
        !peer.seen.iter().any(|s| matches!(s, Seen::Aborted(_))),
        "{:?}",
        peer.seen
    );
    assert!(!peer.session.in_transaction());
}

fn reply(code: u16) -> Reply {
    Reply::from_parts(code, None, "text").expect("reply")
}

#[test]
fn verdicts_take_only_the_codes_rfc5321_4_3_2_allows_for_the_command() {
    // The greeting: 220 accepts; only 554 (or 421) refuses.
    let mut peer = Peer {
        session: ServerSession::new(Arc::new(config()), Security::Tls),
        auto_accept: false,
        seen: Vec::new(),
        output: Vec::new(),
    };
    peer.pump();
    let connect = peer.last_decision("connect");
    for wrong in [Verdict::AcceptWith(reply(250)), Verdict::Reject(reply(550))] {
        assert_eq!(
            peer.session.decide(connect, wrong.clone()),
            Err(Error::InvalidVerdict),
            "{wrong:?} taken for the greeting"
        );
    }
    peer.session
        .decide(connect, Verdict::AcceptWith(reply(220)))
        .expect("220 greets");
    assert_eq!(peer.take_output(), "220 text\r\n");

    // RCPT may be accepted with 251 (RFC 5321 §3.4), MAIL only with 250, DATA with 354.
    peer.auto_accept = true;
    peer.send(b"EHLO client.example\r\n");
    peer.auto_accept = false;
    peer.send(b"MAIL FROM:<a@x.org>\r\n");
    let mail = peer.last_decision("mail");
    assert_eq!(
        peer.session.decide(mail, Verdict::AcceptWith(reply(251))),
        Err(Error::InvalidVerdict)
    );
    peer.session.decide(mail, Verdict::Accept).expect("mail");
    peer.send(b"RCPT TO:<b@x.org>\r\n");
    let rcpt = peer.last_decision("rcpt");
    peer.session
        .decide(rcpt, Verdict::AcceptWith(reply(251)))
        .expect("251 forwards");
    peer.send(b"DATA\r\n");
    let data = peer.last_decision("data");
    assert_eq!(
        peer.session.decide(data, Verdict::AcceptWith(reply(250))),
        Err(Error::InvalidVerdict)
    );
    peer.session
        .decide(data, Verdict::Reject(reply(451)))
        .expect("any 4xx refuses DATA");
}

#[test]
fn junk_command_limit_tells_the_host_too_many_errors() {
    let mut config = config();
    config.limits.junk_commands = 3;
    let mut peer = Peer::ready(config);
    let out = peer.send(b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n");
    assert!(out.ends_with("421 4.7.0 Too many commands without mail, closing connection\r\n"));
    assert!(
        peer.seen
            .iter()
            .any(|seen| matches!(seen, Seen::Notice(n) if n == "TooManyErrors")),
        "{:?}",
        peer.seen.len()
    );
}
