//! The `conn` target: the connection object behind the C ABI's `smtps_conn`
//! ([`smtps_conn::Connection`], TLS and SMTP together) driven through its Rust entry points by
//! a client that speaks plaintext, real TLS (rustls) after a proper STARTTLS or from the first
//! octet, or raw bytes; the wire between them carries arbitrary chunk sizes and may be
//! tampered with.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use smtps_conn::{CloseReason, Connection, Mode, Timer};
use smtps_proto::{DecisionId, Event, Reply, SessionConfig, Verdict};
use smtps_tls::rustls::ClientConnection;
use smtps_tls::rustls::pki_types::ServerName;

use crate::command::map_tokens;
use crate::session::SESSION_TOKENS;
use crate::tls::fixture;
use crate::wire::{check_replies, show};

/// One step of a [`ConnInput`]. The byte encoding is that of [`ConnInput::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnOp {
    /// The client sends the concatenation of [`SESSION_TOKENS`] picked by these octets, through
    /// TLS once it speaks TLS.
    Send(Vec<u8>),
    /// These octets go on the wire as they are, past the client's TLS (tampering).
    SendRaw(Vec<u8>),
    /// The client upgrades properly: sends `STARTTLS`, and starts TLS once the server did.
    StartTls,
    /// Octets move both ways until neither side has more, in pieces of this size (0: whole).
    Exchange(u8),
    /// Accept the outstanding decision.
    Accept,
    /// Refuse the outstanding decision; picks the code (421 closes).
    Reject(u8),
    /// Accept the next `n` decisions as soon as they come.
    AutoAccept(u8),
    /// The client closed its side.
    Eof,
    /// The host closes with `421 4.4.2`.
    Close,
    /// The host cannot take the message in progress (`452 4.3.1`).
    RefuseMessage,
    /// One octet of what is on its way to the server is flipped at this offset (tampering).
    Flip(u8),
    /// Answer a decision already answered: must be refused.
    Stale,
    /// Time passes: 8 s per unit, then the host calls `handle_timeout` (the command, data,
    /// handshake, session and linger timers).
    Wait(u8),
}

/// What the `conn` target reads: a header octet and operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInput {
    /// Bits 0–1: mode (STARTTLS, implicit TLS, plain, STARTTLS); bit 2: the implicit-TLS
    /// client does not start TLS (it sends raw octets); bit 3: MAIL needs TLS; bit 4: at most
    /// 2 recipients and 200-octet messages.
    pub header: u8,
    /// The operations, in order.
    pub ops: Vec<ConnOp>,
}

const OP_COUNT: u8 = 13;
const REJECT_CODES: [u16; 6] = [421, 450, 451, 550, 554, 535];
/// Total octets one input may put on the wire, so a run stays fast.
const WIRE_BUDGET: usize = 128 * 1024;

impl<'a> Arbitrary<'a> for ConnInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let header = u.arbitrary()?;
        let mut ops = Vec::new();
        while !u.is_empty() {
            let op: u8 = u.arbitrary()?;
            ops.push(match op % OP_COUNT {
                0 => ConnOp::Send(short(u)?),
                1 => ConnOp::SendRaw(short(u)?),
                2 => ConnOp::StartTls,
                3 => ConnOp::Exchange(u.arbitrary()?),
                4 => ConnOp::Accept,
                5 => ConnOp::Reject(u.arbitrary()?),
                6 => ConnOp::AutoAccept(u.arbitrary()?),
                7 => ConnOp::Eof,
                8 => ConnOp::Close,
                9 => ConnOp::RefuseMessage,
                10 => ConnOp::Flip(u.arbitrary()?),
                11 => ConnOp::Stale,
                _ => ConnOp::Wait(u.arbitrary()?),
            });
        }
        Ok(Self { header, ops })
    }
}

fn short(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let len: u8 = u.arbitrary()?;
    let len = usize::from(len).min(u.len());
    Ok(u.bytes(len)?.to_vec())
}

