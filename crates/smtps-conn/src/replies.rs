//! Replies the library itself gives, from more than one place: one definition each, so that a
//! client sees the same words whichever driver or layer answered.

use smtps_proto::{EnhancedStatus, Reply, ReplyCode};

/// `421 4.4.2 <hostname> Timeout, closing connection`: a timer expired (RFC 5321 §4.5.3.2,
/// RFC 3463 4.4.2 "bad connection").
#[must_use]
pub fn timeout(hostname: &str) -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 4, 2),
        format!("{hostname} Timeout, closing connection"),
    )
}

/// `421 4.3.2 Service shutting down, try again later` (RFC 5321 §3.8, RFC 3463 4.3.2 "system
/// not accepting network messages").
#[must_use]
pub fn shutting_down() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 3, 2),
        "Service shutting down, try again later",
    )
}

/// `421 4.7.0 Too many connections, try again later`: over a connection limit.
#[must_use]
pub fn too_many_connections() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 7, 0),
        "Too many connections, try again later",
    )
}

/// `421 4.7.0 TLS not available`: the STARTTLS upgrade could not be made (RFC 3207 §4).
#[must_use]
pub fn tls_not_available() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 7, 0),
        "TLS not available",
    )
}

/// `451 4.3.0 Temporary failure, try again later`: the host could not decide (it did not answer
/// in time, or gave an answer that does not fit), so the client retries (RFC 5321 §4.2.5).
#[must_use]
pub fn temporary_failure() -> Reply {
    Reply::new(
        ReplyCode::LOCAL_ERROR,
        EnhancedStatus::new(4, 3, 0),
        "Temporary failure, try again later",
    )
}

/// `421 4.3.0 Local processing too slow, try again later`: the host paused the client's input
/// ([`Connection::pause_input`](crate::Connection::pause_input)) for longer than
/// `Timeouts::decision`; the message in progress is dropped and the client retries (RFC 5321
/// §4.2.5, RFC 3463 4.3.0 "other or undefined mail system status").
#[must_use]
pub fn host_stalled() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 3, 0),
        "Local processing too slow, try again later",
    )
}

/// `421 4.3.0 Service temporarily unavailable`: the host could not decide whether to greet a
/// client; the only temporary answer in place of the greeting (RFC 5321 §3.1, §4.3.2), and it
/// closes the connection.
#[must_use]
pub fn greeting_unavailable() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 3, 0),
        "Service temporarily unavailable, try again later",
    )
}
