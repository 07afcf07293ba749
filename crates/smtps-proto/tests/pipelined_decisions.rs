//! [`SessionConfig::pipelined_decisions`] through the public API: a host asked for the RCPT and
//! DATA commands a client pipelined (RFC 2920) while earlier MAIL and RCPT decisions are still
//! outstanding. The scenarios pin one behaviour each; the differential test at the end checks
//! the whole promise — the client gets byte for byte what a session deciding one command at a
//! time gives, and the host sees the same verdicts applied — over generated dialogues.

use std::sync::Arc;

use smtps_proto::{
    DecisionId, Error, Event, Extensions, LineEndingPolicy, Reply, Security, ServerSession,
    SessionConfig, Verdict,
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
        loop {
            let decided = decisions(&host.poll());
            if decided.is_empty() {
                break;
            }
            for (_, id) in decided {
                host.decide(id, Verdict::Accept).expect("outstanding");
            }
        }
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
        loop {
            let decided = decisions(&host.poll());
            if decided.is_empty() {
                break;
            }
            for (_, id) in decided {
                host.decide(id, Verdict::Accept).expect("outstanding");
            }
        }
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

// ---- the differential --------------------------------------------------------------------

/// A deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Senders; the host's verdicts depend on the words in them (see `verdict`).
const MAILS: &[&str] = &[
    "MAIL FROM:<a@x.test>",
    "MAIL FROM:<a@x.test>",
    "MAIL FROM:<bad@x.test>",
    "MAIL FROM:<tmp@x.test>",
    "MAIL FROM:<with@x.test>",
    "MAIL FROM:<nodata@x.test>",
    "MAIL FROM:<withdata@x.test>",
    "MAIL FROM:<nomsg@x.test>",
    "MAIL FROM:<softmsg@x.test>",
    "MAIL FROM:<closedata@x.test>",
    "MAIL FROM:<closemsg@x.test>",
    "MAIL FROM:<>",
    "MAIL FROM:<bin@x.test> BODY=BINARYMIME",
    "MAIL FROM:<ü@x.test> SMTPUTF8",
    "MAIL FROM:<big@x.test> SIZE=999999999",
    "MAIL FROM:<e@x.test> BODY=8BITMIME",
];
const RARE_MAILS: &[&str] = &["MAIL FROM:<drop@x.test>"];
const RCPTS: &[&str] = &[
    "RCPT TO:<b@x.test>",
    "RCPT TO:<c@x.test>",
    "RCPT TO:<no1@x.test>",
    "RCPT TO:<no2@x.test>",
    "RCPT TO:<busy@x.test>",
    "RCPT TO:<fwd@x.test>",
    "RCPT TO:<ü@x.test>",
    "RCPT TO:<d@x.test> NOTIFY=NEVER",
    "RCPT TO:<Postmaster>",
    "rcpt to:<lower@x.test>",
    "RCPT TO:b@x.test",
    "RCPT TO:<b@x\r.test>",
];
const RARE_RCPTS: &[&str] = &["RCPT TO:<drop@x.test>"];
const OTHERS: &[&str] = &[
    "DATA",
    "DATA",
    "RSET",
    "NOOP",
    "VRFY b",
    "EXPN staff",
    "HELP",
    "EHLO c.test",
    "HELO c.test",
    "EHLO refuse.test",
    "AUTH PLAIN AHVzZXIAcGFzcw==",
    "AUTH PLAIN AGJvYgB3cm9uZw==",
    "FOO",
    "",
    ".",
    "Subject: stray",
];
const RARE_OTHERS: &[&str] = &["QUIT", "STARTTLS"];
const BODY_LINES: &[&str] = &["Subject: t", "", "hello", "..dotted", "x\ny", "bare\rcr"];

/// A client line with its ending: CRLF, or now and then a bare LF.
fn push_line(rng: &mut Rng, wire: &mut Vec<u8>, line: &str) {
    wire.extend_from_slice(line.as_bytes());
    wire.extend_from_slice(if rng.chance(3) { b"\n" } else { b"\r\n" });
}

/// A generated dialogue: commands, mostly transactions, pipelined without waiting.
fn dialogue(rng: &mut Rng) -> Vec<u8> {
    let mut wire = Vec::new();
    if rng.chance(90) {
        wire.extend_from_slice(b"EHLO c.test\r\n");
    }
    for _ in 0..rng.below(12) + 1 {
        match rng.below(10) {
            0..=4 => {
                let mail = if rng.chance(3) {
                    rng.pick(RARE_MAILS)
                } else {
                    rng.pick(MAILS)
                };
                push_line(rng, &mut wire, mail);
                for _ in 0..rng.below(5) {
                    let rcpt = if rng.chance(3) {
                        rng.pick(RARE_RCPTS)
                    } else {
                        rng.pick(RCPTS)
                    };
                    push_line(rng, &mut wire, rcpt);
                }
                match rng.below(6) {
                    0 => {}
                    1 => wire.extend_from_slice(b"BDAT 5 LAST\r\nhello"),
                    2 => wire.extend_from_slice(b"BDAT 2\r\nhiBDAT 0 LAST\r\n"),
                    _ => {
                        push_line(rng, &mut wire, "DATA");
                        if rng.chance(80) {
                            for _ in 0..rng.below(4) {
                                let line = rng.pick(BODY_LINES);
                                push_line(rng, &mut wire, line);
                            }
                            if rng.chance(10) {
                                wire.extend(std::iter::repeat_n(b'L', 1100));
                                wire.extend_from_slice(b"\r\n");
                            }
                            wire.extend_from_slice(b".\r\n");
                        }
                    }
                }
            }
            5 => {
                let line = format!("RCPT TO:<{}@x.test>", "l".repeat(600));
                push_line(rng, &mut wire, &line);
            }
            kind => {
                let line = match kind {
                    6 if rng.chance(10) => rng.pick(RARE_OTHERS),
                    6 | 7 => rng.pick(RCPTS),
                    _ => rng.pick(OTHERS),
                };
                push_line(rng, &mut wire, line);
            }
        }
    }
    wire
}

fn generated_config(rng: &mut Rng) -> (SessionConfig, Security) {
    let mut config = SessionConfig::new("mx.test");
    let limits = &mut config.limits;
    limits.recipients = rng.pick(&[1, 2, 3, 100]);
    limits.errors = rng.pick(&[3, 10, 1000]);
    if rng.chance(20) {
        limits.message_size = 30;
    }
    if rng.chance(25) {
        // An input buffer of a few lines: read-ahead lines fill it.
        limits.command_line = 80;
        limits.auth_line = 80;
        limits.body_chunk = 80;
    } else if rng.chance(20) {
        limits.body_chunk = 7;
    }
    if rng.chance(15) {
        limits.transactions = Some(2);
    }
    if rng.chance(15) {
        config.policy.bare_line_ending_in_commands = LineEndingPolicy::Reject;
    }
    if rng.chance(15) {
        config.policy.bare_line_ending_in_body = LineEndingPolicy::Reject;
    }
    for ext in [Extensions::DSN, Extensions::SMTP_UTF8, Extensions::CHUNKING] {
        if rng.chance(15) {
            config.extensions = config.extensions.without(ext);
        }
    }
    let security = if rng.chance(20) {
        Security::StartTlsAvailable
    } else {
        Security::Tls
    };
    (config, security)
}

/// The wire cut into the pieces the client's octets arrive in.
fn pieces(rng: &mut Rng, wire: &[u8]) -> Vec<Vec<u8>> {
    let max = rng.pick(&[1, 3, 20, 200, usize::MAX]);
    let mut pieces = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let len = rest.len().min(if max == usize::MAX {
            max
        } else {
            rng.below(max) + 1
        });
        pieces.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    pieces
}

/// The host's verdict on a decision, from the event's content alone (and, for the message,
/// its sender's): the same command gets the same verdict whenever it is asked about.
fn verdict(label: &str, sender: &str) -> Verdict {
    let (kind, arg) = label.split_once(' ').unwrap_or((label, ""));
    match kind {
        "helo" if arg.contains("refuse") => reject(550, "5.7.1", "not you"),
        "auth" if arg != "user" => reject(535, "5.7.8", "bad credentials"),
        "mail" if arg.contains("bad") => reject(550, "5.7.1", &format!("{arg} refused")),
        "mail" if arg.contains("tmp") => reject(451, "4.3.0", &format!("{arg} later")),
        "mail" if arg.contains("drop") => reject(421, "4.3.2", "closing"),
        "mail" if arg.contains("with") => {
            Verdict::AcceptWith(reply(250, Some("2.1.0"), &format!("{arg} ok")))
        }
        "rcpt" if arg.starts_with("no") => reject(550, "5.1.1", &format!("{arg} unknown")),
        "rcpt" if arg.starts_with("busy") => reject(450, "4.2.1", &format!("{arg} busy")),
        "rcpt" if arg.starts_with("drop") => reject(421, "4.3.2", "closing"),
        "rcpt" if arg.starts_with("fwd") => {
            Verdict::AcceptWith(reply(251, Some("2.1.5"), &format!("{arg} forwarded")))
        }
        "data" | "bdat" if sender.contains("nodata") => {
            reject(554, "5.7.1", &format!("{sender} may not send"))
        }
        "data" | "bdat" if sender.contains("closedata") => reject(421, "4.3.2", "closing"),
        "data" if sender.contains("withdata") => Verdict::AcceptWith(reply(354, None, "go ahead")),
        "end" if sender.contains("nomsg") => reject(554, "5.7.1", "spam"),
        "end" if sender.contains("softmsg") => reject(451, "4.3.0", "try later"),
        "end" if sender.contains("closemsg") => reject(421, "4.3.2", "closing"),
        "end" => Verdict::AcceptWith(reply(
            250,
            Some("2.0.0"),
            &format!("queued {arg} octets from <{sender}>"),
        )),
        _ => Verdict::Accept,
    }
}

/// A verdict the host gave, and whether `decide` took it.
#[derive(Debug, Clone)]
struct Decided {
    id: DecisionId,
    label: String,
    verdict: Verdict,
    taken: bool,
}

/// What a host keeps of a run.
#[derive(Debug, Default)]
struct Record {
    /// The sender of the transaction, for the verdicts on its message.
    sender: String,
    decided: Vec<Decided>,
    /// The most decisions the host held, still awaited, at once.
    max_held: usize,
    /// Everything but decisions, adjacent body chunks joined.
    notices: Vec<Seen>,
    output: Vec<u8>,
}

impl Record {
    /// Notes the event; returns the decision it awaits, with its label.
    fn note(&mut self, event: &Event<'_>) -> Option<(DecisionId, String)> {
        match describe(event) {
            Seen::Decision(label, id) => {
                if let Some(sender) = label.strip_prefix("mail ") {
                    sender.clone_into(&mut self.sender);
                }
                Some((id, label))
            }
            Seen::Body(body) => {
                match self.notices.last_mut() {
                    Some(Seen::Body(last)) => last.extend_from_slice(&body),
                    _ => self.notices.push(Seen::Body(body)),
                }
                None
            }
            notice => {
                self.notices.push(notice);
                None
            }
        }
    }
}

/// The verdicts a host can tell were applied, from the rule `pipelined_decisions` documents: in
/// command order, a RCPT stands on its MAIL's acceptance and a DATA on an accepted RCPT, and
/// nothing is applied after a `421`.
fn applied(decided: &[Decided]) -> Vec<(String, Verdict)> {
    let mut sorted = decided.to_vec();
    sorted.sort_by_key(|d| d.id.as_u64());
    let (mut mail_accepted, mut rcpts) = (false, 0);
    let mut applied = Vec::new();
    for d in sorted {
        let accepted = !matches!(d.verdict, Verdict::Reject(_));
        match d.label.split(' ').next() {
            Some("mail") => (mail_accepted, rcpts) = (accepted, 0),
            Some("rcpt") if !mail_accepted => continue,
            Some("rcpt") => rcpts += usize::from(accepted),
            Some("data") if !mail_accepted || rcpts == 0 => continue,
            _ => {}
        }
        assert!(
            d.taken,
            "{} is applied, but its verdict was not taken",
            d.label
        );
        let closes = matches!(&d.verdict, Verdict::Reject(r) if r.code().as_u16() == 421);
        applied.push((d.label, d.verdict));
        if closes {
            break;
        }
    }
    applied
}

/// The client's pieces offered in turn to a session that decides each event as it comes.
fn run_one_at_a_time(config: &SessionConfig, security: Security, pieces: &[Vec<u8>]) -> Record {
    let mut config = config.clone();
    config.pipelined_decisions = false;
    let mut session = ServerSession::new(Arc::new(config), security);
    let mut record = Record::default();
    let pump = |session: &mut ServerSession, record: &mut Record| {
        let mut events = 0;
        while let Some(event) = session.poll_event() {
            events += 1;
            if let Some((id, label)) = record.note(&event) {
                let verdict = verdict(&label, &record.sender);
                assert_eq!(session.decide(id, verdict.clone()), Ok(()), "{label}");
                record.decided.push(Decided {
                    id,
                    label,
                    verdict,
                    taken: true,
                });
            }
        }
        events
    };
    pump(&mut session, &mut record);
    for piece in pieces {
        let mut rest = &piece[..];
        let mut idle = 0;
        while !rest.is_empty() {
            let taken = session.handle_input(rest);
            rest = &rest[taken..];
            let events = pump(&mut session, &mut record);
            idle = if taken == 0 && events == 0 {
                idle + 1
            } else {
                0
            };
            assert!(idle < 2, "one-at-a-time session stalled");
        }
    }
    session.handle_eof();
    pump(&mut session, &mut record);
    session.poll_transmit(&mut record.output);
    record
}

/// The same pieces offered to a session with pipelined decisions, whose host takes every event
/// it can before deciding, and decides what it holds in an order `rng` picks.
fn run_pipelined(
    config: &SessionConfig,
    security: Security,
    pieces: &[Vec<u8>],
    rng: &mut Rng,
) -> Record {
    let mut config = config.clone();
    config.pipelined_decisions = true;
    let mut session = ServerSession::new(Arc::new(config), security);
    let mut record = Record::default();
    let mut held: Vec<(DecisionId, String, Verdict)> = Vec::new();
    let mut client: Vec<u8> = Vec::new();
    let mut pieces = pieces.iter();
    let mut idle = 0;
    loop {
        let taken = session.handle_input(&client);
        client.drain(..taken);
        let mut events = 0;
        while let Some(event) = session.poll_event() {
            events += 1;
            if let Some((id, label)) = record.note(&event) {
                // Held decisions may have been withdrawn since: only those still awaited
                // count.
                let awaited = held.iter().any(|(id, _, _)| session.awaits(*id));
                assert!(
                    !awaited || label == "data" || label.starts_with("rcpt "),
                    "{label} asked for with {held:?} outstanding: only RCPT and DATA are read ahead"
                );
                assert!(session.awaits(id), "{label} handed out, but not awaited");
                let verdict = verdict(&label, &record.sender);
                held.push((id, label, verdict));
            }
        }
        let awaited = held.iter().filter(|(id, _, _)| session.awaits(*id)).count();
        record.max_held = record.max_held.max(awaited);
        // Polling may make room without an event; stuck is twice in a row.
        idle = if taken == 0 && events == 0 {
            idle + 1
        } else {
            0
        };
        // More input now and then before deciding, so that more is read ahead.
        if held.is_empty() || rng.chance(60) {
            if let Some(piece) = pieces.next() {
                client.extend_from_slice(piece);
                continue;
            }
            if held.is_empty() {
                if client.is_empty() || session.is_closed() {
                    break;
                }
                assert!(
                    idle < 2,
                    "stalled: {} octets waiting, no decision outstanding",
                    client.len()
                );
                continue;
            }
        }
        let order: Vec<usize> = match rng.below(6) {
            0 => vec![0],
            1 => vec![held.len() - 1],
            2 => vec![held.len() / 2],
            3 => (0..held.len()).rev().collect(),
            4 => (0..held.len()).collect(),
            _ => (0..held.len())
                .map(|n| {
                    if n % 2 == 0 {
                        n / 2
                    } else {
                        held.len() - 1 - n / 2
                    }
                })
                .collect(),
        };
        let mut chosen: Vec<(DecisionId, String, Verdict)> =
            order.iter().map(|&n| held[n].clone()).collect();
        chosen.dedup();
        held.retain(|item| !chosen.contains(item));
        idle = 0;
        for (id, label, verdict) in chosen {
            let awaited = session.awaits(id);
            let result = session.decide(id, verdict.clone());
            match result {
                Ok(()) => assert!(awaited, "{label}: decided, but not awaited"),
                Err(Error::UnknownDecision) => assert!(!awaited, "{label}: awaited, but unknown"),
                Err(error) => panic!("{label}: {error:?}"),
            }
            record.decided.push(Decided {
                id,
                label,
                verdict,
                taken: result.is_ok(),
            });
        }
    }
    session.handle_eof();
    while let Some(event) = session.poll_event() {
        assert_eq!(record.note(&event), None, "a decision after end of stream");
    }
    session.poll_transmit(&mut record.output);
    record
}

/// Cases the differential test runs (each a dialogue of up to a few dozen lines); set
/// `SMTPS_DIFFERENTIAL_CASES` for a longer run.
const CASES: u64 = 5000;

#[test]
fn pipelined_decisions_answer_byte_for_byte_like_one_at_a_time() {
    let cases = std::env::var("SMTPS_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES);
    let (mut read_ahead, mut unknown, mut withdrawn_after_verdict) = (0, 0, 0);
    for case in 0..cases {
        let mut rng = Rng(case);
        let (config, security) = generated_config(&mut rng);
        let wire = dialogue(&mut rng);
        let pieces = pieces(&mut rng, &wire);
        let context = || {
            format!(
                "case {case}, {security:?}, {:?}, in {} pieces:\n{}",
                config.limits,
                pieces.len(),
                String::from_utf8_lossy(&wire)
            )
        };
        let runs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let one = run_one_at_a_time(&config, security, &pieces);
            (one, run_pipelined(&config, security, &pieces, &mut rng))
        }));
        let (one, piped) = runs.unwrap_or_else(|panic| {
            eprintln!("{}", context());
            std::panic::resume_unwind(panic)
        });
        assert_eq!(
            String::from_utf8_lossy(&piped.output),
            String::from_utf8_lossy(&one.output),
            "replies differ; {}",
            context()
        );
        assert_eq!(piped.notices, one.notices, "notices differ; {}", context());
        let decided: Vec<(String, Verdict)> = one
            .decided
            .iter()
            .map(|d| (d.label.clone(), d.verdict.clone()))
            .collect();
        assert_eq!(applied(&one.decided), decided, "{}", context());
        let piped_applied = applied(&piped.decided);
        assert_eq!(
            piped_applied,
            decided,
            "applied verdicts differ; {}",
            context()
        );
        read_ahead += usize::from(piped.max_held > 1);
        let taken = piped.decided.iter().filter(|d| d.taken).count();
        unknown += piped.decided.len() - taken;
        withdrawn_after_verdict += taken - piped_applied.len();
    }
    // The generator reaches what the test is about.
    eprintln!(
        "{cases} cases: read ahead in {read_ahead}, {unknown} decisions withdrawn before their \
         verdict, {withdrawn_after_verdict} after"
    );
    assert!(read_ahead > 500, "read ahead in {read_ahead} cases");
    assert!(
        unknown > 100,
        "{unknown} decisions withdrawn before their verdict"
    );
    assert!(
        withdrawn_after_verdict > 100,
        "{withdrawn_after_verdict} verdicts withdrawn after they were given"
    );
}