impl ConnInput {
    /// Serialises the input so that `Arbitrary` reads it back unchanged (for seed files).
    /// Byte strings longer than 255 octets are cut.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.header];
        for op in &self.ops {
            let (code, arg, bytes): (u8, Option<u8>, Option<&[u8]>) = match op {
                ConnOp::Send(b) => (0, None, Some(b)),
                ConnOp::SendRaw(b) => (1, None, Some(b)),
                ConnOp::StartTls => (2, None, None),
                ConnOp::Exchange(n) => (3, Some(*n), None),
                ConnOp::Accept => (4, None, None),
                ConnOp::Reject(n) => (5, Some(*n), None),
                ConnOp::AutoAccept(n) => (6, Some(*n), None),
                ConnOp::Eof => (7, None, None),
                ConnOp::Close => (8, None, None),
                ConnOp::RefuseMessage => (9, None, None),
                ConnOp::Flip(n) => (10, Some(*n), None),
                ConnOp::Stale => (11, None, None),
                ConnOp::Wait(n) => (12, Some(*n), None),
            };
            out.push(code);
            out.extend(arg);
            if let Some(bytes) = bytes {
                let bytes = &bytes[..bytes.len().min(255)];
                out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    fn mode(&self) -> Mode {
        match self.header & 3 {
            1 => Mode::ImplicitTls,
            2 => Mode::Plain,
            _ => Mode::StartTls,
        }
    }
}

/// Runs a [`ConnInput`] and checks:
///
/// - no call panics; `feed` never claims more than it was given; once closed, the connection
///   takes and ignores everything and has no events;
/// - every reply the client reads — in plaintext before an upgrade, decrypted after it — is a
///   valid reply ([`check_replies`]);
/// - a client that started TLS properly (from the first octet, or after the server's `220` to
///   its STARTTLS) never sees a TLS error unless the wire was tampered with or the server's
///   TLS failed first: the connection's output is a valid record stream in any chunking;
/// - implicit TLS: no event before the handshake completed;
/// - STARTTLS: no event between the upgrade and the end of the handshake, and nothing but
///   HELO/EHLO, QUIT or AUTH-free commands' replies after it until a new HELO/EHLO — pre-TLS
///   octets (an injection pipelined after `STARTTLS`) are never acted on;
/// - at most one decision is outstanding; body octets come only after an accepted DATA/BDAT
///   and before the end of that message; a stale decision is refused;
/// - time: after `handle_timeout(now)` no timer is still due, and a finished connection has
///   none.
///
/// # Panics
/// When a check fails.
pub fn conn(data: &[u8]) {
    let Ok(input) = ConnInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    run(&input);
}

/// What a run went through, for tests that check a seed reaches where it is meant to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnReport {
    /// The events, by variant name, in order.
    pub events: Vec<&'static str>,
    /// The codes of the replies the client read, in order.
    pub codes: Vec<u16>,
    /// The connection was closed when the operations ran out.
    pub closed: bool,
}

/// Runs one input (also used by the seed writer's self-check).
pub fn run(input: &ConnInput) -> ConnReport {
    let mut config = SessionConfig::new("mx.example.org");
    config.policy.require_tls_for_mail = input.header & 8 != 0;
    if input.header & 16 != 0 {
        config.limits.recipients = 2;
        config.limits.message_size = 200;
    }
    let mode = input.mode();
    let acceptor = Some(Arc::clone(&fixture().acceptor));
    let conn =
        Connection::new(mode, Arc::new(config), acceptor, Instant::now()).expect("connection");
    let mut h = Harness::new(conn, mode);
    if mode == Mode::ImplicitTls {
        // The server speaks TLS from the first octet, whether or not the client does.
        h.server_tls = true;
        if input.header & 4 == 0 {
            h.client.start_tls();
        }
    }
    for op in &input.ops {
        h.apply(op);
    }
    h.exchange(0);
    h.report.closed = h.conn.is_closed();
    h.finish();
    h.report
}

fn event_name(event: &Event<'_>) -> &'static str {
    match event {
        Event::Connect { .. } => "Connect",
        Event::Helo { .. } => "Helo",
        Event::Auth { .. } => "Auth",
        Event::Mail { .. } => "Mail",
        Event::Rcpt { .. } => "Rcpt",
        Event::DataStart { .. } => "DataStart",
        Event::BodyChunk(_) => "BodyChunk",
        Event::MessageEnd { .. } => "MessageEnd",
        Event::MessageAborted { .. } => "MessageAborted",
        Event::Reset => "Reset",
        Event::StartTls { .. } => "StartTls",
        Event::BareLineEnding { .. } => "BareLineEnding",
        Event::Quit => "Quit",
        Event::TooManyErrors => "TooManyErrors",
        _ => "Other",
    }
}

/// The client end of the wire.
struct Client {
    tls: Option<ClientConnection>,
    /// TLS started where the server's did: its errors are findings (unless tampered).
    proper: bool,
    /// Octets on their way to the server.
    wire: Vec<u8>,
    /// Reply octets read and not checked yet (an incomplete reply waits for the rest).
    replies: Vec<u8>,
    failed: bool,
}

impl Client {
    fn start_tls(&mut self) {
        let name = ServerName::try_from("localhost").expect("valid name");
        let tls = ClientConnection::new(Arc::clone(&fixture().client), name).expect("client");
        self.tls = Some(tls);
        self.proper = true;
    }

    fn send(&mut self, text: &[u8]) {
        match &mut self.tls {
            Some(tls) if !self.failed => {
                tls.writer()
                    .write_all(text)
                    .expect("client buffers plaintext");
            }
            Some(_) => {}
            None => self.wire.extend_from_slice(text),
        }
    }

    fn flush(&mut self) {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                if tls.write_tls(&mut self.wire).unwrap_or(0) == 0 {
                    break;
                }
            }
        }
    }
}

