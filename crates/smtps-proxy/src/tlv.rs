//! The v2 TLVs (type-length-value vectors) after the addresses.

use crate::Error;
use crate::crc32c::Crc32c;

/// One TLV: a type octet and its value.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tlv<'a> {
    /// The type (`PP2_TYPE_*`, see the associated constants).
    pub kind: u8,
    /// The value, `length` octets.
    pub value: &'a [u8],
}

impl Tlv<'_> {
    /// PP2_TYPE_ALPN: the negotiated application protocol, as octets.
    pub const ALPN: u8 = 0x01;
    /// PP2_TYPE_AUTHORITY: the host name the client asked for (TLS SNI), UTF-8.
    pub const AUTHORITY: u8 = 0x02;
    /// PP2_TYPE_CRC32C: the header's CRC32C, 4 octets, network order.
    pub const CRC32C: u8 = 0x03;
    /// PP2_TYPE_NOOP: padding, ignored.
    pub const NOOP: u8 = 0x04;
    /// PP2_TYPE_UNIQUE_ID: an opaque connection identifier, at most 128 octets.
    pub const UNIQUE_ID: u8 = 0x05;
    /// PP2_TYPE_SSL: the client's TLS connection to the proxy; see [`Ssl`].
    pub const SSL: u8 = 0x20;
    /// PP2_TYPE_NETNS: the network namespace name, US-ASCII.
    pub const NETNS: u8 = 0x30;
}

/// The longest PP2_TYPE_UNIQUE_ID value.
const MAX_UNIQUE_ID_LEN: usize = 128;

/// The TLVs of a v2 header, checked by the parser:
///
/// - every TLV (and every PP2_TYPE_SSL sub-TLV) lies within the header;
/// - PP2_TYPE_CRC32C is 4 octets, appears at most once, and matches the header;
/// - PP2_TYPE_UNIQUE_ID is at most 128 octets;
/// - PP2_TYPE_SSL has its 5-octet fixed part;
/// - PP2_TYPE_AUTHORITY is UTF-8 and PP2_TYPE_NETNS US-ASCII, as the specification defines
///   them.
///
/// Other types, registered or not, are not checked; [`Tlvs::iter`] yields them all. The typed
/// accessors return the first TLV of their type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tlvs<'a> {
    bytes: &'a [u8],
}

impl<'a> Tlvs<'a> {
    /// No TLVs (a v1 header's).
    pub(crate) const EMPTY: Self = Self { bytes: &[] };

    /// TLVs that [`Tlvs::parse`] checked before (an owned copy's).
    pub(crate) fn checked(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Checks the TLVs of `header` from offset `start` to its end.
    pub(crate) fn parse(header: &'a [u8], start: usize) -> Result<Self, Error> {
        let bytes = header.get(start..).unwrap_or_default();
        let mut crc_at = None;
        let mut pos = 0;
        while pos < bytes.len() {
            let (tlv, len) = split_tlv(&bytes[pos..])?;
            check(tlv)?;
            if tlv.kind == Tlv::CRC32C {
                if crc_at.is_some() {
                    return Err(Error::BadTlv(Tlv::CRC32C));
                }
                crc_at = Some(start + pos + 3);
            }
            pos += len;
        }
        if let Some(at) = crc_at {
            verify_crc(header, at)?;
        }
        Ok(Self { bytes })
    }

    /// Iterates over every TLV, in header order.
    #[must_use]
    pub fn iter(&self) -> TlvIter<'a> {
        TlvIter { rest: self.bytes }
    }

