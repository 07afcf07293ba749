//! The crate's one error type, with a sub-enum per category.
//!
//! Modelled on rustls' `rustls/src/error.rs` (0.23): one `#[non_exhaustive]` enum, a
//! hand-written `Display`, and the wrapped errors kept whole so a caller can match on them.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Every error this crate returns.
///
/// Configuration problems ([`ConfigError`]) come from [`TlsSettings`](crate::TlsSettings) and
/// reloads; they name the file and the problem. Session problems ([`TlsError`]) come from a
/// [`Transport`](crate::Transport) and wrap the `rustls::Error` whole. Misuse of the transport
/// API is a [`UsageError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The TLS configuration (certificates, keys, suites, CA bundle, ticket keys) is unusable.
    Config(ConfigError),
    /// A TLS session failed: a handshake failure or a protocol error after it.
    Tls(TlsError),
    /// The transport was used out of order (for example `start_tls` twice).
    Usage(UsageError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "TLS configuration: {e}"),
            Self::Tls(e) => write!(f, "TLS session: {e}"),
            Self::Usage(e) => write!(f, "transport misuse: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::Usage(e) => Some(e),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Self::Tls(e)
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}

/// Where a piece of PEM came from, so that errors can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PemOrigin {
    /// A file on disk.
    File(PathBuf),
    /// Bytes handed over in memory; the string says what they were meant to be.
    Memory(&'static str),
}

impl fmt::Display for PemOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Memory(what) => write!(f, "<in-memory {what}>"),
        }
    }
}

/// A configuration error: what is wrong, and in which file.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read (not found, permission denied, ...).
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error from the operating system.
        error: io::Error,
    },
    /// The PEM text itself is malformed (bad base64, missing END line, ...).
    Pem {
        /// The file or buffer.
        origin: PemOrigin,
        /// The parser's complaint.
        error: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    NoCertificate {
        /// The file or buffer.
        origin: PemOrigin,
    },
    /// The key file holds no private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    NoPrivateKey {
        /// The file or buffer.
        origin: PemOrigin,
    },
    /// The key is encrypted with a passphrase (`ENCRYPTED PRIVATE KEY` or a legacy
    /// `Proc-Type: 4,ENCRYPTED` header); decrypt it first (`openssl pkey -in k -out k2`).
    EncryptedPrivateKey {
        /// The file or buffer.
        origin: PemOrigin,
    },
    /// The private key could not be loaded by the crypto provider (unsupported algorithm, bad DER).
    UnsupportedPrivateKey {
        /// The file or buffer.
        origin: PemOrigin,
        /// The provider's error.
        error: rustls::Error,
    },
    /// The private key does not belong to the end-entity certificate.
    KeyMismatch {
        /// The certificate chain.
        certificate: PemOrigin,
        /// The private key.
        key: PemOrigin,
    },
    /// A certificate could not be parsed far enough to read its subject and expiry.
    MalformedCertificate {
        /// The file or buffer.
        origin: PemOrigin,
        /// What was wrong.
        reason: &'static str,
    },
    /// No default certificate was configured (one is needed for clients that send no SNI).
    NoDefaultCertificate,
    /// An SNI name given in the settings is not a valid DNS name (or `*.` wildcard).
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// A cipher suite name is not one the provider offers.
    UnknownCipherSuite {
        /// The name as given.
        name: String,
        /// The names that would have been accepted.
        valid: Vec<&'static str>,
    },
    /// A key exchange group name is not one the provider offers.
    UnknownKeyExchangeGroup {
        /// The name as given.
        name: String,
        /// The names that would have been accepted.
        valid: Vec<&'static str>,
    },
    /// rustls refused the combination (for example TLS 1.3 only with only TLS 1.2 suites).
    Incompatible(rustls::Error),
    /// Client-certificate verification was asked for without a CA bundle.
    NoClientCa,
    /// The client CA bundle holds no usable CA certificate.
    NoUsableClientCa {
        /// The file or buffer.
        origin: PemOrigin,
    },
    /// rustls could not build the client-certificate verifier.
    ClientVerifier(rustls::server::VerifierBuilderError),
    /// A host-supplied session-ticket key has the wrong length.
    InvalidTicketKey {
        /// The length given.
        len: usize,
        /// The length required.
        expected: usize,
    },
    /// The crypto provider failed (random generator, AEAD key setup).
    Crypto(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } if error.kind() == io::ErrorKind::NotFound => {
                write!(f, "{}: file not found", path.display())
            }
            Self::Read { path, error } => write!(f, "{}: cannot read: {error}", path.display()),
            Self::Pem { origin, error } => write!(f, "{origin}: malformed PEM: {error}"),
            Self::NoCertificate { origin } => {
                write!(f, "{origin}: no certificate (no CERTIFICATE section) found")
            }
            Self::NoPrivateKey { origin } => write!(f, "{origin}: no private key found"),
            Self::EncryptedPrivateKey { origin } => write!(
                f,
                "{origin}: the private key is encrypted with a passphrase; \
                 store it unencrypted (e.g. `openssl pkey -in KEY -out KEY.plain`)"
            ),
            Self::UnsupportedPrivateKey { origin, error } => {
                write!(f, "{origin}: unusable private key: {error}")
            }
            Self::KeyMismatch { certificate, key } => write!(
                f,
                "{key}: the private key does not match the certificate in {certificate}"
            ),
            Self::MalformedCertificate { origin, reason } => {
                write!(f, "{origin}: malformed certificate: {reason}")
            }
            Self::NoDefaultCertificate => {
                f.write_str("no default certificate configured (needed for clients without SNI)")
            }
            Self::InvalidServerName { name } => {
                write!(f, "{name:?} is not a valid DNS name for SNI")
            }
            Self::UnknownCipherSuite { name, valid } => write!(
                f,
                "unknown cipher suite {name:?}; valid names: {}",
                valid.join(", ")
            ),
            Self::UnknownKeyExchangeGroup { name, valid } => write!(
                f,
                "unknown key exchange group {name:?}; valid names: {}",
                valid.join(", ")
            ),
            Self::Incompatible(e) => write!(f, "rustls refused the configuration: {e}"),
            Self::NoClientCa => {
                f.write_str("client-certificate verification needs a CA bundle, none given")
            }
            Self::NoUsableClientCa { origin } => {
                write!(
                    f,
                    "{origin}: no usable CA certificate in the client CA bundle"
                )
            }
            Self::ClientVerifier(e) => write!(f, "client-certificate verifier: {e}"),
            Self::InvalidTicketKey { len, expected } => write!(
                f,
                "session-ticket key is {len} bytes long, expected {expected}"
            ),
            Self::Crypto(what) => write!(f, "crypto provider failure: {what}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { error, .. } => Some(error),
            Self::Pem { error, .. } => Some(error),
            Self::UnsupportedPrivateKey { error, .. } | Self::Incompatible(error) => Some(error),
            Self::ClientVerifier(e) => Some(e),
            _ => None,
        }
    }
}

