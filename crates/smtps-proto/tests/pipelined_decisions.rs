//! [`SessionConfig::pipelined_decisions`] through the public API: a host asked for the RCPT and
//! DATA commands a client pipelined (RFC 2920) while earlier MAIL and RCPT decisions are still
//! outstanding. The scenarios pin one behaviour each. The whole promise — the client gets byte
//! for byte what a session deciding one command at a time gives, and the host sees the same
//! verdicts applied — is checked over generated dialogues by the differential in
//! `crates/smtps-fuzzing` (`session::differential`, run by the `session` fuzz target and by
//! `crates/smtps-fuzzing/tests/differential.rs`).

use std::sync::Arc;

use smtps_proto::{
    DecisionId, Error, Event, LineEndingPolicy, Reply, Security, ServerSession, SessionConfig,
    Verdict,
};

/// An event with its data copied out, so that a test can hold it across calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A decision: what it is about (`mail a@x.test`, `rcpt b@x.test`, `data`, `end 7`) and its
    /// id.
    Decision(String, DecisionId),
    Body(Vec<u8>),
    Notice(String),
}

/// A host that polls and decides only when the test says so.
struct Host {
    session: ServerSession,
    seen: Vec<Seen>,
}

impl Host {
    /// A session with pipelined decisions, greeted and past EHLO.
    fn new(edit: impl FnOnce(&mut SessionConfig)) -> Self {
        Self::with(true, edit)
    }

    fn with(pipelined: bool, edit: impl FnOnce(&mut SessionConfig)) -> Self {
        let mut config = SessionConfig::new("mx.test");
        config.pipelined_decisions = pipelined;
        edit(&mut config);
        let mut host = Self {
            session: ServerSession::new(Arc::new(config), Security::Tls),
            seen: Vec::new(),
        };
        host.feed(b"EHLO client.test\r\n");
        for _ in 0..2 {
            for (_, id) in decisions(&host.poll()) {
                host.decide(id, Verdict::Accept).expect("outstanding");
            }
        }
        host.transmit();
        host
    }

    /// Offers `bytes` whole; the session must take them.
    fn feed(&mut self, bytes: &[u8]) {
        assert_eq!(
            self.session.handle_input(bytes),
            bytes.len(),
            "input refused"
        );
    }

    /// Every event ready now, none decided.
    fn poll(&mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Some(event) = self.session.poll_event() {
            seen.push(describe(&event));
        }
        self.seen.extend(seen.iter().cloned());
        seen
    }

    fn decide(&mut self, id: DecisionId, verdict: Verdict) -> Result<(), Error> {
        self.session.decide(id, verdict)
    }

    /// Accepts every decision handed out from here on, until the session asks for no more.
    fn accept_the_rest(&mut self) {
        loop {
            let decided = decisions(&self.poll());
            if decided.is_empty() {
                break;
            }
            for (_, id) in decided {
                self.decide(id, Verdict::Accept).expect("outstanding");
            }
        }
    }

    fn transmit(&mut self) -> String {
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        String::from_utf8(out).expect("replies are UTF-8")
    }

