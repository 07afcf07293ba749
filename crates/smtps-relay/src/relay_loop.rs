//! The relay's event loop: one thread holding many sessions' backend connections, so that a
//! deferred decision costs two thread hand-offs (worker → loop, loop → worker) and no thread
//! per session.
//!
//! The loop owns sockets, TLS to the backend and the timers; each connection's conversation
//! is a [`BackendClient`], which knows nothing of I/O. Jobs come over a channel; the
//! [`Waker`] is written only when the loop may be asleep, so a burst of jobs costs one
//! wake-up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use smtps_proto::Verdict;

use crate::backend::{BackendConfig, BackendError, host_of, resolve};
use crate::client::{BackendClient, Job, broken, refuse_message, unreachable};

const WAKER: Token = Token(usize::MAX);
/// Socket reads at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A session's job, or its first message (the flag its body chunks watch).
enum Message {
    Open {
        session: u64,
        body_failed: Arc<AtomicBool>,
    },
    Job {
        session: u64,
        job: Box<Job>,
    },
}

/// The worker side of one loop: a queue and a doorbell.
pub(crate) struct LoopHandle {
    jobs: Sender<Message>,
    waker: Arc<Waker>,
    /// Cleared by the loop before it sleeps: only then does a sender ring.
    awake: Arc<AtomicBool>,
}

impl LoopHandle {
    /// Starts a loop thread for `config`.
    ///
    /// # Errors
    /// The poll or the thread could not be created.
    pub(crate) fn spawn(config: Arc<BackendConfig>, index: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (jobs, queue) = mpsc::channel();
        let awake = Arc::new(AtomicBool::new(true));
        let loop_awake = Arc::clone(&awake);
        std::thread::Builder::new()
            .name(format!("smtps-relay-{index}"))
            .spawn(move || {
                RelayLoop {
                    config,
                    poll,
                    queue,
                    awake: loop_awake,
                    sessions: HashMap::new(),
                    conns: Vec::new(),
                    free: Vec::new(),
                    timers: BinaryHeap::new(),
                    buf: vec![0; READ_CHUNK],
                }
                .run();
            })?;
        Ok(Self { jobs, waker, awake })
    }

    /// Registers a session; its jobs may follow.
    pub(crate) fn open(&self, session: u64, body_failed: Arc<AtomicBool>) {
        self.post(Message::Open {
            session,
            body_failed,
        });
    }

    /// Queues `job` for `session`. If the loop is gone, the job's responder answers
    /// `451 4.3.0` as it drops.
    pub(crate) fn send(&self, session: u64, job: Job) {
        self.post(Message::Job {
            session,
            job: Box::new(job),
        });
    }

