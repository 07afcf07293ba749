//! PROXY protocol headers as a balancer sends them (haproxy's proxy-protocol.txt), written
//! independently of the parser in `smtps-proxy` so that tests check one against the other.

use std::net::SocketAddr;

/// A v1 (text) header: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`.
///
/// # Panics
/// If the two addresses are of different families.
#[must_use]
pub fn proxy_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => panic!("source and destination of one family"),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 (binary) PROXY header over TCP with `tlvs` (type, value) after the addresses.
///
/// # Panics
/// If the two addresses are of different families.
#[must_use]
pub fn proxy_v2(source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("source and destination of one family"),
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    for (kind, value) in tlvs {
        body.push(*kind);
        let len = u16::try_from(value.len()).expect("a TLV under 64 KiB");
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(value);
    }
    v2(0x21, family, &body)
}

/// A v2 LOCAL header: the balancer's own connection (a health check), no addresses.
#[must_use]
pub fn proxy_v2_local() -> Vec<u8> {
    v2(0x20, 0x00, &[])
}

fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(version_command);
    header.push(family);
    let len = u16::try_from(body.len()).expect("a header under 64 KiB");
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(body);
    header
}
