//! Certificate reload while serving, and expiry readout.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{Pair, Pki, client, tls13};
use smtps_testkit::TempDir;
use smtps_tls::{CertificateSource, ConfigError, Error, TlsSettings, Transport};

#[test]
fn reload_from_files_serves_new_certificate_to_new_sessions() {
    let pki = Pki::new();
    let old = pki.issue(&["mx.example.org"], Some((2030, 1, 1)));
    let new = pki.issue(&["mx.example.org"], Some((2031, 1, 1)));
    let dir = TempDir::new("reload");
    let (chain, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&chain, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let acc = TlsSettings::new()
        .certificate_files(&chain, &key)
        .build()
        .unwrap();
    let config = pki.client_config(tls13());

    // Session 1 is created before the reload and has not received a byte yet.
    let mut before_any_byte = Pair::new(
        client(&config, "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    // Session 2 is mid-handshake: the server has processed the ClientHello and sent its flight.
    let mut mid = Pair::new(
        client(&config, "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    let mut hello = Vec::new();
    mid.client.write_tls(&mut hello).unwrap();
    mid.feed_server(&hello).unwrap();
    assert!(mid.server.is_handshaking());

    // Renewal lands on disk; the host reloads.
    std::fs::write(&chain, &new.cert_pem).unwrap();
    std::fs::write(&key, &new.key_pem).unwrap();
    acc.reload().unwrap();

    mid.drive().unwrap();
    assert!(!mid.server.is_handshaking());
    assert_eq!(
        mid.server_cert_seen(),
        old.der,
        "mid-handshake session keeps the old cert"
    );
    before_any_byte.drive().unwrap();
    assert_eq!(before_any_byte.server_cert_seen(), old.der);

    let mut after = Pair::new(
        client(&pki.client_config(tls13()), "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    after.drive().unwrap();
    assert_eq!(
        after.server_cert_seen(),
        new.der,
        "new sessions get the new cert"
    );
    assert_eq!(acc.certificates()[0].end_entity, new.der);
}

#[test]
fn failed_reload_keeps_the_old_certificate_and_returns_the_error() {
    let pki = Pki::new();
    let old = pki.issue(&["mx.example.org"], None);
    let other = pki.issue(&["mx.example.org"], None);
    let dir = TempDir::new("badreload");
    let (chain, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&chain, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let acc = TlsSettings::new()
        .certificate_files(&chain, &key)
        .build()
        .unwrap();

    // A renewal that went wrong: new certificate, old key.
    std::fs::write(&chain, &other.cert_pem).unwrap();
    let err = acc.reload().unwrap_err();
    assert!(
        matches!(err, Error::Config(ConfigError::KeyMismatch { .. })),
        "{err}"
    );
    // A key file that vanished.
    std::fs::remove_file(&key).unwrap();
    let err = acc.reload().unwrap_err();
    assert!(err.to_string().contains("key.pem: file not found"), "{err}");

    assert_eq!(acc.certificates()[0].end_entity, old.der);
    let mut pair = Pair::new(
        client(&pki.client_config(tls13()), "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    pair.drive().unwrap();
    assert_eq!(pair.server_cert_seen(), old.der);
}

#[test]
fn reload_with_new_settings_adds_an_sni_certificate() {
    let pki = Pki::new();
    let default = pki.issue(&["mx.example.org"], None);
    let extra = pki.issue(&["mail.example.net"], None);
    let acc = TlsSettings::new()
        .default_certificate(default.source())
        .build()
        .unwrap();
    let settings = acc
        .settings()
        .sni_certificate("mail.example.net", extra.source());
    acc.reload_with(settings).unwrap();
    let mut pair = Pair::new(
        client(&pki.client_config(tls13()), "mail.example.net"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    pair.drive().unwrap();
    assert_eq!(pair.server_cert_seen(), extra.der);
    let certs = acc.certificates();
    assert_eq!(certs.len(), 2);
    assert!(certs[0].names.is_empty());
    assert_eq!(certs[1].names, ["mail.example.net"]);
}

#[test]
fn sessions_resume_across_a_reload() {
    let pki = Pki::new();
    let old = pki.issue(&["mx.example.org"], None);
    let new = pki.issue(&["mx.example.org"], None);
    let acc = TlsSettings::new()
        .default_certificate(old.source())
        .build()
        .unwrap();
    let config = pki.client_config(tls13());
    let mut first = Pair::new(
        client(&config, "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    first.drive().unwrap();
    first.server.write_plaintext(b"220\r\n").unwrap();
    first.drive().unwrap();

    let settings = acc.settings().default_certificate(new.source());
    acc.reload_with(settings).unwrap();
    let mut second = Pair::new(
        client(&config, "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    second.drive().unwrap();
    assert!(second.server.tls_info().unwrap().resumed);
}

#[test]
fn rfc5280_not_after_readout_matches_what_was_issued() {
    let pki = Pki::new();
    let default = pki.issue(&["mx.example.org"], Some((2031, 5, 6)));
    let sni = pki.issue(&["mail.example.net"], Some((2029, 12, 31)));
    let acc = TlsSettings::new()
        .default_certificate(default.source())
        .sni_certificate("mail.example.net", sni.source())
        .build()
        .unwrap();
    let certs = acc.certificates();
    let expect_default = rcgen::date_time_ymd(2031, 5, 6).unix_timestamp();
    let expect_sni = rcgen::date_time_ymd(2029, 12, 31).unix_timestamp();
    assert_eq!(certs[0].not_after_unix, expect_default);
    assert_eq!(
        certs[0].not_after,
        UNIX_EPOCH + Duration::from_secs(u64::try_from(expect_default).unwrap())
    );
    assert_eq!(certs[1].not_after_unix, expect_sni);
    assert_eq!(acc.earliest_expiry(), Some(certs[1].not_after));
    assert_eq!(certs[0].subject, "O=Example Mail,CN=mx.example.org");
    assert!(certs[0].not_before < certs[0].not_after);
}

#[test]
fn expiry_readout_follows_a_reload() {
    let pki = Pki::new();
    let a = pki.issue(&["mx.example.org"], Some((2030, 1, 1)));
    let b = pki.issue(&["mx.example.org"], Some((2032, 2, 2)));
    let acc = TlsSettings::new()
        .default_certificate(a.source())
        .build()
        .unwrap();
    acc.reload_with(TlsSettings::new().default_certificate(b.source()))
        .unwrap();
    assert_eq!(
        acc.certificates()[0].not_after_unix,
        rcgen::date_time_ymd(2032, 2, 2).unix_timestamp()
    );
    // A failed reload leaves the readout alone.
    let bad = CertificateSource::pem(a.cert_pem.clone(), b.key_pem.clone());
    assert!(
        acc.reload_with(TlsSettings::new().default_certificate(bad))
            .is_err()
    );
    assert_eq!(
        acc.certificates()[0].not_after_unix,
        rcgen::date_time_ymd(2032, 2, 2).unix_timestamp()
    );
}