struct Harness {
    conn: Connection,
    /// The fuzzer's clock: time does not pass unless an operation says so.
    now: Instant,
    mode: Mode,
    client: Client,
    /// The server switched to TLS (implicit, or at its STARTTLS event).
    server_tls: bool,
    /// The server's `feed` failed (TLS error).
    server_failed: bool,
    /// Octets were put on the wire past the client's TLS, or flipped.
    tampered: bool,
    wire_total: usize,
    pending: Option<DecisionId>,
    pending_data: bool,
    answered: Option<DecisionId>,
    auto_accept: u8,
    /// Body octets may arrive.
    body_open: bool,
    /// After a STARTTLS upgrade, until a new HELO/EHLO.
    fresh_after_tls: bool,
    saw_start_tls: bool,
    report: ConnReport,
}

impl Harness {
    fn new(conn: Connection, mode: Mode) -> Self {
        Self {
            conn,
            now: Instant::now(),
            mode,
            client: Client {
                tls: None,
                proper: false,
                wire: Vec::new(),
                replies: Vec::new(),
                failed: false,
            },
            server_tls: false,
            server_failed: false,
            tampered: false,
            wire_total: 0,
            pending: None,
            pending_data: false,
            answered: None,
            auto_accept: 0,
            body_open: false,
            fresh_after_tls: false,
            saw_start_tls: false,
            report: ConnReport::default(),
        }
    }

