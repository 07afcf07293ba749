//! The `conn` target: the connection object behind the C ABI's `smtps_conn`
//! ([`smtps_conn::Connection`], TLS and SMTP together) driven through its Rust entry points by
//! a client that speaks plaintext, real TLS (rustls) after a proper STARTTLS or from the first
//! octet, or raw bytes; the wire between them carries arbitrary chunk sizes and may be
//! tampered with. A load balancer may stand in front of the client: the connection then
//! expects a PROXY protocol header, and the input supplies one ([`ProxySpec`]).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use smtps_conn::{CloseReason, Connection, Mode, Timer};
use smtps_proto::{DecisionId, Event, Reply, SessionConfig, Verdict};
use smtps_proxy::{MAX_V2_HEADER_LEN, Status, parse_header};
use smtps_tls::rustls::ClientConnection;
use smtps_tls::rustls::pki_types::ServerName;

use crate::command::map_tokens;
use crate::session::SESSION_TOKENS;
use crate::tls::fixture;
use crate::wire::{check_replies, show};

mod proxy;

pub use proxy::{Expected, MAX_TLVS, ProxySpec, TlvSpec, V2Spec};

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

/// What the `conn` target reads: a header octet, a PROXY header if its bit 7 is set, and
/// operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInput {
    /// Bits 0–1: mode (STARTTLS, implicit TLS, plain, STARTTLS); bit 2: the implicit-TLS
    /// client does not start TLS (it sends raw octets); bit 3: MAIL needs TLS; bit 4: at most
    /// 2 recipients and 200-octet messages. Bit 7 of the encoded octet stands for
    /// [`ConnInput::proxy`] and is not kept here.
    pub header: u8,
    /// The connection expects a PROXY protocol header (`expect_proxy_header`), and the
    /// client's side sends these octets first, before its TLS or SMTP; encoded right after
    /// the header octet. `None` for a connection without a balancer (every input written
    /// before this existed: bit 7 was never set in the committed corpus).
    pub proxy: Option<ProxySpec>,
    /// The operations, in order.
    pub ops: Vec<ConnOp>,
}

const OP_COUNT: u8 = 13;
/// The header octet's bit that announces a [`ProxySpec`].
const PROXY_BIT: u8 = 0x80;
const REJECT_CODES: [u16; 6] = [421, 450, 451, 550, 554, 535];
/// Total octets one input may put on the wire, so a run stays fast.
const WIRE_BUDGET: usize = 128 * 1024;

impl<'a> Arbitrary<'a> for ConnInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let octet: u8 = u.arbitrary()?;
        let proxy = if octet & PROXY_BIT == 0 {
            None
        } else {
            Some(u.arbitrary()?)
        };
        let header = octet & !PROXY_BIT;
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
        Ok(Self { header, proxy, ops })
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
        let mut out = vec![self.header & !PROXY_BIT];
        if let Some(proxy) = &self.proxy {
            out[0] |= PROXY_BIT;
            proxy.encode_into(&mut out);
        }
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
///   none;
/// - behind a balancer (a [`ProxySpec`]): until the PROXY header is read there is no event
///   (no `Connect`) and no output; the engine's `proxy_header()` is what `parse_header` makes
///   of the octets it took — once they hold a whole header, exactly that header (and for a
///   generated one that arrived untouched, exactly the generated addresses, command and
///   TLVs); while they could still begin one, none, and the connection closes only on the
///   header timer, the client's end of stream or the host's close; once they cannot, it is
///   closed with `CloseReason::ProxyHeader` and that error. After a good header every check
///   above holds for the session that follows.
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
    /// Why, as the engine displays it.
    pub close_reason: Option<String>,
    /// A PROXY header was read (the connection expected one).
    pub proxy_read: bool,
    /// The source and destination it reported.
    pub proxy_addresses: Option<(SocketAddr, SocketAddr)>,
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
    let mut conn =
        Connection::new(mode, Arc::new(config), acceptor, Instant::now()).expect("connection");
    if input.proxy.is_some() {
        conn.expect_proxy_header();
    }
    let mut h = Harness::new(conn, mode);
    if let Some(spec) = &input.proxy {
        // The balancer's octets come first, below the client's TLS.
        let octets = spec.octets();
        let expected = spec.expected();
        let exact = proxy::is_one_header(&octets);
        if let Some(Ok(_)) = expected {
            assert!(
                exact,
                "a generated header does not parse: {}",
                show(&octets)
            );
        }
        // Anything but one whole header mixes balancer octets into the client's stream.
        h.tampered = !exact;
        h.client.wire.extend_from_slice(&octets);
        h.proxy = Some(ProxyState {
            octets,
            expected,
            stream: Vec::new(),
            read: false,
            checked: None,
        });
    }
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
    h.report.close_reason = h.conn.close_reason().map(ToString::to_string);
    if let Some(header) = h.conn.proxy_header() {
        h.report.proxy_read = true;
        h.report.proxy_addresses = header.addresses.map(|a| (a.source, a.destination));
    }
    h.finish();
    h.report
}

