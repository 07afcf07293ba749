//! [`Server`]: binds the listeners, starts the workers, and hands out a [`ServerHandle`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Poll, Waker};
use smtps_proto::{Extensions, SessionConfig};
use socket2::{Domain, Protocol, Socket, Type};

use smtps_conn::Mode;

use crate::config::ServerConfig;
use crate::error::Error;
use crate::handler::{Handler, Mailbox};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::worker::{WAKER, Worker};

/// An SMTP server: listeners bound, workers ready. [`Server::run`] or [`Server::start`] serves.
pub struct Server<H: Handler> {
    shared: Arc<Shared<H>>,
    workers: Vec<Worker<H>>,
    local_addrs: Vec<SocketAddr>,
}

/// What every worker of a server shares.
pub(crate) struct Shared<H> {
    pub(crate) handler: H,
    pub(crate) config: ServerConfig,
    /// The session configuration of each listener (its mode applied).
    pub(crate) session_configs: Vec<Arc<SessionConfig>>,
    pub(crate) control: Arc<Control>,
    pub(crate) next_session: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl<H> Shared<H> {
    /// Counts one more connection from `ip`; returns how many there are now.
    pub(crate) fn count_ip(&self, ip: IpAddr) -> usize {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_ip.entry(ip.to_canonical()).or_insert(0);
        *count += 1;
        *count
    }

    /// Gives back a connection's place in the per-address count.
    pub(crate) fn release_ip(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// Shutdown state, shared with [`ServerHandle`]s.
pub(crate) struct Control {
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: AtomicBool,
    pub(crate) deadline: Mutex<Option<Instant>>,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
}

/// Controls a running server from any thread: graceful shutdown.
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

/// A server served from the host's own poll loop, on the host's thread ([`Server::into_polled`]):
/// one worker, whose every handler call runs inside [`PolledServer::turn`].
pub struct PolledServer<H: Handler> {
    worker: Worker<H>,
    events: Events,
    handle: ServerHandle,
}

/// A server running on its own threads ([`Server::start`]).
pub struct RunningServer {
    handle: ServerHandle,
    threads: Vec<JoinHandle<()>>,
}

impl<H: Handler> Server<H> {
    /// Binds every listener (so that a bad address fails here, naming it) and prepares the
    /// workers.
    ///
    /// # Errors
    /// [`Error::NoListeners`], [`Error::TlsNotConfigured`], [`Error::Bind`] (port in use,
    /// permission denied, address not local), or [`Error::Io`].
    pub fn bind(config: ServerConfig, handler: H) -> Result<Self, Error> {
        if config.listeners.is_empty() {
            return Err(Error::NoListeners);
        }
        for listener in &config.listeners {
            if listener.mode.uses_tls() && config.tls.is_none() {
                return Err(Error::TlsNotConfigured {
                    addr: listener.addr,
                });
            }
        }
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            config.workers
        };
        // Each worker gets its own socket per listener (SO_REUSEPORT): the kernel spreads
        // connections across workers with no shared accept queue to contend on.
        let mut sockets: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for listener in &config.listeners {
            let mut addr = listener.addr;
            if let Some(inherited) = &listener.inherited {
                // Every worker polls the same socket (a descriptor each); one accept wins.
                for worker in &mut sockets {
                    let socket = inherited
                        .0
                        .try_clone()
                        .and_then(|s| s.set_nonblocking(true).map(|()| s))
                        .map_err(|source| Error::Bind { addr, source })?;
                    worker.push(TcpListener::from_std(socket));
                }
                local_addrs.push(addr);
                continue;
            }
            if !listener.share_port {
                addr = claim_alone(addr)?;
            }
            for worker in &mut sockets {
                let socket = bind_reuseport(addr)?;
                if addr.port() == 0 {
                    addr = socket
                        .local_addr()
                        .map_err(|source| Error::Bind { addr, source })?;
                }
                worker.push(socket);
            }
            local_addrs.push(addr);
        }
        let mut polls = Vec::new();
        let mut mailboxes = Vec::new();
        for _ in 0..workers {
            let poll = Poll::new().map_err(|source| Error::Io {
                context: "creating a poll instance",
                source,
            })?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(|source| Error::Io {
                context: "creating a waker",
                source,
            })?;
            mailboxes.push(Arc::new(Mailbox {
                queue: Mutex::new(Vec::new()),
                resumes: Mutex::new(Vec::new()),
                waker,
                idle: AtomicBool::new(true),
            }));
            polls.push(poll);
        }
        let offers_auth = handler.offers_auth();
        let pipelined_decisions = handler.pipelined_decisions();
        let session_configs = config
            .listeners
            .iter()
            .map(|listener| {
                let mut session = config.session.clone();
                session.pipelined_decisions = pipelined_decisions;
                // The engine applies this too, but per connection (a clone of the whole
                // configuration each time); done here once per listener, it finds it applied.
                if listener.mode == Mode::StartTlsRequired {
                    session.policy.require_tls_for_mail = true;
                }
                // AUTH is advertised only by a host that checks credentials.
                if !offers_auth {
                    session.extensions = session.extensions.without(Extensions::AUTH);
                }
                Arc::new(session)
            })
            .collect();
        let listeners = config.listeners.iter().map(|l| l.mode);
        let control = Arc::new(Control {
            metrics: Metrics::new(local_addrs.iter().copied().zip(listeners)),
            shutdown: AtomicBool::new(false),
            deadline: Mutex::new(None),
            mailboxes: mailboxes.clone(),
        });
        let shared = Arc::new(Shared {
            handler,
            config,
            session_configs,
            control,
            next_session: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        });
        let workers = polls
            .into_iter()
            .zip(sockets)
            .zip(mailboxes)
            .enumerate()
            .map(|(index, ((poll, listeners), mailbox))| {
                Worker::new(index, Arc::clone(&shared), poll, listeners, mailbox)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            shared,
            workers,
            local_addrs,
        })
    }

    /// The bound addresses, one per configured listener, in order (with the real port where
    /// port 0 was asked for).
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle to stop the server.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            control: Arc::clone(&self.shared.control),
        }
    }

