//! [`TlsSettings`]: the builder for the rustls server configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::DnsName;

use crate::acceptor::CertificateInfo;
use crate::error::{ConfigError, Error};
use crate::pem::{PemInput, load_certificates, load_private_key};
use crate::resolve::SniResolver;
use crate::tickets::TicketKeys;
use crate::x509;

/// Settings for TLS on an SMTP listener; [`TlsSettings::build`] turns them into a
/// [`TlsAcceptor`](crate::TlsAcceptor).
///
/// Defaults: TLS 1.2 and 1.3 (RFC 8996 forbids older versions; rustls has none), every AEAD
/// suite and key exchange group of rustls' aws-lc-rs provider (including the X25519MLKEM768
/// post-quantum hybrid), stateless session tickets with in-process rotating keys, a stateful
/// session cache of 256 entries, no client-certificate request.
///
/// Files are read when the settings are built and again on each
/// [`TlsAcceptor::reload`](crate::TlsAcceptor::reload), never in between.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    default_certificate: Option<CertificateSource>,
    sni_certificates: Vec<(String, CertificateSource)>,
    min_version: TlsVersion,
    cipher_suites: Option<Vec<String>>,
    key_exchange_groups: Option<Vec<String>>,
    tickets: SessionTickets,
    session_cache: usize,
    client_auth: ClientAuth,
    half_rtt: bool,
}

/// A certificate chain and its private key, as PEM (RFC 7468) files or bytes.
///
/// The chain holds the end-entity certificate first, then intermediates (RFC 8446 §4.4.2).
/// The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC), and must not be encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSource {
    chain: PemInput,
    key: PemInput,
}

impl CertificateSource {
    /// Certificate chain and key read from two PEM files (they may be the same file).
    pub fn files(chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            chain: PemInput::File(chain.into()),
            key: PemInput::File(key.into()),
        }
    }

    /// Certificate chain and key as PEM bytes in memory.
    pub fn pem(chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        Self {
            chain: PemInput::Bytes(chain.into(), "certificate chain"),
            key: PemInput::Bytes(key.into(), "private key"),
        }
    }
}

/// A bundle of CA certificates (PEM) that client certificates must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    input: PemInput,
}

impl CaBundle {
    /// CA certificates read from a PEM file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            input: PemInput::File(path.into()),
        }
    }

    /// CA certificates as PEM bytes.
    pub fn pem(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            input: PemInput::Bytes(bytes.into(), "client CA bundle"),
        }
    }
}

/// The lowest protocol version accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246) and 1.3. The default: many MTAs still speak only TLS 1.2.
    #[default]
    Tls12,
    /// TLS 1.3 (RFC 8446) only.
    Tls13,
}

/// Whether to ask for a client certificate (RFC 8446 §4.3.2, RFC 5246 §7.4.4), as MTAs do for
/// mutual TLS between relays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Do not ask (the default, and what public SMTP servers do).
    #[default]
    Off,
    /// Ask; a client without a certificate is still accepted, one with a certificate that does
    /// not chain to the bundle is refused.
    Optional(CaBundle),
    /// Ask and refuse the handshake without a valid certificate.
    Required(CaBundle),
}

/// How session tickets (RFC 5077; RFC 8446 §4.6.1) are sealed.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum SessionTickets {
    /// No stateless tickets. TLS 1.3 still resumes through stateful tickets if the session
    /// cache is on.
    Off,
    /// rustls' own ticketer: random keys, rotated every 6 hours, private to this acceptor.
    #[default]
    Rotating,
    /// Keys supplied and rotated by the host, shared with other acceptors or processes.
    HostKeys(Arc<TicketKeys>),
}

