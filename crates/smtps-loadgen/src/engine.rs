//! The load: one mio event loop per thread, each driving many non-blocking connections through
//! the SMTP dialogue (banner, EHLO, STARTTLS, transactions, QUIT) over rustls.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use socket2::{Domain, Protocol, Socket, Type};

use crate::proxy::Proxy;
use crate::reply::{self, Reply};
use crate::stats::Stats;

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Connect, TLS, banner, EHLO, QUIT, close; again.
    Sessions,
    /// Persistent connections sending messages.
    Messages,
    /// Connections held open after EHLO.
    Idle,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte (RFC 8314).
    Implicit,
    /// Plain banner and EHLO, then STARTTLS (RFC 3207) and EHLO again.
    StartTls,
    /// No TLS.
    None,
}

impl Security {
    /// The name used on the command line and in the summary.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Implicit => "implicit",
            Self::StartTls => "starttls",
            Self::None => "none",
        }
    }
}

/// Everything the load threads share.
pub(crate) struct Plan {
    /// What to do.
    pub(crate) mode: Mode,
    /// How to secure the connections.
    pub(crate) security: Security,
    /// The server.
    pub(crate) addr: SocketAddr,
    /// Local addresses to bind to in turn (empty: let the kernel choose).
    pub(crate) sources: Vec<IpAddr>,
    /// The PROXY protocol header to send first on every connection, if any.
    pub(crate) proxy: Option<Proxy>,
    /// The TLS client configuration.
    pub(crate) tls: Arc<ClientConfig>,
    /// The name sent in SNI and checked in the certificate.
    pub(crate) server_name: ServerName<'static>,
    /// `EHLO name\r\n`.
    pub(crate) ehlo: Vec<u8>,
    /// `MAIL FROM`, `RCPT TO`, `DATA` commands, each with its CRLF.
    pub(crate) envelope: [Vec<u8>; 3],
    /// The dot-stuffed message with its terminating `.\r\n`.
    pub(crate) payload: Arc<[u8]>,
    /// The size of the message before dot-stuffing (what messages/s × size means).
    pub(crate) message_bytes: u64,
    /// Whether to pipeline MAIL, RCPT and DATA when the server offers PIPELINING.
    pub(crate) pipelining: bool,
    /// Messages mode: QUIT after this many messages and open a new connection; the first
    /// message of each connection then counts from the connect.
    pub(crate) per_connection: Option<u64>,
    /// No new operation starts after this.
    pub(crate) deadline: Instant,
    /// Every connection still open then is abandoned as a timeout.
    pub(crate) hard_deadline: Instant,
    /// At most this many operations, if given.
    pub(crate) count: Option<u64>,
    /// Operations started so far (for `count`).
    pub(crate) claimed: AtomicU64,
    /// Sessions mode with `--rate`: the time between session starts on each thread.
    pub(crate) session_interval: Option<Duration>,
    /// Longest time for one operation (or one connection's setup).
    pub(crate) op_timeout: Duration,
    /// Idle mode: connections that completed EHLO.
    pub(crate) established: AtomicU64,
    /// Idle mode: connections that failed.
    pub(crate) failed: AtomicU64,
    /// Idle mode: set when the connections should quit.
    pub(crate) stop: AtomicBool,
    /// Idle mode: connections each thread has in setup (connect to EHLO reply) at once; the
    /// next opens when one is established or fails, so that the server's listen backlog and
    /// the handshakes in flight stay bounded however many connections are held.
    pub(crate) setup_window: usize,
}