    fn apply(&mut self, op: &ConnOp) {
        match op {
            ConnOp::Send(tokens) => {
                let text = map_tokens(tokens, SESSION_TOKENS);
                self.client.send(&text);
            }
            ConnOp::SendRaw(bytes) => {
                self.tampered |= self.client.tls.is_some() || self.server_tls;
                self.client.wire.extend_from_slice(bytes);
            }
            ConnOp::StartTls => self.start_tls(),
            ConnOp::Exchange(chunk) => self.exchange(*chunk),
            ConnOp::Accept => self.decide(Verdict::Accept),
            ConnOp::Reject(code) => {
                let code = REJECT_CODES[usize::from(*code) % REJECT_CODES.len()];
                let reply = Reply::from_parts(code, None, "no").expect("valid reply");
                self.decide(Verdict::Reject(reply));
            }
            ConnOp::AutoAccept(n) => {
                self.auto_accept = *n;
                if self.pending.is_some() {
                    self.decide(Verdict::Accept);
                }
            }
            ConnOp::Eof => self.conn.feed_eof(),
            ConnOp::Close => {
                let reply = Reply::from_parts(421, Some("4.4.2"), "Timeout").expect("valid");
                self.conn
                    .close(&reply, CloseReason::Timeout(Timer::Command));
            }
            ConnOp::RefuseMessage => {
                let reply = Reply::from_parts(452, Some("4.3.1"), "Spool full").expect("valid");
                self.conn.refuse_message(reply);
            }
            ConnOp::Flip(at) => {
                self.client.flush();
                if !self.client.wire.is_empty() {
                    let i = usize::from(*at) % self.client.wire.len();
                    self.client.wire[i] ^= 0x20;
                    self.tampered = true;
                }
            }
            ConnOp::Stale => {
                if let Some(id) = self.answered {
                    assert!(
                        self.conn.decide(id, Verdict::Accept).is_err(),
                        "an answered decision was accepted again"
                    );
                }
            }
            ConnOp::Wait(units) => {
                self.now += Duration::from_secs(8 * u64::from(*units));
                self.conn.handle_timeout(self.now);
                // A timer that is still due right after handling would have a driver spin.
                if let Some(deadline) = self.conn.poll_timeout() {
                    assert!(
                        deadline > self.now,
                        "a timer is due again after handle_timeout"
                    );
                }
                assert!(
                    !self.conn.is_finished() || self.conn.poll_timeout().is_none(),
                    "a finished connection still has a timer"
                );
            }
        }
        self.drain_events();
    }

    /// A proper STARTTLS: the command, then TLS once the server upgraded.
    fn start_tls(&mut self) {
        if self.client.tls.is_some() || self.mode != Mode::StartTls {
            return;
        }
        if !self.server_tls {
            self.client.send(b"STARTTLS\r\n");
            self.exchange(0);
        }
        if self.server_tls {
            self.client.start_tls();
        }
    }

    fn decide(&mut self, verdict: Verdict) {
        let Some(id) = self.pending.take() else {
            return;
        };
        let accepted = matches!(verdict, Verdict::Accept);
        if self.conn.decide(id, verdict).is_ok() {
            self.answered = Some(id);
            if self.pending_data && accepted {
                self.body_open = true;
            }
        } else {
            // The session closed meanwhile (end of stream, close): the decision is gone.
            assert!(self.conn.is_closed(), "the awaited decision was refused");
        }
        self.pending_data = false;
    }