    /// The id of the event labelled `label`, among those seen.
    fn id(&self, label: &str) -> DecisionId {
        self.seen
            .iter()
            .rev()
            .find_map(|seen| match seen {
                Seen::Decision(l, id) if l == label => Some(*id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {label} event seen"))
    }
}

fn describe(event: &Event<'_>) -> Seen {
    let label = match event {
        Event::Connect { .. } => "connect".to_owned(),
        Event::Helo { name, .. } => format!("helo {name}"),
        Event::Auth {
            authentication_id, ..
        } => format!("auth {authentication_id}"),
        Event::Mail { from, .. } => format!("mail {}", from.address()),
        Event::Rcpt { to, .. } => format!("rcpt {}", to.address()),
        Event::DataStart { chunked, .. } => if *chunked { "bdat" } else { "data" }.to_owned(),
        Event::MessageEnd { size, .. } => format!("end {size}"),
        Event::BodyChunk(chunk) => return Seen::Body(chunk.to_vec()),
        Event::StartTls { .. } => return Seen::Notice("StartTls".to_owned()),
        other => return Seen::Notice(format!("{other:?}")),
    };
    Seen::Decision(label, event.decision().expect("a decision event"))
}

fn decisions(seen: &[Seen]) -> Vec<(String, DecisionId)> {
    seen.iter()
        .filter_map(|seen| match seen {
            Seen::Decision(label, id) => Some((label.clone(), *id)),
            _ => None,
        })
        .collect()
}

fn labels(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|seen| match seen {
            Seen::Decision(label, _) => label.clone(),
            Seen::Body(body) => format!("body {}", String::from_utf8_lossy(body)),
            Seen::Notice(notice) => notice.clone(),
        })
        .collect()
}

fn reply(code: u16, status: Option<&str>, text: &str) -> Reply {
    Reply::from_parts(code, status, text).expect("valid reply")
}

fn reject(code: u16, status: &str, text: &str) -> Verdict {
    Verdict::Reject(reply(code, Some(status), text))
}

/// What a session deciding one command at a time (the option off) answers to `wire`, sent
/// after EHLO as fast as it takes it, each event decided at once by `verdict` from its label.
fn one_at_a_time(
    edit: impl FnOnce(&mut SessionConfig),
    wire: &[u8],
    verdict: impl Fn(&str) -> Verdict,
) -> String {
    let mut host = Host::with(false, edit);
    let mut rest = wire;
    let mut idle = 0;
    while idle < 2 {
        let taken = host.session.handle_input(rest);
        rest = &rest[taken..];
        let seen = host.poll();
        for (label, id) in decisions(&seen) {
            host.decide(id, verdict(&label)).expect("outstanding");
        }
        idle = if taken == 0 && seen.is_empty() {
            idle + 1
        } else {
            0
        };
    }
    assert!(rest.is_empty(), "one-at-a-time session stalled");
    host.transmit()
}

const GROUP: &[u8] =
    b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n";
const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RECIPIENT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const GO_AHEAD: &str = "354 Start mail input; end with <CRLF>.<CRLF>\r\n";
const NEED_MAIL: &str = "503 5.5.1 Need MAIL command\r\n";

#[test]
fn pipelined_mail_rcpt_rcpt_data_yields_all_four_events_before_any_decision_rfc2920() {
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    let seen = host.poll();
    assert_eq!(
        labels(&seen),
        ["mail a@x.test", "rcpt b@x.test", "rcpt c@x.test", "data"]
    );
    let ids = decisions(&seen);
    assert!(ids.iter().all(|(_, id)| host.session.awaits(*id)));
    assert_eq!(host.transmit(), "", "no reply before its verdict");
    for (_, id) in &ids {
        host.decide(*id, Verdict::Accept).expect("outstanding");
        assert!(!host.session.awaits(*id));
    }
    assert_eq!(
        host.transmit(),
        [SENDER_OK, RECIPIENT_OK, RECIPIENT_OK, GO_AHEAD].concat()
    );
    host.feed(b"hello\r\n.\r\n");
    let seen = host.poll();
    assert_eq!(labels(&seen), ["body hello\r\n", "end 7"]);
}

#[test]
fn verdicts_given_in_reverse_order_still_reply_in_command_order() {
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    host.poll();
    let (mail, b, c, data) = (
        host.id("mail a@x.test"),
        host.id("rcpt b@x.test"),
        host.id("rcpt c@x.test"),
        host.id("data"),
    );
    let verdicts = [
        (data, Verdict::AcceptWith(reply(354, None, "go ahead"))),
        (
            c,
            Verdict::AcceptWith(reply(251, Some("2.1.5"), "c forwarded")),
        ),
        (b, reject(450, "4.2.1", "b busy")),
    ];
    for (id, verdict) in verdicts {
        host.decide(id, verdict).expect("outstanding");
        assert!(!host.session.awaits(id), "a stored verdict is given");
        assert!(host.session.awaits(mail));
        assert_eq!(
            host.transmit(),
            "",
            "nothing leaves before the MAIL verdict"
        );
        assert!(host.poll().is_empty());
    }
    host.decide(mail, Verdict::AcceptWith(reply(250, Some("2.1.0"), "a ok")))
        .expect("outstanding");
    assert_eq!(
        host.transmit(),
        "250 2.1.0 a ok\r\n450 4.2.1 b busy\r\n251 2.1.5 c forwarded\r\n354 go ahead\r\n"
    );
    assert_eq!(
        host.decide(b, Verdict::Accept),
        Err(Error::UnknownDecision),
        "a verdict is given once"
    );
}

#[test]
fn refused_mail_withdraws_the_read_ahead_rcpts_and_data_answered_503() {
    let refusal = || reject(550, "5.7.1", "sender refused");
    let expected = [
        "550 5.7.1 sender refused\r\n",
        NEED_MAIL,
        NEED_MAIL,
        NEED_MAIL,
    ]
    .concat();
    assert_eq!(
        one_at_a_time(
            |_| {},
            GROUP,
            |label| if label.starts_with("mail") {
                refusal()
            } else {
                Verdict::Accept
            }
        ),
        expected
    );
    // The MAIL verdict first, or after the others: the same replies, the others' decisions
    // unknown either way.
    for mail_first in [true, false] {
        let mut host = Host::new(|_| {});
        host.feed(GROUP);
        let ids = decisions(&host.poll());
        let mail = ids[0].1;
        if mail_first {
            host.decide(mail, refusal()).expect("outstanding");
            for (_, id) in &ids[1..] {
                assert!(!host.session.awaits(*id), "withdrawn");
                assert_eq!(
                    host.decide(*id, Verdict::Accept),
                    Err(Error::UnknownDecision)
                );
            }
        } else {
            for (_, id) in ids[1..].iter().rev() {
                host.decide(*id, Verdict::Accept).expect("outstanding");
            }
            host.decide(mail, refusal()).expect("outstanding");
            for (_, id) in &ids[1..] {
                assert_eq!(
                    host.decide(*id, Verdict::Accept),
                    Err(Error::UnknownDecision)
                );
            }
        }
        assert_eq!(host.poll(), [], "a withdrawn command gets no second event");
        assert_eq!(host.transmit(), expected, "mail first: {mail_first}");
        assert!(!host.session.awaiting_decision());
        assert!(!host.session.in_transaction());
    }
}

#[test]
fn withdrawn_events_not_yet_polled_are_dropped() {
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    let Some(Event::Mail { decision: mail, .. }) = host.session.poll_event() else {
        panic!("MAIL first");
    };
    // The RCPT is read ahead and queued, not handed out yet.
    assert!(host.session.has_event());
    host.decide(mail, reject(550, "5.7.1", "no"))
        .expect("outstanding");
    assert_eq!(host.poll(), []);
    assert_eq!(
        host.transmit(),
        ["550 5.7.1 no\r\n", NEED_MAIL, NEED_MAIL, NEED_MAIL].concat()
    );
}

#[test]
fn every_rcpt_refused_withdraws_the_data_answered_554_5_5_1() {
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    host.poll();
    let data = host.id("data");
    // The DATA accepted first: a verdict given on a ground later taken away is dropped.
    host.decide(data, Verdict::Accept).expect("outstanding");
    for label in ["rcpt c@x.test", "rcpt b@x.test"] {
        let id = host.id(label);
        host.decide(id, reject(550, "5.1.1", "no such user"))
            .expect("outstanding");
    }
    host.decide(host.id("mail a@x.test"), Verdict::Accept)
        .expect("outstanding");
    let expected = [
        SENDER_OK,
        "550 5.1.1 no such user\r\n",
        "550 5.1.1 no such user\r\n",
        "554 5.5.1 No valid recipients\r\n",
    ]
    .concat();
    assert_eq!(
        host.decide(data, Verdict::Accept),
        Err(Error::UnknownDecision)
    );
    assert_eq!(host.poll(), [], "the DATA is read again, and gets no event");
    assert_eq!(host.transmit(), expected);
    assert!(!host.session.in_body());
    assert_eq!(
        one_at_a_time(
            |_| {},
            GROUP,
            |label| if label.starts_with("rcpt") {
                reject(550, "5.1.1", "no such user")
            } else {
                Verdict::Accept
            }
        ),
        expected
    );
    // The transaction stands: another RCPT and DATA go through.
    host.feed(b"RCPT TO:<d@x.test>\r\nDATA\r\n");
    for (_, id) in decisions(&host.poll()) {
        host.decide(id, Verdict::Accept).expect("outstanding");
    }
    assert_eq!(host.transmit(), [RECIPIENT_OK, GO_AHEAD].concat());
}

#[test]
fn data_withdrawn_while_its_event_is_outstanding_becomes_unknown() {
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    host.poll();
    let data = host.id("data");
    host.decide(host.id("mail a@x.test"), Verdict::Accept)
        .expect("outstanding");
    host.decide(host.id("rcpt b@x.test"), reject(550, "5.1.1", "no"))
        .expect("outstanding");
    assert!(host.session.awaits(data));
    host.decide(host.id("rcpt c@x.test"), reject(550, "5.1.1", "no"))
        .expect("outstanding");
    assert!(!host.session.awaits(data));
    assert_eq!(
        host.decide(data, Verdict::Accept),
        Err(Error::UnknownDecision)
    );
    assert_eq!(host.poll(), []);
    assert!(
        host.transmit()
            .ends_with("554 5.5.1 No valid recipients\r\n")
    );
}

#[test]
fn one_accepted_rcpt_keeps_the_data_and_the_body_follows() {
    let mut host = Host::new(|_| {});
    // The body pipelined too (a client must wait for the 354, but the session must not
    // mistake the body for commands whichever way the verdicts go).
    let mut wire = GROUP.to_vec();
    wire.extend_from_slice(b"RCPT TO:<not-a-command@x.test>\r\n.\r\n");
    host.feed(&wire);
    host.poll();
    host.decide(host.id("data"), Verdict::Accept)
        .expect("outstanding");
    host.decide(host.id("rcpt b@x.test"), reject(550, "5.1.1", "no"))
        .expect("outstanding");
    host.decide(host.id("rcpt c@x.test"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(host.poll(), [], "nothing before the MAIL verdict");
    host.decide(host.id("mail a@x.test"), Verdict::Accept)
        .expect("outstanding");
    let seen = host.poll();
    assert_eq!(
        labels(&seen),
        ["body RCPT TO:<not-a-command@x.test>\r\n", "end 32"]
    );
    host.decide(host.id("end 32"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(
        host.transmit(),
        [
            SENDER_OK,
            "550 5.1.1 no\r\n",
            RECIPIENT_OK,
            GO_AHEAD,
            "250 2.0.0 Message accepted\r\n"
        ]
        .concat()
    );
}

#[test]
fn recipient_limit_is_never_exceeded_by_read_ahead_rfc5321_4_5_3_1_10() {
    let wire = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\n\
                 RCPT TO:<d@x.test>\r\n";
    let limit = |config: &mut SessionConfig| config.limits.recipients = 2;
    // The first two accepted: the third is answered 452 and never reaches the host.
    let mut host = Host::new(limit);
    host.feed(wire);
    assert_eq!(
        labels(&host.poll()),
        ["mail a@x.test", "rcpt b@x.test", "rcpt c@x.test"],
        "the third RCPT would go over the limit were the first two accepted"
    );
    for label in ["rcpt c@x.test", "rcpt b@x.test", "mail a@x.test"] {
        host.decide(host.id(label), Verdict::Accept)
            .expect("outstanding");
    }
    assert_eq!(host.poll(), []);
    let expected = [
        SENDER_OK,
        RECIPIENT_OK,
        RECIPIENT_OK,
        "452 4.5.3 Too many recipients\r\n",
    ]
    .concat();
    assert_eq!(host.transmit(), expected);
    assert_eq!(one_at_a_time(limit, wire, |_| Verdict::Accept), expected);
    // One of the two refused: the third is read after the verdicts, and accepted.
    let mut host = Host::new(limit);
    host.feed(wire);
    host.poll();
    host.decide(host.id("rcpt b@x.test"), reject(550, "5.1.1", "no"))
        .expect("outstanding");
    host.decide(host.id("rcpt c@x.test"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(host.poll(), [], "still behind the MAIL verdict");
    host.decide(host.id("mail a@x.test"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(labels(&host.poll()), ["rcpt d@x.test"]);
    host.decide(host.id("rcpt d@x.test"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(
        host.transmit(),
        [SENDER_OK, "550 5.1.1 no\r\n", RECIPIENT_OK, RECIPIENT_OK].concat()
    );
}

#[test]
fn rset_noop_and_a_second_mail_wait_for_the_verdicts() {
    let lines: [&[u8]; 6] = [
        b"RSET\r\n",
        b"NOOP\r\n",
        b"MAIL FROM:<z@x.test>\r\n",
        b"VRFY b\r\n",
        b"BDAT 3 LAST\r\nabc",
        b"RCPT TO:<b@x.test> BOGUS=1\r\n",
    ];
    for line in lines {
        let mut wire = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n".to_vec();
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"RCPT TO:<c@x.test>\r\nDATA\r\n");
        let shown = String::from_utf8_lossy(line).into_owned();
        let mut host = Host::new(|_| {});
        host.feed(&wire);
        assert_eq!(
            labels(&host.poll()),
            ["mail a@x.test", "rcpt b@x.test"],
            "{shown:?} is not read ahead, nor anything after it"
        );
        host.decide(host.id("rcpt b@x.test"), Verdict::Accept)
            .expect("outstanding");
        assert_eq!(host.poll(), [], "{shown:?} waits for the MAIL verdict too");
        assert_eq!(host.transmit(), "");
        host.decide(host.id("mail a@x.test"), Verdict::Accept)
            .expect("outstanding");
        host.accept_the_rest();
        assert_eq!(
            host.transmit(),
            one_at_a_time(|_| {}, &wire, |_| Verdict::Accept),
            "{shown:?}"
        );
    }
}

#[test]
fn bare_lf_line_is_not_read_ahead_and_its_notice_comes_once() {
    let wire = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\nDATA\r\n";
    for mail_accepted in [true, false] {
        let mut host = Host::new(|_| {});
        host.feed(wire);
        assert_eq!(labels(&host.poll()), ["mail a@x.test"]);
        let verdict = if mail_accepted {
            Verdict::Accept
        } else {
            reject(550, "5.7.1", "no")
        };
        host.decide(host.id("mail a@x.test"), verdict.clone())
            .expect("outstanding");
        host.accept_the_rest();
        let notices = host
            .seen
            .iter()
            .filter(|seen| matches!(seen, Seen::Notice(n) if n.starts_with("BareLineEnding")))
            .count();
        assert_eq!(notices, 1, "mail accepted: {mail_accepted}");
        let expected = one_at_a_time(
            |_| {},
            wire,
            |label| {
                if label.starts_with("mail") {
                    verdict.clone()
                } else {
                    Verdict::Accept
                }
            },
        );
        assert_eq!(host.transmit(), expected);
    }
    // Refused by policy: still one notice, and one 500.
    let mut host = Host::new(|config| {
        config.policy.bare_line_ending_in_commands = LineEndingPolicy::Reject;
    });
    host.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x\r.test>\r\n");
    assert_eq!(labels(&host.poll()), ["mail a@x.test"]);
    host.decide(host.id("mail a@x.test"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(
        labels(&host.poll()),
        ["BareLineEnding { in_body: false, rejected: true }"]
    );
    assert_eq!(
        host.transmit(),
        [
            SENDER_OK,
            "500 5.5.2 Bare LF or CR not allowed; end lines with CRLF\r\n"
        ]
        .concat()
    );
}

#[test]
fn option_off_asks_for_one_decision_at_a_time() {
    let mut host = Host::with(false, |_| {});
    host.feed(GROUP);
    for label in ["mail a@x.test", "rcpt b@x.test", "rcpt c@x.test", "data"] {
        let seen = host.poll();
        assert_eq!(labels(&seen), [label], "one event per verdict");
        assert_eq!(host.poll(), [], "nothing more before the verdict");
        host.decide(host.id(label), Verdict::Accept)
            .expect("outstanding");
    }
    assert_eq!(
        host.transmit(),
        [SENDER_OK, RECIPIENT_OK, RECIPIENT_OK, GO_AHEAD].concat()
    );
}

#[test]
fn mail_refused_with_421_closes_and_withdraws_everything() {
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    let ids = decisions(&host.poll());
    for (_, id) in &ids[1..] {
        host.decide(*id, Verdict::Accept).expect("outstanding");
    }
    host.decide(ids[0].1, reject(421, "4.3.2", "shutting down"))
        .expect("outstanding");
    assert_eq!(host.transmit(), "421 4.3.2 shutting down\r\n");
    assert!(host.session.is_closed());
    assert!(!host.session.awaiting_decision());
    assert_eq!(host.poll(), []);
    for (_, id) in &ids {
        assert!(!host.session.awaits(*id));
        assert_eq!(
            host.decide(*id, Verdict::Accept),
            Err(Error::UnknownDecision)
        );
    }
    // A RCPT refused with 421 closes at its turn: the later ones are never applied.
    let mut host = Host::new(|_| {});
    host.feed(GROUP);
    let ids = decisions(&host.poll());
    host.decide(ids[3].1, Verdict::Accept).expect("outstanding");
    host.decide(ids[2].1, Verdict::Accept).expect("outstanding");
    host.decide(ids[1].1, reject(421, "4.7.0", "go away"))
        .expect("outstanding");
    host.decide(ids[0].1, Verdict::Accept).expect("outstanding");
    assert_eq!(
        host.transmit(),
        [SENDER_OK, "421 4.7.0 go away\r\n"].concat()
    );
    assert!(host.session.is_closed());
}

#[test]
fn close_and_end_of_stream_with_read_ahead_decisions_outstanding() {
    for eof in [false, true] {
        let mut host = Host::new(|_| {});
        host.feed(GROUP);
        let ids = decisions(&host.poll());
        host.decide(ids[2].1, Verdict::Accept).expect("outstanding");
        if eof {
            host.session.handle_eof();
        } else {
            host.session.close(&reply(421, Some("4.4.2"), "timeout"));
        }
        assert_eq!(host.poll(), []);
        assert_eq!(
            host.transmit(),
            if eof { "" } else { "421 4.4.2 timeout\r\n" }
        );
        assert!(host.session.is_closed());
        assert!(!host.session.in_transaction());
        for (_, id) in &ids {
            assert!(!host.session.awaits(*id));
            assert_eq!(
                host.decide(*id, Verdict::Accept),
                Err(Error::UnknownDecision)
            );
        }
    }
}

#[test]
fn read_ahead_rcpt_follows_the_pending_mails_smtputf8_rfc6531() {
    let wire = "MAIL FROM:<a@x.test> SMTPUTF8\r\nRCPT TO:<ü@x.test>\r\n";
    let mut host = Host::new(|_| {});
    host.feed(wire.as_bytes());
    assert_eq!(labels(&host.poll()), ["mail a@x.test", "rcpt ü@x.test"]);
    // Without SMTPUTF8 the RCPT waits, and is answered 553 once the MAIL is accepted.
    let wire = "MAIL FROM:<a@x.test>\r\nRCPT TO:<ü@x.test>\r\n";
    let mut host = Host::new(|_| {});
    host.feed(wire.as_bytes());
    assert_eq!(labels(&host.poll()), ["mail a@x.test"]);
    host.decide(host.id("mail a@x.test"), Verdict::Accept)
        .expect("outstanding");
    assert_eq!(host.poll(), []);
    assert_eq!(
        host.transmit(),
        [
            SENDER_OK,
            "553 5.6.7 Non-ASCII address requires SMTPUTF8 (RFC 6531)\r\n"
        ]
        .concat()
    );
}

#[test]
fn data_after_binarymime_is_not_read_ahead_rfc3030() {
    let wire = b"MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nRCPT TO:<b@x.test>\r\nDATA\r\n";
    let mut host = Host::new(|_| {});
    host.feed(wire);
    let seen = host.poll();
    assert_eq!(labels(&seen), ["mail a@x.test", "rcpt b@x.test"]);
    for (_, id) in decisions(&seen) {
        host.decide(id, Verdict::Accept).expect("outstanding");
    }
    assert_eq!(host.poll(), []);
    assert_eq!(
        host.transmit(),
        one_at_a_time(|_| {}, wire, |_| Verdict::Accept)
    );
}

#[test]
fn hundred_pipelined_rcpts_are_all_read_ahead_and_answered_in_order() {
    let mut wire = b"MAIL FROM:<a@x.test>\r\n".to_vec();
    for n in 0..100 {
        wire.extend_from_slice(format!("RCPT TO:<user{n}@x.test>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"DATA\r\n");
    let mut host = Host::new(|_| {});
    host.feed(&wire);
    let ids = decisions(&host.poll());
    assert_eq!(ids.len(), 102, "MAIL, 100 RCPTs and DATA");
    assert_eq!(ids[101].0, "data");
    for (n, (_, id)) in ids.iter().enumerate().rev() {
        let verdict = match n {
            0 | 101 => Verdict::Accept,
            n if n % 3 == 0 => reject(550, "5.1.1", &format!("user{} unknown", n - 1)),
            n => Verdict::AcceptWith(reply(250, Some("2.1.5"), &format!("user{} ok", n - 1))),
        };
        host.decide(*id, verdict).expect("outstanding");
    }
    let mut expected = SENDER_OK.to_owned();
    for n in 0..100 {
        if (n + 1) % 3 == 0 {
            expected.push_str(&format!("550 5.1.1 user{n} unknown\r\n"));
        } else {
            expected.push_str(&format!("250 2.1.5 user{n} ok\r\n"));
        }
    }
    expected.push_str(GO_AHEAD);
    assert_eq!(host.transmit(), expected);
}

/// Feeds what the session takes of `rest`, polling between; returns the events seen.
fn feed_what_fits(host: &mut Host, rest: &mut &[u8]) -> Vec<Seen> {
    let mut seen = Vec::new();
    // Polling may make room without an event (lines answered at once): the session is stuck
    // only when a second round in a row takes nothing and gives nothing.
    let mut idle = 0;
    while idle < 2 {
        let taken = host.session.handle_input(rest);
        *rest = &rest[taken..];
        let polled = host.poll();
        idle = if taken == 0 && polled.is_empty() {
            idle + 1
        } else {
            0
        };
        seen.extend(polled);
    }
    seen
}

#[test]
fn lines_that_may_be_read_again_are_kept_while_the_rest_is_fed_in_pieces() {
    let mut wire = b"MAIL FROM:<a@x.test>\r\n".to_vec();
    for n in 0..50 {
        wire.extend_from_slice(format!("RCPT TO:<user{n}@x.test>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"DATA\r\n");
    let edit = |config: &mut SessionConfig| config.limits.errors = 1000;
    let mut expected = "550 5.7.1 no\r\n".to_owned();
    for _ in 0..51 {
        expected.push_str(NEED_MAIL);
    }
    assert_eq!(
        one_at_a_time(edit, &wire, |_| reject(550, "5.7.1", "no")),
        expected
    );
    for piece in [1, 7, 64, 500] {
        let mut host = Host::new(edit);
        let mut seen = Vec::new();
        for chunk in wire.chunks(piece) {
            let mut rest = chunk;
            seen.extend(feed_what_fits(&mut host, &mut rest));
            assert!(rest.is_empty(), "the 64 KiB input buffer holds the group");
        }
        assert_eq!(decisions(&seen).len(), 52, "pieces of {piece}");
        host.decide(host.id("mail a@x.test"), reject(550, "5.7.1", "no"))
            .expect("outstanding");
        assert_eq!(host.poll(), []);
        assert_eq!(host.transmit(), expected, "pieces of {piece}");
    }
}

#[test]
fn a_full_buffer_of_read_ahead_lines_stops_input_until_the_verdicts() {
    // An input limit of 80 octets: three RCPT lines fill it.
    let small = |config: &mut SessionConfig| {
        config.limits.command_line = 80;
        config.limits.auth_line = 80;
        config.limits.body_chunk = 80;
        config.limits.errors = 1000;
    };
    let mut wire = b"MAIL FROM:<a@x.test>\r\n".to_vec();
    for n in 0..20 {
        wire.extend_from_slice(format!("RCPT TO:<u{n:02}@x.test>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"DATA\r\n");
    for mail_accepted in [false, true] {
        let mut host = Host::new(small);
        let mut rest = &wire[..];
        let mut replies = String::new();
        let mut read_ahead_max = 0;
        while !rest.is_empty() {
            let seen = feed_what_fits(&mut host, &mut rest);
            let outstanding = decisions(&seen);
            read_ahead_max = read_ahead_max.max(outstanding.len());
            assert!(
                !outstanding.is_empty() || rest.is_empty(),
                "stalled with {} octets left",
                rest.len()
            );
            assert!(
                !host.session.wants_input() || rest.is_empty(),
                "wants input, but takes none"
            );
            // Verdicts last to first.
            for (label, id) in outstanding.into_iter().rev() {
                let verdict = if label.starts_with("mail") && !mail_accepted {
                    reject(550, "5.7.1", "no")
                } else {
                    Verdict::Accept
                };
                host.decide(id, verdict).expect("outstanding");
            }
            replies.push_str(&host.transmit());
        }
        for (_, id) in decisions(&host.poll()) {
            host.decide(id, Verdict::Accept).expect("outstanding");
        }
        replies.push_str(&host.transmit());
        assert!(read_ahead_max > 1, "something was read ahead");
        let expected = one_at_a_time(small, &wire, |label| {
            if label.starts_with("mail") && !mail_accepted {
                reject(550, "5.7.1", "no")
            } else {
                Verdict::Accept
            }
        });
        assert_eq!(replies, expected, "mail accepted: {mail_accepted}");
    }
}