    /// Whether there are no TLVs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The TLVs as they were on the wire.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The value of the first TLV of type `kind`.
    #[must_use]
    pub fn find(&self, kind: u8) -> Option<&'a [u8]> {
        self.iter()
            .find(|tlv| tlv.kind == kind)
            .map(|tlv| tlv.value)
    }

    /// PP2_TYPE_ALPN: the application protocol the client negotiated with the proxy.
    #[must_use]
    pub fn alpn(&self) -> Option<&'a [u8]> {
        self.find(Tlv::ALPN)
    }

    /// PP2_TYPE_AUTHORITY: the host name the client asked for (the TLS SNI).
    #[must_use]
    pub fn authority(&self) -> Option<&'a str> {
        self.find(Tlv::AUTHORITY)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// PP2_TYPE_CRC32C: the checksum, already verified against the header.
    #[must_use]
    pub fn crc32c(&self) -> Option<u32> {
        self.find(Tlv::CRC32C)
            .and_then(|value| value.first_chunk::<4>())
            .map(|value| u32::from_be_bytes(*value))
    }

    /// PP2_TYPE_UNIQUE_ID: the proxy's identifier for the connection (at most 128 octets).
    #[must_use]
    pub fn unique_id(&self) -> Option<&'a [u8]> {
        self.find(Tlv::UNIQUE_ID)
    }

    /// PP2_TYPE_SSL: the client's TLS connection to the proxy.
    #[must_use]
    pub fn ssl(&self) -> Option<Ssl<'a>> {
        self.find(Tlv::SSL).and_then(Ssl::new)
    }

    /// PP2_TYPE_NETNS: the network namespace the connection came from.
    #[must_use]
    pub fn netns(&self) -> Option<&'a str> {
        self.find(Tlv::NETNS)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

impl<'a> IntoIterator for Tlvs<'a> {
    type Item = Tlv<'a>;
    type IntoIter = TlvIter<'a>;

    fn into_iter(self) -> TlvIter<'a> {
        self.iter()
    }
}

/// An iterator over TLVs (of a header, or the sub-TLVs of [`Ssl`]); it borrows and never
/// allocates.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        // The octets were checked by the parser; should they end early, iteration ends.
        let (tlv, len) = split_tlv(self.rest).ok()?;
        self.rest = self.rest.get(len..).unwrap_or_default();
        Some(tlv)
    }
}

/// The value of PP2_TYPE_SSL: how the client connected to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ssl<'a> {
    client: SslClient,
    verify: u32,
    sub_tlvs: &'a [u8],
}

impl<'a> Ssl<'a> {
    /// PP2_SUBTYPE_SSL_VERSION: the TLS version, US-ASCII (`TLSv1.3`).
    pub const VERSION: u8 = 0x21;
    /// PP2_SUBTYPE_SSL_CN: the client certificate's subject common name, UTF-8.
    pub const COMMON_NAME: u8 = 0x22;
    /// PP2_SUBTYPE_SSL_CIPHER: the cipher suite, US-ASCII (`ECDHE-RSA-AES128-GCM-SHA256`).
    pub const CIPHER: u8 = 0x23;
    /// PP2_SUBTYPE_SSL_SIG_ALG: the certificate's signature algorithm, US-ASCII.
    pub const SIGNATURE_ALGORITHM: u8 = 0x24;
    /// PP2_SUBTYPE_SSL_KEY_ALG: the certificate's key algorithm, US-ASCII.
    pub const KEY_ALGORITHM: u8 = 0x25;

    /// Reads a PP2_TYPE_SSL value: `client`, `verify`, sub-TLVs.
    fn new(value: &'a [u8]) -> Option<Self> {
        let (&client, rest) = value.split_first()?;
        let (verify, sub_tlvs) = rest.split_first_chunk::<4>()?;
        Some(Self {
            client: SslClient(client),
            verify: u32::from_be_bytes(*verify),
            sub_tlvs,
        })
    }

    /// What the client presented (the `client` field).
    #[must_use]
    pub fn client(&self) -> SslClient {
        self.client
    }

    /// The `verify` field: 0 if the client presented a certificate and the proxy verified it.
    #[must_use]
    pub fn verify(&self) -> u32 {
        self.verify
    }