impl SessionTickets {
    fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Off, Self::Off) | (Self::Rotating, Self::Rotating) => true,
            (Self::HostKeys(a), Self::HostKeys(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsSettings {
    /// The default stateful session cache size.
    pub const DEFAULT_SESSION_CACHE: usize = 256;

    /// Settings with the defaults above and no certificate yet.
    pub fn new() -> Self {
        Self {
            default_certificate: None,
            sni_certificates: Vec::new(),
            min_version: TlsVersion::Tls12,
            cipher_suites: None,
            key_exchange_groups: None,
            tickets: SessionTickets::Rotating,
            session_cache: Self::DEFAULT_SESSION_CACHE,
            client_auth: ClientAuth::Off,
            half_rtt: true,
        }
    }

    /// The certificate for clients that send no SNI, or a name no other certificate covers.
    /// Required.
    pub fn default_certificate(mut self, source: CertificateSource) -> Self {
        self.default_certificate = Some(source);
        self
    }

    /// Shorthand for `default_certificate(CertificateSource::files(chain, key))`.
    pub fn certificate_files(self, chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.default_certificate(CertificateSource::files(chain, key))
    }

    /// Serves `source` to clients whose SNI (RFC 6066 §3) is `name`; `name` may be a one-label
    /// wildcard such as `*.example.org`. Matching is case-insensitive.
    pub fn sni_certificate(mut self, name: impl Into<String>, source: CertificateSource) -> Self {
        self.sni_certificates.push((name.into(), source));
        self
    }

    /// The lowest protocol version accepted (default TLS 1.2).
    pub fn min_version(mut self, version: TlsVersion) -> Self {
        self.min_version = version;
        self
    }

    /// Restricts the cipher suites to these names, in this order of preference, e.g.
    /// `TLS13_AES_256_GCM_SHA384` or `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` (rustls' names,
    /// see [`TlsSettings::available_cipher_suites`]). Matching is case-insensitive; the IANA
    /// TLS 1.3 spelling (`TLS_AES_256_GCM_SHA384`) is accepted too.
    pub fn cipher_suites<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.cipher_suites = Some(names.iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    /// Restricts the key exchange groups to these names, in order of preference, e.g.
    /// `X25519MLKEM768`, `X25519`, `secp256r1` (see
    /// [`TlsSettings::available_key_exchange_groups`]).
    pub fn key_exchange_groups<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.key_exchange_groups = Some(names.iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    /// How session tickets are sealed (default [`SessionTickets::Rotating`]).
    pub fn session_tickets(mut self, tickets: SessionTickets) -> Self {
        self.tickets = tickets;
        self
    }

    /// The number of sessions kept by the stateful cache (TLS 1.2 session IDs, RFC 5246
    /// §7.4.1.2, and TLS 1.3 stateful tickets); 0 turns it off. Default 256.
    pub fn session_cache(mut self, entries: usize) -> Self {
        self.session_cache = entries;
        self
    }

    /// Client-certificate verification (default off).
    pub fn client_auth(mut self, mode: ClientAuth) -> Self {
        self.client_auth = mode;
        self
    }

    /// Whether a TLS 1.3 server may send application data with its first flight, before the
    /// client's `Finished` (RFC 8446 §2, "0.5-RTT data"; default on): on an implicit-TLS port
    /// the `220` greeting then reaches the client with the handshake's end, one round trip
    /// sooner. Never with client certificates (the client is not authenticated yet then); see
    /// SECURITY.md for what the host must not decide before the handshake's end.
    pub fn half_rtt_data(mut self, on: bool) -> Self {
        self.half_rtt = on;
        self
    }

    /// Loads everything and builds the acceptor; see [`TlsAcceptor::new`](crate::TlsAcceptor::new).
    pub fn build(self) -> Result<crate::TlsAcceptor, Error> {
        crate::TlsAcceptor::new(self)
    }

    /// The cipher suite names the provider offers, in its order of preference.
    pub fn available_cipher_suites() -> Vec<&'static str> {
        aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect()
    }

    /// The key exchange group names the provider offers, in its order of preference.
    pub fn available_key_exchange_groups() -> Vec<&'static str> {
        aws_lc_rs::default_provider()
            .kx_groups
            .iter()
            .filter_map(|g| g.name().as_str())
            .collect()
    }
}

/// What one build of the settings produced.
pub(crate) struct Built {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) certificates: Vec<CertificateInfo>,
}

/// Builds a rustls configuration. `previous` is the configuration being replaced on reload:
/// its session cache and ticketer are kept when the resumption settings did not change, so
/// reloading certificates does not cost every client a full handshake.
pub(crate) fn build(
    settings: &TlsSettings,
    previous: Option<(&TlsSettings, &ServerConfig)>,
) -> Result<Built, Error> {
    let provider = Arc::new(select_provider(settings)?);

    let mut certificates = Vec::new();
    let default = settings
        .default_certificate
        .as_ref()
        .ok_or(ConfigError::NoDefaultCertificate)?;
    let default_key = load_certified_key(default, &provider, Vec::new(), &mut certificates)?;
    let mut resolver = SniResolver::new(default_key);
    for (name, source) in &settings.sni_certificates {
        validate_sni_name(name)?;
        let key = load_certified_key(source, &provider, vec![name.clone()], &mut certificates)?;
        resolver.add(name, key);
    }

    let versions: &[&'static SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(ConfigError::Incompatible)?;
    let builder = match client_verifier(&settings.client_auth, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));

    let reuse = previous.filter(|(old, _)| {
        old.tickets.same_as(&settings.tickets) && old.session_cache == settings.session_cache
    });
    if let Some((_, old)) = reuse {
        config.session_storage = Arc::clone(&old.session_storage);
        config.ticketer = Arc::clone(&old.ticketer);
    } else {
        config.session_storage = session_storage(settings.session_cache);
        if let Some(ticketer) = ticketer(&settings.tickets)? {
            config.ticketer = ticketer;
        }
    }
    config.ignore_client_order = true;
    // The greeting in the server's first flight (RFC 8446 §2's 0.5-RTT data), but never to a
    // peer whose certificate is still to be checked.
    config.send_half_rtt_data =
        settings.half_rtt && matches!(settings.client_auth, ClientAuth::Off);
    // One TLS 1.3 ticket per handshake (rustls sends more by default): an SMTP client keeps
    // one session per server at a time, and each ticket costs the server a key derivation
    // and an encryption on every full handshake.
    config.send_tls13_tickets = 1;
    if settings.session_cache == 0 && matches!(settings.tickets, SessionTickets::Off) {
        config.send_tls13_tickets = 0;
    }

    Ok(Built {
        config: Arc::new(config),
        certificates,
    })
}

fn select_provider(settings: &TlsSettings) -> Result<CryptoProvider, ConfigError> {
    let mut provider = aws_lc_rs::default_provider();
    if settings.cipher_suites.is_none() {
        // AES-128-GCM with SHA-256 first: as strong as a mail session needs, and its key
        // schedule (HMAC-SHA-256) costs the server markedly less per handshake than SHA-384's.
        // The server's order is used (`ignore_client_order`), so clients that list
        // AES-256 first (OpenSSL does) still get this.
        provider
            .cipher_suites
            .sort_by_key(|suite| match suite.suite().as_str() {
                Some("TLS13_AES_128_GCM_SHA256") => 0,
                Some(name) if name.starts_with("TLS13_") => 1,
                Some(name) if name.contains("AES_128_GCM") => 2,
                _ => 3,
            });
    }
    if let Some(names) = &settings.cipher_suites {
        let all = std::mem::take(&mut provider.cipher_suites);
        for name in names {
            let found = all.iter().find(|s| {
                s.suite()
                    .as_str()
                    .is_some_and(|n| suite_name_matches(n, name))
            });
            match found {
                Some(s) => provider.cipher_suites.push(*s),
                None => {
                    return Err(ConfigError::UnknownCipherSuite {
                        name: name.clone(),
                        valid: all.iter().filter_map(|s| s.suite().as_str()).collect(),
                    });
                }
            }
        }
    }
    if let Some(names) = &settings.key_exchange_groups {
        let all = std::mem::take(&mut provider.kx_groups);
        for name in names {
            let found = all.iter().find(|g| {
                g.name()
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            });
            match found {
                Some(g) => provider.kx_groups.push(*g),
                None => {
                    return Err(ConfigError::UnknownKeyExchangeGroup {
                        name: name.clone(),
                        valid: all.iter().filter_map(|g| g.name().as_str()).collect(),
                    });
                }
            }
        }
    }
    Ok(provider)
}

/// rustls names TLS 1.3 suites `TLS13_*`; IANA names them `TLS_*` (RFC 8446 §B.4).
fn suite_name_matches(rustls_name: &str, given: &str) -> bool {
    if rustls_name.eq_ignore_ascii_case(given) {
        return true;
    }
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => {
            given
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("TLS_"))
                && given[4..].eq_ignore_ascii_case(rest)
        }
        None => false,
    }
}

