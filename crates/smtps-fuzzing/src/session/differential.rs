//! The `session` target's differential check of
//! [`SessionConfig::pipelined_decisions`]: the client octets of a [`SessionInput`] go to two
//! sessions, one with the option off whose host decides each event as it comes, and one with
//! the option on whose host takes every event it can before deciding, then decides what it
//! holds in an order the operations pick. The host's verdicts follow from each event's content
//! alone, so both are asked the same questions, and the client must get the same octets.

use std::sync::Arc;

use smtps_proto::{
    DecisionId, Error, Event, Reply, Security, ServerSession, SessionConfig, Verdict,
};

use super::{FEED_BUDGET, Op, SESSION_TOKENS, SessionInput, trace};
use crate::command::map_tokens;
use crate::wire::{check_replies, show};

/// Runs the client octets of `input` through both sessions and checks that:
///
/// - the reply octets are the same wherever neither host has anything outstanding (before a
///   close or a TLS upgrade, and at the end), and so are the notices, body octets joined;
/// - a decision handed out is awaited ([`ServerSession::awaits`]); while an earlier one is
///   still awaited, only RCPT and DATA are handed out; `decide` takes exactly the awaited
///   decisions and answers the others [`Error::UnknownDecision`];
/// - the verdicts applied, by the rule the option documents (in command order, a RCPT stands
///   on its MAIL's acceptance and a DATA on an accepted RCPT; nothing after a `421`), are the
///   ones the one-at-a-time host gave, in the same order.
///
/// The operations map onto the pipelined host's moves: the feeds are the client's octets (for
/// both sessions), [`Op::Accept`] decides the first decision held, [`Op::Reject`] the last,
/// [`Op::AcceptWith`] the one its code picks, [`Op::Stale`] all of them last to first,
/// [`Op::AutoAccept`] first to last, [`Op::RefuseMessage`] from both ends inwards, and
/// [`Op::Defer`] only polls; [`Op::Close`] and [`Op::TlsEstablished`] apply to both sessions
/// once the pipelined host has decided everything; [`Op::Eof`] ends the input.
///
/// Returns how far the run went into what it checks.
///
/// # Panics
/// When a check fails.
pub fn differential(input: &SessionInput) -> Reach {
    run(input)
}

/// How far a [`differential()`] run went into what it checks.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    /// The most decisions the pipelined host held, still awaited, at once: above one, commands
    /// were read ahead.
    pub most_held: usize,
    /// Verdicts `decide` answered [`Error::UnknownDecision`]: their commands were withdrawn
    /// before them.
    pub unknown: usize,
    /// Verdicts taken, then withdrawn with their command.
    pub withdrawn_after_verdict: usize,
}