    /// Iterates over the sub-TLVs.
    #[must_use]
    pub fn sub_tlvs(&self) -> TlvIter<'a> {
        TlvIter {
            rest: self.sub_tlvs,
        }
    }

    /// PP2_SUBTYPE_SSL_VERSION, if present and UTF-8.
    #[must_use]
    pub fn version(&self) -> Option<&'a str> {
        self.text(Self::VERSION)
    }

    /// PP2_SUBTYPE_SSL_CN, if present and UTF-8.
    #[must_use]
    pub fn common_name(&self) -> Option<&'a str> {
        self.text(Self::COMMON_NAME)
    }

    /// PP2_SUBTYPE_SSL_CIPHER, if present and UTF-8.
    #[must_use]
    pub fn cipher(&self) -> Option<&'a str> {
        self.text(Self::CIPHER)
    }

    fn text(&self, kind: u8) -> Option<&'a str> {
        self.sub_tlvs()
            .find(|tlv| tlv.kind == kind)
            .and_then(|tlv| std::str::from_utf8(tlv.value).ok())
    }
}

/// The `client` bit field of PP2_TYPE_SSL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SslClient(u8);

impl SslClient {
    /// PP2_CLIENT_SSL: the client connected over TLS.
    pub const SSL: Self = Self(0x01);
    /// PP2_CLIENT_CERT_CONN: the client presented a certificate on this connection.
    pub const CERT_CONN: Self = Self(0x02);
    /// PP2_CLIENT_CERT_SESS: the client presented a certificate in this TLS session (perhaps
    /// on an earlier connection it resumed).
    pub const CERT_SESS: Self = Self(0x04);

    /// Whether every flag of `flags` is set.
    #[must_use]
    pub fn contains(self, flags: Self) -> bool {
        self.0 & flags.0 == flags.0
    }

    /// The octet as sent, undefined bits included.
    #[must_use]
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// The first TLV of `bytes` and its length with the 3-octet type and length.
fn split_tlv(bytes: &[u8]) -> Result<(Tlv<'_>, usize), Error> {
    let Some((&[kind, high, low], rest)) = bytes.split_first_chunk::<3>() else {
        return Err(Error::BadTlv(bytes.first().copied().unwrap_or_default()));
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    let value = rest.get(..len).ok_or(Error::BadTlv(kind))?;
    Ok((Tlv { kind, value }, 3 + len))
}

/// The checks of a registered type's value; see [`Tlvs`].
fn check(tlv: Tlv<'_>) -> Result<(), Error> {
    let ok = match tlv.kind {
        Tlv::CRC32C => tlv.value.len() == 4,
        Tlv::UNIQUE_ID => tlv.value.len() <= MAX_UNIQUE_ID_LEN,
        Tlv::AUTHORITY => std::str::from_utf8(tlv.value).is_ok(),
        Tlv::NETNS => tlv.value.is_ascii(),
        Tlv::SSL => Ssl::new(tlv.value).is_some_and(|ssl| {
            let mut rest = ssl.sub_tlvs;
            while !rest.is_empty() {
                match split_tlv(rest) {
                    Ok((_, len)) => rest = &rest[len..],
                    Err(_) => return false,
                }
            }
            true
        }),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadTlv(tlv.kind))
    }
}

/// Checks the CRC32C whose 4-octet value is at `header[at..at + 4]`.
fn verify_crc(header: &[u8], at: usize) -> Result<(), Error> {
    let (Some(before), Some((sent, after))) = (
        header.get(..at),
        header.get(at..).and_then(<[u8]>::split_first_chunk::<4>),
    ) else {
        return Err(Error::BadTlv(Tlv::CRC32C));
    };
    let mut crc = Crc32c::new();
    crc.update(before);
    crc.update(&[0; 4]);
    crc.update(after);
    if crc.finish() == u32::from_be_bytes(*sent) {
        Ok(())
    } else {
        Err(Error::CrcMismatch)
    }
}
