//! One worker: a `mio::Poll`, its share of the listeners, and its connections.
//!
//! Sockets are registered once for both readable and writable. mio is edge-triggered, so the
//! worker tries to read whenever the connection can take input and to write whenever output is
//! pending, whatever woke it; a spurious `WouldBlock` is cheaper than re-registering interest
//! on every change.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use smtps_proto::{
    DecisionId, EnhancedStatus, Event, Reply, ReplyCode, Security, ServerSession, Verdict,
};
use smtps_tls::Transport;

use crate::config::ListenerMode;
use crate::error::Error;
use crate::handler::{
    CloseReason, Context, Credentials, DeferSlot, Handler, Mailbox, SessionInfo, temporary_failure,
};
use crate::server::Shared;

/// The token of the worker's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Connections get tokens from here on; listeners use `0..FIRST_CONNECTION`.
const FIRST_CONNECTION: usize = 1 << 16;
/// How long a closing connection may take to flush its last bytes.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Connections beyond the limit plus this many are closed without a reply.
const LIMIT_OVERFLOW: usize = 1024;

pub(crate) struct Worker<H: Handler> {
    index: usize,
    shared: Arc<Shared<H>>,
    poll: Poll,
    listeners: Vec<Option<TcpListener>>,
    mailbox: Arc<Mailbox>,
    connections: Vec<Option<Connection<H::Session>>>,
    free: Vec<usize>,
    live: usize,
    read_buf: Vec<u8>,
    out_buf: Vec<u8>,
    shutting_down: bool,
}

struct Connection<S> {
    socket: TcpStream,
    info: SessionInfo,
    transport: Transport,
    /// Created once the transport can carry SMTP (after the handshake for implicit TLS).
    session: Option<ServerSession>,
    host: Option<S>,
    /// Received octets the transport did not take yet.
    inbox: Vec<u8>,
    /// Session output the transport did not take yet.
    outbox: Vec<u8>,
    pending: Option<Pending>,
    started: Instant,
    last_read: Instant,
    handshake_started: Option<Instant>,
    eof: bool,
    eof_delivered: bool,
    /// The socket may have unread data: set by a readable event, cleared when a read comes
    /// back short or `WouldBlock` (edge-triggered: the next arrival brings a new event).
    readable: bool,
    /// The peer has shut its side (or the socket failed): read until the end of stream
    /// whatever the size of the reads.
    hangup: bool,
    over_limit: bool,
    closing: Option<(CloseReason, Instant)>,
    /// Why the session is closing, when it closes itself.
    close_hint: Option<CloseReason>,
    /// `Transport::close` was called (after the last reply was handed to it).
    transport_closed: bool,
    counted_ip: bool,
}

/// A decision the host deferred.
struct Pending {
    decision: DecisionId,
    since: Instant,
    update: Update,
}

