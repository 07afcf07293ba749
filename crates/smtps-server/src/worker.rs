//! One worker: a `mio::Poll`, its share of the listeners, and its connections — a driver of
//! [`smtps_conn::Connection`] and nothing more. It owns the sockets, the slab, the limits
//! accounting, the wake-ups and the [`Handler`] plumbing; TLS, SMTP, timers, back-pressure and
//! close reasons are the engine's.
//!
//! Sockets are registered once for both readable and writable. mio is edge-triggered, so the
//! worker remembers per connection whether the socket may still hold input (`readable`) or
//! take output (`writable`) until a read or write says `WouldBlock`. A connection that used up
//! its turn with work left goes on the ready queue and is served again before the loop waits:
//! the budget keeps one busy client from starving the others, and never forgets one.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use smtps_conn::{CloseReason, Connection};
use smtps_proto::{DecisionId, EnhancedStatus, Event, Reply, ReplyCode, Verdict};
use socket2::SockRef;

use crate::error::Error;
use crate::handler::{
    Answer, Context, Credentials, DeferSlot, Handler, Mailbox, SessionInfo, temporary_failure,
};
use crate::server::Shared;

/// The token of the worker's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Connections get tokens from here on; listeners use `0..FIRST_CONNECTION`.
const FIRST_CONNECTION: usize = 1 << 16;
/// Connections beyond the limit plus this many are closed without a reply.
const LIMIT_OVERFLOW: usize = 1024;
/// Read–dispatch–write passes one connection gets per turn before others are served.
const TURN_BUDGET: usize = 16;
/// The longest the loop sleeps: answers posted while a wake-up failed are picked up by then.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(crate) struct Worker<H: Handler> {
    index: usize,
    shared: Arc<Shared<H>>,
    poll: Poll,
    listeners: Vec<Option<TcpListener>>,
    mailbox: Arc<Mailbox>,
    slots: Vec<Option<Slot<H::Session>>>,
    free: Vec<usize>,
    live: usize,
    /// The scratch buffer every connection reads into.
    read_buf: Vec<u8>,
    /// Connections whose turn ended with work left.
    ready: VecDeque<usize>,
    /// Each connection's next deadline, earliest first.
    timers: BTreeSet<(Instant, usize)>,
    shutting_down: bool,
}

/// One connection as the driver sees it: the socket, the engine, and the host's side.
struct Slot<S> {
    socket: TcpStream,
    conn: Connection,
    side: HostSide<S>,
    readiness: Readiness,
    /// On the ready queue.
    queued: bool,
    /// The deadline registered in `Worker::timers`.
    deadline: Option<Instant>,
    started: Instant,
}

/// The host's side of a connection: what it knows, its state, the decision it deferred.
struct HostSide<S> {
    info: SessionInfo,
    host: Option<S>,
    /// The decision the host deferred, if any.
    pending: Option<Pending>,
    over_limit: bool,
}

/// What the socket may do, as far as the last events and calls tell (edge-triggered).
#[derive(Debug, Clone, Copy)]
struct Readiness {
    /// The socket may hold unread input, until a read says otherwise.
    readable: bool,
    /// The socket may take output, until a write says `WouldBlock`.
    writable: bool,
    /// The peer shut its side or the socket failed: read to the end whatever the read sizes.
    hangup: bool,
}

