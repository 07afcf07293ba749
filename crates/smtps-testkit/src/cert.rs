//! The test certificate, the acceptor that serves it and the client configuration that trusts
//! it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use smtps_tls::rustls::crypto::aws_lc_rs;
use smtps_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use smtps_tls::rustls::{ClientConfig, ClientConnection, RootCertStore};
use smtps_tls::{CertificateSource, TlsAcceptor, TlsSettings};

/// The name [`TestCertificate::localhost`] is issued for, and the one clients of this kit ask
/// for (SNI and verification): `localhost`.
pub const SERVER_NAME: &str = "localhost";

/// A TLS acceptor serving [`TestCertificate::localhost`] with default [`TlsSettings`].
///
/// Each call builds a new acceptor (its own session cache and ticket keys); the certificate
/// is the same for the whole process.
///
/// # Panics
/// If the acceptor cannot be built.
#[must_use]
pub fn acceptor() -> Arc<TlsAcceptor> {
    TestCertificate::localhost().acceptor()
}

/// A rustls client configuration (aws-lc-rs, TLS 1.2 and 1.3, no client certificate) that
/// trusts [`TestCertificate::localhost`] and nothing else.
///
/// # Panics
/// Never in practice: the provider supports the default protocol versions.
#[must_use]
pub fn client_config() -> Arc<ClientConfig> {
    TestCertificate::localhost().client_config()
}

/// A rustls client connection with `config`, asking for `name` (SNI, and the name the server
/// certificate must carry). Usually `name` is [`SERVER_NAME`].
///
/// # Panics
/// If `name` is not a valid server name, or rustls refuses the configuration.
#[must_use]
pub fn client_connection(config: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    let name = ServerName::try_from(name.to_owned()).expect("a valid server name");
    ClientConnection::new(Arc::clone(config), name).expect("a rustls client connection")
}

/// A self-signed certificate (ECDSA P-256) and its private key.
pub struct TestCertificate {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
}

/// Where [`TestCertificate::write_files`] put the PEM files.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CertificateFiles {
    /// The certificate (`cert.pem`).
    pub cert: PathBuf,
    /// The private key, PKCS#8 (`key.pem`).
    pub key: PathBuf,
    /// The CA a client should trust (`ca.pem`): the self-signed certificate itself.
    pub ca: PathBuf,
}

impl TestCertificate {
    /// The process's certificate for `localhost` (and `127.0.0.1`), generated on first use.
    ///
    /// # Panics
    /// If rcgen cannot make the certificate.
    #[must_use]
    pub fn localhost() -> &'static Self {
        static LOCALHOST: OnceLock<TestCertificate> = OnceLock::new();
        LOCALHOST.get_or_init(|| Self::generate(&[SERVER_NAME, "127.0.0.1"]))
    }

    /// A new certificate for `names` (DNS names, or IP addresses written as such), with the
    /// first name as its common name.
    ///
    /// # Panics
    /// If `names` is empty or holds an invalid name, or rcgen fails.
    #[must_use]
    pub fn generate(names: &[&str]) -> Self {
        let first = *names.first().expect("at least one name");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>())
                .expect("valid certificate names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first);
        let key = rcgen::KeyPair::generate().expect("an ECDSA P-256 key");
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    /// Writes `cert.pem`, `key.pem` and `ca.pem` into `dir` (a [`crate::TempDir`], say),
    /// replacing files of those names.
    ///
    /// # Panics
    /// If a file cannot be written.
    pub fn write_files(&self, dir: &Path) -> CertificateFiles {
        let files = CertificateFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        };
        for (path, pem) in [
            (&files.cert, &self.cert_pem),
            (&files.key, &self.key_pem),
            (&files.ca, &self.cert_pem),
        ] {
            fs::write(path, pem).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        files
    }

    /// The certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 PEM.
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate, DER.
    #[must_use]
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The private key, PKCS#8 DER.
    #[must_use]
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    /// The certificate and key as an smtps-tls certificate source (PEM in memory).
    #[must_use]
    pub fn source(&self) -> CertificateSource {
        CertificateSource::pem(self.cert_pem.clone(), self.key_pem.clone())
    }

    /// A root store holding this certificate alone.
    ///
    /// # Panics
    /// If rustls does not take the certificate as a trust anchor.
    #[must_use]
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .expect("the certificate is a valid trust anchor");
        roots
    }

    /// A new acceptor serving this certificate with default [`TlsSettings`].
    ///
    /// # Panics
    /// If smtps-tls refuses the certificate.
    #[must_use]
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        let acceptor = TlsSettings::new()
            .default_certificate(self.source())
            .build()
            .expect("the test certificate makes an acceptor");
        Arc::new(acceptor)
    }

    /// A client configuration (aws-lc-rs, TLS 1.2 and 1.3, no client certificate) trusting this
    /// certificate alone.
    ///
    /// # Panics
    /// Never in practice: the provider supports the default protocol versions.
    #[must_use]
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default protocol versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        Arc::new(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    #[test]
    fn written_files_make_an_acceptor_and_the_ca_is_the_certificate() {
        let cert = TestCertificate::localhost();
        let dir = TempDir::new("cert");
        let files = cert.write_files(&dir);
        assert_eq!(fs::read_to_string(&files.ca).expect("ca"), cert.cert_pem());
        let from_files = TlsSettings::new()
            .default_certificate(CertificateSource::files(&files.cert, &files.key))
            .build();
        assert!(from_files.is_ok(), "{:?}", from_files.err());
        assert!(
            std::ptr::eq(cert, TestCertificate::localhost()),
            "one per process"
        );
    }
}