/// What a decision changes in [`SessionInfo`] once accepted.
enum Update {
    None,
    Helo(String, bool),
    Auth(String),
    Mail(String),
    Rcpt(String),
    MessageEnd,
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared<H>>,
        poll: Poll,
        listeners: Vec<TcpListener>,
        mailbox: Arc<Mailbox>,
    ) -> Result<Self, Error> {
        let mut registered = Vec::new();
        for (i, mut listener) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(&mut listener, Token(i), Interest::READABLE)
                .map_err(|source| Error::Io {
                    context: "registering a listener",
                    source,
                })?;
            registered.push(Some(listener));
        }
        Ok(Self {
            index,
            shared,
            poll,
            listeners: registered,
            mailbox,
            connections: Vec::new(),
            free: Vec::new(),
            live: 0,
            read_buf: vec![0; 64 * 1024],
            out_buf: Vec::new(),
            shutting_down: false,
        })
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let sweep_every = (self.shared.config.timeouts.shortest() / 4)
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            let timeout = next_sweep.saturating_duration_since(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, Some(timeout))
                && error.kind() != io::ErrorKind::Interrupted
            {
                log::error!("smtps: worker {} poll failed: {error}", self.index);
                break;
            }
            for event in &events {
                match event.token() {
                    WAKER => self.wake(),
                    Token(i) if i < FIRST_CONNECTION => self.accept(i),
                    Token(i) => {
                        let index = i - FIRST_CONNECTION;
                        if let Some(Some(conn)) = self.connections.get_mut(index) {
                            let hangup = event.is_read_closed() || event.is_error();
                            conn.hangup |= hangup;
                            conn.readable |= hangup || event.is_readable();
                        }
                        self.service(index);
                    }
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                // Answers posted while a wake-up failed are picked up here too.
                self.wake();
                self.sweep(now);
                next_sweep = now + sweep_every;
            }
            if self.shutting_down && self.live == 0 {
                break;
            }
        }
        log::debug!("smtps: worker {} stopped", self.index);
    }

    fn wake(&mut self) {
        for completion in self.mailbox.take() {
            let index = completion.token.0 - FIRST_CONNECTION;
            let Some(Some(conn)) = self.connections.get_mut(index) else {
                continue;
            };
            if conn.info.id != completion.session {
                continue;
            }
            match &conn.pending {
                Some(pending) if pending.decision == completion.decision => {}
                _ => continue,
            }
            resolve(
                &mut conn.info,
                &mut conn.pending,
                conn.session.as_mut(),
                completion.verdict,
            );
            self.service(index);
        }
        if !self.shutting_down && self.shared.control.shutdown.load(Ordering::SeqCst) {
            self.begin_shutdown();
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for listener in &mut self.listeners {
            if let Some(mut listener) = listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        for index in 0..self.connections.len() {
            self.service(index);
        }
    }

    fn accept(&mut self, listener_index: usize) {
        loop {
            let Some(Some(listener)) = self.listeners.get(listener_index) else {
                return;
            };
            let (socket, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    // EMFILE and friends: leave the rest in the backlog for the next event.
                    log::warn!("smtps: accept failed: {error}");
                    return;
                }
            };
            self.open(socket, peer, listener_index);
        }
    }

    fn open(&mut self, mut socket: TcpStream, peer: SocketAddr, listener: usize) {
        let shared = Arc::clone(&self.shared);
        let limits = &shared.config.limits;
        let total = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let from_ip = {
            let mut per_ip = shared.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(peer.ip()).or_insert(0);
            *count += 1;
            *count
        };
        let over_limit = total > limits.connections || from_ip > limits.connections_per_ip;
        if total > limits.connections.saturating_add(LIMIT_OVERFLOW) {
            log::warn!("smtps: {peer}: over the connection limit by far, closed without reply");
            release(&shared, peer, true);
            return;
        }
        // Replies are written whole; Nagle would hold the last segment of each for an ACK.
        let _ = socket.set_nodelay(true);
        let mode = shared.config.listeners[listener].mode;
        let transport = match (mode, &shared.config.tls) {
            (ListenerMode::ImplicitTls, Some(tls)) => match Transport::new_implicit_tls(tls) {
                Ok(transport) => transport,
                Err(error) => {
                    log::error!("smtps: {peer}: cannot start TLS: {error}");
                    release(&shared, peer, true);
                    return;
                }
            },
            _ => Transport::new_plaintext(),
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        let token = Token(index + FIRST_CONNECTION);
        if let Err(error) = self.poll.registry().register(
            &mut socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("smtps: {peer}: cannot register connection: {error}");
            self.free.push(index);
            release(&shared, peer, true);
            return;
        }
        let now = Instant::now();
        let local = socket.local_addr().unwrap_or(peer);
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "smtps: session={id} event=connect peer={peer} local={local} mode={mode:?}{}",
            if over_limit { " over_limit=true" } else { "" }
        );
        let handshake_started = (mode == ListenerMode::ImplicitTls).then_some(now);
        self.connections[index] = Some(Connection {
            socket,
            info: SessionInfo {
                id,
                peer,
                local,
                listener,
                mode,
                tls: None,
                helo: None,
                extended: false,
                auth_id: None,
                mail_from: None,
                recipients: Vec::new(),
                messages: 0,
            },
            transport,
            session: None,
            host: None,
            inbox: Vec::new(),
            outbox: Vec::new(),
            pending: None,
            started: now,
            last_read: now,
            handshake_started,
            eof: false,
            eof_delivered: false,
            readable: true,
            hangup: false,
            over_limit,
            closing: None,
            close_hint: None,
            transport_closed: false,
            counted_ip: true,
        });
        self.live += 1;
        self.service(index);
    }

    /// Moves bytes and events for one connection as far as they go.
    fn service(&mut self, index: usize) {
        let mailbox = (Arc::clone(&self.mailbox), Token(index + FIRST_CONNECTION));
        let Some(Some(conn)) = self.connections.get_mut(index) else {
            return;
        };
        let shared = &*self.shared;
        // Bounded, so that one busy connection cannot starve the others of this worker.
        for _ in 0..64 {
            let mut progressed = false;
            if conn.closing.is_none() {
                progressed |= read(conn, &mut self.read_buf);
                if let Some(failure) = conn.transport.failure() {
                    let reason = CloseReason::Tls(failure.to_string());
                    close(conn, reason);
                }
            }
            if conn.closing.is_none() {
                progressed |= converse(shared, conn, &mut self.out_buf, mailbox.clone());
            }
            if self.shutting_down && conn.closing.is_none() {
                shutdown_if_idle(shared, conn);
            }
            if conn.closing.is_some() {
                finish_output(conn);
            }
            progressed |= write(conn);
            if let Some((_, since)) = &conn.closing {
                let flushed = conn.transport_closed && !conn.transport.wants_write();
                if flushed || since.elapsed() > CLOSE_LINGER {
                    self.finish(index);
                    return;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Drops a closed connection and tells the host.
    fn finish(&mut self, index: usize) {
        let Some(mut conn) = self.connections.get_mut(index).and_then(Option::take) else {
            return;
        };
        // No `deregister`: closing the socket (dropping `conn`) removes it from the epoll set,
        // one system call fewer per connection.
        let reason = conn
            .closing
            .take()
            .map_or(CloseReason::ClientClosed, |(reason, _)| reason);
        log::info!(
            "smtps: session={} event=close reason={reason:?} messages={} duration_ms={}",
            conn.info.id,
            conn.info.messages,
            conn.started.elapsed().as_millis()
        );
        if let Some(host) = conn.host.take() {
            let mut cx = Context {
                info: &conn.info,
                defer: None,
                deferred: false,
            };
            self.shared.handler.disconnect(host, &mut cx, reason);
        }
        release(&self.shared, conn.info.peer, conn.counted_ip);
        self.free.push(index);
        self.live -= 1;
    }

    /// Enforces timers.
    fn sweep(&mut self, now: Instant) {
        let timeouts = self.shared.config.timeouts.clone();
        let deadline = if self.shutting_down {
            *self
                .shared
                .control
                .deadline
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            None
        };
        for index in 0..self.connections.len() {
            let Some(Some(conn)) = self.connections.get_mut(index) else {
                continue;
            };
            if conn.closing.is_some() {
                self.service(index);
                continue;
            }
            if deadline.is_some_and(|deadline| now >= deadline) {
                close_with(&self.shared, conn, &shutdown_reply(), CloseReason::Shutdown);
                self.service(index);
                continue;
            }
            if let Some(pending) = &conn.pending
                && now.duration_since(pending.since) >= timeouts.decision
            {
                log::warn!(
                    "smtps: session={} host did not decide in time",
                    conn.info.id
                );
                let verdict = temporary_failure();
                resolve(
                    &mut conn.info,
                    &mut conn.pending,
                    conn.session.as_mut(),
                    verdict,
                );
                self.service(index);
                continue;
            }
            let handshaking = conn.transport.is_handshaking() && conn.transport.is_tls();
            let expired = if now.duration_since(conn.started) >= timeouts.session {
                true
            } else if handshaking {
                conn.handshake_started
                    .is_some_and(|start| now.duration_since(start) >= timeouts.handshake)
            } else if conn.pending.is_some() {
                false
            } else {
                let idle = now.duration_since(conn.last_read);
                let in_body = conn.session.as_ref().is_some_and(ServerSession::in_body);
                idle >= if in_body {
                    timeouts.data_block
                } else {
                    timeouts.command
                }
            };
            if expired {
                let reply = Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    EnhancedStatus::new(4, 4, 2),
                    format!(
                        "{} Timeout, closing connection",
                        self.shared.config.session.hostname
                    ),
                );
                if conn.session.is_some() {
                    close_with(&self.shared, conn, &reply, CloseReason::Timeout);
                } else {
                    close(conn, CloseReason::Timeout);
                }
                self.service(index);
            }
        }
    }
}

/// Reads what the connection can take. Returns whether anything moved.
fn read<S>(conn: &mut Connection<S>, buf: &mut [u8]) -> bool {
    let mut progressed = false;
    if !conn.inbox.is_empty() {
        match conn.transport.handle_received(&conn.inbox) {
            Ok(taken) if taken > 0 => {
                conn.inbox.drain(..taken);
                progressed = true;
            }
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    // One read per call: the plaintext goes to the session before more is read, since the
    // session bounds its input.
    while conn.readable && conn.inbox.is_empty() && !conn.eof && wants_input(conn) {
        match conn.socket.read(buf) {
            Ok(0) => {
                conn.eof = true;
                conn.transport.handle_eof();
                progressed = true;
            }
            Ok(n) => {
                conn.last_read = Instant::now();
                progressed = true;
                // A short read emptied the socket's buffer: no need to try again (and get
                // `WouldBlock`) before the next readable event.
                conn.readable = n == buf.len() || conn.hangup;
                match conn.transport.handle_received(&buf[..n]) {
                    Ok(taken) if taken < n => conn.inbox.extend_from_slice(&buf[taken..n]),
                    Ok(_) => {}
                    Err(_) => return true,
                }
                break;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                break;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                conn.eof = true;
                conn.transport.handle_eof();
                log::debug!("smtps: session={} read error: {error}", conn.info.id);
                progressed = true;
                break;
            }
        }
    }
    progressed
}

/// Whether to read the socket: not while the session is full, and not while replies back up
/// because the client does not read them (write back-pressure).
fn wants_input<S>(conn: &Connection<S>) -> bool {
    conn.outbox.is_empty()
        && conn.transport.wants_read()
        && conn.session.as_ref().is_none_or(ServerSession::wants_input)
}

/// Writes pending output to the socket. Returns whether anything moved.
fn write<S>(conn: &mut Connection<S>) -> bool {
    let mut progressed = false;
    while conn.transport.wants_write() {
        match conn.transport.write_transmit(&mut conn.socket) {
            Ok(0) => break,
            Ok(_) => progressed = true,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                if conn.closing.is_none() {
                    conn.closing = Some((CloseReason::Io(error.to_string()), Instant::now()));
                }
                // Nothing more can be sent: drop the rest.
                let mut sink = Vec::new();
                conn.transport.poll_transmit(&mut sink);
                return true;
            }
        }
    }
    progressed
}

/// Plaintext to the session, events to the host, replies back. Returns whether anything moved.
fn converse<H: Handler>(
    shared: &Shared<H>,
    conn: &mut Connection<H::Session>,
    out: &mut Vec<u8>,
    (mailbox, token): (Arc<Mailbox>, Token),
) -> bool {
    let mut progressed = false;
    if conn.session.is_none() {
        if conn.transport.is_handshaking() {
            return false;
        }
        capture_tls(conn);
        let config = Arc::clone(&shared.session_configs[conn.info.listener]);
        let security = match conn.info.mode {
            ListenerMode::ImplicitTls => Security::Tls,
            ListenerMode::Plain => Security::Plaintext,
            _ => Security::StartTlsAvailable,
        };
        conn.session = Some(ServerSession::new(config, security));
        progressed = true;
    }
    if conn.info.tls.is_none() && conn.transport.is_tls() && !conn.transport.is_handshaking() {
        capture_tls(conn);
    }
    let Some(session) = conn.session.as_mut() else {
        return progressed;
    };
    // Plaintext into the session, as much as it takes.
    loop {
        let plaintext = conn.transport.received_plaintext();
        if plaintext.is_empty() {
            break;
        }
        let taken = session.handle_input(plaintext);
        if taken == 0 {
            break;
        }
        conn.transport.consume_plaintext(taken);
        progressed = true;
    }
    if conn.eof && !conn.eof_delivered && conn.transport.received_plaintext().is_empty() {
        conn.eof_delivered = true;
        session.handle_eof();
        progressed = true;
    }
    progressed |= dispatch(shared, conn, &mailbox, token);
    progressed |= flush_session(conn, out);
    let Some(session) = conn.session.as_ref() else {
        return progressed;
    };
    if session.is_closed() && conn.closing.is_none() {
        let reason = conn.close_hint.take().unwrap_or(if conn.eof {
            CloseReason::ClientClosed
        } else {
            CloseReason::Quit
        });
        close(conn, reason);
        progressed = true;
    }
    progressed
}

/// Session output into the transport.
fn flush_session<S>(conn: &mut Connection<S>, out: &mut Vec<u8>) -> bool {
    let Some(session) = conn.session.as_mut() else {
        return false;
    };
    out.clear();
    if !conn.outbox.is_empty() {
        out.append(&mut conn.outbox);
    }
    session.poll_transmit(out);
    if out.is_empty() {
        return false;
    }
    match conn.transport.write_plaintext(out) {
        Ok(taken) if taken < out.len() => conn.outbox.extend_from_slice(&out[taken..]),
        Ok(_) => {}
        Err(error) => log::debug!("smtps: session={} cannot write: {error}", conn.info.id),
    }
    true
}

/// Drains the session's events, asking the host. Returns whether any came.
fn dispatch<H: Handler>(
    shared: &Shared<H>,
    conn: &mut Connection<H::Session>,
    mailbox: &Arc<Mailbox>,
    token: Token,
) -> bool {
    let mut any = false;
    let Connection {
        session,
        host,
        info,
        transport,
        pending,
        over_limit,
        close_hint,
        handshake_started,
        outbox,
        ..
    } = conn;
    let Some(session) = session.as_mut() else {
        return false;
    };
    let handler = &shared.handler;
    while let Some(event) = session.poll_event() {
        any = true;
        let decision = decision_of(&event);
        let mut cx = Context {
            info,
            defer: decision.map(|decision| DeferSlot {
                mailbox: Arc::clone(mailbox),
                token,
                session: info.id,
                decision,
            }),
            deferred: false,
        };
        let mut update = Update::None;
        let mut start_tls = false;
        let answer = match event {
            Event::Connect { .. } if *over_limit => {
                *close_hint = Some(CloseReason::Limit);
                Some(crate::handler::Answer::Reject(Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    EnhancedStatus::new(4, 7, 0),
                    "Too many connections, try again later",
                )))
            }
            Event::Connect { .. } => {
                let (state, answer) = handler.connect(&mut cx);
                *host = Some(state);
                Some(answer)
            }
            Event::Helo { extended, name, .. } => {
                update = Update::Helo(name.to_string(), extended);
                host.as_mut()
                    .map(|h| handler.helo(h, &mut cx, &name, extended))
            }
            Event::Auth {
                mechanism,
                authorization_id,
                authentication_id,
                password,
                ..
            } => {
                update = Update::Auth(authentication_id.to_owned());
                let credentials = Credentials {
                    mechanism,
                    authorization_id,
                    authentication_id,
                    password,
                };
                host.as_mut()
                    .map(|h| handler.auth(h, &mut cx, &credentials))
            }
            Event::Mail { from, params, .. } => {
                update = Update::Mail(path_text(&from.to_string()));
                host.as_mut()
                    .map(|h| handler.mail(h, &mut cx, &from, &params))
            }
            Event::Rcpt { to, params, .. } => {
                update = Update::Rcpt(path_text(&to.to_string()));
                host.as_mut()
                    .map(|h| handler.rcpt(h, &mut cx, &to, &params))
            }
            Event::DataStart { .. } => host.as_mut().map(|h| handler.data_start(h, &mut cx)),
            Event::BodyChunk(chunk) => {
                if let Some(h) = host.as_mut()
                    && let Err(reply) = handler.body_chunk(h, &mut cx, chunk)
                {
                    session.refuse_message(reply);
                }
                None
            }
            Event::MessageEnd { size, .. } => {
                update = Update::MessageEnd;
                log::info!("smtps: session={} event=message size={size}", cx.info.id);
                host.as_mut().map(|h| handler.message_end(h, &mut cx, size))
            }
            Event::MessageAborted { reason } => {
                log::info!(
                    "smtps: session={} event=aborted reason={reason:?}",
                    cx.info.id
                );
                if let Some(h) = host.as_mut() {
                    handler.message_aborted(h, &mut cx, reason);
                }
                None
            }
            Event::Reset => {
                if let Some(h) = host.as_mut() {
                    handler.reset(h, &mut cx);
                }
                None
            }
            Event::StartTls { discarded } => {
                if discarded > 0 {
                    log::warn!(
                        "smtps: session={} event=starttls discarded={discarded} (pipelined after STARTTLS, CVE-2011-0411)",
                        cx.info.id
                    );
                }
                start_tls = true;
                None
            }
            Event::BareLineEnding { in_body, rejected } => {
                log::info!(
                    "smtps: session={} event=bare_line_ending in_body={in_body} rejected={rejected}",
                    cx.info.id
                );
                None
            }
            Event::TooManyErrors => {
                *close_hint = Some(CloseReason::TooManyErrors);
                log::info!("smtps: session={} event=too_many_errors", cx.info.id);
                None
            }
            _ => None,
        };
        let deferred = cx.deferred;
        if start_tls {
            // The 220 goes out in plaintext before the first TLS record (the transport keeps
            // it); everything received after the STARTTLS line is dropped.
            // Replies still waiting in the outbox go first, in order.
            let mut reply = std::mem::take(outbox);
            session.poll_transmit(&mut reply);
            let upgraded = match &shared.config.tls {
                Some(tls) => match transport.write_plaintext(&reply) {
                    Ok(taken) if taken == reply.len() => transport
                        .start_tls(tls)
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Ok(taken) => {
                        // Not upgraded: what was not taken is still sent, in order, before the 421.
                        outbox.extend_from_slice(&reply[taken..]);
                        Err("plaintext output backed up".to_owned())
                    }
                    Err(error) => Err(error.to_string()),
                },
                // `Server::bind` refuses STARTTLS listeners without an acceptor.
                None => Err("no TLS acceptor".to_owned()),
            };
            match upgraded {
                Ok(_) => {
                    // The handshake timer runs from here, as for implicit TLS.
                    *handshake_started = Some(Instant::now());
                    let _ = session.handle_tls_established();
                }
                Err(error) => {
                    log::error!("smtps: session={} STARTTLS failed: {error}", info.id);
                    session.close(&Reply::new(
                        ReplyCode::SERVICE_UNAVAILABLE,
                        EnhancedStatus::new(4, 7, 0),
                        "TLS not available",
                    ));
                }
            }
            continue;
        }
        let Some(decision) = decision else { continue };
        match answer.and_then(crate::handler::Answer::into_verdict) {
            Some(verdict) => {
                *pending = Some(Pending {
                    decision,
                    since: Instant::now(),
                    update,
                });
                resolve(info, pending, Some(session), verdict);
            }
            None if deferred => {
                *pending = Some(Pending {
                    decision,
                    since: Instant::now(),
                    update,
                });
            }
            None => {
                // `Answer::Deferred` without taking the responder: the host can never answer.
                log::error!(
                    "smtps: session={} handler deferred without a responder",
                    info.id
                );
                *pending = Some(Pending {
                    decision,
                    since: Instant::now(),
                    update,
                });
                let verdict = temporary_failure();
                resolve(info, pending, Some(session), verdict);
            }
        }
    }
    any
}

/// Applies a verdict to the outstanding decision and records what it changed.
fn resolve(
    info: &mut SessionInfo,
    pending: &mut Option<Pending>,
    session: Option<&mut ServerSession>,
    verdict: Verdict,
) {
    let (
        Some(Pending {
            decision, update, ..
        }),
        Some(session),
    ) = (pending.take(), session)
    else {
        return;
    };
    let accepted = matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_));
    let code = match &verdict {
        Verdict::AcceptWith(reply) | Verdict::Reject(reply) => reply.code().as_u16(),
        _ => 0,
    };
    if let Err(error) = session.decide(decision, verdict) {
        log::warn!("smtps: session={} invalid decision: {error}", info.id);
        // A verdict that does not fit must not leave the client hanging.
        let _ = session.decide(decision, temporary_failure());
        return;
    }
    log_decision(info.id, &update, accepted, code);
    match update {
        Update::Helo(name, extended) if accepted => {
            info.helo = Some(name);
            info.extended = extended;
            info.mail_from = None;
            info.recipients.clear();
        }
        Update::Auth(user) if accepted => info.auth_id = Some(user),
        Update::Mail(from) if accepted => {
            info.mail_from = Some(from);
            info.recipients.clear();
        }
        Update::Rcpt(to) if accepted => info.recipients.push(to),
        Update::MessageEnd => {
            if accepted {
                info.messages += 1;
            }
            info.mail_from = None;
            info.recipients.clear();
        }
        _ => {}
    }
}

/// One log line per decided step (`code=0` is the session's default reply).
fn log_decision(id: u64, update: &Update, accepted: bool, code: u16) {
    let outcome = if accepted { "accepted" } else { "refused" };
    match update {
        Update::None => {}
        Update::Helo(name, extended) => log::info!(
            "smtps: session={id} event={} name={name:?} {outcome} code={code}",
            if *extended { "ehlo" } else { "helo" }
        ),
        Update::Auth(user) => {
            log::info!("smtps: session={id} event=auth user={user:?} {outcome} code={code}");
        }
        Update::Mail(from) => {
            log::info!("smtps: session={id} event=mail from=<{from}> {outcome} code={code}");
        }
        Update::Rcpt(to) => {
            log::info!("smtps: session={id} event=rcpt to=<{to}> {outcome} code={code}");
        }
        Update::MessageEnd => {
            log::info!("smtps: session={id} event=message_end {outcome} code={code}");
        }
    }
}

fn decision_of(event: &Event<'_>) -> Option<DecisionId> {
    match *event {
        Event::Connect { decision }
        | Event::Helo { decision, .. }
        | Event::Auth { decision, .. }
        | Event::Mail { decision, .. }
        | Event::Rcpt { decision, .. }
        | Event::DataStart { decision, .. }
        | Event::MessageEnd { decision, .. } => Some(decision),
        _ => None,
    }
}

/// `<a@b>` → `a@b`, `<>` → ``.
fn path_text(path: &str) -> String {
    path.strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path)
        .to_owned()
}

