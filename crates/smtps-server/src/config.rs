//! Server configuration: listeners, TLS, per-session settings, workers, timeouts and limits.

use std::net::SocketAddr;
use std::sync::Arc;

use smtps_conn::{Mode, ProxyPolicy, Timeouts};
use smtps_proto::SessionConfig;
use smtps_tls::TlsAcceptor;

/// One listening address.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address and port; port 0 picks a free one (see [`crate::Server::local_addrs`]).
    pub addr: SocketAddr,
    /// TLS mode.
    pub mode: Mode,
    /// PROXY protocol (haproxy's proxy-protocol.txt): `None` (the default) reads no header;
    /// with a policy, trusted balancers must start every connection with a v1 or v2 header
    /// and the session reports the client it names ([`crate::SessionInfo::peer`]).
    pub proxy: Option<ProxyPolicy>,
    /// Share the port with listeners another process (or server) already has on it
    /// (`SO_REUSEPORT`, same user): the kernel then spreads new clients across both. Off (the
    /// default), binding a port that anyone listens on fails with "address in use". On for a
    /// zero-downtime upgrade: start the new process beside the old one, then stop the old.
    pub share_port: bool,
    /// A listening socket handed over by a supervisor (systemd socket activation,
    /// `sd_listen_fds(3)`): served as it is, by every worker, instead of binding `addr`.
    pub inherited: Option<InheritedListener>,
}

/// A listening socket someone else opened ([`ListenerConfig::inherited`]).
#[derive(Debug, Clone)]
pub struct InheritedListener(pub Arc<std::net::TcpListener>);

impl PartialEq for InheritedListener {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InheritedListener {}

impl ListenerConfig {
    /// A listener on `addr` in `mode`, without PROXY protocol.
    #[must_use]
    pub fn new(addr: SocketAddr, mode: Mode) -> Self {
        Self {
            addr,
            mode,
            proxy: None,
            share_port: false,
            inherited: None,
        }
    }

    /// Serves `socket`, a listening TCP socket handed over (its address becomes `addr`).
    ///
    /// # Errors
    /// The socket's address cannot be read (not a socket).
    pub fn inherited(socket: std::net::TcpListener, mode: Mode) -> std::io::Result<Self> {
        let addr = socket.local_addr()?;
        let mut config = Self::new(addr, mode);
        config.inherited = Some(InheritedListener(Arc::new(socket)));
        Ok(config)
    }

    /// Shares the port with another process's listeners ([`ListenerConfig::share_port`]).
    #[must_use]
    pub fn share_port(mut self) -> Self {
        self.share_port = true;
        self
    }

    /// Reads a PROXY protocol header from the sources `policy` trusts.
    #[must_use]
    pub fn proxy(mut self, policy: ProxyPolicy) -> Self {
        self.proxy = Some(policy);
        self
    }
}

/// Connection limits. A connection over a limit is answered `421 4.7.0` and closed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, over all listeners. Default 10,000.
    pub connections: usize,
    /// Connections open at once from one client IP address (behind a PROXY listener: the
    /// client the header names, never the balancer). Default 50.
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
    /// Worker threads, each with its own `mio::Poll`; 0 (the default) means one per core.
    pub workers: usize,
    /// Timers; see [`Timeouts`] for each default.
    pub timeouts: Timeouts,
    /// Connection limits; see [`ConnectionLimits`] for each default.
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
    pub fn listener(self, addr: SocketAddr, mode: Mode) -> Self {
        self.add_listener(ListenerConfig::new(addr, mode))
    }

    /// Adds a listener with all its settings (such as [`ListenerConfig::proxy`]).
    #[must_use]
    pub fn add_listener(mut self, listener: ListenerConfig) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Sets the TLS acceptor.
    #[must_use]
    pub fn tls(mut self, acceptor: Arc<TlsAcceptor>) -> Self {
        self.tls = Some(acceptor);
        self
    }
}