fn run(input: &SessionInput) -> Reach {
    let (config, security) = input.config();
    let salt = salt(input.header);
    let mut one = OneAtATime::new(config.clone(), security, salt);
    let mut piped = Pipelined::new(config, security, salt);
    let mut fed = 0;
    let mut feed = |bytes: &[u8], one: &mut OneAtATime, piped: &mut Pipelined| {
        if fed + bytes.len() <= FEED_BUDGET {
            fed += bytes.len();
            one.feed(bytes);
            piped.feed(bytes);
        }
    };
    for op in &input.ops {
        if trace() {
            eprintln!("differential op {op:?}");
        }
        match op {
            Op::Feed(bytes) => feed(bytes, &mut one, &mut piped),
            Op::FeedTokens(bytes) => feed(&map_tokens(bytes, SESSION_TOKENS), &mut one, &mut piped),
            Op::FeedRepeat { count, bytes } => {
                if bytes.len() * usize::from(*count) <= FEED_BUDGET {
                    feed(&bytes.repeat(usize::from(*count)), &mut one, &mut piped);
                }
            }
            Op::Accept => piped.decide(Pick::First),
            Op::Reject { .. } => piped.decide(Pick::Last),
            Op::AcceptWith { code, .. } => piped.decide(Pick::Nth(usize::from(*code))),
            Op::Stale => piped.decide(Pick::Reverse),
            Op::AutoAccept(_) => piped.decide(Pick::Forward),
            Op::RefuseMessage { .. } => piped.decide(Pick::Inwards),
            Op::Defer => piped.collect(),
            Op::Close => {
                piped.quiesce();
                compare(&mut one.side, &mut piped.side);
                let reply = Reply::from_parts(421, Some("4.4.2"), "Timeout, closing connection")
                    .expect("valid reply");
                one.side.session.close(&reply);
                one.pump();
                piped.side.session.close(&reply);
                piped.collect();
            }
            Op::TlsEstablished => {
                piped.quiesce();
                compare(&mut one.side, &mut piped.side);
                assert_eq!(
                    one.side.session.handle_tls_established(),
                    piped.side.session.handle_tls_established(),
                    "the TLS upgrade is taken by one session and not the other"
                );
            }
            Op::Eof => break,
        }
    }
    piped.quiesce();
    compare(&mut one.side, &mut piped.side);
    one.side.session.handle_eof();
    one.pump();
    piped.side.session.handle_eof();
    piped.collect();
    compare(&mut one.side, &mut piped.side);
    assert!(one.side.session.is_closed() && piped.side.session.is_closed());
    let decided: Vec<(String, Verdict)> = one
        .side
        .decided
        .iter()
        .map(|d| (d.label.clone(), d.verdict.clone()))
        .collect();
    assert_eq!(
        applied(&one.side.decided),
        decided,
        "the model of applied verdicts is wrong for the one-at-a-time host"
    );
    let piped_applied = applied(&piped.side.decided);
    assert_eq!(
        piped_applied, decided,
        "the pipelined host's verdicts applied differ from the one-at-a-time host's"
    );
    let taken = piped.side.decided.iter().filter(|d| d.taken).count();
    Reach {
        most_held: piped.most_held,
        unknown: piped.side.decided.len() - taken,
        withdrawn_after_verdict: taken - piped_applied.len(),
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

/// An event other than a decision, as both hosts must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// Body octets, adjacent chunks joined (they are cut wherever the input was).
    Body(Vec<u8>),
    Other(String),
}

/// What both hosts keep: the session, what it handed out, what it sent.
struct Side {
    session: ServerSession,
    salt: u64,
    /// The sender of the transaction, for the verdicts on its message.
    sender: String,
    decided: Vec<Decided>,
    notes: Vec<Note>,
    output: Vec<u8>,
    /// How much of `output` was compared with the other side's.
    compared: usize,
}

impl Side {
    fn new(mut config: SessionConfig, security: Security, salt: u64, pipelined: bool) -> Self {
        config.pipelined_decisions = pipelined;
        Self {
            session: ServerSession::new(Arc::new(config), security),
            salt,
            sender: String::new(),
            decided: Vec::new(),
            notes: Vec::new(),
            output: Vec::new(),
            compared: 0,
        }
    }

    /// Notes the next event; returns whether there was one, and the decision it awaits with
    /// its label and the host's verdict.
    fn poll(&mut self) -> Option<Option<(DecisionId, String, Verdict)>> {
        let name = self.name();
        let event = self.session.poll_event()?;
        if trace() {
            eprintln!("differential {name} event {event:?}");
        }
        let label = match &event {
            Event::Connect { .. } => "connect".to_owned(),
            Event::Helo { name, .. } => format!("helo {name}"),
            Event::Auth {
                authentication_id, ..
            } => format!("auth {authentication_id}"),
            Event::Mail { from, .. } => format!("mail {from}"),
            Event::Rcpt { to, .. } => format!("rcpt {to}"),
            Event::DataStart { chunked: false, .. } => "data".to_owned(),
            Event::DataStart { chunked: true, .. } => "bdat".to_owned(),
            Event::MessageEnd { size, .. } => format!("end {size}"),
            Event::BodyChunk(chunk) => {
                match self.notes.last_mut() {
                    Some(Note::Body(body)) => body.extend_from_slice(chunk),
                    _ => self.notes.push(Note::Body(chunk.to_vec())),
                }
                return Some(None);
            }
            // The octets discarded depend on how much had arrived: not compared.
            Event::StartTls { .. } => {
                self.notes.push(Note::Other("StartTls".to_owned()));
                return Some(None);
            }
            other => {
                self.notes.push(Note::Other(format!("{other:?}")));
                return Some(None);
            }
        };
        let id = event.decision()?;
        if let Some(sender) = label.strip_prefix("mail ") {
            sender.clone_into(&mut self.sender);
        }
        let verdict = verdict(self.salt, &label, &self.sender);
        Some(Some((id, label, verdict)))
    }

    /// The side's name in traces.
    fn name(&self) -> &'static str {
        if self.session.config().pipelined_decisions {
            "pipelined"
        } else {
            "one-at-a-time"
        }
    }

    fn decide(&mut self, id: DecisionId, label: String, verdict: Verdict) -> Result<(), Error> {
        let result = self.session.decide(id, verdict.clone());
        if trace() {
            eprintln!(
                "differential {} decide {id:?} {label} {verdict:?}: {result:?}",
                self.name()
            );
        }
        self.decided.push(Decided {
            id,
            label,
            verdict,
            taken: result.is_ok(),
        });
        result
    }
}