/// How a connection's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Closed and every octet sent: close the socket.
    Finished,
    /// Nothing more can move until the next readiness, answer or timer.
    Waiting,
    /// The budget ran out with work left: serve it again before the loop sleeps.
    MoreLeft,
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
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            read_buf: vec![0; 64 * 1024],
            ready: VecDeque::new(),
            timers: BTreeSet::new(),
            shutting_down: false,
        })
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.sleep_time(Instant::now());
            if let Err(error) = self.turn(&mut events, timeout) {
                log::error!("smtps: worker {} poll failed: {error}", self.index);
                break;
            }
            if self.is_finished() {
                break;
            }
        }
        log::debug!("smtps: worker {} stopped", self.index);
    }

    /// One pass of the loop: waits up to `timeout` for readiness, then serves what is ready,
    /// the ready queue and the timers that are due. Returns how many readiness events came.
    ///
    /// # Errors
    /// The poll's own failure (not `EINTR`).
    pub(crate) fn turn(&mut self, events: &mut Events, timeout: Duration) -> io::Result<usize> {
        if let Err(error) = self.poll.poll(events, Some(timeout))
            && error.kind() != io::ErrorKind::Interrupted
        {
            return Err(error);
        }
        let now = Instant::now();
        if events.is_empty() {
            // Answers posted while a wake-up failed are picked up here.
            self.wake(now);
        }
        for event in &*events {
            match event.token() {
                WAKER => self.wake(now),
                Token(i) if i < FIRST_CONNECTION => self.accept(i, now),
                Token(i) => {
                    let index = i - FIRST_CONNECTION;
                    if let Some(Some(slot)) = self.slots.get_mut(index) {
                        let hangup = event.is_read_closed() || event.is_error();
                        let readiness = &mut slot.readiness;
                        readiness.hangup |= hangup;
                        readiness.readable |= hangup || event.is_readable();
                        readiness.writable |= event.is_writable() || event.is_write_closed();
                    }
                    self.service(index, now);
                }
            }
        }
        for _ in 0..self.ready.len() {
            if let Some(index) = self.ready.pop_front() {
                if let Some(Some(slot)) = self.slots.get_mut(index) {
                    slot.queued = false;
                }
                self.service(index, now);
            }
        }
        self.fire_timers(now);
        Ok(events.iter().count())
    }

    /// Whether the worker is done: shut down, and every connection closed.
    pub(crate) fn is_finished(&self) -> bool {
        self.shutting_down && self.live == 0
    }

    /// The poll's descriptor: readable whenever the worker has something to do (a socket, an
    /// answer from another thread, a shutdown request).
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.as_raw_fd()
    }

    /// How long the loop may sleep: not at all with connections ready, else until the next
    /// deadline (a connection's, or the shutdown's), at most [`MAX_SLEEP`].
    pub(crate) fn sleep_time(&self, now: Instant) -> Duration {
        if !self.ready.is_empty() {
            return Duration::ZERO;
        }
        let mut wake_at = now + MAX_SLEEP;
        if let Some(&(deadline, _)) = self.timers.first() {
            wake_at = wake_at.min(deadline);
        }
        if let Some(deadline) = self.shutdown_deadline() {
            wake_at = wake_at.min(deadline);
        }
        wake_at.saturating_duration_since(now)
    }

    fn shutdown_deadline(&self) -> Option<Instant> {
        if !self.shutting_down {
            return None;
        }
        *self
            .shared
            .control
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the answers other threads posted, and notices a shutdown request.
    fn wake(&mut self, now: Instant) {
        for completion in self.mailbox.take() {
            let index = completion.token.0 - FIRST_CONNECTION;
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.side.info.id != completion.session {
                continue;
            }
            match &slot.side.pending {
                Some(pending) if pending.decision == completion.decision => {}
                _ => continue,
            }
            // The engine restarts its idle timer at the latest time it knows: tell it now.
            slot.conn.handle_timeout(now);
            resolve(&mut slot.conn, &mut slot.side, completion.verdict);
            self.service(index, now);
        }
        if !self.shutting_down && self.shared.control.shutdown.load(Ordering::SeqCst) {
            self.begin_shutdown(now);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        for listener in &mut self.listeners {
            if let Some(mut listener) = listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        for index in 0..self.slots.len() {
            self.service(index, now);
        }
    }

    /// Serves the connections whose deadline passed: the host's decision timeout here, every
    /// other timer in the engine; and at the end of a shutdown's grace, everyone.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(deadline, index)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            slot.deadline = None;
            if let Some(pending) = &slot.side.pending
                && now.duration_since(pending.since) >= self.shared.config.timeouts.decision
            {
                log::warn!(
                    "smtps: session={} host did not decide in time",
                    slot.side.info.id
                );
                resolve(&mut slot.conn, &mut slot.side, temporary_failure());
            }
            slot.conn.handle_timeout(now);
            self.service(index, now);
        }
        if self
            .shutdown_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            for index in 0..self.slots.len() {
                if let Some(Some(slot)) = self.slots.get_mut(index) {
                    slot.side.pending = None;
                    slot.conn.close(&shutdown_reply(), CloseReason::Shutdown);
                    self.service(index, now);
                }
            }
        }
    }

    fn accept(&mut self, listener_index: usize, now: Instant) {
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
            self.open(socket, peer, listener_index, now);
        }
    }

    fn open(&mut self, mut socket: TcpStream, peer: SocketAddr, listener: usize, now: Instant) {
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
            release(&shared, peer);
            return;
        }
        // Replies are written whole; Nagle would hold the last segment of each for an ACK.
        let _ = socket.set_nodelay(true);
        let mode = shared.config.listeners[listener].mode;
        let session_config = Arc::clone(&shared.session_configs[listener]);
        let mut conn = match Connection::new(mode, session_config, shared.config.tls.clone(), now) {
            Ok(conn) => conn,
            Err(error) => {
                log::error!("smtps: {peer}: cannot start the connection: {error}");
                release(&shared, peer);
                return;
            }
        };
        conn.set_timeouts(shared.config.timeouts);
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let token = Token(index + FIRST_CONNECTION);
        if let Err(error) = self.poll.registry().register(
            &mut socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("smtps: {peer}: cannot register connection: {error}");
            self.free.push(index);
            release(&shared, peer);
            return;
        }
        let local = socket.local_addr().unwrap_or(peer);
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "smtps: session={id} event=connect peer={peer} local={local} mode={mode}{}",
            if over_limit { " over_limit=true" } else { "" }
        );
        self.slots[index] = Some(Slot {
            socket,
            conn,
            side: HostSide {
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
                host: None,
                pending: None,
                over_limit,
            },
            readiness: Readiness {
                readable: true,
                writable: true,
                hangup: false,
            },
            queued: false,
            deadline: None,
            started: now,
        });
        self.live += 1;
        self.service(index, now);
    }

    /// Serves one connection ([`turn`]), then closes it or schedules its timer.
    fn service(&mut self, index: usize, now: Instant) {
        let token = Token(index + FIRST_CONNECTION);
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        let shared = &*self.shared;
        let mailbox = &self.mailbox;
        let shutting_down = self.shutting_down;
        let side = &mut slot.side;
        let outcome = turn(
            &mut slot.conn,
            &mut &slot.socket,
            &mut NoSigPipe(&slot.socket),
            &mut slot.readiness,
            &mut self.read_buf,
            now,
            &mut |conn| {
                let any = dispatch(shared, conn, side, mailbox, token);
                if shutting_down && !conn.is_closed() {
                    shutdown_if_idle(conn, side);
                }
                any
            },
        );
        match outcome {
            Turn::Finished => {
                self.finish(index);
                return;
            }
            Turn::MoreLeft if !slot.queued => {
                slot.queued = true;
                self.ready.push_back(index);
            }
            Turn::MoreLeft | Turn::Waiting => {}
        }
        capture_tls(&slot.conn, &mut slot.side.info);
        let decision_deadline = slot
            .side
            .pending
            .as_ref()
            .map(|pending| pending.since + shared.config.timeouts.decision);
        let deadline = match (slot.conn.poll_timeout(), decision_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline != slot.deadline {
            if let Some(old) = slot.deadline {
                self.timers.remove(&(old, index));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, index));
            }
            slot.deadline = deadline;
        }
    }

    /// Drops a finished connection and tells the host.
    fn finish(&mut self, index: usize) {
        let Some(mut slot) = self.slots.get_mut(index).and_then(Option::take) else {
            return;
        };
        if let Some(deadline) = slot.deadline.take() {
            self.timers.remove(&(deadline, index));
        }
        // No `deregister`: closing the socket (dropping `slot`) removes it from the epoll set,
        // one system call fewer per connection.
        let reason = slot
            .conn
            .close_reason()
            .cloned()
            .unwrap_or(CloseReason::ClientClosed);
        log::info!(
            "smtps: session={} event=close reason={reason} messages={} duration_ms={}",
            slot.side.info.id,
            slot.side.info.messages,
            slot.started.elapsed().as_millis()
        );
        if let Some(host) = slot.side.host.take() {
            let mut cx = Context {
                info: &slot.side.info,
                defer: None,
                deferred: false,
            };
            self.shared.handler.disconnect(host, &mut cx, reason);
        }
        release(&self.shared, slot.side.info.peer);
        self.free.push(index);
        self.live -= 1;
    }
}