    fn drain_events(&mut self) {
        for _ in 0..100_000 {
            let handshaken = self.conn.tls_info().is_some();
            let Some(event) = self.conn.poll_event() else {
                return;
            };
            if self.mode == Mode::ImplicitTls || self.saw_start_tls {
                assert!(
                    handshaken,
                    "an event before the TLS handshake completed: {event:?}"
                );
            }
            self.report.events.push(event_name(&event));
            let decision = match event {
                Event::Connect { decision } => Some(decision),
                Event::Helo { decision, .. } => {
                    self.fresh_after_tls = false;
                    Some(decision)
                }
                Event::Auth { decision, .. }
                | Event::Mail { decision, .. }
                | Event::Rcpt { decision, .. } => {
                    assert!(
                        !self.fresh_after_tls,
                        "a command acted on after STARTTLS before a new EHLO: {event:?}"
                    );
                    Some(decision)
                }
                Event::DataStart { decision, .. } => {
                    assert!(!self.fresh_after_tls, "DATA acted on after STARTTLS");
                    self.pending_data = true;
                    Some(decision)
                }
                Event::BodyChunk(chunk) => {
                    assert!(
                        self.body_open,
                        "body octets outside an accepted DATA/BDAT: {:?}",
                        show(chunk)
                    );
                    None
                }
                Event::MessageEnd { decision, .. } => {
                    assert!(self.body_open, "end of a message that was not open");
                    self.body_open = false;
                    Some(decision)
                }
                Event::MessageAborted { .. } | Event::Reset => {
                    self.body_open = false;
                    None
                }
                Event::StartTls { .. } => {
                    assert!(!self.saw_start_tls, "a second STARTTLS upgrade");
                    self.saw_start_tls = true;
                    self.fresh_after_tls = true;
                    self.body_open = false;
                    None
                }
                _ => None,
            };
            if let Some(id) = decision {
                assert!(
                    self.pending.is_none(),
                    "a second decision while one is outstanding"
                );
                self.pending = Some(id);
                if self.auto_accept > 0 {
                    self.auto_accept -= 1;
                    self.decide(Verdict::Accept);
                }
            }
        }
        panic!("events never ran out");
    }

    /// Moves octets both ways, in pieces of `chunk` (0: whole), until neither side has more.
    fn exchange(&mut self, chunk: u8) {
        let piece = if chunk == 0 {
            usize::MAX
        } else {
            usize::from(chunk)
        };
        for _ in 0..256 {
            self.settle_upgrade(piece);
            self.client.flush();
            let mut moved = false;
            while !self.client.wire.is_empty() && self.wire_total < WIRE_BUDGET {
                let n = piece.min(self.client.wire.len());
                let taken = match self.conn.feed(self.now, &self.client.wire[..n]) {
                    Ok(taken) => taken,
                    Err(_) => {
                        self.server_failed = true;
                        n
                    }
                };
                assert!(taken <= n, "feed took {taken} of {n} octets");
                self.client.wire.drain(..taken);
                self.wire_total += taken;
                moved |= taken > 0;
                self.drain_events();
                // What the server sends up to its upgrade is plaintext: read it before
                // feeding more.
                if taken == 0 || (self.saw_start_tls && !self.server_tls) {
                    break;
                }
            }
            if self.wire_total >= WIRE_BUDGET {
                self.client.wire.clear();
            }
            self.drain_events();
            self.settle_upgrade(piece);
            moved |= self.receive(piece);
            if !moved {
                return;
            }
        }
    }

    /// After the server's STARTTLS event: reads the plaintext it sent up to the upgrade (its
    /// `220` last), then treats what follows as TLS.
    fn settle_upgrade(&mut self, piece: usize) {
        if self.saw_start_tls && !self.server_tls {
            self.receive(piece);
            self.server_tls = true;
        }
    }

    /// Reads the connection's output in pieces; returns whether there was any.
    fn receive(&mut self, piece: usize) -> bool {
        let mut buf = vec![0u8; piece.min(16 * 1024)];
        let mut wire = Vec::new();
        loop {
            let n = self.conn.take_output(&mut buf);
            if n == 0 {
                break;
            }
            wire.extend_from_slice(&buf[..n]);
        }
        if wire.is_empty() {
            return false;
        }
        match (&mut self.client.tls, self.server_tls) {
            (None, false) => self.client.replies.extend_from_slice(&wire),
            (Some(tls), true) if !self.client.failed => {
                let mut rest = wire.as_slice();
                let mut error = None;
                while !rest.is_empty() && error.is_none() {
                    match tls.read_tls(&mut rest) {
                        Ok(0) => break,
                        Ok(_) => error = tls.process_new_packets().err(),
                        Err(e) => error = Some(smtps_tls::rustls::Error::General(e.to_string())),
                    }
                    // Read as it comes: rustls holds only so much plaintext.
                    let _ = tls.reader().read_to_end(&mut self.client.replies);
                }
                if let Some(error) = error {
                    self.client.failed = true;
                    assert!(
                        !self.client.proper || self.tampered || self.server_failed,
                        "a properly started client saw a TLS error: {error}"
                    );
                }
            }
            // The two ends disagree about TLS: what arrives is not for reading.
            _ => {}
        }
        self.check_whole_replies();
        true
    }