    /// Serves on the calling thread plus one thread per further worker, until a shutdown
    /// completes.
    ///
    /// # Errors
    /// [`Error::Io`] if a thread cannot start; [`Error::WorkerPanicked`].
    pub fn run(self) -> Result<(), Error> {
        let mut workers = self.workers.into_iter();
        let first = workers.next();
        let threads = spawn_all(workers)?;
        let mut panicked = false;
        if let Some(worker) = first {
            panicked |=
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())).is_err();
        }
        for thread in threads {
            panicked |= thread.join().is_err();
        }
        if panicked {
            Err(Error::WorkerPanicked)
        } else {
            Ok(())
        }
    }

    /// Serves from the host's own poll loop, on the host's thread: poll [`PolledServer::fd`]
    /// (with [`PolledServer::next_timeout`]) and call [`PolledServer::turn`]. One worker
    /// serves every connection (the listeners of the others are closed), so every handler
    /// call runs on the thread that turns it, one at a time.
    #[must_use]
    pub fn into_polled(self) -> PolledServer<H> {
        let handle = self.handle();
        let mut workers = self.workers.into_iter();
        // `bind` makes at least one worker.
        let Some(worker) = workers.next() else {
            unreachable!("a bound server has a worker")
        };
        PolledServer {
            worker,
            events: Events::with_capacity(1024),
            handle,
        }
    }

    /// Serves on new threads and returns at once.
    ///
    /// # Errors
    /// [`Error::Io`] if a thread cannot start.
    pub fn start(self) -> Result<RunningServer, Error> {
        let handle = self.handle();
        let threads = spawn_all(self.workers.into_iter())?;
        Ok(RunningServer { handle, threads })
    }
}

