//! Who may send a PROXY protocol header on a listener, and what a connection is served as.
//!
//! haproxy's proxy-protocol.txt §1: a receiver must not guess whether a header comes — it is
//! configured per listener, and accepted only from the balancers it trusts, or any client
//! could claim any address. [`ProxyPolicy::admit`] is that rule, the same for every driver.

use std::net::{IpAddr, SocketAddr};

use smtps_proxy::{Command, Network, OwnedHeader};

/// A listener's PROXY protocol setting: the balancers it trusts, and what to do with a
/// connection from anyone else. A listener without one (the default) never reads a header.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// The sources allowed to send a header (IPv4 and IPv6 blocks).
    pub trusted: Vec<Network>,
    /// What a connection from any other source gets.
    pub untrusted: Untrusted,
}

/// What a listener with a [`ProxyPolicy`] does with a connection from an untrusted source.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Untrusted {
    /// Close it without a banner (the default: a listener behind a balancer is not for direct
    /// clients, and a direct client's header would otherwise be read as SMTP).
    #[default]
    Refuse,
    /// Serve it as a direct client, with its socket's addresses and no header read.
    Direct,
}

/// How to start one connection on a listener ([`ProxyPolicy::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// From a trusted balancer: call [`crate::Connection::expect_proxy_header`].
    ExpectHeader,
    /// Serve the client directly.
    Direct,
    /// Close the socket at once, without a word.
    Refuse,
}

impl ProxyPolicy {
    /// Headers from `trusted`; untrusted sources refused.
    #[must_use]
    pub fn new(trusted: Vec<Network>) -> Self {
        Self {
            trusted,
            untrusted: Untrusted::Refuse,
        }
    }

    /// Sets what untrusted sources get.
    #[must_use]
    pub fn untrusted(mut self, untrusted: Untrusted) -> Self {
        self.untrusted = untrusted;
        self
    }

    /// Whether `source` is one of the trusted balancers.
    #[must_use]
    pub fn trusts(&self, source: IpAddr) -> bool {
        self.trusted.iter().any(|network| network.contains(source))
    }

    /// How to start a connection whose socket peer is `source`.
    #[must_use]
    pub fn admit(&self, source: IpAddr) -> Admission {
        if self.trusts(source) {
            Admission::ExpectHeader
        } else if self.untrusted == Untrusted::Direct {
            Admission::Direct
        } else {
            Admission::Refuse
        }
    }

    /// [`ProxyPolicy::admit`] for a listener that may have no policy: without one, everyone is
    /// served directly.
    #[must_use]
    pub fn admit_on(policy: Option<&Self>, source: IpAddr) -> Admission {
        policy.map_or(Admission::Direct, |policy| policy.admit(source))
    }
}

/// The addresses a session reports, `(client, local)`: the header's source and destination
/// for a PROXY command with addresses, else the socket's own (a LOCAL health check, v1
/// `UNKNOWN`, v2 `AF_UNSPEC`, or no header at all).
#[must_use]
pub fn reported_addresses(
    header: Option<&OwnedHeader>,
    socket_peer: SocketAddr,
    socket_local: SocketAddr,
) -> (SocketAddr, SocketAddr) {
    match header {
        Some(header) if header.command == Command::Proxy => header
            .addresses
            .map_or((socket_peer, socket_local), |a| (a.source, a.destination)),
        _ => (socket_peer, socket_local),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use smtps_proxy::{Status, parse_header};

    fn policy(untrusted: Untrusted) -> ProxyPolicy {
        ProxyPolicy::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ])
        .untrusted(untrusted)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_sources_send_a_header_over_ipv4_ipv6_and_mapped() {
        let policy = policy(Untrusted::Refuse);
        for source in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::7"] {
            assert_eq!(
                policy.admit(ip(source)),
                Admission::ExpectHeader,
                "{source}"
            );
        }
    }

    #[test]
    fn untrusted_sources_are_refused_by_default_or_served_directly() {
        assert_eq!(
            policy(Untrusted::default()).admit(ip("192.0.2.1")),
            Admission::Refuse
        );
        assert_eq!(
            policy(Untrusted::Direct).admit(ip("192.0.2.1")),
            Admission::Direct
        );
        assert_eq!(
            ProxyPolicy::admit_on(None, ip("10.1.2.3")),
            Admission::Direct,
            "a listener without a policy reads no header from anyone"
        );
    }

    fn owned(header: &[u8]) -> OwnedHeader {
        let Ok(Status::Complete((_, parsed))) = parse_header(header) else {
            panic!("a complete header");
        };
        parsed.to_owned_header()
    }

    #[test]
    fn proxy_command_reports_the_client_local_reports_the_socket() {
        let peer: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let local: SocketAddr = "10.0.0.9:465".parse().unwrap();
        let proxied = owned(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 465\r\n");
        assert_eq!(
            reported_addresses(Some(&proxied), peer, local),
            (
                "192.0.2.1:56324".parse().unwrap(),
                "198.51.100.7:465".parse().unwrap()
            )
        );
        let unknown = owned(b"PROXY UNKNOWN\r\n");
        assert_eq!(
            reported_addresses(Some(&unknown), peer, local),
            (peer, local)
        );
        let mut health_check = smtps_proxy::V2_SIGNATURE.to_vec();
        health_check.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let local_command = owned(&health_check);
        assert_eq!(local_command.command, Command::Local);
        assert_eq!(
            reported_addresses(Some(&local_command), peer, local),
            (peer, local)
        );
        assert_eq!(reported_addresses(None, peer, local), (peer, local));
    }
}
