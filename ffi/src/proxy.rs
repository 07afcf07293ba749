//! The PROXY protocol pieces both levels share (haproxy's `doc/proxy-protocol.txt`): the
//! registered TLV types as C constants, TLV lookups, and reading an IP address from C text.

use std::net::{IpAddr, SocketAddr};

use ::smtps_conn::smtps_proxy::{OwnedHeader, Ssl, Tlv};

use crate::ffi::write_out;
use crate::view::smtps_bytes;

/// PP2_TYPE_ALPN (0x01, proxy-protocol.txt §2.2.1): the application protocol the client
/// negotiated with the balancer (a copy of the TLS ALPN extension), as octets.
pub const SMTPS_PP2_TYPE_ALPN: u8 = 0x01;
/// PP2_TYPE_AUTHORITY (0x02, §2.2.2): the host name the client asked for, UTF-8 (with TLS, its
/// SNI).
pub const SMTPS_PP2_TYPE_AUTHORITY: u8 = 0x02;
/// PP2_TYPE_CRC32C (0x03, §2.2.3): the header's checksum, 4 octets in network order; the
/// library verified it before accepting the header.
pub const SMTPS_PP2_TYPE_CRC32C: u8 = 0x03;
/// PP2_TYPE_NOOP (0x04, §2.2.4): padding.
pub const SMTPS_PP2_TYPE_NOOP: u8 = 0x04;
/// PP2_TYPE_UNIQUE_ID (0x05, §2.2.5): the balancer's opaque identifier of the connection, at
/// most 128 octets.
pub const SMTPS_PP2_TYPE_UNIQUE_ID: u8 = 0x05;
/// PP2_TYPE_SSL (0x20, §2.2.6): the client's TLS connection to the balancer: a `client` octet,
/// a 4-octet `verify` field, then sub-TLVs (`SMTPS_PP2_SUBTYPE_SSL_*`, read them with the
/// `*_proxy_ssl_tlv` functions).
pub const SMTPS_PP2_TYPE_SSL: u8 = 0x20;
/// PP2_SUBTYPE_SSL_VERSION (0x21, §2.2.6): the TLS version, US-ASCII (`"TLSv1.3"`).
pub const SMTPS_PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// PP2_SUBTYPE_SSL_CN (0x22, §2.2.6): the client certificate's subject Common Name, UTF-8.
pub const SMTPS_PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// PP2_SUBTYPE_SSL_CIPHER (0x23, §2.2.6): the cipher, US-ASCII
/// (`"ECDHE-RSA-AES128-GCM-SHA256"`).
pub const SMTPS_PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// PP2_SUBTYPE_SSL_SIG_ALG (0x24, §2.2.6): the algorithm that signed the balancer's
/// certificate, US-ASCII (`"RSA-SHA256"`).
pub const SMTPS_PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
/// PP2_SUBTYPE_SSL_KEY_ALG (0x25, §2.2.6): the algorithm of the balancer's certificate key,
/// US-ASCII (`"RSA2048"`).
pub const SMTPS_PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
/// PP2_TYPE_NETNS (0x30, §2.2.7): the network namespace's name, US-ASCII.
pub const SMTPS_PP2_TYPE_NETNS: u8 = 0x30;

/// The value of the first TLV of type `kind` in `header` (a v1 header has none).
pub(crate) fn find_tlv(header: &OwnedHeader, kind: u8) -> Option<&[u8]> {
    header.tlvs().find(kind)
}

/// The value of the first sub-TLV of type `kind` in the header's first PP2_TYPE_SSL TLV.
pub(crate) fn find_ssl_tlv(header: &OwnedHeader, kind: u8) -> Option<&[u8]> {
    header
        .tlvs()
        .ssl()?
        .sub_tlvs()
        .find(|tlv| tlv.kind == kind)
        .map(|tlv| tlv.value)
}

/// Writes a found TLV value to `out` (only then); returns whether it did.
///
/// # Safety
/// `out` is NULL or valid for a write of `smtps_bytes`.
pub(crate) unsafe fn tlv_out(value: Option<&[u8]>, out: *mut smtps_bytes) -> bool {
    match value {
        // SAFETY: NULL-or-writable, as promised by the caller; `write_out` checks NULL.
        Some(value) => unsafe { write_out(out, smtps_bytes::new(value)) },
        None => false,
    }
}

/// An IP address from C text: `"192.0.2.1"`, `"2001:db8::1"`, `"[2001:db8::1]"`, or the same
/// with a port (`"192.0.2.1:25"`, `"[2001:db8::1]:25"`), as `getnameinfo` or the session
/// accessors write them.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Keeps the constants in step with the parser's (one place for the numbers: the spec).
const _: () = {
    assert!(SMTPS_PP2_TYPE_ALPN == Tlv::ALPN);
    assert!(SMTPS_PP2_TYPE_AUTHORITY == Tlv::AUTHORITY);
    assert!(SMTPS_PP2_TYPE_CRC32C == Tlv::CRC32C);
    assert!(SMTPS_PP2_TYPE_NOOP == Tlv::NOOP);
    assert!(SMTPS_PP2_TYPE_UNIQUE_ID == Tlv::UNIQUE_ID);
    assert!(SMTPS_PP2_TYPE_SSL == Tlv::SSL);
    assert!(SMTPS_PP2_TYPE_NETNS == Tlv::NETNS);
    assert!(SMTPS_PP2_SUBTYPE_SSL_VERSION == Ssl::<'static>::VERSION);
    assert!(SMTPS_PP2_SUBTYPE_SSL_CN == Ssl::<'static>::COMMON_NAME);
    assert!(SMTPS_PP2_SUBTYPE_SSL_CIPHER == Ssl::<'static>::CIPHER);
    assert!(SMTPS_PP2_SUBTYPE_SSL_SIG_ALG == Ssl::<'static>::SIGNATURE_ALGORITHM);
    assert!(SMTPS_PP2_SUBTYPE_SSL_KEY_ALG == Ssl::<'static>::KEY_ALGORITHM);
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_with_or_without_port_and_brackets() {
        for (text, want) in [
            ("127.0.0.1", Some("127.0.0.1")),
            ("127.0.0.1:25", Some("127.0.0.1")),
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[::1]:465", Some("::1")),
            ("::ffff:10.0.0.1", Some("::ffff:10.0.0.1")),
            ("", None),
            ("localhost", None),
            ("10.0.0.0/8", None),
            ("[127.0.0.1", None),
            ("127.0.0.1:99999", None),
        ] {
            assert_eq!(
                parse_ip(text),
                want.map(|ip| ip.parse::<IpAddr>().unwrap()),
                "{text:?}"
            );
        }
    }
}