/// One connection's turn: read, hand events to `host`, write, as long as anything moves and
/// [`TURN_BUDGET`] lasts. Generic over the socket so that tests can drive it with one that
/// reads short, says `WouldBlock` or ends at any point.
fn turn(
    conn: &mut Connection,
    reader: &mut dyn io::Read,
    writer: &mut dyn Write,
    readiness: &mut Readiness,
    buf: &mut [u8],
    now: Instant,
    host: &mut dyn FnMut(&mut Connection) -> bool,
) -> Turn {
    for _ in 0..TURN_BUDGET {
        let mut progressed = false;
        if readiness.readable && conn.wants_read() {
            match conn.read_from(now, reader, buf) {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    // A short read emptied the socket's buffer: the next arrival brings a new
                    // event, no need to read (and get `WouldBlock`) before it.
                    readiness.readable = n == buf.len() || readiness.hangup;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    readiness.readable = false;
                }
                // The engine closed itself (with the error kind as its reason).
                Err(_) => progressed = true,
            }
        }
        progressed |= host(conn);
        while readiness.writable && conn.wants_write() {
            match conn.write_to(writer) {
                Ok(0) => break,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    readiness.writable = false;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // Octets went out, or the engine closed itself on the error.
                Ok(_) | Err(_) => progressed = true,
            }
        }
        if conn.is_finished() {
            // A closing session may still report an aborted message.
            host(conn);
            return Turn::Finished;
        }
        if !progressed {
            return Turn::Waiting;
        }
    }
    let more =
        (readiness.readable && conn.wants_read()) || (readiness.writable && conn.wants_write());
    if more { Turn::MoreLeft } else { Turn::Waiting }
}