impl Plan {
    /// Claims one more operation, if the count and the deadline allow.
    fn claim(&self, now: Instant) -> bool {
        if now >= self.deadline || self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.count {
            None => true,
            Some(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
        }
    }
}

/// What one thread brings back.
#[derive(Debug, Default)]
pub(crate) struct ThreadResult {
    /// Its measurements.
    pub(crate) stats: Stats,
    /// When its last operation completed.
    pub(crate) last_completion: Option<Instant>,
    /// The negotiated cipher suite and key exchange group of its first TLS session.
    pub(crate) tls_params: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Banner,
    Ehlo,
    StartTls,
    /// Awaiting the reply to envelope command `step` (0 MAIL, 1 RCPT, 2 DATA).
    Envelope {
        step: u8,
        failed: bool,
    },
    Body,
    Rset,
    Idle,
    Quit,
}

/// A failure that ends a connection, by kind.
struct Fail(&'static str);

impl From<rustls::Error> for Fail {
    fn from(e: rustls::Error) -> Self {
        static SHOWN: AtomicU64 = AtomicU64::new(0);
        if std::env::var_os("SMTPS_LOADGEN_DEBUG").is_some()
            && SHOWN.fetch_add(1, Ordering::Relaxed) < 5
        {
            eprintln!("smtps-loadgen: TLS error: {e}");
        }
        Fail("tls")
    }
}

/// Bytes waiting to be sent: owned commands or the shared payload.
enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

#[derive(Default)]
struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// How much of the front chunk was sent.
    pos: usize,
}

impl OutQueue {
    fn push(&mut self, chunk: Chunk) {
        self.chunks.push_back(chunk);
    }

    fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c.bytes()[self.pos..])
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        if self
            .chunks
            .front()
            .is_some_and(|c| self.pos >= c.bytes().len())
        {
            self.chunks.pop_front();
            self.pos = 0;
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

struct Conn {
    sock: TcpStream,
    /// Octets that go out raw before anything else: the PROXY header not yet sent (with the
    /// implicit-TLS ClientHello appended, so that both leave in one write).
    preface: Vec<u8>,
    tls: Option<ClientConnection>,
    state: State,
    inbuf: Vec<u8>,
    out: OutQueue,
    /// When the current operation started (connect for sessions, MAIL for messages).
    started: Instant,
    /// When the current operation times out (`None` while idle).
    deadline: Option<Instant>,
    pipelining: bool,
    /// QUIT was sent because the load is over (not a session's own QUIT).
    finishing: bool,
    /// Messages mode: messages started on this connection.
    messages: u64,
    /// Messages mode: QUIT was sent after `per_connection` messages; a new connection follows.
    recycle: bool,
    /// STARTTLS was just accepted: no plaintext may follow the 220.
    tls_switched: bool,
    /// The code of the last reply read.
    last_code: u16,
}

/// What happened to a connection after some I/O.
enum Outcome {
    Open,
    /// Closed as planned (221 to QUIT).
    Done,
}

struct Worker<'a> {
    plan: &'a Plan,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    result: ThreadResult,
    next_source: usize,
    /// Sessions mode with `--rate`: the time between session starts on this thread.
    interval: Option<Duration>,
    /// When the next paced session may start.
    next_start: Instant,
    /// Worker slots waiting for their paced start.
    waiting: usize,
    /// Idle mode: connections of this thread not opened yet (see `Plan::setup_window`).
    unopened: usize,
    /// Idle mode: places in the setup window freed since the last `open_unopened`.
    setup_freed: usize,
}

/// Runs `connections` connections of the plan on this thread until the load is over.
pub(crate) fn run_thread(plan: &Plan, connections: usize, thread_index: usize) -> ThreadResult {
    let mut worker = match Poll::new() {
        Ok(poll) => Worker {
            plan,
            poll,
            conns: Vec::with_capacity(connections),
            free: Vec::new(),
            live: 0,
            result: ThreadResult::default(),
            next_source: thread_index,
            interval: plan.session_interval,
            next_start: Instant::now(),
            waiting: 0,
            unopened: 0,
            setup_freed: 0,
        },
        Err(_) => {
            let mut result = ThreadResult::default();
            result.stats.error("poll");
            return result;
        }
    };
    worker.result.stats.latencies_us.reserve(4096);
    let first = if plan.mode == Mode::Idle {
        let first = connections.min(plan.setup_window.max(1));
        worker.unopened = connections - first;
        first
    } else {
        connections
    };
    for _ in 0..first {
        let now = Instant::now();
        if plan.mode == Mode::Sessions {
            if worker.interval.is_some() {
                worker.waiting += 1;
                continue;
            }
            if !plan.claim(now) {
                break;
            }
        }
        worker.open(now);
    }
    worker.run();
    worker.result
}

impl Worker<'_> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut stop_seen = false;
        while self.live > 0 || self.waiting > 0 || self.unopened > 0 {
            let mut timeout = Duration::from_millis(50);
            if self.waiting > 0 {
                timeout = timeout.min(self.next_start.saturating_duration_since(Instant::now()));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.result.stats.error("poll");
                return;
            }
            for event in &events {
                let slot = event.token().0;
                self.drive(slot);
            }
            let now = Instant::now();
            self.start_paced(now);
            self.open_unopened(now);
            if !stop_seen && self.plan.stop.load(Ordering::Relaxed) {
                stop_seen = true;
                self.quit_idle(now);
            }
            if now.duration_since(last_sweep) >= Duration::from_millis(50) {
                last_sweep = now;
                self.sweep(now);
            }
        }
    }

    /// Sessions mode with `--rate`: starts the waiting sessions whose time has come. A
    /// schedule more than a second behind is reset rather than caught up in a burst.
    fn start_paced(&mut self, now: Instant) {
        let Some(interval) = self.interval else {
            return;
        };
        if now.saturating_duration_since(self.next_start) > Duration::from_secs(1) {
            self.next_start = now;
        }
        while self.waiting > 0 && now >= self.next_start {
            if !self.plan.claim(now) {
                self.waiting = 0;
                return;
            }
            self.waiting -= 1;
            self.next_start += interval;
            self.open(now);
        }
    }

    /// Idle mode: opens as many of the remaining connections as places in the setup window
    /// were freed (each failure frees its place again, so this ends after `unopened` tries).
    fn open_unopened(&mut self, now: Instant) {
        while self.setup_freed > 0 && self.unopened > 0 {
            if self.plan.stop.load(Ordering::Relaxed) || now >= self.plan.deadline {
                self.unopened = 0;
                return;
            }
            self.setup_freed -= 1;
            self.unopened -= 1;
            self.open(now);
        }
    }

    /// Opens a new connection in a free slot; failures are counted and, for sessions,
    /// the next session is tried (bounded by the plan's count and deadline).
    fn open(&mut self, now: Instant) {
        match self.connect(now) {
            Ok(conn) => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.conns.push(None);
                    self.conns.len() - 1
                });
                let mut conn = conn;
                if self
                    .poll
                    .registry()
                    .register(
                        &mut conn.sock,
                        Token(slot),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_err()
                {
                    self.free.push(slot);
                    self.fail_open("register");
                    return;
                }
                self.conns[slot] = Some(conn);
                self.live += 1;
            }
            Err(kind) => self.fail_open(kind),
        }
    }

    fn fail_open(&mut self, kind: &'static str) {
        self.result.stats.error(kind);
        if self.plan.mode == Mode::Idle {
            self.plan.failed.fetch_add(1, Ordering::Relaxed);
            self.setup_freed += 1;
        }
        // A failed connect is not retried at once: a refused port would spin. Sessions go on
        // with the remaining workers; the count stays bounded by the plan.
    }

    fn connect(&mut self, now: Instant) -> Result<Conn, &'static str> {
        let domain = Domain::for_address(self.plan.addr);
        let socket =
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|_| "socket")?;
        socket.set_nonblocking(true).map_err(|_| "socket")?;
        socket.set_nodelay(true).map_err(|_| "socket")?;
        if !self.plan.sources.is_empty() {
            let ip = self.plan.sources[self.next_source % self.plan.sources.len()];
            self.next_source = self.next_source.wrapping_add(1);
            if ip.is_ipv4() {
                bind_address_no_port(&socket).map_err(|_| "bind")?;
            }
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(|_| "bind")?;
        }
        match socket.connect(&self.plan.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(_) => return Err("connect"),
        }
        let sock = TcpStream::from_std(socket.into());
        let preface = self
            .plan
            .proxy
            .as_ref()
            .map(|p| p.next_header(self.plan.addr))
            .unwrap_or_default();
        Ok(Conn {
            sock,
            preface,
            tls: None,
            state: State::Connecting,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            started: now,
            deadline: Some(now + self.plan.op_timeout),
            pipelining: false,
            finishing: false,
            messages: 0,
            recycle: false,
            tls_switched: false,
            last_code: 0,
        })
    }

    /// Handles readiness of the connection in `slot`.
    fn drive(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let outcome = self.pump(&mut conn);
        match outcome {
            Ok(Outcome::Open) => self.conns[slot] = Some(conn),
            Ok(Outcome::Done) => self.close(slot, conn, None),
            Err(Fail(kind)) => self.close(slot, conn, Some(kind)),
        }
    }

    /// Closes a connection; sessions start the next one.
    fn close(&mut self, slot: usize, mut conn: Conn, failure: Option<&'static str>) {
        let _ = self.poll.registry().deregister(&mut conn.sock);
        let recycle = conn.recycle;
        drop(conn);
        self.free.push(slot);
        self.live -= 1;
        let now = Instant::now();
        if let Some(kind) = failure {
            self.result.stats.error(kind);
            if self.plan.mode == Mode::Idle {
                self.plan.failed.fetch_add(1, Ordering::Relaxed);
                self.setup_freed += 1;
            }
        }
        match self.plan.mode {
            Mode::Sessions if self.interval.is_some() => {
                self.waiting += 1;
                self.start_paced(now);
            }
            Mode::Sessions if self.plan.claim(now) => self.open(now),
            // A broken persistent connection is replaced while the load lasts, and so is one
            // that sent its `per_connection` messages.
            Mode::Messages if (failure.is_some() || recycle) && now < self.plan.deadline => {
                self.open(now);
            }
            _ => {}
        }
    }

    /// Times out the operations that took too long; at the hard deadline, everything.
    fn sweep(&mut self, now: Instant) {
        let hard = now >= self.plan.hard_deadline;
        for slot in 0..self.conns.len() {
            let expired = self.conns[slot]
                .as_ref()
                .is_some_and(|c| hard || c.deadline.is_some_and(|d| now >= d));
            if expired && let Some(conn) = self.conns[slot].take() {
                self.close(slot, conn, Some("timeout"));
            }
        }
    }

    /// Idle mode is over: every held connection sends QUIT.
    fn quit_idle(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(mut conn) = self.conns[slot].take() else {
                continue;
            };
            if conn.state == State::Idle {
                conn.finishing = true;
                conn.deadline = Some(now + self.plan.op_timeout);
                conn.send(Chunk::Owned(b"QUIT\r\n".to_vec()), State::Quit);
            }
            self.conns[slot] = Some(conn);
            self.drive(slot);
        }
    }

    /// Writes what can be written, reads what there is, acts on complete replies; repeats
    /// until nothing moves.
    fn pump(&mut self, conn: &mut Conn) -> Result<Outcome, Fail> {
        if conn.state == State::Connecting {
            if let Ok(Some(_)) | Err(_) = conn.sock.take_error() {
                return Err(Fail("connect"));
            }
            match conn.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Outcome::Open),
                Err(_) => return Err(Fail("connect")),
            }
            conn.state = State::Banner;
            if self.plan.security == Security::Implicit {
                conn.tls = Some(self.new_tls()?);
            }
        }
        for _ in 0..64 {
            flush(conn)?;
            let (got, eof) = read(conn)?;
            let acted = self.process(conn)?;
            if matches!(acted, Some(Outcome::Done)) {
                return Ok(Outcome::Done);
            }
            if eof {
                // The server closed: after our QUIT that is the end, anywhere else a failure.
                return if conn.state == State::Quit {
                    self.quit_done(conn);
                    Ok(Outcome::Done)
                } else if conn.last_code == 421 {
                    // The server closed after a 421 (a limit, or shutting down).
                    Err(Fail("closed_after_421"))
                } else {
                    Err(Fail("eof"))
                };
            }
            if !got && acted.is_none() {
                break;
            }
        }
        Ok(Outcome::Open)
    }

    fn new_tls(&self) -> Result<ClientConnection, Fail> {
        ClientConnection::new(Arc::clone(&self.plan.tls), self.plan.server_name.clone())
            .map_err(|_| Fail("tls"))
    }

    /// Acts on every complete reply in the input. `Some` when something was done.
    fn process(&mut self, conn: &mut Conn) -> Result<Option<Outcome>, Fail> {
        let mut acted = None;
        let mut pos = 0;
        loop {
            let parsed = reply::parse(&conn.inbuf[pos..]).map_err(|_| Fail("protocol"))?;
            let Some((reply, used)) = parsed else {
                break;
            };
            pos += used;
            acted = Some(Outcome::Open);
            if let Outcome::Done = self.on_reply(conn, &reply)? {
                conn.inbuf.clear();
                return Ok(Some(Outcome::Done));
            }
            if std::mem::take(&mut conn.tls_switched) && pos < conn.inbuf.len() {
                // Bytes after the 220 to STARTTLS, before the handshake (RFC 3207 §4.2:
                // the client must not take them as part of the TLS session).
                return Err(Fail("protocol"));
            }
        }
        conn.inbuf.drain(..pos);
        if conn.state == State::Idle && conn.inbuf.is_empty() && conn.out.is_empty() {
            // Held for the rest of the run: keep only what the connection needs (the rustls
            // state); the buffers grew for the banner and the EHLO reply.
            conn.inbuf = Vec::new();
            conn.out = OutQueue::default();
        }
        Ok(acted)
    }

    fn on_reply(&mut self, conn: &mut Conn, reply: &Reply) -> Result<Outcome, Fail> {
        let plan = self.plan;
        conn.last_code = reply.code;
        match conn.state {
            State::Connecting => Err(Fail("protocol")),
            State::Banner => {
                if reply.code != 220 {
                    self.result.stats.reply(reply.code);
                    return Err(Fail("banner"));
                }
                conn.send(Chunk::Owned(plan.ehlo.clone()), State::Ehlo);
                Ok(Outcome::Open)
            }
            State::Ehlo => {
                if reply.code != 250 {
                    self.result.stats.reply(reply.code);
                    return Err(Fail("ehlo"));
                }
                if plan.security == Security::StartTls && conn.tls.is_none() {
                    if !reply.has_extension("STARTTLS") {
                        return Err(Fail("no_starttls"));
                    }
                    conn.send(Chunk::Owned(b"STARTTLS\r\n".to_vec()), State::StartTls);
                    return Ok(Outcome::Open);
                }
                conn.pipelining = plan.pipelining && reply.has_extension("PIPELINING");
                self.established(conn);
                Ok(Outcome::Open)
            }
            State::StartTls => {
                if reply.code != 220 {
                    self.result.stats.reply(reply.code);
                    return Err(Fail("starttls"));
                }
                let mut tls = self.new_tls()?;
                tls.writer()
                    .write_all(&plan.ehlo)
                    .map_err(|_| Fail("tls"))?;
                conn.tls = Some(tls);
                conn.state = State::Ehlo;
                conn.tls_switched = true;
                Ok(Outcome::Open)
            }
            State::Envelope { step, failed } => {
                let expected = if step == 2 { 354 } else { 250 };
                let ok = reply.code == expected || (step < 2 && reply.code / 100 == 2);
                if !ok {
                    self.result.stats.reply(reply.code);
                }
                let failed = failed || !ok;
                if step < 2 {
                    if !conn.pipelining {
                        if failed {
                            conn.send(Chunk::Owned(b"RSET\r\n".to_vec()), State::Rset);
                            return Ok(Outcome::Open);
                        }
                        conn.out
                            .push(Chunk::Owned(plan.envelope[usize::from(step) + 1].clone()));
                    }
                    conn.state = State::Envelope {
                        step: step + 1,
                        failed,
                    };
                } else if reply.code == 354 {
                    conn.send(Chunk::Shared(Arc::clone(&plan.payload)), State::Body);
                } else {
                    conn.send(Chunk::Owned(b"RSET\r\n".to_vec()), State::Rset);
                }
                Ok(Outcome::Open)
            }
            State::Body => {
                if reply.code == 250 {
                    let now = Instant::now();
                    self.result.stats.record(micros(now - conn.started));
                    self.result.stats.bytes += plan.message_bytes;
                    self.result.last_completion = Some(now);
                } else {
                    self.result.stats.reply(reply.code);
                }
                self.next_message(conn);
                Ok(Outcome::Open)
            }
            State::Rset => {
                self.next_message(conn);
                Ok(Outcome::Open)
            }
            State::Idle => Err(Fail("unsolicited")),
            State::Quit => {
                if reply.code / 100 != 2 {
                    self.result.stats.reply(reply.code);
                }
                self.quit_done(conn);
                Ok(Outcome::Done)
            }
        }
    }

    /// The reply to QUIT (or the close after it): a session is complete.
    fn quit_done(&mut self, conn: &mut Conn) {
        if let Some(tls) = conn.tls.as_mut() {
            tls.send_close_notify();
            let _ = flush(conn);
        }
        if self.plan.mode == Mode::Sessions && !conn.finishing {
            let now = Instant::now();
            self.result.stats.record(micros(now - conn.started));
            self.result.last_completion = Some(now);
        }
    }

    /// Banner, EHLO and TLS are done.
    fn established(&mut self, conn: &mut Conn) {
        if let (None, Some(tls)) = (&self.result.tls_params, &conn.tls) {
            let suite = tls
                .negotiated_cipher_suite()
                .map_or_else(|| "-".to_owned(), |s| format!("{:?}", s.suite()));
            let group = tls
                .negotiated_key_exchange_group()
                .map_or_else(|| "-".to_owned(), |g| format!("{:?}", g.name()));
            self.result.tls_params = Some((suite, group));
        }
        self.result.stats.established += 1;
        match self.plan.mode {
            Mode::Sessions => {
                conn.send(Chunk::Owned(b"QUIT\r\n".to_vec()), State::Quit);
            }
            Mode::Messages => self.next_message(conn),
            Mode::Idle => {
                conn.state = State::Idle;
                conn.deadline = None;
                self.setup_freed += 1;
                self.plan.established.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the next message, or QUIT when the load is over.
    fn next_message(&mut self, conn: &mut Conn) {
        let now = Instant::now();
        if self
            .plan
            .per_connection
            .is_some_and(|limit| conn.messages >= limit)
        {
            conn.recycle = true;
            conn.deadline = Some(now + self.plan.op_timeout);
            conn.send(Chunk::Owned(b"QUIT\r\n".to_vec()), State::Quit);
            return;
        }
        if !self.plan.claim(now) {
            conn.finishing = true;
            conn.deadline = Some(now + self.plan.op_timeout);
            conn.send(Chunk::Owned(b"QUIT\r\n".to_vec()), State::Quit);
            return;
        }
        // With `per_connection`, a connection's first message counts from the connect.
        if conn.messages > 0 || self.plan.per_connection.is_none() {
            conn.started = now;
        }
        conn.messages += 1;
        conn.deadline = Some(now + self.plan.op_timeout);
        if conn.pipelining {
            let mut all = Vec::with_capacity(96);
            for cmd in &self.plan.envelope {
                all.extend_from_slice(cmd);
            }
            conn.out.push(Chunk::Owned(all));
        } else {
            conn.out.push(Chunk::Owned(self.plan.envelope[0].clone()));
        }
        conn.state = State::Envelope {
            step: 0,
            failed: false,
        };
    }
}

impl Conn {
    /// Queues `chunk` and moves to `next`.
    fn send(&mut self, chunk: Chunk, next: State) {
        self.out.push(chunk);
        self.state = next;
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: a socket bound to a source address gets its port at `connect()`,
/// unique per 4-tuple, instead of at `bind()`, unique per address; without it each source
/// address gives at most one connection per port of `net.ipv4.ip_local_port_range` to all
/// servers together.
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is the open socket `socket` owns; `on` is a valid c_int that
    // setsockopt only reads, and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Sends queued bytes until the socket would block or nothing is left; the preface first.
fn flush(conn: &mut Conn) -> Result<(), Fail> {
    if !conn.preface.is_empty() {
        flush_preface(conn)?;
        if !conn.preface.is_empty() {
            return Ok(());
        }
    }
    match conn.tls.as_mut() {
        None => {
            while let Some(bytes) = conn.out.front() {
                match conn.sock.write(bytes) {
                    Ok(0) => return Err(Fail("eof")),
                    Ok(n) => conn.out.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Fail("io")),
                }
            }
            Ok(())
        }
        Some(tls) => loop {
            let mut moved = false;
            while let Some(bytes) = conn.out.front() {
                let n = tls.writer().write(bytes).map_err(|_| Fail("tls"))?;
                if n == 0 {
                    break;
                }
                conn.out.advance(n);
                moved = true;
            }
            while tls.wants_write() {
                match tls.write_tls(&mut conn.sock) {
                    Ok(0) => return Err(Fail("eof")),
                    Ok(_) => moved = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Fail("io")),
                }
            }
            if !moved || conn.out.is_empty() {
                return Ok(());
            }
        },
    }
}

/// Sends the preface raw. With implicit TLS the ClientHello is already waiting in rustls: it
/// is appended first, so that the PROXY header and the ClientHello leave in one write.
fn flush_preface(conn: &mut Conn) -> Result<(), Fail> {
    if let Some(tls) = conn.tls.as_mut() {
        while tls.wants_write() {
            tls.write_tls(&mut conn.preface).map_err(|_| Fail("tls"))?;
        }
    }
    while !conn.preface.is_empty() {
        match conn.sock.write(&conn.preface) {
            Ok(0) => return Err(Fail("eof")),
            Ok(n) if n == conn.preface.len() => conn.preface = Vec::new(),
            Ok(n) => {
                conn.preface.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Fail("io")),
        }
    }
    Ok(())
}

/// Reads until the socket would block: `(read anything, end of stream)`.
fn read(conn: &mut Conn) -> Result<(bool, bool), Fail> {
    let mut got = false;
    match conn.tls.as_mut() {
        None => {
            let mut buf = [0u8; 4096];
            loop {
                match conn.sock.read(&mut buf) {
                    Ok(0) => return Ok((got, true)),
                    Ok(n) => {
                        conn.inbuf.extend_from_slice(&buf[..n]);
                        got = true;
                        // STARTTLS: stop at the 220 so that the handshake reads what follows.
                        if conn.state == State::StartTls {
                            return Ok((got, false));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((got, false)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        return Ok((got, true));
                    }
                    Err(_) => return Err(Fail("io")),
                }
            }
        }
        Some(tls) => loop {
            match tls.read_tls(&mut conn.sock) {
                Ok(0) => return Ok((got, true)),
                Ok(_) => {
                    got = true;
                    let state = tls.process_new_packets()?;
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let start = conn.inbuf.len();
                        conn.inbuf.resize(start + n, 0);
                        tls.reader()
                            .read_exact(&mut conn.inbuf[start..])
                            .map_err(|_| Fail("tls"))?;
                    }
                    if state.peer_has_closed() {
                        return Ok((got, true));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((got, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok((got, true)),
                Err(_) => return Err(Fail("io")),
            }
        },
    }
}
