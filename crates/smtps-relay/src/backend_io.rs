//! The relay's backend connections, on the worker threads themselves
//! ([`smtps_server::WorkerIo`]): each worker polls the backend sockets of its own sessions
//! beside their client sockets, so a deferred decision is sent, answered and applied on one
//! thread, with no hand-off.
//!
//! This module owns sockets, TLS to the backend and the timers; each connection's
//! conversation is a [`BackendClient`], which knows nothing of I/O.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mio::Interest;
use mio::event::Event;
use mio::net::TcpStream;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use smtps_proto::Verdict;
use smtps_server::{InputGate, WorkerIo, WorkerRegistry};

use crate::backend::{BackendConfig, BackendError, host_of, resolve};
use crate::client::{BackendClient, Command, Job, broken, refuse_message, unreachable};

/// Socket reads at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A client's input pauses when more of its message than this waits for the backend
/// ([`crate::relay`]), so a slow backend costs the front bounded memory per session...
pub(crate) const PAUSE_ABOVE: usize = 1024 * 1024;
/// ...and resumes once the backend has taken all but this.
const RESUME_BELOW: usize = 256 * 1024;

/// One backend connection.
struct Conn {
    session: u64,
    client: BackendClient,
    socket: TcpStream,
    /// Addresses still to try if this connect fails.
    fallback: Vec<SocketAddr>,
    connecting: bool,
    tls: Option<Box<ClientConnection>>,
    /// Plaintext octets the socket has not taken yet (without TLS).
    unsent: Outbox,
    /// The client's input, paused while too much of its message waits for the backend.
    gate: Option<InputGate>,
    /// When the backend's answer is due, if one is awaited.
    deadline: Option<Instant>,
    /// The time of this connection's earliest entry in the timer heap (later entries with
    /// other times are stale).
    timer_at: Option<Instant>,
    /// Distinguishes this connection from earlier ones in the same slot.
    generation: u64,
}

/// One worker's backend connections.
pub(crate) struct RelayIo {
    config: Arc<BackendConfig>,
    registry: WorkerRegistry,
    /// Each session's backend connection (a slot in `conns`), while it has one.
    sessions: HashMap<u64, usize>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections given jobs since the worker last served a client connection: written
    /// then ([`WorkerIo::served`]), so a pipelined group goes out in one write.
    unflushed: Vec<usize>,
    buf: Vec<u8>,
    /// Numbers the connections, so that a slot's stale timers are told apart.
    generation: u64,
}

