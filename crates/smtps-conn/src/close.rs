//! [`CloseReason`]: why a connection ended, typed.

use std::fmt;
use std::io;

use crate::timeouts::Timer;

/// Why a connection closed: the first cause wins, later ones (a write failing after a
/// timeout) do not overwrite it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum CloseReason {
    /// The client sent QUIT (RFC 5321 §4.1.1.10).
    Quit,
    /// The client closed its side: end of stream, or a TLS `close_notify` (RFC 8446 §6.1),
    /// at any stage (handshake, idle, mid-command, mid-message).
    ClientClosed,
    /// A timer expired.
    Timeout(Timer),
    /// The client made too many errors, or sent too many commands.
    TooManyErrors,
    /// The connection was over a connection limit (`421 4.7.0`).
    Limit,
    /// The host answered `421` (RFC 5321 §3.8), or closed the connection itself.
    Refused,
    /// The server is shutting down (`421 4.3.2`).
    Shutdown,
    /// The TLS handshake or a TLS record failed.
    Tls(smtps_tls::TlsError),
    /// The socket failed.
    Io(io::ErrorKind),
    /// The PROXY protocol header the listener expects was malformed, truncated, unsupported or
    /// missing.
    ProxyHeader(smtps_proxy::Error),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quit => f.write_str("quit"),
            Self::ClientClosed => f.write_str("client_closed"),
            Self::Timeout(timer) => write!(f, "timeout_{timer}"),
            Self::TooManyErrors => f.write_str("too_many_errors"),
            Self::Limit => f.write_str("limit"),
            Self::Refused => f.write_str("refused"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Tls(error) => write!(f, "tls ({error})"),
            Self::Io(kind) => write!(f, "io ({kind})"),
            Self::ProxyHeader(error) => write!(f, "proxy_header ({error})"),
        }
    }
}
