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
    info: SessionInfo,
    host: Option<S>,
    /// The decision the host deferred, if any.
    pending: Option<Pending>,
    over_limit: bool,
    /// The socket may hold unread input (edge-triggered: until a read says otherwise).
    readable: bool,
    /// The socket may take output.
    writable: bool,
    /// The peer shut its side or the socket failed: read to the end whatever the read sizes.
    hangup: bool,
    /// On the ready queue.
    queued: bool,
    /// The deadline registered in `Worker::timers`.
    deadline: Option<Instant>,
    started: Instant,
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
            if let Err(error) = self.poll.poll(&mut events, Some(timeout))
                && error.kind() != io::ErrorKind::Interrupted
            {
                log::error!("smtps: worker {} poll failed: {error}", self.index);
                break;
            }
            let now = Instant::now();
            if events.is_empty() {
                // Answers posted while a wake-up failed are picked up here.
                self.wake(now);
            }
            for event in &events {
                match event.token() {
                    WAKER => self.wake(now),
                    Token(i) if i < FIRST_CONNECTION => self.accept(i, now),
                    Token(i) => {
                        let index = i - FIRST_CONNECTION;
                        if let Some(Some(slot)) = self.slots.get_mut(index) {
                            let hangup = event.is_read_closed() || event.is_error();
                            slot.hangup |= hangup;
                            slot.readable |= hangup || event.is_readable();
                            slot.writable |= event.is_writable() || event.is_write_closed();
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
            if self.shutting_down && self.live == 0 {
                break;
            }
        }
        log::debug!("smtps: worker {} stopped", self.index);
    }

    /// How long the loop may sleep: not at all with connections ready, else until the next
    /// deadline (a connection's, or the shutdown's), at most [`MAX_SLEEP`].
    fn sleep_time(&self, now: Instant) -> Duration {
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
            if slot.info.id != completion.session {
                continue;
            }
            match &slot.pending {
                Some(pending) if pending.decision == completion.decision => {}
                _ => continue,
            }
            // The engine restarts its idle timer at the latest time it knows: tell it now.
            slot.conn.handle_timeout(now);
            resolve(slot, completion.verdict);
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
            if let Some(pending) = &slot.pending
                && now.duration_since(pending.since) >= self.shared.config.timeouts.decision
            {
                log::warn!(
                    "smtps: session={} host did not decide in time",
                    slot.info.id
                );
                resolve(slot, temporary_failure());
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
                    slot.pending = None;
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
            readable: true,
            writable: true,
            hangup: false,
            queued: false,
            deadline: None,
            started: now,
        });
        self.live += 1;
        self.service(index, now);
    }

    /// One connection's turn: read, dispatch events, write, as long as anything moves and the
    /// budget lasts; then schedule its timer, or close it.
    fn service(&mut self, index: usize, now: Instant) {
        let token = Token(index + FIRST_CONNECTION);
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        let shared = &*self.shared;
        let mut budget_left = TURN_BUDGET;
        loop {
            let mut progressed = false;
            if slot.readable && slot.conn.wants_read() {
                match slot
                    .conn
                    .read_from(now, &mut slot.socket, &mut self.read_buf)
                {
                    Ok(0) => {}
                    Ok(n) => {
                        progressed = true;
                        // A short read emptied the socket's buffer: the next arrival brings
                        // a new event, no need to read (and get `WouldBlock`) before it.
                        slot.readable = n == self.read_buf.len() || slot.hangup;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        slot.readable = false;
                    }
                    // The engine closed itself (with the error kind as its reason).
                    Err(_) => progressed = true,
                }
            }
            progressed |= dispatch(shared, slot, &self.mailbox, token);
            if self.shutting_down && !slot.conn.is_closed() {
                shutdown_if_idle(slot);
            }
            while slot.writable && slot.conn.wants_write() {
                match slot.conn.write_to(&mut NoSigPipe(&slot.socket)) {
                    Ok(0) => break,
                    Ok(_) => progressed = true,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        slot.writable = false;
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => progressed = true,
                }
            }
            if slot.conn.is_finished() {
                // A closing session may still report an aborted message.
                dispatch(shared, slot, &self.mailbox, token);
                self.finish(index);
                return;
            }
            budget_left -= 1;
            if !progressed {
                break;
            }
            if budget_left == 0 {
                let more = (slot.readable && slot.conn.wants_read())
                    || (slot.writable && slot.conn.wants_write());
                if more && !slot.queued {
                    slot.queued = true;
                    self.ready.push_back(index);
                }
                break;
            }
        }
        capture_tls(slot);
        let decision_deadline = slot
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
            slot.info.id,
            slot.info.messages,
            slot.started.elapsed().as_millis()
        );
        if let Some(host) = slot.host.take() {
            let mut cx = Context {
                info: &slot.info,
                defer: None,
                deferred: false,
            };
            self.shared.handler.disconnect(host, &mut cx, reason);
        }
        release(&self.shared, slot.info.peer);
        self.free.push(index);
        self.live -= 1;
    }
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
    slot: &mut Slot<H::Session>,
    mailbox: &Arc<Mailbox>,
    token: Token,
) -> bool {
    let mut any = false;
    let handler = &shared.handler;
    // The host sees what TLS negotiated from the first event on.
    capture_tls(slot);
    loop {
        let Slot {
            conn,
            host,
            info,
            pending,
            over_limit,
            ..
        } = &mut *slot;
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
            Some(verdict) => resolve(slot, verdict),
            None if deferred => {}
            None => {
                // `Answer::Deferred` without taking the responder: the host can never answer.
                log::error!(
                    "smtps: session={} handler deferred without a responder",
                    slot.info.id
                );
                resolve(slot, temporary_failure());
            }
        }
    }
    any
}

/// Applies a verdict to the outstanding decision and records what it changed.
fn resolve<S>(slot: &mut Slot<S>, verdict: Verdict) {
    let Some(Pending {
        decision, update, ..
    }) = slot.pending.take()
    else {
        return;
    };
    let info = &mut slot.info;
    let accepted = matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_));
    let code = match &verdict {
        Verdict::AcceptWith(reply) | Verdict::Reject(reply) => reply.code().as_u16(),
        _ => 0,
    };
    if let Err(error) = slot.conn.decide(decision, verdict) {
        log::warn!("smtps: session={} invalid decision: {error}", info.id);
        // A verdict that does not fit must not leave the client hanging.
        let _ = slot.conn.decide(decision, temporary_failure());
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
fn capture_tls<S>(slot: &mut Slot<S>) {
    if slot.info.tls.is_some() {
        return;
    }
    if let Some(tls) = slot.conn.tls_info() {
        log::info!(
            "smtps: session={} event=tls version={} cipher={} group={} resumed={} sni={}",
            slot.info.id,
            tls.version_name(),
            tls.cipher_suite_name(),
            tls.key_exchange_group_name().unwrap_or("-"),
            tls.resumed,
            tls.server_name.as_deref().unwrap_or("-"),
        );
        slot.info.tls = Some(tls.clone());
    }
}

/// During a shutdown, an idle session is told `421 4.3.2` and closed; one in a transaction may
/// finish within the grace.
fn shutdown_if_idle<S>(slot: &mut Slot<S>) {
    let busy = slot
        .conn
        .session()
        .is_some_and(smtps_proto::ServerSession::in_transaction);
    if !busy {
        slot.pending = None;
        slot.conn.close(&shutdown_reply(), CloseReason::Shutdown);
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