impl<H: Handler> PolledServer<H> {
    /// The descriptor to poll for readability (`POLLIN`): it is readable whenever a turn has
    /// work (a client's socket, an answer from another thread, a shutdown request). Owned by
    /// the server: do not read or close it.
    #[must_use]
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.worker.fd()
    }

    /// Serves whatever is ready — accepts, reads, handler calls, writes, due timers — waiting
    /// at most `timeout` for something to become ready (`Duration::ZERO`: not at all). Returns
    /// how many readiness events were served.
    ///
    /// # Errors
    /// [`Error::Io`] if polling fails.
    pub fn turn(&mut self, timeout: Duration) -> Result<usize, Error> {
        self.worker
            .turn(&mut self.events, timeout)
            .map_err(|source| Error::Io {
                context: "polling",
                source,
            })
    }

    /// How long the host may wait for [`PolledServer::fd`] before calling
    /// [`PolledServer::turn`] anyway (a timer is due then); zero when work is left over.
    #[must_use]
    pub fn next_timeout(&self) -> Duration {
        self.worker.sleep_time(Instant::now())
    }

    /// Whether the server has finished: shut down (see [`ServerHandle::shutdown`]) and every
    /// session closed.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.worker.is_finished()
    }

    /// The handle.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}

fn spawn_all<H: Handler>(
    workers: impl Iterator<Item = Worker<H>>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    workers
        .map(|worker| {
            std::thread::Builder::new()
                .name(format!("smtps-worker-{}", worker.index()))
                .spawn(move || worker.run())
                .map_err(|source| Error::Io {
                    context: "starting a worker thread",
                    source,
                })
        })
        .collect()
}

impl ServerHandle {
    /// Starts a graceful shutdown: listeners close at once; idle sessions get `421 4.3.2` and
    /// close; transactions in flight may finish until `grace` has passed, after which they
    /// are answered `421 4.3.2` and the host is told their messages were aborted.
    pub fn shutdown(&self, grace: Duration) {
        *self
            .control
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + grace);
        self.control.shutdown.store(true, Ordering::SeqCst);
        for mailbox in &self.control.mailboxes {
            if let Err(error) = mailbox.waker.wake() {
                log::warn!("smtps: cannot wake worker for shutdown: {error}");
            }
        }
    }

    /// The server's counters now: sessions, TLS, messages, AUTH, limits, the host's decision
    /// latency, open connections ([`MetricsSnapshot::to_prometheus`] renders them for a
    /// scrape).
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        self.control.metrics.snapshot()
    }

    /// Whether a shutdown was requested.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.control.shutdown.load(Ordering::SeqCst)
    }
}

impl RunningServer {
    /// The handle.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Waits for every worker to finish (after [`ServerHandle::shutdown`]).
    ///
    /// # Errors
    /// [`Error::WorkerPanicked`].
    pub fn join(self) -> Result<(), Error> {
        let mut panicked = false;
        for thread in self.threads {
            panicked |= thread.join().is_err();
        }
        if panicked {
            Err(Error::WorkerPanicked)
        } else {
            Ok(())
        }
    }
}

/// Checks that nobody listens on `addr` (the workers' sockets share it among themselves with
/// SO_REUSEPORT, which would let them join another process's listeners unnoticed): a socket
/// without SO_REUSEPORT binds only where no one else is. Returns the address with the port
/// the kernel picked for port 0.
fn claim_alone(addr: SocketAddr) -> Result<SocketAddr, Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_error)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true).map_err(bind_error)?;
    }
    // SO_REUSEADDR only: a port in TIME_WAIT is free, a listening one is not.
    probe.set_reuse_address(true).map_err(bind_error)?;
    probe.bind(&addr.into()).map_err(bind_error)?;
    probe
        .local_addr()
        .map_err(bind_error)?
        .as_socket()
        .ok_or_else(|| bind_error(std::io::ErrorKind::InvalidData.into()))
}

/// A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT.
fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_error)?;
    if addr.is_ipv6() {
        // `[::]:465` should not also claim the IPv4 port: list `0.0.0.0:465` separately.
        socket.set_only_v6(true).map_err(bind_error)?;
    }
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.set_reuse_port(true).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(1024).map_err(bind_error)?;
    Ok(TcpListener::from_std(socket.into()))
}
