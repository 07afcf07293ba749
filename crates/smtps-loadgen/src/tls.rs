//! The client's TLS configuration: TLS 1.3 only, full handshakes (no resumption), X25519 by
//! default, trusting a CA file or (for benchmarks) any certificate.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the client decides to trust the server's certificate.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// The certificates of this PEM file are the roots.
    CaFile(String),
    /// Any certificate (signatures are still checked): for benchmarks against self-signed peers.
    Insecure,
}

/// Builds the client configuration: TLS 1.3, the given key exchange groups and cipher suites
/// (by rustls name, e.g. `X25519`, `TLS13_AES_256_GCM_SHA384`; empty: the provider's), no
/// session storage, so every connection is a full handshake.
pub(crate) fn client_config(
    trust: &Trust,
    groups: &[String],
    suites: &[String],
) -> Result<Arc<ClientConfig>, String> {
    let mut provider = aws_lc_rs::default_provider();
    if !suites.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        for name in suites {
            let suite = all
                .iter()
                .find(|s| format!("{:?}", s.suite()).eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let known: Vec<String> =
                        all.iter().map(|s| format!("{:?}", s.suite())).collect();
                    format!("unknown cipher suite {name:?}; known: {}", known.join(", "))
                })?;
            provider.cipher_suites.push(*suite);
        }
    }
    if !groups.is_empty() {
        let all = std::mem::take(&mut provider.kx_groups);
        for name in groups {
            let group = all
                .iter()
                .find(|g| format!("{:?}", g.name()).eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    let known: Vec<String> =
                        all.iter().map(|g| format!("{:?}", g.name())).collect();
                    format!(
                        "unknown key exchange group {name:?}; known: {}",
                        known.join(", ")
                    )
                })?;
            provider.kx_groups.push(*group);
        }
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let mut config = match trust {
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|e| format!("--ca {path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("--ca {path}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {path}: no certificate in the file"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DangerAcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The server name for SNI and verification: a DNS name or an IP address.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("invalid server name {name:?}: {e}"))
}

/// Accepts any server certificate, checking only that the handshake signatures are valid.
/// A benchmark tool's `--insecure`: never for real mail.
#[derive(Debug)]
struct DangerAcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for DangerAcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn groups_by_name() {
        assert!(client_config(&Trust::Insecure, &["x25519".to_owned()], &[]).is_ok());
        assert!(client_config(&Trust::Insecure, &[], &[]).is_ok());
        let err = client_config(&Trust::Insecure, &["nope".to_owned()], &[]).unwrap_err();
        assert!(err.contains("X25519"), "{err}");
        let suite = ["tls13_aes_256_gcm_sha384".to_owned()];
        assert!(client_config(&Trust::Insecure, &[], &suite).is_ok());
        let err = client_config(&Trust::Insecure, &[], &["nope".to_owned()]).unwrap_err();
        assert!(err.contains("TLS13_AES_128_GCM_SHA256"), "{err}");
        assert!(client_config(&Trust::CaFile("/nonexistent.pem".to_owned()), &[], &[]).is_err());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("mx.test").is_ok());
    }
}