fn load_certified_key(
    source: &CertificateSource,
    provider: &CryptoProvider,
    names: Vec<String>,
    info: &mut Vec<CertificateInfo>,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let chain = load_certificates(&source.chain)?;
    let key = load_private_key(&source.key)?;
    let fields = chain
        .first()
        .map(|c| x509::parse_certificate(c))
        .transpose()
        .map_err(|reason| ConfigError::MalformedCertificate {
            origin: source.chain.origin(),
            reason,
        })?
        .ok_or_else(|| ConfigError::NoCertificate {
            origin: source.chain.origin(),
        })?;
    let end_entity = chain[0].clone();
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => ConfigError::KeyMismatch {
            certificate: source.chain.origin(),
            key: source.key.origin(),
        },
        error => ConfigError::UnsupportedPrivateKey {
            origin: source.key.origin(),
            error,
        },
    })?;
    let dns_names = if fields.dns_names.is_empty() {
        fields.common_name.into_iter().collect()
    } else {
        fields.dns_names
    };
    info.push(CertificateInfo {
        names,
        subject: fields.subject,
        dns_names,
        not_before: unix_to_system_time(fields.not_before),
        not_after: unix_to_system_time(fields.not_after),
        not_after_unix: fields.not_after,
        end_entity,
        source: source.chain.origin(),
    });
    Ok(Arc::new(certified))
}