    fn post(&self, message: Message) {
        if self.jobs.send(message).is_ok() && !self.awake.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for LoopHandle {
    fn drop(&mut self) {
        // The loop ends when it finds the queue closed; make it look.
        let _ = self.waker.wake();
    }
}

/// A session known to the loop.
struct Session {
    /// Its backend connection (a slot in `conns`), while it has one.
    conn: Option<usize>,
    body_failed: Arc<AtomicBool>,
}

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
    unsent: Vec<u8>,
    /// When the backend's answer is due, if one is awaited.
    deadline: Option<Instant>,
    /// The time of this connection's earliest entry in the timer heap (later entries with
    /// other times are stale).
    timer_at: Option<Instant>,
    /// Distinguishes this connection from earlier ones in the same slot.
    generation: u64,
}

struct RelayLoop {
    config: Arc<BackendConfig>,
    poll: Poll,
    queue: Receiver<Message>,
    awake: Arc<AtomicBool>,
    sessions: HashMap<u64, Session>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    buf: Vec<u8>,
}

impl RelayLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut generation = 0_u64;
        loop {
            if !self.drain(&mut generation) {
                return;
            }
            // Announce sleep, then look once more: a job posted in between is not missed.
            self.awake.store(false, Ordering::Release);
            if !self.drain(&mut generation) {
                return;
            }
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()));
            if let Err(error) = self.poll.poll(&mut events, timeout)
                && error.kind() != io::ErrorKind::Interrupted
            {
                log::error!("smtps-relay: the relay loop cannot poll: {error}");
                return;
            }
            self.awake.store(true, Ordering::Release);
            for event in &events {
                if event.token() != WAKER {
                    self.service(event.token().0);
                }
            }
            self.expire();
        }
    }

    /// Takes every queued job; `false` once every handle is gone.
    fn drain(&mut self, generation: &mut u64) -> bool {
        loop {
            match self.queue.try_recv() {
                Ok(Message::Open {
                    session,
                    body_failed,
                }) => {
                    self.sessions.insert(
                        session,
                        Session {
                            conn: None,
                            body_failed,
                        },
                    );
                }
                Ok(Message::Job { session, job }) => self.job(session, *job, generation),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn job(&mut self, session_id: u64, job: Job, generation: &mut u64) {
        let Some(session) = self.sessions.get(&session_id) else {
            return;
        };
        let body_failed = Arc::clone(&session.body_failed);
        let live = session
            .conn
            .filter(|&slot| self.conn(slot).is_some_and(|c| c.client.is_usable()));
        let closing = matches!(job, Job::Close);
        if closing {
            self.sessions.remove(&session_id);
        }
        let slot = match (live, job) {
            (Some(slot), job) => {
                if let Some(conn) = self.conn_mut(slot) {
                    conn.client.submit(job);
                }
                slot
            }
            (
                None,
                Job::Mail {
                    client,
                    path,
                    params,
                    responder,
                },
            ) => {
                let mut backend = BackendClient::new(
                    Arc::clone(&self.config),
                    session_id,
                    client.clone(),
                    body_failed,
                );
                backend.submit(Job::Mail {
                    client,
                    path,
                    params,
                    responder,
                });
                *generation += 1;
                match self.open(session_id, backend, *generation) {
                    Some(slot) => {
                        if let Some(session) = self.sessions.get_mut(&session_id) {
                            session.conn = Some(slot);
                        }
                        slot
                    }
                    None => return,
                }
            }
            (None, job) => {
                answer_without_backend(job, &body_failed);
                return;
            }
        };
        self.flush(slot);
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
            unsent: Vec::new(),
            deadline: Some(Instant::now() + self.config.connect_timeout),
            timer_at: None,
            generation,
        };
        if let Err(error) = self.poll.registry().register(
            &mut conn.socket,
            Token(slot),
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
    fn service(&mut self, slot: usize) {
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
                        let registry = self.poll.registry();
                        let _ = registry.deregister(&mut conn.socket);
                        match registry.register(
                            &mut socket,
                            Token(slot),
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
            read(conn, &mut self.buf, &self.config);
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
        let busy = conn.connecting || conn.client.has_output() || !conn.unsent.is_empty();
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
    fn expire(&mut self) {
        let now = Instant::now();
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
        let _ = self.poll.registry().deregister(&mut conn.socket);
        self.free.push(slot);
        if let Some(session) = self.sessions.get_mut(&conn.session)
            && session.conn == Some(slot)
        {
            session.conn = None;
        }
    }
}

/// A job for a session without a usable backend connection (it failed and answered what it
/// held): decisions get `451 4.4.2`; a new MAIL opens a new connection instead (above).
fn answer_without_backend(job: Job, body_failed: &AtomicBool) {
    match job {
        Job::Rcpt { responder, .. } | Job::Data { responder, .. } => {
            responder.respond(Verdict::Reject(broken()));
        }
        Job::End { responder, log, .. } => {
            // The failure is answered here; the next message must not inherit it.
            body_failed.store(false, Ordering::Release);
            refuse_message(responder, &log, &broken());
        }
        Job::Abort => body_failed.store(false, Ordering::Release),
        Job::Mail { responder, .. } => responder.respond(Verdict::Reject(unreachable())),
        Job::Body(_) | Job::Reset | Job::Close => {}
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

/// Reads until the socket has nothing more, handing plaintext to the client.
fn read(conn: &mut Conn, buf: &mut [u8], config: &BackendConfig) {
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
    match conn.tls.as_deref_mut() {
        None => {
            if conn.client.wants_tls() {
                // Nothing more in plaintext once STARTTLS was accepted.
                return Ok(());
            }
            if conn.unsent.is_empty() {
                conn.unsent = conn.client.take_output();
            } else {
                conn.unsent.extend_from_slice(&conn.client.take_output());
            }
            let mut written = 0;
            while written < conn.unsent.len() {
                match conn.socket.write(&conn.unsent[written..]) {
                    Ok(0) => return Err(BackendError::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => written += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(BackendError::Io(error)),
                }
            }
            conn.unsent.drain(..written);
        }
        Some(tls) => {
            if !tls.is_handshaking() {
                let output = conn.client.take_output();
                if !output.is_empty() {
                    tls.writer().write_all(&output)?;
                }
            }
            while tls.wants_write() {
                match tls.write_tls(&mut conn.socket) {
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(BackendError::Io(error)),
                }
            }
        }
    }
    Ok(())
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
