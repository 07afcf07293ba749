//! [`Timeouts`] and [`Timer`]: every timer of one connection (RFC 5321 §4.5.3.2).

use std::fmt;
use std::time::Duration;

/// A connection's timers (RFC 5321 §4.5.3.2: a server should wait at least 5 minutes for a
/// command). An expired session is answered `421 4.4.2` and closed.
///
/// The RFC's client-side timers map onto these: the wait for the first command after the
/// greeting and between commands is `command`; between blocks of a message body it is
/// `data_block`. The wait for the host's own decisions (`decision`) is the driver's: the
/// engine cannot know when a host gives up, only the thing that relays its answers can.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the start of TLS (accept for implicit TLS, the `220` for STARTTLS) to the end of
    /// the handshake. Default 30 s.
    pub handshake: Duration,
    /// Waiting for the next command (§4.5.3.2.7: 5 minutes). Default 300 s.
    pub command: Duration,
    /// Waiting for the next block of message data (§4.5.3.2.5: 3 minutes on the client side).
    /// Default 180 s.
    pub data_block: Duration,
    /// Waiting for the host to decide (for example to commit a message): past it the command
    /// is answered `451 4.3.0` so that the client retries rather than times out
    /// (§4.5.3.2.6 gives the client 10 minutes after the final dot). Enforced by the driver
    /// that relays the host's answers (the mio server, the C server level). Also the longest
    /// the host may pause input (`Connection::pause_input`), enforced by the engine: past it
    /// the connection closes with `421 4.3.0`. Default 300 s.
    pub decision: Duration,
    /// A whole session, however active. Default 3600 s.
    pub session: Duration,
    /// From accept to the end of the PROXY protocol header, on connections that expect one
    /// (the specification asks for at least 3 s). Default 10 s.
    pub proxy_header: Duration,
    /// How long a closing connection may take to send its last replies and `close_notify` to
    /// a client that does not read; then the rest is dropped and the socket closed. Default
    /// 5 s.
    pub close_linger: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(30),
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            decision: Duration::from_secs(300),
            session: Duration::from_secs(3600),
            close_linger: Duration::from_secs(5),
            proxy_header: Duration::from_secs(10),
        }
    }
}

/// Which timer expired (carried by [`CloseReason::Timeout`](crate::CloseReason::Timeout)).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The TLS handshake took too long.
    Handshake,
    /// No command came in time.
    Command,
    /// No message data came in time.
    DataBlock,
    /// The session lasted too long.
    Session,
    /// A closing connection's last octets could not be sent in time.
    CloseLinger,
    /// The PROXY protocol header did not arrive in time.
    ProxyHeader,
    /// The host paused input ([`Connection::pause_input`](crate::Connection::pause_input))
    /// for longer than [`Timeouts::decision`].
    InputPaused,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Handshake => "handshake",
            Self::Command => "command",
            Self::DataBlock => "data_block",
            Self::Session => "session",
            Self::CloseLinger => "close_linger",
            Self::ProxyHeader => "proxy_header",
            Self::InputPaused => "input_paused",
        })
    }
}
