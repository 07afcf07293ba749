//! PEM input (RFC 7468) through `rustls_pki_types::pem::PemObject`, with errors naming the file.

use std::borrow::Cow;
use std::path::PathBuf;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{ConfigError, PemOrigin};

/// PEM text, either in a file read at load time or handed over as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PemInput {
    File(PathBuf),
    Bytes(Vec<u8>, &'static str),
}

impl PemInput {
    pub(crate) fn origin(&self) -> PemOrigin {
        match self {
            Self::File(p) => PemOrigin::File(p.clone()),
            Self::Bytes(_, what) => PemOrigin::Memory(what),
        }
    }

    fn read(&self) -> Result<Cow<'_, [u8]>, ConfigError> {
        match self {
            Self::File(path) => {
                std::fs::read(path)
                    .map(Cow::Owned)
                    .map_err(|error| ConfigError::Read {
                        path: path.clone(),
                        error,
                    })
            }
            Self::Bytes(bytes, _) => Ok(Cow::Borrowed(bytes)),
        }
    }
}

/// Reads every `CERTIFICATE` section, in order (end-entity first, RFC 8446 §4.4.2).
pub(crate) fn load_certificates(
    input: &PemInput,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let text = input.read()?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError::Pem {
            origin: input.origin(),
            error,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificate {
            origin: input.origin(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 RSA or SEC1 EC); refuses encrypted keys by name.
pub(crate) fn load_private_key(input: &PemInput) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let text = input.read()?;
    if is_encrypted_key(&text) {
        return Err(ConfigError::EncryptedPrivateKey {
            origin: input.origin(),
        });
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|error| match error {
        pem::Error::NoItemsFound => ConfigError::NoPrivateKey {
            origin: input.origin(),
        },
        error => ConfigError::Pem {
            origin: input.origin(),
            error,
        },
    })
}

/// PKCS#8 `ENCRYPTED PRIVATE KEY` (RFC 5958) or an OpenSSL legacy `Proc-Type: 4,ENCRYPTED` header.
fn is_encrypted_key(text: &[u8]) -> bool {
    contains(text, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(text, b"Proc-Type: 4,ENCRYPTED")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_encrypted_header_is_detected() {
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = load_private_key(&PemInput::Bytes(pem.to_vec(), "key")).unwrap_err();
        assert!(
            matches!(err, ConfigError::EncryptedPrivateKey { .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_input_has_no_certificate_and_no_key() {
        let input = PemInput::Bytes(Vec::new(), "test");
        assert!(matches!(
            load_certificates(&input),
            Err(ConfigError::NoCertificate { .. })
        ));
        assert!(matches!(
            load_private_key(&input),
            Err(ConfigError::NoPrivateKey { .. })
        ));
    }
}