/// The PROXY header side of a run.
struct ProxyState {
    /// What the balancer sent first.
    octets: Vec<u8>,
    /// What they must give, for a generated header.
    expected: Option<Result<Expected, smtps_proxy::Error>>,
    /// The first octets the connection took while open (at most [`MAX_V2_HEADER_LEN`]).
    stream: Vec<u8>,
    /// The header was read: no need to ask the engine again for each event.
    read: bool,
    /// The length of `stream` and whether the connection was closed when last checked.
    checked: Option<(usize, bool)>,
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
    /// The outstanding decision is the connection's (refused only with 554 or 421).
    pending_connect: bool,
    answered: Option<DecisionId>,
    auto_accept: u8,
    /// Body octets may arrive.
    body_open: bool,
    /// After a STARTTLS upgrade, until a new HELO/EHLO.
    fresh_after_tls: bool,
    saw_start_tls: bool,
    /// The client's end of stream was fed.
    eof_sent: bool,
    proxy: Option<ProxyState>,
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
            pending_connect: false,
            answered: None,
            auto_accept: 0,
            body_open: false,
            fresh_after_tls: false,
            saw_start_tls: false,
            eof_sent: false,
            proxy: None,
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
                let mut code = REJECT_CODES[usize::from(*code) % REJECT_CODES.len()];
                if self.pending_connect && code != 421 {
                    // RFC 5321 §4.3.2: 554 is the only refusal instead of the greeting.
                    code = 554;
                }
                let reply = Reply::from_parts(code, None, "no").expect("valid reply");
                self.decide(Verdict::Reject(reply));
            }
            ConnOp::AutoAccept(n) => {
                self.auto_accept = *n;
                if self.pending.is_some() {
                    self.decide(Verdict::Accept);
                }
            }
            ConnOp::Eof => {
                self.eof_sent = true;
                self.conn.feed_eof();
            }
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
        self.check_proxy();
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
        self.pending_connect = false;
    }

    fn drain_events(&mut self) {
        for _ in 0..100_000 {
            let handshaken = self.conn.tls_info().is_some();
            let header_read = self.header_read();
            let Some(event) = self.conn.poll_event() else {
                return;
            };
            assert!(header_read, "an event before the PROXY header: {event:?}");
            if self.mode == Mode::ImplicitTls || self.saw_start_tls {
                assert!(
                    handshaken,
                    "an event before the TLS handshake completed: {event:?}"
                );
            }
            self.report.events.push(event_name(&event));
            let decision = match event {
                Event::Connect { decision } => {
                    self.pending_connect = true;
                    Some(decision)
                }
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
                let open = !self.conn.is_closed() && !self.eof_sent;
                let taken = match self.conn.feed(self.now, &self.client.wire[..n]) {
                    Ok(taken) => taken,
                    Err(_) => {
                        self.server_failed = true;
                        n
                    }
                };
                assert!(taken <= n, "feed took {taken} of {n} octets");
                if open && let Some(proxy) = &mut self.proxy {
                    let room = MAX_V2_HEADER_LEN.saturating_sub(proxy.stream.len());
                    let recorded = proxy.stream.len();
                    proxy
                        .stream
                        .extend_from_slice(&self.client.wire[..taken.min(room)]);
                    if proxy.stream.len() > recorded {
                        self.check_proxy();
                    }
                }
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
        let header_read = self.header_read();
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
        assert!(
            header_read,
            "output before the PROXY header was read: {:02x?}",
            &wire[..wire.len().min(64)]
        );
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

    /// Whether the connection expects no PROXY header or has read it.
    fn header_read(&mut self) -> bool {
        match &mut self.proxy {
            None => true,
            Some(proxy) => {
                proxy.read = proxy.read || self.conn.proxy_header().is_some();
                proxy.read
            }
        }
    }

    /// The PROXY header checks (see [`conn`]) on what the connection took so far; again only
    /// once it took more or closed.
    fn check_proxy(&mut self) {
        let closed = self.conn.is_closed();
        let Some(proxy) = &mut self.proxy else {
            return;
        };
        if proxy.checked == Some((proxy.stream.len(), closed)) {
            return;
        }
        proxy.checked = Some((proxy.stream.len(), closed));
        let read = self.conn.proxy_header();
        let reason = self.conn.close_reason();
        let stream = &proxy.stream;
        match parse_header(stream) {
            Ok(Status::Complete((_, header))) => assert_eq!(
                read,
                Some(header),
                "the engine read another PROXY header from {}",
                show(stream)
            ),
            Ok(Status::Partial) => {
                assert!(read.is_none(), "a PROXY header from {}", show(stream));
                // The host's close is the harness's `Close` (`Timeout(Command)`).
                assert!(
                    matches!(
                        reason,
                        None | Some(
                            CloseReason::ClientClosed
                                | CloseReason::Timeout(Timer::ProxyHeader | Timer::Command)
                        )
                    ),
                    "closed as {reason:?} inside the PROXY header {}",
                    show(stream)
                );
            }
            Err(error) => {
                assert!(read.is_none(), "a PROXY header from {}", show(stream));
                assert_eq!(
                    reason,
                    Some(&CloseReason::ProxyHeader(error)),
                    "a bad PROXY header {}",
                    show(stream)
                );
            }
        }
        let Some(expected) = &proxy.expected else {
            return;
        };
        if !stream.starts_with(&proxy.octets) {
            return; // not all there yet, or tampered with
        }
        match expected {
            Ok(want) => {
                let header = read.expect("the generated header was not read");
                assert_eq!(header.version, want.version);
                assert_eq!(header.command, want.command);
                let addresses = header.addresses.map(|a| (a.source, a.destination));
                assert_eq!(addresses, want.addresses, "the PROXY header's addresses");
                assert_eq!(header.tlvs.as_bytes(), want.tlvs, "the PROXY header's TLVs");
            }
            Err(error) => assert_eq!(reason, Some(&CloseReason::ProxyHeader(*error))),
        }
    }

    fn finish(&mut self) {
        self.check_proxy();
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

    fn addresses(source: &str, destination: &str) -> Option<(SocketAddr, SocketAddr)> {
        Some((
            source.parse().expect("source"),
            destination.parse().expect("destination"),
        ))
    }

    #[test]
    fn proxy_v1_seed_delivers_over_implicit_tls_with_the_real_client() {
        let report = seed("proxy-v1-implicit-message");
        assert!(report.proxy_read);
        let want = addresses("192.0.2.1:56324", "198.51.100.7:465");
        assert_eq!(report.proxy_addresses, want);
        assert_eq!(report.events.first(), Some(&"Connect"), "{report:?}");
        assert!(report.events.contains(&"MessageEnd"), "{report:?}");
        assert_eq!(report.codes.first(), Some(&220));
        assert_eq!(report.codes.last(), Some(&221), "{report:?}");
    }

    #[test]
    fn proxy_v2_seed_with_tlvs_delivers_after_starttls() {
        let report = seed("proxy-v2-tlvs-starttls");
        let want = addresses("[2001:db8::1]:49152", "[2001:db8:0:1::25]:25");
        assert_eq!(report.proxy_addresses, want);
        assert!(report.events.contains(&"StartTls"), "{report:?}");
        assert!(report.events.contains(&"MessageEnd"), "{report:?}");
    }

    #[test]
    fn proxy_headers_split_over_many_feeds_are_read() {
        for name in ["proxy-v1-tcp6-byte-by-byte", "proxy-v2-implicit-split"] {
            let report = seed(name);
            assert!(report.proxy_addresses.is_some(), "{name}: {report:?}");
            assert_eq!(report.codes.first(), Some(&220), "{name}: {report:?}");
            assert_eq!(report.codes.last(), Some(&221), "{name}: {report:?}");
        }
    }

    #[test]
    fn proxy_local_and_unknown_seeds_report_no_addresses() {
        for name in ["proxy-v2-local-health-check", "proxy-v1-unknown"] {
            let report = seed(name);
            assert!(report.proxy_read, "{name}: {report:?}");
            assert_eq!(report.proxy_addresses, None, "{name}");
            assert_eq!(report.codes.last(), Some(&221), "{name}: {report:?}");
        }
    }

    #[test]
    fn bad_or_missing_proxy_headers_close_without_a_banner() {
        for name in ["proxy-bad-v1", "proxy-bad-crc-implicit", "proxy-missing"] {
            let report = seed(name);
            assert!(report.events.is_empty(), "{name}: {report:?}");
            assert!(report.codes.is_empty(), "{name}: {report:?}");
            assert!(report.closed, "{name}: {report:?}");
            let reason = report.close_reason.as_deref().unwrap_or_default();
            assert!(reason.starts_with("proxy_header ("), "{name}: {reason}");
        }
    }

    #[test]
    fn a_late_or_cut_proxy_header_closes_on_its_timer_or_the_eof() {
        let report = seed("proxy-header-timeout");
        assert!(report.events.is_empty(), "{report:?}");
        assert_eq!(report.close_reason.as_deref(), Some("timeout_proxy_header"));
        let report = seed("proxy-eof-inside-header");
        assert!(report.events.is_empty(), "{report:?}");
        assert_eq!(report.close_reason.as_deref(), Some("client_closed"));
    }

    #[test]
    fn proxy_specs_round_trip_and_parse_as_expected() {
        let mut u = Unstructured::new(&[0; 0]);
        assert!(
            ProxySpec::arbitrary(&mut u).is_ok(),
            "an empty spec is zeros"
        );
        for seed in crate::seeds::all() {
            if seed.target != "conn" {
                continue;
            }
            let input =
                ConnInput::arbitrary_take_rest(Unstructured::new(&seed.bytes)).expect("input");
            let Some(spec) = input.proxy else {
                continue;
            };
            let octets = spec.octets();
            match spec.expected() {
                Some(Ok(want)) => {
                    let Ok(Status::Complete((len, header))) = parse_header(&octets) else {
                        panic!("{}: {:?}", seed.name, parse_header(&octets));
                    };
                    assert_eq!(len, octets.len(), "{}", seed.name);
                    let got = header.addresses.map(|a| (a.source, a.destination));
                    assert_eq!(got, want.addresses, "{}", seed.name);
                    assert_eq!(header.tlvs.as_bytes(), want.tlvs, "{}", seed.name);
                }
                Some(Err(error)) => assert_eq!(parse_header(&octets), Err(error)),
                None => {}
            }
        }
    }
}
