//! Every configuration error, checked for its message: it must name the file and the problem.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;

use common::Pki;
use smtps_testkit::TempDir;
use smtps_tls::{
    CaBundle, CertificateSource, ClientAuth, ConfigError, Error, PemOrigin, TlsSettings, TlsVersion,
};

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn config_error(result: Result<smtps_tls::TlsAcceptor, Error>) -> ConfigError {
    match result {
        Err(Error::Config(e)) => e,
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("expected a config error, got an acceptor"),
    }
}

#[test]
fn missing_certificate_file_is_named() {
    let dir = TempDir::new("missing");
    let chain = dir.join("nope.pem");
    let err = config_error(
        TlsSettings::new()
            .certificate_files(&chain, dir.join("key.pem"))
            .build(),
    );
    assert!(matches!(&err, ConfigError::Read { path, .. } if *path == chain));
    assert_eq!(
        err.to_string(),
        format!("{}: file not found", chain.display())
    );
    // And through the top-level error too.
    let top = Error::Config(err);
    assert!(
        top.to_string().contains("nope.pem: file not found"),
        "{top}"
    );
}

#[test]
fn unreadable_key_file_is_named() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("unreadable");
    let chain = write(&dir, "cert.pem", &leaf.cert_pem);
    // A directory cannot be read as a file, even by root.
    let key = dir.join("key-is-a-dir");
    std::fs::create_dir_all(&key).unwrap();
    let err = config_error(TlsSettings::new().certificate_files(&chain, &key).build());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read: ", key.display())),
        "{msg}"
    );
}

#[test]
fn file_without_certificate_is_named() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("nocert");
    let chain = write(&dir, "only-key.pem", &leaf.key_pem);
    let key = write(&dir, "key.pem", &leaf.key_pem);
    let err = config_error(TlsSettings::new().certificate_files(&chain, &key).build());
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no certificate (no CERTIFICATE section) found",
            chain.display()
        )
    );
}

#[test]
fn file_without_key_is_named() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("nokey");
    let chain = write(&dir, "cert.pem", &leaf.cert_pem);
    let key = write(&dir, "also-cert.pem", &leaf.cert_pem);
    let err = config_error(TlsSettings::new().certificate_files(&chain, &key).build());
    assert_eq!(
        err.to_string(),
        format!("{}: no private key found", key.display())
    );
}

#[test]
fn combined_pem_file_with_chain_and_key_loads() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("combined");
    let both = write(
        &dir,
        "both.pem",
        &format!("{}{}{}", leaf.cert_pem, pki.ca_pem(), leaf.key_pem),
    );
    let acc = TlsSettings::new()
        .certificate_files(&both, &both)
        .build()
        .unwrap();
    assert_eq!(acc.certificates()[0].end_entity, leaf.der);
}

#[test]
fn encrypted_pkcs8_key_is_named_and_explained() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("encrypted");
    let chain = write(&dir, "cert.pem", &leaf.cert_pem);
    let key = write(
        &dir,
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = config_error(TlsSettings::new().certificate_files(&chain, &key).build());
    assert!(matches!(err, ConfigError::EncryptedPrivateKey { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: the private key is encrypted with a passphrase",
            key.display()
        )),
        "{msg}"
    );
}

#[test]
fn encrypted_legacy_openssl_key_is_detected() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let key = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,0011223344556677\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let err = config_error(
        TlsSettings::new()
            .default_certificate(CertificateSource::pem(leaf.cert_pem.clone(), key))
            .build(),
    );
    assert!(
        err.to_string()
            .starts_with("<in-memory private key>: the private key is encrypted"),
        "{err}"
    );
}

#[test]
fn mismatched_key_is_refused_at_load() {
    let pki = Pki::new();
    let a = pki.issue(&["mx.example.org"], None);
    let b = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("mismatch");
    let chain = write(&dir, "a.crt", &a.cert_pem);
    let key = write(&dir, "b.key", &b.key_pem);
    let err = config_error(TlsSettings::new().certificate_files(&chain, &key).build());
    assert!(matches!(
        &err,
        ConfigError::KeyMismatch { certificate: PemOrigin::File(c), key: PemOrigin::File(k) }
            if *c == chain && *k == key
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the private key does not match the certificate in {}",
            key.display(),
            chain.display()
        )
    );
}

#[test]
fn malformed_pem_is_named() {
    let err = config_error(
        TlsSettings::new()
            .default_certificate(CertificateSource::pem(
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "",
            ))
            .build(),
    );
    assert!(matches!(err, ConfigError::Pem { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("<in-memory certificate chain>: malformed PEM: "),
        "{err}"
    );
}

#[test]
fn unknown_cipher_suite_lists_the_valid_names() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let err = config_error(
        TlsSettings::new()
            .default_certificate(leaf.source())
            .cipher_suites(&["TLS13_AES_256_GCM_SHA384", "TLS_RSA_WITH_RC4_128_MD5"])
            .build(),
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("unknown cipher suite \"TLS_RSA_WITH_RC4_128_MD5\"; valid names: "),
        "{msg}"
    );
    for name in TlsSettings::available_cipher_suites() {
        assert!(msg.contains(name), "{msg} lacks {name}");
    }
}

#[test]
fn unknown_key_exchange_group_lists_the_valid_names() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let err = config_error(
        TlsSettings::new()
            .default_certificate(leaf.source())
            .key_exchange_groups(&["ffdhe1024"])
            .build(),
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("unknown key exchange group \"ffdhe1024\"; valid names: "),
        "{msg}"
    );
    assert!(msg.contains("X25519MLKEM768"), "{msg}");
}

#[test]
fn tls13_floor_with_only_tls12_suites_is_incompatible() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let err = config_error(
        TlsSettings::new()
            .default_certificate(leaf.source())
            .min_version(TlsVersion::Tls13)
            .cipher_suites(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"])
            .build(),
    );
    assert!(matches!(err, ConfigError::Incompatible(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("rustls refused the configuration: ")
    );
}

#[test]
fn no_default_certificate_is_refused() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let err = config_error(
        TlsSettings::new()
            .sni_certificate("mx.example.org", leaf.source())
            .build(),
    );
    assert_eq!(
        err.to_string(),
        "no default certificate configured (needed for clients without SNI)"
    );
}

#[test]
fn invalid_sni_name_is_refused() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let err = config_error(
        TlsSettings::new()
            .default_certificate(leaf.source())
            .sni_certificate("mx example", leaf.source())
            .build(),
    );
    assert_eq!(
        err.to_string(),
        "\"mx example\" is not a valid DNS name for SNI"
    );
}

#[test]
fn client_ca_bundle_without_certificates_is_named() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("ca");
    let bundle = write(&dir, "ca.pem", "# empty\n");
    let err = config_error(
        TlsSettings::new()
            .default_certificate(leaf.source())
            .client_auth(ClientAuth::Required(CaBundle::file(&bundle)))
            .build(),
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no certificate (no CERTIFICATE section) found",
            bundle.display()
        )
    );
}