/// Writes with `MSG_NOSIGNAL`: a client that reset its connection makes the write fail with
/// `EPIPE` instead of raising `SIGPIPE`, which would kill a host (a C program) that has not
/// ignored it. A library must never hurt its host.
struct NoSigPipe<'a>(&'a TcpStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SockRef::from(self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Drains the connection's events, asking the host. Returns whether any came.
fn dispatch<H: Handler>(
    shared: &Shared<H>,
    conn: &mut Connection,
    side: &mut HostSide<H::Session>,
    mailbox: &Arc<Mailbox>,
    token: Token,
) -> bool {
    let mut any = false;
    let handler = &shared.handler;
    // The host sees what TLS negotiated from the first event on.
    capture_tls(conn, &mut side.info);
    loop {
        let HostSide {
            host,
            info,
            pending,
            over_limit,
        } = &mut *side;
        let Some(event) = conn.poll_event() else {
            break;
        };
        any = true;
        let decision = event.decision();
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
        let mut refusal = None;
        let answer = match event {
            Event::Connect { .. } if *over_limit => {
                conn.close(&too_many_connections(), CloseReason::Limit);
                continue;
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
                update = Update::Mail(from.address());
                host.as_mut()
                    .map(|h| handler.mail(h, &mut cx, &from, &params))
            }
            Event::Rcpt { to, params, .. } => {
                update = Update::Rcpt(to.address());
                host.as_mut()
                    .map(|h| handler.rcpt(h, &mut cx, &to, &params))
            }
            Event::DataStart { .. } => host.as_mut().map(|h| handler.data_start(h, &mut cx)),
            Event::BodyChunk(chunk) => {
                if let Some(h) = host.as_mut() {
                    refusal = handler.body_chunk(h, &mut cx, chunk).err();
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
                log::info!("smtps: session={} event=too_many_errors", cx.info.id);
                None
            }
            _ => None,
        };
        let deferred = cx.deferred;
        if let Some(reply) = refusal {
            conn.refuse_message(reply);
        }
        let Some(decision) = decision else { continue };
        *pending = Some(Pending {
            decision,
            since: Instant::now(),
            update,
        });
        match answer.and_then(Answer::into_verdict) {
            Some(verdict) => resolve(conn, side, verdict),
            None if deferred => {}
            None => {
                // `Answer::Deferred` without taking the responder: the host can never answer.
                log::error!(
                    "smtps: session={} handler deferred without a responder",
                    side.info.id
                );
                resolve(conn, side, temporary_failure());
            }
        }
    }
    any
}

/// Applies a verdict to the outstanding decision and records what it changed.
fn resolve<S>(conn: &mut Connection, side: &mut HostSide<S>, verdict: Verdict) {
    let Some(Pending {
        decision, update, ..
    }) = side.pending.take()
    else {
        return;
    };
    let info = &mut side.info;
    let accepted = matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_));
    let code = match &verdict {
        Verdict::AcceptWith(reply) | Verdict::Reject(reply) => reply.code().as_u16(),
        _ => 0,
    };
    if let Err(error) = conn.decide(decision, verdict) {
        log::warn!("smtps: session={} invalid decision: {error}", info.id);
        // A verdict that does not fit must not leave the client hanging.
        let _ = conn.decide(decision, temporary_failure());
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

/// Records (and logs) what TLS negotiated, once it has.
fn capture_tls(conn: &Connection, info: &mut SessionInfo) {
    if info.tls.is_some() {
        return;
    }
    if let Some(tls) = conn.tls_info() {
        log::info!(
            "smtps: session={} event=tls version={} cipher={} group={} resumed={} sni={}",
            info.id,
            tls.version_name(),
            tls.cipher_suite_name(),
            tls.key_exchange_group_name().unwrap_or("-"),
            tls.resumed,
            tls.server_name.as_deref().unwrap_or("-"),
        );
        info.tls = Some(tls.clone());
    }
}

/// During a shutdown, an idle session is told `421 4.3.2` and closed; one in a transaction may
/// finish within the grace.
fn shutdown_if_idle<S>(conn: &mut Connection, side: &mut HostSide<S>) {
    if !conn.in_transaction() {
        side.pending = None;
        conn.close(&shutdown_reply(), CloseReason::Shutdown);
    }
}

fn shutdown_reply() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 3, 2),
        "Service shutting down, try again later",
    )
}

