//! The `--dev` mode certificate: a fresh self-signed ECDSA P-256 certificate for `localhost`,
//! `127.0.0.1` and `::1`, written as PEM. Clients must be told to trust it (or not to verify);
//! it is for trying the daemon out, never for a real server.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

/// The names the development certificate is valid for (DNS name and IP addresses).
pub const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Where [`generate`] wrote the certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevCertificate {
    /// The certificate, PEM (`cert.pem`).
    pub cert_path: PathBuf,
    /// The private key, PKCS#8 PEM (`key.pem`, mode 0600).
    pub key_path: PathBuf,
}

/// Generates a self-signed certificate for [`DEV_NAMES`] and writes `cert.pem` and `key.pem`
/// into `dir` (created with mode 0700 if missing), replacing earlier ones.
pub fn generate(dir: impl AsRef<Path>) -> Result<DevCertificate, DevCertError> {
    let dir = dir.as_ref();
    let names: Vec<String> = DEV_NAMES.iter().map(|&n| n.to_owned()).collect();
    let mut params = CertificateParams::new(names).map_err(DevCertError::Generate)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, "smtpsd development certificate");
    params.distinguished_name = subject;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(DevCertError::Generate)?;
    let cert = params.self_signed(&key).map_err(DevCertError::Generate)?;

    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DevCertError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(DevCertificate {
        cert_path,
        key_path,
    })
}

/// Why the development certificate could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum DevCertError {
    /// rcgen failed to generate the key or certificate.
    Generate(rcgen::Error),
    /// A file or the directory could not be written.
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl fmt::Display for DevCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generate(e) => write!(f, "cannot generate the development certificate: {e}"),
            Self::Write { path, source } => write!(
                f,
                "cannot write the development certificate to {}: {source}; run from a \
                 writable directory or pass --cert and --key",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DevCertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Generate(e) => Some(e),
            Self::Write { source, .. } => Some(source),
        }
    }
}

/// Writes `bytes` to `path` with exactly `mode`, also when the file existed with another mode.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DevCertError> {
    let error = |source| DevCertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    // `mode` applies only on creation: tighten (or set) it on an existing file too.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn writes_a_parseable_certificate_and_a_private_key_readable_only_by_the_owner() {
        let dir = TempDir::new("devcert");
        let out = generate(dir.path().join("certs")).unwrap();
        assert_eq!(out.cert_path, dir.path().join("certs/cert.pem"));
        assert_eq!(out.key_path, dir.path().join("certs/key.pem"));
        let mode = fs::metadata(&out.key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_file_iter(&out.cert_path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 1);
        let key = PrivateKeyDer::from_pem_file(&out.key_path).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
    }

    #[test]
    fn certificate_names_localhost_and_both_loopback_addresses() {
        let dir = TempDir::new("devcert-names");
        let out = generate(dir.path()).unwrap();
        let der = CertificateDer::from_pem_file(&out.cert_path).unwrap();
        let der: &[u8] = der.as_ref();
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"localhost"));
        assert!(contains(&[127, 0, 0, 1]));
        assert!(contains(&std::net::Ipv6Addr::LOCALHOST.octets()));
        // The ecdsa-with-SHA256 signature algorithm OID (1.2.840.10045.4.3.2).
        assert!(contains(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
    }

    #[test]
    fn regenerating_replaces_the_files_and_fixes_a_loose_key_mode() {
        let dir = TempDir::new("devcert-again");
        let first = generate(dir.path()).unwrap();
        let old_key = fs::read(&first.key_path).unwrap();
        fs::set_permissions(&first.key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let second = generate(dir.path()).unwrap();
        assert_ne!(fs::read(&second.key_path).unwrap(), old_key);
        let mode = fs::metadata(&second.key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let dir = TempDir::new("devcert-blocked");
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let err = generate(blocker.join("sub")).unwrap_err();
        assert!(
            err.to_string().contains(&blocker.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("--cert"), "{err}");
    }
}