impl WorkerIo for RelayIo {
    fn ready(&mut self, token: usize, event: &Event) {
        self.service(token, event.is_read_closed() || event.is_error());
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    fn expire(&mut self, now: Instant) {
        self.expire_until(now);
    }

    fn served(&mut self) {
        while let Some(slot) = self.unflushed.pop() {
            self.flush(slot);
        }
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

impl RelayIo {
    /// A worker's relay state, registering its sockets with `registry`.
    pub(crate) fn new(config: Arc<BackendConfig>, registry: WorkerRegistry) -> Self {
        Self {
            config,
            registry,
            sessions: HashMap::new(),
            conns: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            unflushed: Vec::new(),
            buf: vec![0; READ_CHUNK],
            generation: 0,
        }
    }

    /// Takes `session`'s next job; `body_failed` is the flag its body chunks watch.
    pub(crate) fn submit(&mut self, session_id: u64, body_failed: &Arc<AtomicBool>, job: Job) {
        let live = self
            .sessions
            .get(&session_id)
            .copied()
            .filter(|&slot| self.conn(slot).is_some_and(|c| c.client.is_usable()));
        if matches!(job, Job::Close) {
            self.sessions.remove(&session_id);
        }
        let slot = match (live, job) {
            (Some(slot), job) => {
                if let Some(conn) = self.conn_mut(slot) {
                    conn.client.submit(job);
                }
                slot
            }
            (None, Job::Command(mail @ Command::Mail { .. })) => {
                let Command::Mail { client, .. } = &mail else {
                    return;
                };
                let mut backend = BackendClient::new(
                    Arc::clone(&self.config),
                    session_id,
                    client.clone(),
                    Arc::clone(body_failed),
                );
                backend.submit(Job::Command(mail));
                self.generation += 1;
                let Some(slot) = self.open(session_id, backend, self.generation) else {
                    return;
                };
                self.sessions.insert(session_id, slot);
                slot
            }
            (None, job) => {
                answer_without_backend(job, body_failed);
                return;
            }
        };
        if !self.unflushed.contains(&slot) {
            self.unflushed.push(slot);
        }
    }

    /// Octets of `session`'s message that wait for the backend to take them.
    pub(crate) fn backlog(&self, session: u64) -> usize {
        self.sessions
            .get(&session)
            .and_then(|&slot| self.conn(slot))
            .map_or(0, Conn::backlog)
    }

    /// Holds `session`'s input with `gate` until its backlog is down to [`RESUME_BELOW`]
    /// (or the connection ends); with no backlog left, the gate resumes at once.
    pub(crate) fn hold_input(&mut self, session: u64, gate: InputGate) {
        let Some(slot) = self.sessions.get(&session).copied() else {
            return;
        };
        if let Some(conn) = self.conn_mut(slot)
            && conn.backlog() > RESUME_BELOW
            && conn.gate.is_none()
        {
            conn.gate = Some(gate);
        }
    }

    /// Starts connecting `client`'s connection; `None` if no address could even be tried
    /// (the client already answered the decisions it held).
    fn open(&mut self, session: u64, mut client: BackendClient, generation: u64) -> Option<usize> {
        let mut addrs = match resolve(&self.config.address) {
            Ok(addrs) => addrs,
            Err(error) => {
                client.failed(&error);
                return None;
            }
        };
        addrs.reverse();
        let socket = match connect_next(&self.config.address, &mut addrs) {
            Ok(socket) => socket,
            Err(error) => {
                client.failed(&error);
                return None;
            }
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn = Conn {
            session,
            client,
            socket,
            fallback: addrs,
            connecting: true,
            tls: None,
            unsent: Outbox::default(),
            gate: None,
            deadline: Some(Instant::now() + self.config.connect_timeout),
            timer_at: None,
            generation,
        };
        if let Err(error) = self.registry.register(
            &mut conn.socket,
            slot,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            conn.client
                .failed(&BackendError::Connect(self.config.address.clone(), error));
            self.free.push(slot);
            return None;
        }
        self.conns[slot] = Some(conn);
        Some(slot)
    }

    fn conn(&self, slot: usize) -> Option<&Conn> {
        self.conns.get(slot).and_then(Option::as_ref)
    }

    fn conn_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// The socket is ready: finish connecting, read what came, write what waits.
    /// `hangup`: the event says the backend closed; read to the end of the stream.
    fn service(&mut self, slot: usize, hangup: bool) {
        let address = self.config.address.clone();
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.connecting {
            match connected(&conn.socket) {
                Ok(true) => {
                    conn.connecting = false;
                    let _ = conn.socket.set_nodelay(true);
                }
                Ok(false) => return,
                Err(error) if conn.fallback.is_empty() => {
                    conn.client
                        .failed(&BackendError::Connect(address.clone(), error));
                }
                Err(_) => match connect_next(&address, &mut conn.fallback) {
                    Ok(mut socket) => {
                        let _ = self.registry.deregister(&mut conn.socket);
                        match self.registry.register(
                            &mut socket,
                            slot,
                            Interest::READABLE | Interest::WRITABLE,
                        ) {
                            Ok(()) => conn.socket = socket,
                            Err(error) => conn
                                .client
                                .failed(&BackendError::Connect(address.clone(), error)),
                        }
                        return;
                    }
                    Err(error) => conn.client.failed(&error),
                },
            }
        }
        if !conn.client.is_finished() {
            read(conn, &mut self.buf, &self.config, hangup);
        }
        self.flush(slot);
    }

    /// Moves the client's output to the socket, then closes a finished connection or sets
    /// its timer.
    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if !conn.connecting
            && !conn.client.is_finished()
            && let Err(error) = write(conn)
        {
            conn.client.failed(&error);
        }
        if conn.client.is_finished() {
            self.close(slot);
            return;
        }
        if conn.gate.is_some() && conn.backlog() <= RESUME_BELOW {
            // Dropping the gate resumes the client's input.
            conn.gate = None;
        }
        let busy = conn.connecting || conn.backlog() > 0;
        conn.deadline = conn
            .client
            .timeout()
            .or_else(|| busy.then_some(self.config.command_timeout))
            .map(|timeout| Instant::now() + timeout);
        if let Some(at) = conn.deadline
            && conn.timer_at.is_none_or(|queued| at < queued)
        {
            conn.timer_at = Some(at);
            self.timers.push(Reverse((at, slot, conn.generation)));
        }
    }

    /// Connections whose backend did not answer in time fail (`451`).
    fn expire_until(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(conn) = self
                .conn_mut(slot)
                .filter(|c| c.generation == generation && c.timer_at == Some(at))
            else {
                continue;
            };
            conn.timer_at = None;
            match conn.deadline {
                Some(deadline) if deadline > now => {
                    conn.timer_at = Some(deadline);
                    self.timers.push(Reverse((deadline, slot, generation)));
                }
                Some(_) => {
                    conn.client.failed(&BackendError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the backend did not answer in time",
                    )));
                    self.flush(slot);
                }
                None => {}
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.registry.deregister(&mut conn.socket);
        self.free.push(slot);
        if self.sessions.get(&conn.session) == Some(&slot) {
            self.sessions.remove(&conn.session);
        }
    }
}

/// A job for a session without a usable backend connection (it failed and answered what it
/// held): decisions get `451 4.4.2`; a new MAIL opens a new connection instead (above).
fn answer_without_backend(job: Job, body_failed: &AtomicBool) {
    let Job::Command(command) = job else {
        if matches!(job, Job::Abort) {
            body_failed.store(false, Ordering::Release);
        }
        return;
    };
    match command {
        Command::Rcpt { responder, .. } | Command::Data { responder, .. } => {
            responder.respond(Verdict::Reject(broken()));
        }
        Command::End { responder, log, .. } => {
            // The failure is answered here; the next message must not inherit it.
            body_failed.store(false, Ordering::Release);
            refuse_message(responder, &log, &broken());
        }
        Command::Mail { responder, .. } => responder.respond(Verdict::Reject(unreachable())),
        Command::Body(_) => {}
    }
}

/// Starts a non-blocking connect to the next address in `addrs` (taken from the end).
fn connect_next(address: &str, addrs: &mut Vec<SocketAddr>) -> Result<TcpStream, BackendError> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    while let Some(addr) = addrs.pop() {
        match TcpStream::connect(addr) {
            Ok(socket) => return Ok(socket),
            Err(error) => last = error,
        }
    }
    Err(BackendError::Connect(address.to_owned(), last))
}

/// Whether a non-blocking connect completed: `Ok(false)` while in progress.
fn connected(socket: &TcpStream) -> io::Result<bool> {
    if let Some(error) = socket.take_error()? {
        return Err(error);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(error) => Err(error),
    }
}

impl Conn {
    fn backlog(&self) -> usize {
        self.unsent.len() + self.client.output_len()
    }
}

/// Reads until the socket has nothing more, handing plaintext to the client.
fn read(conn: &mut Conn, buf: &mut [u8], config: &BackendConfig, hangup: bool) {
    loop {
        if conn.tls.is_none() && conn.client.wants_tls() {
            match start_tls(config) {
                Ok(tls) => conn.tls = Some(Box::new(tls)),
                Err(error) => {
                    conn.client.failed(&error);
                    return;
                }
            }
            // The ClientHello goes out now; the reply is read below.
            if let Err(error) = write(conn) {
                conn.client.failed(&error);
                return;
            }
        }
        if conn.client.is_finished() {
            return;
        }
        let plain = conn.tls.is_none();
        let result = match conn.tls.as_deref_mut() {
            None => conn
                .socket
                .read(buf)
                .map_err(BackendError::Io)
                .inspect(|&n| {
                    if n > 0 {
                        conn.client.received(&buf[..n]);
                    }
                }),
            Some(tls) => read_tls(tls, &mut conn.socket, &mut conn.client, buf),
        };
        match result {
            Ok(0) => {
                conn.client.closed_by_peer();
                return;
            }
            // A short read emptied the socket's buffer: the next arrival brings a new event,
            // no need to read (and get `WouldBlock`) before it; unless the backend closed
            // (its end of stream is read next) or STARTTLS was just accepted (its handshake
            // starts above).
            Ok(n) if plain && !hangup && n < buf.len() && !conn.client.wants_tls() => return,
            Ok(_) => {}
            Err(BackendError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(BackendError::Io(error)) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                conn.client.failed(&error);
                return;
            }
        }
    }
}

/// One read of TLS records; the plaintext they carry goes to the client. `Ok(0)` at the end
/// of the stream.
fn read_tls(
    tls: &mut ClientConnection,
    socket: &mut TcpStream,
    client: &mut BackendClient,
    buf: &mut [u8],
) -> Result<usize, BackendError> {
    let n = tls.read_tls(socket)?;
    let state = tls.process_new_packets().map_err(|error| {
        let hint = match error {
            rustls::Error::InvalidCertificate(_) => {
                " (--relay-ca must hold the CA that signed the backend's certificate, and the \
                 certificate must name the host of --relay and not be a CA itself)"
            }
            _ => "",
        };
        // The alert tells the backend why, as far as it listens.
        let _ = tls.write_tls(socket);
        BackendError::Tls(format!("{error}{hint}"))
    })?;
    if !tls.is_handshaking() && client.wants_tls() {
        client.tls_established();
    }
    let mut plaintext = state.plaintext_bytes_to_read();
    while plaintext > 0 {
        let got = tls.reader().read(buf)?;
        if got == 0 {
            break;
        }
        client.received(&buf[..got]);
        plaintext = plaintext.saturating_sub(got);
    }
    if n == 0 || state.peer_has_closed() {
        return Ok(0);
    }
    Ok(n)
}

/// Writes what the client has to send, until the socket takes no more.
fn write(conn: &mut Conn) -> Result<(), BackendError> {
    if conn.tls.is_none() && conn.client.wants_tls() {
        // Nothing more in plaintext once STARTTLS was accepted.
        return Ok(());
    }
    if conn.tls.as_ref().is_none_or(|tls| !tls.is_handshaking()) {
        conn.unsent.push(conn.client.take_output());
    }
    match conn.tls.as_deref_mut() {
        None => {
            while !conn.unsent.is_empty() {
                match conn.socket.write(conn.unsent.pending()) {
                    Ok(0) => return Err(BackendError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => conn.unsent.advance(n),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(BackendError::Io(error)),
                }
            }
        }
        Some(tls) => loop {
            // rustls takes plaintext up to its buffer limit (`Ok(0)` when full): feed it
            // as the socket takes its records.
            if !tls.is_handshaking() && !conn.unsent.is_empty() {
                let n = tls.writer().write(conn.unsent.pending())?;
                conn.unsent.advance(n);
            }
            if !tls.wants_write() {
                break;
            }
            match tls.write_tls(&mut conn.socket) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(BackendError::Io(error)),
            }
        },
    }
    Ok(())
}

/// Octets for the backend that its socket (or rustls) has not taken yet: appended at the end,
/// taken from the front without moving the rest each time.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// Octets of `buf` already taken.
    pos: usize,
}

impl Outbox {
    fn push(&mut self, octets: Vec<u8>) {
        if self.is_empty() {
            self.buf = octets;
            self.pos = 0;
        } else {
            self.buf.extend_from_slice(&octets);
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A TLS client session to the backend, verifying its name.
fn start_tls(config: &BackendConfig) -> Result<ClientConnection, BackendError> {
    let Some(tls) = &config.starttls else {
        return Err(BackendError::Tls(
            "STARTTLS without a TLS configuration".into(),
        ));
    };
    let name = config
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(&config.address).to_owned());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| BackendError::Tls(format!("{name}: {e}")))?;
    ClientConnection::new(Arc::clone(tls), server_name)
        .map_err(|e| BackendError::Tls(e.to_string()))
}
