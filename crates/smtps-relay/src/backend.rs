//! The backend MTA: where it is, how it learns who the client is, what can go wrong, and the
//! wire forms the conversation with it needs (XCLIENT attributes, the PROXY v2 header).

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::reply::{BackendReply, ReplyError};

/// How the backend learns who the client is.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Identity {
    /// Not at all: the backend sees the front as the client. Only for backends that apply no
    /// per-client policy.
    #[default]
    None,
    /// Postfix's XCLIENT (`smtpd_authorized_xclient_hosts`): ADDR, PORT, HELO, PROTO, LOGIN,
    /// DESTADDR, DESTPORT and NAME, those the backend advertises.
    Xclient,
    /// A PROXY protocol v2 header before the backend's greeting (Postfix
    /// `smtpd_upstream_proxy_protocol = haproxy`, Exim `hosts_proxy`).
    ProxyV2,
}

/// Where the backend is and how to talk to it.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `host:port`; resolved at each connection.
    pub address: String,
    /// How the client's identity is passed.
    pub identity: Identity,
    /// STARTTLS to the backend with this client configuration (for a backend across a
    /// network); `None` speaks plaintext (a backend on loopback).
    pub starttls: Option<Arc<ClientConfig>>,
    /// The name to verify the backend's certificate against; the host part of `address` by
    /// default.
    pub server_name: Option<String>,
    /// The name the front gives in its EHLO.
    pub helo_name: String,
    /// Connecting, and the greeting.
    pub connect_timeout: Duration,
    /// Each command's reply (RFC 5321 §4.5.3.2: 5 minutes for MAIL and RCPT).
    pub command_timeout: Duration,
    /// The reply to the end of the message (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
}

impl BackendConfig {
    /// A backend at `address` (`host:port`) with plaintext, no identity, and the RFC timeouts.
    #[must_use]
    pub fn new(address: impl Into<String>, helo_name: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            identity: Identity::None,
            starttls: None,
            server_name: None,
            helo_name: helo_name.into(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// Who the client is, as the backend should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client's address (after any PROXY header in front of the front).
    pub addr: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// Its HELO/EHLO name.
    pub helo: Option<String>,
    /// EHLO rather than HELO.
    pub extended: bool,
    /// The authenticated user.
    pub login: Option<String>,
}

/// A backend failure: the client gets `451 4.4.x`, never a 5xx for a transport problem.
#[non_exhaustive]
#[derive(Debug)]
pub enum BackendError {
    /// The address does not resolve, or every address refused or timed out.
    Connect(String, io::Error),
    /// Reading or writing failed, timed out, or the backend closed.
    Io(io::Error),
    /// The backend's reply is malformed.
    Reply(ReplyError),
    /// The backend answered a setup step (greeting, EHLO, STARTTLS, XCLIENT) with this.
    Refused(&'static str, BackendReply),
    /// The backend does not offer what the configuration needs (XCLIENT, STARTTLS).
    Missing(&'static str),
    /// TLS to the backend failed.
    Tls(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(address, error) => write!(f, "cannot connect to {address}: {error}"),
            Self::Io(error) => write!(f, "backend connection failed: {error}"),
            Self::Reply(error) => write!(f, "backend sent a bad reply: {error}"),
            Self::Refused(step, reply) => write!(
                f,
                "backend refused {step}: {} {}",
                reply.code,
                reply.lines.first().map_or("", String::as_str)
            ),
            Self::Missing(what) => write!(f, "backend does not offer {what}"),
            Self::Tls(error) => write!(f, "TLS to the backend failed: {error}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<io::Error> for BackendError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<ReplyError> for BackendError {
    fn from(error: ReplyError) -> Self {
        Self::Reply(error)
    }
}

/// Postfix's form of an address attribute: `IPV6:` before an IPv6 address.
pub(crate) fn address_attribute(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPV6:{}", v6.ip()),
        },
    }
}

/// `command` followed by as many `words` as fit in `limit` octets, over as many lines as needed.
pub(crate) fn pack(command: &str, words: &[String], limit: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = command.to_owned();
    for word in words {
        if line.len() > command.len() && line.len() + 1 + word.len() > limit {
            lines.push(std::mem::replace(&mut line, command.to_owned()));
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > command.len() {
        lines.push(line);
    }
    lines
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub(crate) fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address,
    }
}

/// The addresses of `host:port`, in the resolver's order; each connection resolves anew, so
/// a backend that moves is followed. An IP address literal costs no lookup.
///
/// # Errors
/// [`BackendError::Connect`] if the name does not resolve.
pub(crate) fn resolve(address: &str) -> Result<Vec<SocketAddr>, BackendError> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| BackendError::Connect(address.to_owned(), e))?
        .collect();
    if addrs.is_empty() {
        return Err(BackendError::Connect(
            address.to_owned(),
            io::Error::new(io::ErrorKind::NotFound, "no address"),
        ));
    }
    Ok(addrs)
}

/// A PROXY protocol v2 header (haproxy proxy-protocol.txt §2.2) naming `source` as the client
/// of `destination`, without TLVs.
#[must_use]
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    let canonical = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(v4.into(), a.port())),
        v4 => v4,
    };
    match (canonical(source), canonical(destination)) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            header.extend_from_slice(&[0x11, 0, 12]);
            header.extend_from_slice(&s.ip().octets());
            header.extend_from_slice(&d.ip().octets());
            header.extend_from_slice(&s.port().to_be_bytes());
            header.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            header.extend_from_slice(&[0x21, 0, 36]);
            header.extend_from_slice(&v6(s).octets());
            header.extend_from_slice(&v6(d).octets());
            header.extend_from_slice(&s.port().to_be_bytes());
            header.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    header
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn xclient_attributes_are_packed_under_the_line_limit() {
        let words: Vec<String> = (0..40).map(|i| format!("HELO={}", "h".repeat(i))).collect();
        let lines = pack("XCLIENT", &words, 100);
        assert!(lines.len() > 1);
        assert!(
            lines
                .iter()
                .all(|l| l.len() <= 100 && l.starts_with("XCLIENT "))
        );
        let rejoined: Vec<&str> = lines.iter().flat_map(|l| l.split(' ').skip(1)).collect();
        assert_eq!(rejoined.len(), words.len());
        assert!(pack("XCLIENT", &[], 100).is_empty());
    }

    #[test]
    fn address_attributes_follow_postfix() {
        assert_eq!(
            address_attribute("192.0.2.1:25".parse().unwrap()),
            "192.0.2.1"
        );
        assert_eq!(
            address_attribute("[2001:db8::1]:25".parse().unwrap()),
            "IPV6:2001:db8::1"
        );
        assert_eq!(
            address_attribute("[::ffff:192.0.2.1]:25".parse().unwrap()),
            "192.0.2.1"
        );
    }

    #[test]
    fn host_of_address() {
        assert_eq!(host_of("mx.example:25"), "mx.example");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("mx.example"), "mx.example");
    }

    #[test]
    fn proxy_v2_header_has_the_wire_layout() {
        let header = proxy_v2_header(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:465".parse().unwrap(),
        );
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&header[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&header[16..20], &[192, 0, 2, 1]);
        assert_eq!(&header[24..26], &56324_u16.to_be_bytes());
        let mixed = proxy_v2_header(
            "[2001:db8::1]:1".parse().unwrap(),
            "198.51.100.7:465".parse().unwrap(),
        );
        assert_eq!(&mixed[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(mixed.len(), 16 + 36);
    }
}