/// A TLS session failure. The `rustls::Error` is kept whole.
///
/// After one of these the connection is dead: send what
/// [`Transport::poll_transmit`](crate::Transport::poll_transmit) still yields (the alert),
/// then close the socket.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TlsError {
    /// The handshake failed (RFC 8446 §6.2, RFC 5246 §7.2.2): a malformed or unacceptable
    /// ClientHello, only TLS 1.0/1.1 offered, no common cipher suite, garbage, a missing client
    /// certificate when one is required.
    Handshake {
        /// The error rustls reported.
        error: rustls::Error,
        /// The first bytes the peer sent were printable ASCII: most likely a plaintext SMTP
        /// client talking to an implicit-TLS port (RFC 8314 §3.3).
        looks_like_plaintext: bool,
    },
    /// The session failed after the handshake (bad record MAC, unexpected message, ...).
    Session(rustls::Error),
}

impl TlsError {
    /// The rustls error inside.
    pub fn rustls_error(&self) -> &rustls::Error {
        match self {
            Self::Handshake { error, .. } | Self::Session(error) => error,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handshake {
                error,
                looks_like_plaintext: true,
            } => write!(
                f,
                "handshake failed: {error} (the peer sent plaintext, not a TLS ClientHello)"
            ),
            Self::Handshake { error, .. } => write!(f, "handshake failed: {error}"),
            Self::Session(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.rustls_error())
    }
}

/// The transport API was used out of order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// `start_tls` was called on a transport that is already TLS (RFC 3207 §4: at most once).
    AlreadyTls,
    /// Plaintext was written after `close`.
    Closed,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyTls => f.write_str("start_tls on a transport that is already TLS"),
            Self::Closed => f.write_str("write after close"),
        }
    }
}

impl std::error::Error for UsageError {}