fn capture_tls<S>(conn: &mut Connection<S>) {
    if let Some(tls) = conn.transport.tls_info() {
        log::info!(
            "smtps: session={} event=tls version={} cipher={} group={} resumed={} sni={}",
            conn.info.id,
            tls.version_name(),
            tls.cipher_suite_name(),
            tls.key_exchange_group_name().unwrap_or("-"),
            tls.resumed,
            tls.server_name.as_deref().unwrap_or("-"),
        );
        conn.info.tls = Some(tls);
    }
}

/// During a shutdown, an idle session is told `421 4.3.2` and closed.
fn shutdown_if_idle<H: Handler>(shared: &Shared<H>, conn: &mut Connection<H::Session>) {
    match &conn.session {
        Some(session) if session.in_transaction() => {}
        Some(_) => close_with(shared, conn, &shutdown_reply(), CloseReason::Shutdown),
        None => close(conn, CloseReason::Shutdown),
    }
}

fn shutdown_reply() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 3, 2),
        "Service shutting down, try again later",
    )
}

/// Closes the session with a final reply (aborting any message), then the connection.
fn close_with<H: Handler>(
    shared: &Shared<H>,
    conn: &mut Connection<H::Session>,
    reply: &Reply,
    reason: CloseReason,
) {
    let Connection {
        session,
        host,
        info,
        pending,
        ..
    } = conn;
    if let Some(session) = session.as_mut() {
        session.close(reply);
        *pending = None;
        // The host learns that the message in progress, if any, will never be acknowledged.
        while let Some(event) = session.poll_event() {
            if let (Event::MessageAborted { reason }, Some(h)) = (event, host.as_mut()) {
                let mut cx = Context {
                    info,
                    defer: None,
                    deferred: false,
                };
                shared.handler.message_aborted(h, &mut cx, reason);
            }
        }
    }
    close(conn, reason);
}

/// Starts closing the connection: the session's last replies, `close_notify` under TLS, then
/// (in `service`) flush and drop.
fn close<S>(conn: &mut Connection<S>, reason: CloseReason) {
    if conn.closing.is_none() {
        flush_session(conn, &mut Vec::new());
        conn.closing = Some((reason, Instant::now()));
        finish_output(conn);
    }
}

/// While closing: replies still in the outbox go to the transport first, and only after
/// them the transport is closed (`close_notify` under TLS), so no reply is lost.
fn finish_output<S>(conn: &mut Connection<S>) {
    if !conn.outbox.is_empty() {
        flush_session(conn, &mut Vec::new());
    }
    if conn.outbox.is_empty() && !conn.transport_closed {
        conn.transport.close();
        conn.transport_closed = true;
    }
}

/// Gives back a connection's place in the limits.
fn release<H>(shared: &Shared<H>, peer: SocketAddr, counted_ip: bool) {
    shared.connections.fetch_sub(1, Ordering::SeqCst);
    if counted_ip {
        let mut per_ip = shared.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&peer.ip()) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&peer.ip());
            }
        }
    }
}
