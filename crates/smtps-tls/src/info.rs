//! [`TlsInfo`]: what a session negotiated, for logs and the `Received:` header.

use rustls::server::ServerConnection;
use rustls::{CipherSuite, HandshakeKind, NamedGroup, ProtocolVersion};
use rustls_pki_types::CertificateDer;

use crate::x509;

/// What one TLS session negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version (TLS 1.2 or 1.3).
    pub version: ProtocolVersion,
    /// The cipher suite.
    pub cipher_suite: CipherSuite,
    /// The key exchange group; `None` for a resumed TLS 1.2 session, which does no key exchange.
    pub key_exchange_group: Option<NamedGroup>,
    /// The SNI name the client sent (RFC 6066 §3), if any.
    pub server_name: Option<String>,
    /// The session was resumed (RFC 8446 §2.2, RFC 5246 §7.3) rather than fully negotiated.
    pub resumed: bool,
    /// The client's certificate, if it sent one that verified.
    pub client_certificate: Option<ClientCertificate>,
}

/// A client certificate, as far as a log line needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCertificate {
    /// The end-entity certificate (DER).
    pub der: CertificateDer<'static>,
    /// The subject DN in RFC 4514 form, e.g. `CN=mx.example.org,O=Example`; `None` if it
    /// could not be parsed.
    pub subject: Option<String>,
    /// The subject's commonName, if any.
    pub common_name: Option<String>,
}

impl TlsInfo {
    /// What `conn` negotiated; `None` while it is still handshaking.
    pub fn from_connection(conn: &ServerConnection) -> Option<Self> {
        if conn.is_handshaking() {
            return None;
        }
        Self::negotiated_so_far(conn)
    }

    /// What `conn` negotiated so far, the handshake complete or not: `None` before the
    /// ClientHello was processed.
    pub(crate) fn negotiated_so_far(conn: &ServerConnection) -> Option<Self> {
        let client_certificate = conn.peer_certificates().and_then(|c| c.first()).map(|der| {
            let fields = x509::parse_certificate(der).ok();
            ClientCertificate {
                der: der.clone().into_owned(),
                common_name: fields.as_ref().and_then(|f| f.common_name.clone()),
                subject: fields.map(|f| f.subject),
            }
        });
        Some(Self {
            version: conn.protocol_version()?,
            cipher_suite: conn.negotiated_cipher_suite()?.suite(),
            key_exchange_group: conn
                .negotiated_key_exchange_group()
                .map(rustls::crypto::SupportedKxGroup::name),
            server_name: conn.server_name().map(str::to_owned),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
            client_certificate,
        })
    }

    /// The version as OpenSSL spells it, as Postfix and Exim log it: `TLSv1.2`, `TLSv1.3`.
    pub fn version_name(&self) -> &'static str {
        match self.version {
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            _ => "unknown",
        }
    }

    /// The cipher suite's name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub fn cipher_suite_name(&self) -> &'static str {
        self.cipher_suite.as_str().unwrap_or("unknown")
    }

    /// The key exchange group's name, e.g. `X25519MLKEM768`.
    pub fn key_exchange_group_name(&self) -> Option<&'static str> {
        self.key_exchange_group.and_then(|g| g.as_str())
    }

    /// The symmetric key strength in bits (AES-128: 128; AES-256, ChaCha20: 256).
    pub fn cipher_bits(&self) -> u16 {
        let name = self.cipher_suite_name();
        if name.contains("AES_128") {
            128
        } else if name.contains("AES_256") || name.contains("CHACHA20") {
            256
        } else {
            0
        }
    }

    /// The comment Postfix and Exim put in the `Received:` header (RFC 5321 §4.4 allows a
    /// comment there): `(version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256)`.
    pub fn received_comment(&self) -> String {
        format!(
            "(version={} cipher={} bits={})",
            self.version_name(),
            self.cipher_suite_name(),
            self.cipher_bits()
        )
    }

    /// The RFC 3848 `with` keyword for this TLS session: `ESMTPS`, or `ESMTPSA` when the
    /// client also authenticated (SMTP AUTH, RFC 4954).
    pub fn with_keyword(&self, authenticated: bool) -> &'static str {
        received_with_keyword(true, authenticated)
    }
}

/// The RFC 3848 `with` keyword for a `Received:` header of an ESMTP session:
/// `ESMTP`, `ESMTPA` (authenticated), `ESMTPS` (TLS), `ESMTPSA` (both).
pub fn received_with_keyword(tls: bool, authenticated: bool) -> &'static str {
    match (tls, authenticated) {
        (false, false) => "ESMTP",
        (false, true) => "ESMTPA",
        (true, false) => "ESMTPS",
        (true, true) => "ESMTPSA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(suite: CipherSuite, version: ProtocolVersion) -> TlsInfo {
        TlsInfo {
            version,
            cipher_suite: suite,
            key_exchange_group: Some(NamedGroup::X25519MLKEM768),
            server_name: None,
            resumed: false,
            client_certificate: None,
        }
    }

    #[test]
    fn postfix_exim_style_received_comment() {
        let i = info(
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            ProtocolVersion::TLSv1_3,
        );
        assert_eq!(
            i.received_comment(),
            "(version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256)"
        );
        let i = info(
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ProtocolVersion::TLSv1_2,
        );
        assert_eq!(
            i.received_comment(),
            "(version=TLSv1.2 cipher=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 bits=128)"
        );
        assert_eq!(i.key_exchange_group_name(), Some("X25519MLKEM768"));
    }

    #[test]
    fn rfc3848_with_keywords() {
        assert_eq!(received_with_keyword(false, false), "ESMTP");
        assert_eq!(received_with_keyword(false, true), "ESMTPA");
        assert_eq!(received_with_keyword(true, false), "ESMTPS");
        assert_eq!(received_with_keyword(true, true), "ESMTPSA");
        let i = info(
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ProtocolVersion::TLSv1_3,
        );
        assert_eq!(i.with_keyword(true), "ESMTPSA");
        assert_eq!(i.cipher_bits(), 256);
    }
}
