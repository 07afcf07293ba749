//! The server's error type: only set-up and shutdown errors leave the server; a connection's
//! failure closes that connection.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// A set-up or run-time failure of the server as a whole.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// A listener could not be opened.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// A TLS listener was configured without a TLS acceptor.
    TlsNotConfigured {
        /// The listener's address.
        addr: SocketAddr,
    },
    /// No listener was configured.
    NoListeners,
    /// The event loop failed (creating a poll instance, registering a socket, starting a
    /// thread).
    Io {
        /// What was being done.
        context: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// A worker thread panicked (a bug in a handler, or in this crate).
    WorkerPanicked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")?;
                match source.kind() {
                    io::ErrorKind::AddrInUse => f.write_str(
                        " (another process holds this address: stop it or choose another port)",
                    ),
                    io::ErrorKind::PermissionDenied => f.write_str(
                        " (ports below 1024 need root or CAP_NET_BIND_SERVICE: grant it, or use a higher port)",
                    ),
                    io::ErrorKind::AddrNotAvailable => {
                        f.write_str(" (no local interface has this address)")
                    }
                    _ => Ok(()),
                }
            }
            Self::TlsNotConfigured { addr } => write!(
                f,
                "listener {addr} uses TLS but no certificate is configured: give a certificate and key"
            ),
            Self::NoListeners => f.write_str("no listener configured: add at least one"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::WorkerPanicked => f.write_str("a worker thread panicked"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