/// The host of the session with the option off: decides each event as it comes.
struct OneAtATime {
    side: Side,
}

impl OneAtATime {
    fn new(config: SessionConfig, security: Security, salt: u64) -> Self {
        let mut one = Self {
            side: Side::new(config, security, salt, false),
        };
        one.pump();
        one
    }

    /// Offers `bytes` until all are taken, handling every event meanwhile.
    fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        let mut idle = 0;
        while !rest.is_empty() {
            let taken = self.side.session.handle_input(rest);
            rest = &rest[taken..];
            let events = self.pump();
            // Polling may make room without an event (lines answered at once).
            idle = if taken == 0 && events == 0 {
                idle + 1
            } else {
                0
            };
            assert!(idle < 2, "the one-at-a-time session stalled");
        }
    }

    /// Handles every event ready; returns how many.
    fn pump(&mut self) -> usize {
        let mut events = 0;
        while let Some(decision) = self.side.poll() {
            events += 1;
            if let Some((id, label, verdict)) = decision {
                let result = self.side.decide(id, label, verdict);
                assert_eq!(result, Ok(()), "one-at-a-time decision refused");
            }
        }
        events
    }
}

/// Which decisions held the pipelined host answers, in what order.
#[derive(Debug, Clone, Copy)]
enum Pick {
    First,
    Last,
    Nth(usize),
    Reverse,
    Forward,
    Inwards,
}

/// The host of the session with the option on: takes every event it can, and decides only
/// when told.
struct Pipelined {
    side: Side,
    /// Decisions handed out and not answered yet (some may have been withdrawn since).
    held: Vec<(DecisionId, String, Verdict)>,
    /// Octets the client sent that the session has not taken yet.
    client: Vec<u8>,
    /// The most decisions held and awaited at once.
    most_held: usize,
}

impl Pipelined {
    fn new(config: SessionConfig, security: Security, salt: u64) -> Self {
        let mut piped = Self {
            side: Side::new(config, security, salt, true),
            held: Vec::new(),
            client: Vec::new(),
            most_held: 0,
        };
        piped.collect();
        piped
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.client.extend_from_slice(bytes);
        self.collect();
    }

    /// Offers the client's octets and takes every event, until nothing moves.
    fn collect(&mut self) {
        let mut idle = 0;
        while idle < 2 {
            let taken = self.side.session.handle_input(&self.client);
            assert!(taken <= self.client.len(), "took more than offered");
            self.client.drain(..taken);
            let mut events = 0;
            while let Some(decision) = self.side.poll() {
                events += 1;
                let Some((id, label, verdict)) = decision else {
                    continue;
                };
                assert!(
                    self.side.session.awaits(id),
                    "{label} handed out, but not awaited"
                );
                // Held decisions may have been withdrawn since they were handed out.
                let earlier = self
                    .held
                    .iter()
                    .find(|(held, _, _)| self.side.session.awaits(*held));
                assert!(
                    earlier.is_none() || label == "data" || label.starts_with("rcpt "),
                    "{label} handed out while {earlier:?} is outstanding: only RCPT and DATA \
                     are read ahead"
                );
                self.held.push((id, label, verdict));
                let awaited = self
                    .held
                    .iter()
                    .filter(|(id, _, _)| self.side.session.awaits(*id));
                self.most_held = self.most_held.max(awaited.count());
            }
            idle = if taken == 0 && events == 0 {
                idle + 1
            } else {
                0
            };
        }
        // Nothing moves: input left over is held back, and the session must say so (a driver
        // that reads while `wants_input` says yes would spin).
        let session = &self.side.session;
        if !self.client.is_empty() && !session.is_closed() && !session.awaiting_tls() {
            assert!(
                !session.wants_input(),
                "wants input, but takes none of {} octets",
                self.client.len()
            );
        }
    }

