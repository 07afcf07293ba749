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
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use smtps_conn::{Admission, CloseReason, Connection, ProxyPolicy, replies};
use smtps_tls::TlsInfo;

use crate::dispatch::{HostSide, capture_tls, dispatch, resolve};
use crate::error::Error;
use crate::handler::{Context, Handler, Mailbox, SessionInfo, temporary_failure};
use crate::server::Shared;
use crate::turn::{NoSigPipe, Readiness, Turn, turn};
use crate::worker_io::{HOST_TOKEN_BASE, WorkerIo, WorkerRegistry};

/// The token of the worker's waker.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Connections get tokens from here on; listeners use `0..FIRST_CONNECTION`.
const FIRST_CONNECTION: usize = 1 << 16;
/// Connections beyond the limit plus this many are closed without a reply.
const LIMIT_OVERFLOW: usize = 1024;
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
    /// A descriptor held in reserve: when the process runs out (`EMFILE`), it is given up to
    /// accept one waiting client and close it at once, so that the backlog drains instead of
    /// holding clients that edge-triggered readiness would never report again.
    spare_fd: Option<std::fs::File>,
    /// When running out of descriptors was last logged (one line a second at most).
    out_of_fds_logged: Option<Instant>,
    /// The host's own I/O on this worker ([`Handler::worker_io`]).
    worker_io: Option<Box<dyn WorkerIo>>,
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
        let worker_io = match poll.registry().try_clone() {
            Ok(registry) => shared.handler.worker_io(WorkerRegistry::new(registry)),
            Err(source) => {
                return Err(Error::Io {
                    context: "sharing the worker's poll with the host",
                    source,
                });
            }
        };
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
            spare_fd: std::fs::File::open("/dev/null").ok(),
            out_of_fds_logged: None,
            worker_io,
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
        self.mailbox.begin_turn();
        let now = Instant::now();
        if events.is_empty() {
            // Answers posted while a wake-up failed are picked up here.
            self.wake(now);
        }
        let mut host_io = false;
        for event in &*events {
            match event.token() {
                WAKER => self.wake(now),
                Token(i) if i < FIRST_CONNECTION => self.accept(i, now),
                Token(i) if i >= HOST_TOKEN_BASE => {
                    if let Some(io) = &mut self.worker_io {
                        io.ready(i - HOST_TOKEN_BASE, event);
                        host_io = true;
                    }
                }
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
        if host_io {
            // What the host's sockets answered is in the mailbox: apply it in this turn.
            self.wake(now);
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
        self.mailbox.end_turn();
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
        if let Some(deadline) = self.worker_io.as_ref().and_then(|io| io.next_deadline()) {
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
            if !slot
                .side
                .pending
                .iter()
                .any(|pending| pending.decision == completion.decision)
            {
                continue;
            }
            // The engine restarts its idle timer at the latest time it knows: tell it now.
            slot.conn.handle_timeout(now);
            resolve(
                &mut slot.conn,
                &mut slot.side,
                completion.decision,
                completion.verdict,
                &self.shared.control.metrics,
            );
            self.service(index, now);
        }
        for (token, session) in self.mailbox.take_resumes() {
            let Some(index) = token.0.checked_sub(FIRST_CONNECTION) else {
                continue;
            };
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.side.info.id != session {
                continue;
            }
            slot.side.input_holds = slot.side.input_holds.saturating_sub(1);
            if slot.side.input_holds == 0 {
                slot.conn.resume_input(now);
                self.service(index, now);
            }
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
        if let Some(io) = &mut self.worker_io
            && io.next_deadline().is_some_and(|deadline| deadline <= now)
        {
            io.expire(now);
            self.wake(now);
        }
        while let Some(&(deadline, index)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            slot.deadline = None;
            for decision in slot.side.overdue(now, self.shared.config.timeouts.decision) {
                log::warn!(
                    "smtps: session={} host did not decide in time",
                    slot.side.info.id
                );
                resolve(
                    &mut slot.conn,
                    &mut slot.side,
                    decision,
                    temporary_failure(),
                    &self.shared.control.metrics,
                );
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
                    slot.side.settle_all();
                    slot.conn
                        .close(&replies::shutting_down(), CloseReason::Shutdown);
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
                Err(error) if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if self.shed_one(listener_index, &error, now) {
                        continue;
                    }
                    return;
                }
                Err(error) => {
                    log::warn!("smtps: accept failed: {error}");
                    return;
                }
            };
            self.open(socket, peer, listener_index, now);
        }
    }

    /// Out of descriptors: gives up the spare one to accept a waiting client and close it
    /// (the client sees the connection end, and can retry elsewhere or later), then takes the
    /// spare back. Returns whether one was shed (the caller then tries the backlog again).
    fn shed_one(&mut self, listener_index: usize, error: &io::Error, now: Instant) -> bool {
        if self
            .out_of_fds_logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.out_of_fds_logged = Some(now);
            log::warn!(
                "smtps: accept failed: {error}: closing waiting connections at once (raise the \
                 open-file limit, or lower --max-connections)"
            );
        }
        let Some(spare) = self.spare_fd.take() else {
            return false;
        };
        drop(spare);
        self.shared.control.metrics.limit_hit(false);
        let shed = matches!(
            self.listeners.get(listener_index),
            Some(Some(listener)) if listener.accept().is_ok()
        );
        self.spare_fd = std::fs::File::open("/dev/null").ok();
        shed
    }

    fn open(&mut self, mut socket: TcpStream, peer: SocketAddr, listener: usize, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let listener_config = &shared.config.listeners[listener];
        let admission = ProxyPolicy::admit_on(listener_config.proxy.as_ref(), peer.ip());
        if admission == Admission::Refuse {
            log::warn!(
                "smtps: {peer}: not a trusted PROXY protocol source for listener {}: closed without a banner",
                listener_config.addr
            );
            return;
        }
        let limits = &shared.config.limits;
        let total = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        // Behind a balancer the client is known only once the header is read: it is counted
        // then (`dispatch`), not the balancer now.
        let counted_ip = (admission == Admission::Direct).then_some(peer.ip());
        let from_ip = counted_ip.map_or(0, |ip| shared.count_ip(ip));
        let over_limit = total > limits.connections || from_ip > limits.connections_per_ip;
        if over_limit {
            shared
                .control
                .metrics
                .limit_hit(total <= limits.connections);
        }
        if total > limits.connections.saturating_add(LIMIT_OVERFLOW) {
            log::warn!("smtps: {peer}: over the connection limit by far, closed without reply");
            release(&shared, counted_ip);
            return;
        }
        // Replies are written whole; Nagle would hold the last segment of each for an ACK.
        let _ = socket.set_nodelay(true);
        let mode = listener_config.mode;
        let session_config = Arc::clone(&shared.session_configs[listener]);
        let mut conn = match Connection::new(mode, session_config, shared.config.tls.clone(), now) {
            Ok(conn) => conn,
            Err(error) => {
                log::error!("smtps: {peer}: cannot start the connection: {error}");
                release(&shared, counted_ip);
                return;
            }
        };
        conn.set_timeouts(shared.config.timeouts);
        // Right after `new`, expecting the header always takes effect.
        let awaiting_header = admission == Admission::ExpectHeader && conn.expect_proxy_header();
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
            release(&shared, counted_ip);
            return;
        }
        let local = socket.local_addr().unwrap_or(peer);
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "smtps: session={id} event=connect peer={peer} local={local} mode={mode}{}{}",
            if awaiting_header {
                " proxy=expected"
            } else {
                ""
            },
            if over_limit { " over_limit=true" } else { "" }
        );
        shared.control.metrics.opened();
        self.slots[index] = Some(Slot {
            socket,
            conn,
            side: HostSide {
                info: SessionInfo {
                    id,
                    peer,
                    local,
                    proxied_by: None,
                    proxy: None,
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
                pending: VecDeque::new(),
                input_holds: 0,
                over_limit,
                counted_ip,
                awaiting_header,
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

    /// Serves one connection ([`turn`]), then closes it or schedules its timer; the host's I/O
    /// then sends what the host's calls queued ([`WorkerIo::served`]).
    fn service(&mut self, index: usize, now: Instant) {
        self.serve(index, now);
        if let Some(io) = &mut self.worker_io {
            io.served();
        }
    }

    fn serve(&mut self, index: usize, now: Instant) {
        let token = Token(index + FIRST_CONNECTION);
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        let shared = &*self.shared;
        let mailbox = &self.mailbox;
        let shutting_down = self.shutting_down;
        let worker_io = &mut self.worker_io;
        let side = &mut slot.side;
        let outcome = turn(
            &mut slot.conn,
            &mut &slot.socket,
            &mut NoSigPipe(&slot.socket),
            &mut slot.readiness,
            &mut self.read_buf,
            now,
            &mut |conn| {
                let any = dispatch(shared, conn, side, mailbox, token, worker_io);
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
            .front()
            .map(|pending| pending.since + shared.config.timeouts.decision);
        let deadline = match (slot.conn.poll_timeout(), decision_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A deadline that moved later (every read moves the idle timer) keeps its earlier
        // entry: when that fires, the turn finds nothing due and schedules the real one. Most
        // turns thus leave the timer set alone.
        let keep = matches!((slot.deadline, deadline), (Some(old), Some(new)) if new >= old);
        if !keep {
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
        slot.side.settle_all();
        self.shared.control.metrics.closed(
            slot.side.info.listener,
            &reason,
            slot.side.info.tls.as_ref().map(TlsInfo::version_name),
            slot.conn.is_handshaking(),
        );
        log::info!(
            "smtps: session={} event=close reason={reason} messages={} duration_ms={}",
            slot.side.info.id,
            slot.side.info.messages,
            slot.started.elapsed().as_millis()
        );
        if let Some(host) = slot.side.host.take() {
            let mut cx = Context {
                info: &slot.side.info,
                worker_io: self
                    .worker_io
                    .as_deref_mut()
                    .map(|io| io as &mut dyn WorkerIo),
                defer: None,
                deferred: None,
                gate: None,
                paused: 0,
            };
            self.shared.handler.disconnect(host, &mut cx, reason);
        }
        release(&self.shared, slot.side.counted_ip);
        self.free.push(index);
        self.live -= 1;
    }
}

/// During a shutdown, an idle session is told `421 4.3.2` and closed; one in a transaction may
/// finish within the grace.
fn shutdown_if_idle<S>(conn: &mut Connection, side: &mut HostSide<S>) {
    if !conn.in_transaction() {
        side.settle_all();
        conn.close(&replies::shutting_down(), CloseReason::Shutdown);
    }
}

/// Gives back a connection's place in the limits (`counted_ip`: where it was counted per
/// address, if it was).
fn release<H>(shared: &Shared<H>, counted_ip: Option<IpAddr>) {
    shared.connections.fetch_sub(1, Ordering::SeqCst);
    if let Some(ip) = counted_ip {
        shared.release_ip(ip);
    }
}
