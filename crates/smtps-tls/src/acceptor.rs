//! [`TlsAcceptor`]: the loaded, reloadable server configuration shared by every connection.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, PemOrigin};
use crate::settings::{self, TlsSettings};

/// The server side of TLS for one listener (or several): a `rustls::ServerConfig` built from
/// [`TlsSettings`], behind a pointer that [`TlsAcceptor::reload`] swaps.
///
/// Share it between threads in an `Arc`. Each new [`Transport`](crate::Transport) takes a
/// snapshot (`Arc<ServerConfig>`) when it starts TLS, so a reload never touches a session in
/// progress — not even one mid-handshake — and a failed reload changes nothing.
#[derive(Debug)]
pub struct TlsAcceptor {
    current: RwLock<Arc<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    settings: TlsSettings,
    config: Arc<ServerConfig>,
    certificates: Vec<CertificateInfo>,
}

/// What was loaded for one configured certificate, for logs and expiry monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// The SNI names it serves; empty for the default certificate.
    pub names: Vec<String>,
    /// The end-entity certificate's subject (RFC 4514 form).
    pub subject: String,
    /// The DNS names the certificate is for: its subjectAltName dNSNames (RFC 5280
    /// §4.2.1.6), or its subject commonName when it has none.
    pub dns_names: Vec<String>,
    /// The start of the validity period (RFC 5280 §4.1.2.5 `notBefore`).
    pub not_before: SystemTime,
    /// The end of the validity period (RFC 5280 §4.1.2.5 `notAfter`).
    pub not_after: SystemTime,
    /// `not_after` as seconds since the UNIX epoch (for C hosts and logs).
    pub not_after_unix: i64,
    /// The end-entity certificate as loaded (DER).
    pub end_entity: CertificateDer<'static>,
    /// Where the chain was read from: its file, for messages that must name it.
    pub source: PemOrigin,
}

impl CertificateInfo {
    /// Seconds from `now` until `notAfter`: negative once the certificate has expired. A
    /// gauge for monitoring (`smtps_certificate_expiry_seconds`), read at scrape time with
    /// `SystemTime::now()`.
    #[must_use]
    pub fn seconds_to_expiry(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            Err(past) => i64::try_from(past.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }
}

impl TlsAcceptor {
    /// Reads every file named in `settings`, checks each key against its certificate, and
    /// builds the rustls configuration. Fails with a [`ConfigError`](crate::ConfigError) that
    /// names the file and the problem.
    pub fn new(settings: TlsSettings) -> Result<Self, Error> {
        let built = settings::build(&settings, None)?;
        Ok(Self {
            current: RwLock::new(Arc::new(Loaded {
                settings,
                config: built.config,
                certificates: built.certificates,
            })),
        })
    }

    /// Reads the same files again (the usual `SIGHUP` after a certificate renewal) and
    /// swaps the configuration in. New handshakes get the new certificates; sessions in progress
    /// keep theirs. On error the old configuration stays in service and the error is returned.
    ///
    /// The session cache and ticket keys are kept, so clients resume across a reload.
    pub fn reload(&self) -> Result<(), Error> {
        let old = self.snapshot();
        self.reload_with(old.settings.clone())
    }

    /// Like [`TlsAcceptor::reload`], with new settings. The session cache and ticket keys are
    /// kept if the resumption settings are unchanged.
    pub fn reload_with(&self, settings: TlsSettings) -> Result<(), Error> {
        let old = self.snapshot();
        let built = settings::build(&settings, Some((&old.settings, &old.config)))?;
        let new = Arc::new(Loaded {
            settings,
            config: built.config,
            certificates: built.certificates,
        });
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
        log::info!("TLS configuration reloaded");
        Ok(())
    }

    /// The rustls configuration new sessions use now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.snapshot().config)
    }

    /// The certificates currently loaded, default first, with their expiry dates.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.snapshot().certificates.clone()
    }

    /// The earliest `notAfter` among the loaded certificates: when the host must have renewed.
    pub fn earliest_expiry(&self) -> Option<SystemTime> {
        self.snapshot()
            .certificates
            .iter()
            .map(|c| c.not_after)
            .min()
    }

    /// The settings currently in force.
    pub fn settings(&self) -> TlsSettings {
        self.snapshot().settings.clone()
    }

    fn snapshot(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}