    /// Checks the whole replies received so far; an incomplete last one waits.
    fn check_whole_replies(&mut self) {
        let buf = &self.client.replies;
        let mut whole = 0;
        let mut start = 0;
        while let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..=start + lf];
            start += lf + 1;
            if line.get(3) != Some(&b'-') {
                whole = start;
            }
        }
        let replies = check_replies(&buf[..whole]);
        self.report.codes.extend(replies.iter().map(|r| r.code));
        self.client.replies.drain(..whole);
    }

    fn finish(&mut self) {
        if self.conn.is_closed() {
            self.drain_events();
            assert!(self.conn.poll_event().is_none(), "an event after close");
            assert_eq!(
                self.conn.feed(self.now, b"NOOP\r\n").ok(),
                Some(6),
                "a closed connection refused input"
            );
            assert!(!self.conn.wants_read(), "a closed connection wants input");
            assert!(
                !self.conn.wants_write(),
                "a closed connection still has output after it was drained"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> ConnReport {
        let seed = crate::seeds::all()
            .into_iter()
            .find(|s| s.target == "conn" && s.name == name)
            .unwrap_or_else(|| panic!("no conn seed {name}"));
        let input = ConnInput::arbitrary_take_rest(Unstructured::new(&seed.bytes)).expect("input");
        assert_eq!(input.encode(), seed.bytes, "encoding does not round-trip");
        run(&input)
    }

    #[test]
    fn implicit_seed_delivers_a_message_over_tls() {
        let report = seed("implicit-message");
        assert!(report.events.contains(&"MessageEnd"), "{report:?}");
        assert_eq!(report.codes.first(), Some(&220));
        assert_eq!(report.codes.last(), Some(&221), "{report:?}");
    }

    #[test]
    fn starttls_injection_seed_upgrades_and_ignores_the_injected_commands() {
        let report = seed("starttls-injection");
        let upgrade = report
            .events
            .iter()
            .position(|e| *e == "StartTls")
            .expect("no upgrade");
        assert_eq!(report.events.get(upgrade + 1), Some(&"Helo"), "{report:?}");
        assert!(!report.events.contains(&"Mail"), "{report:?}");
        assert_eq!(report.codes.last(), Some(&221), "{report:?}");
    }

    #[test]
    fn starttls_message_seed_delivers_after_the_upgrade() {
        let report = seed("starttls-message");
        assert!(report.events.contains(&"StartTls"));
        assert!(report.events.contains(&"MessageEnd"), "{report:?}");
    }

    #[test]
    fn idle_seed_gets_421_from_the_command_timer() {
        let report = seed("idle-command-timeout");
        assert_eq!(report.codes.last(), Some(&421), "{report:?}");
    }

    #[test]
    fn stalled_body_seed_aborts_the_message_on_the_data_timer() {
        let report = seed("stalled-body-timeout");
        assert!(report.events.contains(&"MessageAborted"), "{report:?}");
        assert!(!report.events.contains(&"MessageEnd"), "{report:?}");
        assert_eq!(report.codes.last(), Some(&421), "{report:?}");
    }

    #[test]
    fn stalled_starttls_handshake_seed_closes_on_the_handshake_timer() {
        let report = seed("stalled-starttls-handshake");
        assert_eq!(report.codes.last(), Some(&220), "{report:?}");
        assert!(report.closed, "{report:?}");
    }

    #[test]
    fn tampered_record_seed_ends_the_connection_without_an_event() {
        let report = seed("implicit-tampered-record");
        assert_eq!(report.events, ["Connect"], "{report:?}");
    }
}
