//! The crate's error type: host mistakes in driving a session. A client's mistakes are never
//! errors — they are replies (RFC 5321 §4.2).

use std::fmt;

/// A misuse of the session API by the host.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The decision is not the one the session awaits: answered already, never issued, or
    /// cancelled because the session closed.
    UnknownDecision,
    /// The verdict's reply does not fit: an accepting reply must be 2xx (3xx for DATA), a
    /// rejecting one 4xx or 5xx.
    InvalidVerdict,
    /// [`crate::ServerSession::handle_tls_established`] was called with no STARTTLS in
    /// progress.
    NotAwaitingTls,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownDecision => "no such decision is outstanding in this session",
            Self::InvalidVerdict => {
                "the reply's class does not fit the verdict (accept: 2xx, or 3xx for DATA; reject: 4xx or 5xx)"
            }
            Self::NotAwaitingTls => "no STARTTLS upgrade is in progress",
        })
    }
}

impl std::error::Error for Error {}