    /// Answers some of the decisions held.
    fn decide(&mut self, pick: Pick) {
        let len = self.held.len();
        if len == 0 {
            return;
        }
        let mut order: Vec<usize> = match pick {
            Pick::First => vec![0],
            Pick::Last => vec![len - 1],
            Pick::Nth(n) => vec![n % len],
            Pick::Reverse => (0..len).rev().collect(),
            Pick::Forward => (0..len).collect(),
            Pick::Inwards => (0..len)
                .map(|n| if n % 2 == 0 { n / 2 } else { len - 1 - n / 2 })
                .collect(),
        };
        order.dedup();
        let mut chosen: Vec<_> = order.iter().map(|&n| self.held[n].clone()).collect();
        chosen.dedup_by_key(|(id, _, _)| *id);
        self.held
            .retain(|(id, _, _)| !chosen.iter().any(|(c, _, _)| c == id));
        for (id, label, verdict) in chosen {
            let awaited = self.side.session.awaits(id);
            let result = self.side.decide(id, label.clone(), verdict);
            match result {
                Ok(()) => assert!(awaited, "{label}: taken, but it was not awaited"),
                Err(Error::UnknownDecision) => {
                    assert!(!awaited, "{label}: awaited, but unknown to decide");
                }
                Err(error) => panic!("{label}: {error:?}"),
            }
        }
        self.collect();
    }

    /// Decides everything held, and what that brings, until the host has nothing left.
    fn quiesce(&mut self) {
        self.collect();
        while !self.held.is_empty() {
            self.decide(Pick::Forward);
        }
        assert!(
            self.client.is_empty(),
            "the pipelined session stalled: {} octets waiting, no decision outstanding",
            self.client.len()
        );
        assert!(
            !self.side.session.awaiting_decision(),
            "the pipelined session awaits a decision it never handed out"
        );
    }
}

/// Sends what both sessions have for the client and compares it, and the notices.
fn compare(one: &mut Side, piped: &mut Side) {
    one.session.poll_transmit(&mut one.output);
    piped.session.poll_transmit(&mut piped.output);
    assert!(
        one.output == piped.output,
        "replies differ:\none at a time: {:?}\npipelined:    {:?}",
        show(&one.output[one.compared..]),
        show(&piped.output[one.compared.min(piped.output.len())..])
    );
    check_replies(&one.output[one.compared..]);
    one.compared = one.output.len();
    assert_eq!(one.notes, piped.notes, "notices differ");
}

/// The verdicts a host can tell were applied, by the rule `pipelined_decisions` documents: in
/// command order, a RCPT stands on its MAIL's acceptance, a DATA on an accepted RCPT, and
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
        assert!(d.taken, "{} is applied, but decide refused it", d.label);
        let closes = matches!(&d.verdict, Verdict::Reject(r) if r.code().as_u16() == 421);
        applied.push((d.label, d.verdict));
        if closes {
            break;
        }
    }
    applied
}

/// What varies the host's verdicts from one input to another: its configuration header.
pub(crate) fn salt(header: [u8; 4]) -> u64 {
    u64::from(u32::from_le_bytes(header))
}

