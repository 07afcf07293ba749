//! Server configuration: listeners, TLS, per-session settings, workers, timeouts and limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtps_proto::SessionConfig;
use smtps_tls::TlsAcceptor;

/// How a listener speaks TLS.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// TLS from the first byte: submission on port 465 (RFC 8314 §3.3).
    ImplicitTls,
    /// Plaintext with STARTTLS offered (RFC 3207): relay on port 25.
    StartTls,
    /// Plaintext with STARTTLS offered and required before MAIL (`530 5.7.0`): submission on
    /// port 587 without "partial security".
    StartTlsRequired,
    /// Plaintext only, no STARTTLS: for a loopback or a PROXY-protocol setup behind a TLS
    /// terminator.
    Plain,
}

impl ListenerMode {
    /// Whether the mode needs a TLS acceptor.
    #[must_use]
    pub fn uses_tls(self) -> bool {
        !matches!(self, Self::Plain)
    }
}

/// One listening address.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address and port; port 0 picks a free one (see [`crate::Server::local_addrs`]).
    pub addr: SocketAddr,
    /// TLS mode.
    pub mode: ListenerMode,
}

impl ListenerConfig {
    /// A listener on `addr` in `mode`.
    #[must_use]
    pub fn new(addr: SocketAddr, mode: ListenerMode) -> Self {
        Self { addr, mode }
    }
}

/// Timers (RFC 5321 §4.5.3.2: a server should wait at least 5 minutes for a command). An
/// expired session is answered `421 4.4.2` and closed.
///
/// The RFC's client-side timers map onto these: the wait for the first command after the
/// greeting and between commands is `command`; between blocks of a message body it is
/// `data_block`; after the final dot (the "end of data" wait, §4.5.3.2.6) the server waits
/// for the host's decision, bounded by `decision`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// From accept (or STARTTLS) to the end of the TLS handshake.
    pub handshake: Duration,
    /// Waiting for the next command (§4.5.3.2.7: 5 minutes).
    pub command: Duration,
    /// Waiting for the next block of message data (§4.5.3.2.5: 3 minutes on the client side).
    pub data_block: Duration,
    /// Waiting for the host to decide (for example to commit a message): past it the command
    /// is answered `451 4.3.0` so that the client retries rather than times out
    /// (§4.5.3.2.6 gives the client 10 minutes after the final dot).
    pub decision: Duration,
    /// A whole session, however active.
    pub session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(30),
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            decision: Duration::from_secs(300),
            session: Duration::from_secs(3600),
        }
    }
}

impl Timeouts {
    /// The shortest timeout: the timer sweep runs at a fraction of it.
    pub(crate) fn shortest(&self) -> Duration {
        [
            self.handshake,
            self.command,
            self.data_block,
            self.decision,
            self.session,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1))
    }
}

/// Connection limits. A connection over a limit is answered `421 4.7.0` and closed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, over all listeners.
    pub connections: usize,
    /// Connections open at once from one client IP address.
    pub connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            connections: 10_000,
            connections_per_ip: 50,
        }
    }
}

/// Everything a [`crate::Server`] needs.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The TLS acceptor shared by every TLS listener; required when one uses TLS. Keep a
    /// clone of the `Arc` to reload certificates while serving.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// SMTP settings: host name, extensions, limits, policies. Listener modes adjust it
    /// (`StartTlsRequired` sets `require_tls_for_mail`).
    pub session: SessionConfig,
    /// Worker threads, each with its own `mio::Poll`; 0 means one per core.
    pub workers: usize,
    /// Timers.
    pub timeouts: Timeouts,
    /// Connection limits.
    pub limits: ConnectionLimits,
}

impl ServerConfig {
    /// A configuration with no listeners, no TLS and defaults elsewhere.
    #[must_use]
    pub fn new(session: SessionConfig) -> Self {
        Self {
            listeners: Vec::new(),
            tls: None,
            session,
            workers: 0,
            timeouts: Timeouts::default(),
            limits: ConnectionLimits::default(),
        }
    }

    /// Adds a listener.
    #[must_use]
    pub fn listener(mut self, addr: SocketAddr, mode: ListenerMode) -> Self {
        self.listeners.push(ListenerConfig::new(addr, mode));
        self
    }

    /// Sets the TLS acceptor.
    #[must_use]
    pub fn tls(mut self, acceptor: Arc<TlsAcceptor>) -> Self {
        self.tls = Some(acceptor);
        self
    }
}