fn too_many_connections() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 7, 0),
        "Too many connections, try again later",
    )
}

/// Gives back a connection's place in the limits.
fn release<H>(shared: &Shared<H>, peer: SocketAddr) {
    shared.connections.fetch_sub(1, Ordering::SeqCst);
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(count) = per_ip.get_mut(&peer.ip()) {
        *count -= 1;
        if *count == 0 {
            per_ip.remove(&peer.ip());
        }
    }
}

#[cfg(test)]
mod tests {
    //! The read/write loop ([`turn`]) driven by a socket whose octets arrive in random pieces,
    //! which takes writes in random pieces, says `WouldBlock` and ends at random points, with edge-triggered readiness modelled exactly: a new event
    //! only when new octets arrive or room frees up. A turn that forgets a connection with work
    //! left shows up as a session that never finishes.

    use std::io::Read;
    use std::sync::Arc;

    use smtps_conn::Mode;
    use smtps_proto::SessionConfig;

    use super::*;

    /// A small deterministic generator (xorshift64*), one per seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            usize::try_from(x % (n.max(1) as u64)).unwrap_or(0)
        }
    }

    /// The client's side of the socket: what it sent, how much of it has arrived.
    struct Incoming<'a> {
        sent: &'a [u8],
        arrived: usize,
        read: usize,
        /// The client closed after sending everything.
        closes: bool,
    }

    impl Read for Incoming<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.read == self.arrived {
                if self.arrived == self.sent.len() && self.closes {
                    return Ok(0);
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // A stream socket returns what has arrived, up to the buffer: a short read means
            // the socket is empty (the driver relies on that, as epoll users do). Short reads
            // come from octets arriving in random pieces.
            let n = (self.arrived - self.read).min(buf.len());
            buf[..n].copy_from_slice(&self.sent[self.read..self.read + n]);
            self.read += n;
            Ok(n)
        }
    }

    /// The socket's send buffer: `room` octets free; the client reads at its own pace.
    struct Outgoing<'a> {
        received: Vec<u8>,
        room: usize,
        rng: &'a mut Rng,
    }

    impl Write for Outgoing<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = 1 + self.rng.below(buf.len().min(self.room));
            self.received.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Outcome {
        replies: String,
        body: Vec<u8>,
        finished: bool,
    }

    /// Runs one session over the random socket: octets arrive and room frees up in random
    /// amounts, one readiness event each time, until the connection finishes or nothing more
    /// can happen.
    fn run(seed: u64, sent: &[u8], closes: bool) -> Outcome {
        let mut write_rng = Rng(seed.rotate_left(17) | 1);
        let mut net_rng = Rng(seed.rotate_left(33) | 1);
        let now = Instant::now();
        let mut conn = Connection::new(
            Mode::Plain,
            Arc::new(SessionConfig::new("mx.test")),
            None,
            now,
        )
        .expect("connection");
        let mut incoming = Incoming {
            sent,
            arrived: 0,
            read: 0,
            closes,
        };
        let mut outgoing = Outgoing {
            received: Vec::new(),
            room: 4096,
            rng: &mut write_rng,
        };
        let mut readiness = Readiness {
            readable: true,
            writable: true,
            hangup: false,
        };
        let mut body = Vec::new();
        let mut buf = vec![0u8; 1024];
        let mut host = |conn: &mut Connection| {
            let mut any = false;
            while let Some(event) = conn.poll_event() {
                any = true;
                if let Event::BodyChunk(chunk) = &event {
                    body.extend_from_slice(chunk);
                }
                if let Some(decision) = event.decision() {
                    conn.decide(decision, Verdict::Accept).expect("decide");
                }
            }
            any
        };
        let mut finished = false;
        for _ in 0..200_000 {
            let mut outcome = turn(
                &mut conn,
                &mut incoming,
                &mut outgoing,
                &mut readiness,
                &mut buf,
                now,
                &mut host,
            );
            // The ready queue: served again before the loop sleeps, without a new event.
            while outcome == Turn::MoreLeft {
                outcome = turn(
                    &mut conn,
                    &mut incoming,
                    &mut outgoing,
                    &mut readiness,
                    &mut buf,
                    now,
                    &mut host,
                );
            }
            if outcome == Turn::Finished {
                finished = true;
                break;
            }
            // The network: more octets arrive, the client reads some replies. Each is an edge.
            let mut event = false;
            if incoming.arrived < sent.len() {
                // Sometimes a burst: more than one turn's budget of reads.
                let step = if net_rng.below(4) == 0 {
                    sent.len()
                } else {
                    1 + net_rng.below(3000)
                };
                incoming.arrived = (incoming.arrived + step).min(sent.len());
                readiness.readable = true;
                event = true;
            } else if closes && !readiness.hangup {
                readiness.hangup = true;
                readiness.readable = true;
                event = true;
            }
            if outgoing.room < 4096 {
                outgoing.room = 4096;
                readiness.writable = true;
                event = true;
            }
            if !event {
                // Nothing will ever wake this connection again.
                break;
            }
        }
        Outcome {
            replies: String::from_utf8_lossy(&outgoing.received).into_owned(),
            body,
            finished,
        }
    }

    fn message() -> (Vec<u8>, Vec<u8>) {
        let mut body = Vec::new();
        for i in 0..3000 {
            if i % 7 == 0 {
                body.extend_from_slice(b".");
            }
            body.extend_from_slice(format!("line {i} of the message body\r\n").as_bytes());
        }
        let mut stuffed = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        (body, stuffed)
    }

    #[test]
    fn turns_deliver_every_message_whatever_the_socket_does() {
        let (body, stuffed) = message();
        let mut sent = b"EHLO c.test\r\n".to_vec();
        for _ in 0..2 {
            sent.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
            sent.extend_from_slice(&stuffed);
            sent.extend_from_slice(b".\r\n");
        }
        sent.extend_from_slice(b"QUIT\r\n");
        for seed in 1..=60u64 {
            let closes = seed % 2 == 0;
            let outcome = run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), &sent, closes);
            assert!(
                outcome.finished,
                "seed {seed}: the session stalled: {:?}",
                &outcome.replies[outcome.replies.len().saturating_sub(300)..]
            );
            assert_eq!(
                outcome.replies.matches("250 2.0.0").count(),
                2,
                "seed {seed}: {}",
                outcome.replies
            );
            assert!(
                outcome.replies.ends_with("221 2.0.0 Bye\r\n") || outcome.replies.contains("221 ")
            );
            assert_eq!(outcome.body.len(), body.len() * 2, "seed {seed}");
            assert!(outcome.body.starts_with(&body) && outcome.body.ends_with(&body));
        }
    }

    #[test]
    fn turns_end_a_session_cut_at_any_point_without_acknowledging_it() {
        let (_, stuffed) = message();
        let mut sent =
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n".to_vec();
        sent.extend_from_slice(&stuffed);
        sent.extend_from_slice(b".\r\n");
        let mut rng = Rng(7);
        for seed in 1..=60u64 {
            let cut = rng.below(sent.len());
            let outcome = run(seed.wrapping_mul(0x51_7CC1_B727_220A), &sent[..cut], true);
            assert!(outcome.finished, "seed {seed}: cut at {cut}: not closed");
            assert!(
                !outcome.replies.contains("250 2.0.0"),
                "seed {seed}: a message cut at {cut} of {} was acknowledged",
                sent.len()
            );
        }
    }
}