/// The host's verdict on a decision, from its label alone (and, for the message, its
/// sender's): the same command gets the same verdict however often it is asked about. The
/// labels are `connect`, `helo NAME`, `auth USER`, `mail <PATH>`, `rcpt <PATH>`, `data`,
/// `bdat` and `end SIZE`; the sender is the `<PATH>` of the transaction's MAIL.
pub(crate) fn verdict(salt: u64, label: &str, sender: &str) -> Verdict {
    let kind = label.split(' ').next().unwrap_or_default();
    // The message's verdicts depend on its sender too; the others on their label alone.
    let sender = if matches!(kind, "data" | "bdat" | "end") {
        sender
    } else {
        ""
    };
    let mut hash = 0xcbf2_9ce4_8422_2325 ^ salt;
    for byte in label.bytes().chain([0]).chain(sender.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let roll = hash % 64;
    let reply = |code, status: Option<&str>, text: &str| {
        Reply::from_parts(code, status, &format!("h {text}")).expect("valid reply")
    };
    let reject = |code, status, text| Verdict::Reject(reply(code, Some(status), text));
    match kind {
        "connect" => match roll {
            0 => reject(554, "5.7.1", "not here"),
            1 => reject(421, "4.7.0", "busy"),
            _ => Verdict::Accept,
        },
        "helo" => match roll {
            0..=3 => reject(550, "5.7.1", "not you"),
            4..=7 => Verdict::AcceptWith(reply(250, None, "hello")),
            _ => Verdict::Accept,
        },
        "auth" => match roll {
            0..=15 => reject(535, "5.7.8", "bad credentials"),
            16..=19 => reject(454, "4.7.0", "try later"),
            20..=23 => Verdict::AcceptWith(reply(235, Some("2.7.0"), "welcome")),
            _ => Verdict::Accept,
        },
        "mail" => match roll {
            0..=9 => reject(550, "5.7.1", &format!("{label} refused")),
            10..=13 => reject(451, "4.3.0", "later"),
            14 => reject(421, "4.3.2", "closing"),
            15..=20 => Verdict::AcceptWith(reply(250, Some("2.1.0"), &format!("{label} ok"))),
            _ => Verdict::Accept,
        },
        "rcpt" => match roll {
            0..=11 => reject(550, "5.1.1", &format!("{label} unknown")),
            12..=15 => reject(450, "4.2.1", "busy"),
            16..=17 => reject(452, "4.5.3", "too many"),
            18 => reject(421, "4.3.2", "closing"),
            19..=22 => Verdict::AcceptWith(reply(251, Some("2.1.5"), &format!("{label} fwd"))),
            23..=25 => Verdict::AcceptWith(reply(250, Some("2.1.5"), &format!("{label} ok"))),
            _ => Verdict::Accept,
        },
        "data" => match roll {
            0..=7 => reject(554, "5.7.1", "no data"),
            8..=9 => reject(451, "4.3.0", "later"),
            10 => reject(421, "4.3.2", "closing"),
            11..=16 => Verdict::AcceptWith(reply(354, None, "go ahead")),
            _ => Verdict::Accept,
        },
        "bdat" => match roll {
            0..=7 => reject(554, "5.7.1", "no data"),
            8 => reject(421, "4.3.2", "closing"),
            9..=12 => Verdict::AcceptWith(reply(250, Some("2.0.0"), "chunk ok")),
            _ => Verdict::Accept,
        },
        "end" => match roll {
            0..=7 => reject(554, "5.7.1", "spam"),
            8..=11 => reject(451, "4.3.0", "later"),
            12 => reject(421, "4.3.2", "closing"),
            13..=24 => Verdict::AcceptWith(reply(250, Some("2.0.0"), &format!("queued {label}"))),
            _ => Verdict::Accept,
        },
        _ => Verdict::Accept,
    }
}

#[cfg(test)]
mod tests {
    use arbitrary::{Arbitrary, Unstructured};

    use super::*;

    fn seed(name: &str) -> SessionInput {
        let seed = crate::seeds::all()
            .into_iter()
            .find(|seed| seed.target == "session" && seed.name == name)
            .unwrap_or_else(|| panic!("no session seed {name}"));
        SessionInput::arbitrary_take_rest(Unstructured::new(&seed.bytes)).expect("a seed parses")
    }

    #[test]
    fn seeds_read_a_pipelined_group_ahead_and_withdraw_from_it() {
        let reach = run(&seed("pipelined-group-reversed"));
        assert!(reach.most_held >= 5, "{reach:?}");
        assert!(reach.unknown >= 2, "{reach:?}");
        let reach = run(&seed("pipelined-rcpts-all-refused"));
        assert!(reach.most_held >= 4, "{reach:?}");
        assert!(reach.withdrawn_after_verdict >= 1, "{reach:?}");
        let reach = run(&seed("pipelined-buffer-full"));
        assert!(reach.most_held > 100, "{reach:?}");
    }

    #[test]
    fn verdicts_depend_on_the_label_and_sender_only() {
        let salt = salt([1, 0, 0, 0]);
        let label = "rcpt <b@example.net>";
        assert_eq!(verdict(salt, label, "<a@x>"), verdict(salt, label, "<a@x>"));
        let kinds: Vec<bool> = (0..64)
            .map(|n| {
                let label = format!("mail <a{n}@example.org>");
                matches!(verdict(salt, &label, ""), Verdict::Reject(_))
            })
            .collect();
        assert!(kinds.contains(&true) && kinds.contains(&false));
    }
}