fn unix_to_system_time(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

fn validate_sni_name(name: &str) -> Result<(), ConfigError> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    match DnsName::try_from(bare) {
        Ok(_) if !bare.contains('*') => Ok(()),
        _ => Err(ConfigError::InvalidServerName {
            name: name.to_owned(),
        }),
    }
}

fn client_verifier(
    mode: &ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigError> {
    let (bundle, optional) = match mode {
        ClientAuth::Off => return Ok(None),
        ClientAuth::Optional(b) => (b, true),
        ClientAuth::Required(b) => (b, false),
    };
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(load_certificates(&bundle.input)?);
    if added == 0 {
        return Err(ConfigError::NoUsableClientCa {
            origin: bundle.input.origin(),
        });
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    if optional {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map(Some)
        .map_err(ConfigError::ClientVerifier)
}

fn session_storage(entries: usize) -> Arc<dyn StoresServerSessions + Send + Sync> {
    if entries == 0 {
        Arc::new(NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(entries)
    }
}

fn ticketer(mode: &SessionTickets) -> Result<Option<Arc<dyn ProducesTickets>>, ConfigError> {
    Ok(match mode {
        SessionTickets::Off => None,
        SessionTickets::Rotating => {
            Some(aws_lc_rs::Ticketer::new().map_err(|_| ConfigError::Crypto("ticketer setup"))?)
        }
        SessionTickets::HostKeys(keys) => Some(Arc::clone(keys) as Arc<dyn ProducesTickets>),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8446_iana_suite_names_are_accepted() {
        assert!(suite_name_matches(
            "TLS13_AES_128_GCM_SHA256",
            "tls_aes_128_gcm_sha256"
        ));
        assert!(suite_name_matches(
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_AES_128_GCM_SHA256"
        ));
        assert!(!suite_name_matches("TLS13_AES_128_GCM_SHA256", "TLS_"));
        assert!(!suite_name_matches("TLS13_AES_128_GCM_SHA256", "é"));
    }

    #[test]
    fn provider_offers_post_quantum_hybrid_group() {
        assert!(TlsSettings::available_key_exchange_groups().contains(&"X25519MLKEM768"));
    }

    #[test]
    fn sni_names_are_validated() {
        assert!(validate_sni_name("mx.example.org").is_ok());
        assert!(validate_sni_name("*.example.org").is_ok());
        assert!(validate_sni_name("a.*.example.org").is_err());
        assert!(validate_sni_name("not a name").is_err());
    }
}
