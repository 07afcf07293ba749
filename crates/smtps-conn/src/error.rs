//! [`Error`]: what a host call on a [`Connection`](crate::Connection) can fail with.

use std::fmt;

/// What can go wrong on a [`Connection`](crate::Connection).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A TLS mode was asked for without a [`TlsAcceptor`](smtps_tls::TlsAcceptor).
    TlsNotConfigured,
    /// TLS failed (a handshake failure, a protocol error, a corrupt record). The connection
    /// is over: send what [`Connection::output`](crate::Connection::output) still gives (the alert), then close.
    Tls(smtps_tls::Error),
    /// The session refused a host call (an unknown decision, a verdict that does not fit).
    Session(smtps_proto::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TlsNotConfigured => f.write_str("a TLS mode needs a certificate"),
            Self::Tls(e) => e.fmt(f),
            Self::Session(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TlsNotConfigured => None,
            Self::Tls(e) => Some(e),
            Self::Session(e) => Some(e),
        }
    }
}

impl From<smtps_tls::Error> for Error {
    fn from(e: smtps_tls::Error) -> Self {
        Self::Tls(e)
    }
}

impl From<smtps_proto::Error> for Error {
    fn from(e: smtps_proto::Error) -> Self {
        Self::Session(e)
    }
}
