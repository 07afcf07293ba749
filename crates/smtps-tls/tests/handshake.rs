//! Full handshakes against real rustls clients, in memory: versions, suites, groups, SNI,
//! client certificates, and what `TlsInfo` reports.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{Pair, Pki, PumpError, client, tls12, tls13};
use rustls::{ClientConfig, ProtocolVersion};
use smtps_tls::{
    CaBundle, ClientAuth, Error, TlsAcceptor, TlsError, TlsSettings, TlsVersion, Transport,
};

fn acceptor(pki: &Pki, settings: TlsSettings) -> TlsAcceptor {
    let leaf = pki.issue(&["mx.example.org"], None);
    settings.default_certificate(leaf.source()).build().unwrap()
}

fn connect(acceptor: &TlsAcceptor, config: &Arc<ClientConfig>, name: &str) -> Pair {
    Pair::new(
        client(config, name),
        Transport::new_implicit_tls(acceptor).unwrap(),
    )
}

/// A TLS 1.3 client that presents `leaf` as its certificate.
fn connect_with_cert(acceptor: &TlsAcceptor, pki: &Pki, leaf: &common::Leaf) -> Pair {
    connect(
        acceptor,
        &pki.client_config_with_cert(leaf),
        "mx.example.org",
    )
}

#[test]
fn rfc8446_tls13_handshake_and_application_data_both_ways() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    assert!(pair.server.is_tls() && pair.server.is_handshaking());
    pair.drive().unwrap();
    assert!(!pair.server.is_handshaking());

    pair.client
        .writer()
        .write_all(b"EHLO client.example\r\n")
        .unwrap();
    pair.drive().unwrap();
    assert_eq!(pair.server_received, b"EHLO client.example\r\n");

    pair.server
        .write_plaintext(b"250 mx.example.org\r\n")
        .unwrap();
    pair.drive().unwrap();
    assert_eq!(pair.client_received, b"250 mx.example.org\r\n");

    let info = pair.server.tls_info().unwrap();
    assert_eq!(info.version, ProtocolVersion::TLSv1_3);
    assert_eq!(info.version_name(), "TLSv1.3");
    assert_eq!(info.server_name.as_deref(), Some("mx.example.org"));
    assert!(!info.resumed);
    assert!(info.client_certificate.is_none());
    // rustls' default client sends an X25519 key share first; the server takes it rather
    // than force a HelloRetryRequest.
    assert_eq!(info.key_exchange_group_name(), Some("X25519"));
    assert_eq!(
        info.received_comment(),
        format!(
            "(version=TLSv1.3 cipher={} bits={})",
            info.cipher_suite_name(),
            info.cipher_bits()
        )
    );
    assert_eq!(info.with_keyword(false), "ESMTPS");
}

#[test]
fn rfc5246_tls12_handshake() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls12()), "mx.example.org");
    pair.drive().unwrap();
    pair.client.writer().write_all(b"NOOP\r\n").unwrap();
    pair.drive().unwrap();
    assert_eq!(pair.server_received, b"NOOP\r\n");
    let info = pair.server.tls_info().unwrap();
    assert_eq!(info.version_name(), "TLSv1.2");
    assert!(
        info.cipher_suite_name()
            .starts_with("TLS_ECDHE_ECDSA_WITH_")
    );
}

#[test]
fn tls13_floor_refuses_a_tls12_only_client() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new().min_version(TlsVersion::Tls13));
    let mut pair = connect(&acc, &pki.client_config(tls12()), "mx.example.org");
    let err = pair.drive().unwrap_err();
    let PumpError::Server(Error::Tls(TlsError::Handshake { error, .. })) = err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(error, rustls::Error::PeerIncompatible(_)),
        "{error:?}"
    );
    // The alert reached the client.
    assert!(!pair.server_sent.is_empty());
}

#[test]
fn every_ecdsa_and_tls13_suite_negotiates_when_configured_alone() {
    let pki = Pki::new();
    let mut tried = 0;
    for suite in TlsSettings::available_cipher_suites() {
        if suite.contains("_RSA_") {
            continue; // needs an RSA certificate: see the next test
        }
        let acc = acceptor(&pki, TlsSettings::new().cipher_suites(&[suite]));
        let versions = if suite.starts_with("TLS13_") {
            tls13()
        } else {
            tls12()
        };
        let mut pair = connect(&acc, &pki.client_config(versions), "mx.example.org");
        pair.drive().unwrap_or_else(|e| panic!("{suite}: {e:?}"));
        assert_eq!(pair.server.tls_info().unwrap().cipher_suite_name(), suite);
        tried += 1;
    }
    assert!(tried >= 6, "only {tried} suites");
}

#[test]
fn rsa_suites_negotiate_with_an_rsa_certificate() {
    let pki = Pki::new();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let leaf = pki.issue_with_key(&["mx.example.org"], None, &key);
    for suite in TlsSettings::available_cipher_suites()
        .into_iter()
        .filter(|s| s.contains("_RSA_"))
    {
        let acc = TlsSettings::new()
            .cipher_suites(&[suite])
            .default_certificate(leaf.source())
            .build()
            .unwrap();
        let mut pair = connect(&acc, &pki.client_config(tls12()), "mx.example.org");
        pair.drive().unwrap_or_else(|e| panic!("{suite}: {e:?}"));
        assert_eq!(pair.server.tls_info().unwrap().cipher_suite_name(), suite);
    }
}

#[test]
fn iana_spelling_of_tls13_suite_selects_it() {
    let pki = Pki::new();
    let acc = acceptor(
        &pki,
        TlsSettings::new().cipher_suites(&["TLS_CHACHA20_POLY1305_SHA256"]),
    );
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    let info = pair.server.tls_info().unwrap();
    assert_eq!(info.cipher_suite_name(), "TLS13_CHACHA20_POLY1305_SHA256");
    assert_eq!(info.cipher_bits(), 256);
}

#[test]
fn no_common_cipher_suite_fails_with_alert() {
    let pki = Pki::new();
    let acc = acceptor(
        &pki,
        TlsSettings::new().cipher_suites(&["TLS13_AES_256_GCM_SHA384"]),
    );
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let config = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(tls13())
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth(),
    );
    let mut pair = connect(&acc, &config, "mx.example.org");
    let err = pair.drive().unwrap_err();
    assert!(
        matches!(
            &err,
            PumpError::Server(Error::Tls(TlsError::Handshake {
                error: rustls::Error::PeerIncompatible(_),
                looks_like_plaintext: false
            }))
        ),
        "{err:?}"
    );
    // A handshake_failure alert (21 = alert record) went out; the client saw it.
    assert_eq!(pair.server_sent.first(), Some(&21));
    assert!(pair.client.process_new_packets().is_err());
    // The failure is sticky.
    assert!(pair.server.handle_received(b"x").is_err());
    assert!(pair.server.failure().is_some());
    assert!(!pair.server.wants_read());
}

#[test]
fn every_key_exchange_group_negotiates_when_configured_alone() {
    let pki = Pki::new();
    for group in TlsSettings::available_key_exchange_groups() {
        let acc = acceptor(&pki, TlsSettings::new().key_exchange_groups(&[group]));
        let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
        pair.drive().unwrap_or_else(|e| panic!("{group}: {e:?}"));
        assert_eq!(
            pair.server.tls_info().unwrap().key_exchange_group_name(),
            Some(group)
        );
    }
}

#[test]
fn rfc6066_sni_selects_certificate_and_default_serves_the_rest() {
    let pki = Pki::new();
    let default = pki.issue(&["mx.example.org"], None);
    let other = pki.issue(&["mail.example.net"], None);
    let wild = pki.issue(&["*.example.com"], None);
    let acc = TlsSettings::new()
        .default_certificate(default.source())
        .sni_certificate("mail.example.net", other.source())
        .sni_certificate("*.example.com", wild.source())
        .build()
        .unwrap();
    let config = pki.client_config(tls13());
    let cases = [
        ("mail.example.net", &other),
        ("MAIL.example.NET", &other),
        ("smtp.example.com", &wild),
        ("mx.example.org", &default),
    ];
    for (name, expected) in cases {
        let mut pair = connect(&acc, &config, name);
        pair.drive().unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(pair.server_cert_seen(), expected.der, "{name}");
        assert_eq!(
            pair.server.tls_info().unwrap().server_name.as_deref(),
            Some(name.to_ascii_lowercase().as_str())
        );
    }
    // A client that sends no SNI (many SMTP clients don't) gets the default certificate.
    let mut no_sni = (*pki.client_config(tls13())).clone();
    no_sni.enable_sni = false;
    let mut pair = connect(&acc, &Arc::new(no_sni), "mx.example.org");
    pair.drive().unwrap();
    assert_eq!(pair.server_cert_seen(), default.der);
    assert_eq!(pair.server.tls_info().unwrap().server_name, None);
}

#[test]
fn post_quantum_hybrid_x25519mlkem768_is_negotiated_when_the_client_leads_with_it() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::X25519MLKEM768);
    let config = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(tls13())
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth(),
    );
    let mut pair = connect(&acc, &config, "mx.example.org");
    pair.drive().unwrap();
    let info = pair.server.tls_info().unwrap();
    assert_eq!(info.key_exchange_group_name(), Some("X25519MLKEM768"));
}

#[test]
fn client_auth_off_does_not_ask_for_a_certificate() {
    let pki = Pki::new();
    let client_leaf = pki.issue(&["relay.example"], None);
    let acc = acceptor(&pki, TlsSettings::new().client_auth(ClientAuth::Off));
    let mut pair = connect_with_cert(&acc, &pki, &client_leaf);
    pair.drive().unwrap();
    assert!(pair.server.tls_info().unwrap().client_certificate.is_none());
}

#[test]
fn client_auth_optional_accepts_with_and_without_certificate() {
    let pki = Pki::new();
    let client_leaf = pki.issue(&["relay.example"], None);
    let mode = ClientAuth::Optional(CaBundle::pem(pki.ca_pem()));
    let acc = acceptor(&pki, TlsSettings::new().client_auth(mode));

    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    assert!(pair.server.tls_info().unwrap().client_certificate.is_none());

    let mut pair = connect_with_cert(&acc, &pki, &client_leaf);
    pair.drive().unwrap();
    let cert = pair.server.tls_info().unwrap().client_certificate.unwrap();
    assert_eq!(cert.der, client_leaf.der);
    assert_eq!(cert.common_name.as_deref(), Some("relay.example"));
    assert_eq!(
        cert.subject.as_deref(),
        Some("O=Example Mail,CN=relay.example")
    );
}

#[test]
fn client_auth_required_refuses_a_client_without_certificate() {
    let pki = Pki::new();
    let client_leaf = pki.issue(&["relay.example"], None);
    let mode = ClientAuth::Required(CaBundle::pem(pki.ca_pem()));
    let acc = acceptor(&pki, TlsSettings::new().client_auth(mode));

    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    let err = pair.drive().unwrap_err();
    assert!(
        matches!(
            err,
            PumpError::Server(Error::Tls(TlsError::Handshake {
                error: rustls::Error::NoCertificatesPresented,
                ..
            }))
        ),
        "{err:?}"
    );

    let mut pair = connect_with_cert(&acc, &pki, &client_leaf);
    pair.drive().unwrap();
    assert!(pair.server.tls_info().unwrap().client_certificate.is_some());
}

#[test]
fn client_auth_required_refuses_a_certificate_from_another_ca() {
    let pki = Pki::new();
    let stranger = Pki::named("other CA").issue(&["relay.example"], None);
    let mode = ClientAuth::Required(CaBundle::pem(pki.ca_pem()));
    let acc = acceptor(&pki, TlsSettings::new().client_auth(mode));
    let mut pair = connect_with_cert(&acc, &pki, &stranger);
    let err = pair.drive().unwrap_err();
    assert!(
        matches!(
            err,
            PumpError::Server(Error::Tls(TlsError::Handshake {
                error: rustls::Error::InvalidCertificate(_),
                ..
            }))
        ),
        "{err:?}"
    );
}

#[test]
fn rfc8446_close_notify_both_ways() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    pair.server.write_plaintext(b"221 bye\r\n").unwrap();
    pair.server.close();
    assert!(pair.server.write_plaintext(b"x").is_err());
    pair.drive().unwrap();
    assert_eq!(pair.client_received, b"221 bye\r\n");
    assert!(!pair.server.wants_write());
    // rustls reports a received close_notify as a clean EOF to the reader.
    let mut buf = [0u8; 8];
    assert_eq!(
        std::io::Read::read(&mut pair.client.reader(), &mut buf).unwrap(),
        0
    );

    pair.client.send_close_notify();
    assert!(!pair.server.peer_closed());
    pair.drive().unwrap();
    assert!(pair.server.peer_closed());
    assert!(!pair.server.wants_read());
    // Anything after close_notify is ignored, not an error.
    assert_eq!(pair.server.handle_received(b"junk").unwrap(), 4);
    assert_eq!(pair.server.read_plaintext(&mut buf), 0);
}

#[test]
fn borrowed_plaintext_read_path() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    pair.client
        .writer()
        .write_all(b"MAIL FROM:<a@b>\r\n")
        .unwrap();
    let mut wire = Vec::new();
    pair.client.write_tls(&mut wire).unwrap();
    pair.server.handle_received(&wire).unwrap();
    assert_eq!(pair.server.received_plaintext(), b"MAIL FROM:<a@b>\r\n");
    pair.server.consume_plaintext(5);
    assert_eq!(pair.server.received_plaintext(), b"FROM:<a@b>\r\n");
    pair.server.consume_plaintext(1000);
    assert_eq!(pair.server.received_plaintext(), b"");
}

#[test]
fn tls_eof_without_close_notify_marks_peer_closed() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    pair.server.handle_eof();
    assert!(pair.server.peer_closed());
    assert!(!pair.server.wants_read());
}

#[test]
fn peer_closed_waits_until_plaintext_sent_before_close_notify_is_read() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    pair.client.writer().write_all(b"QUIT\r\n").unwrap();
    pair.client.send_close_notify();
    let mut wire = Vec::new();
    while pair.client.wants_write() {
        pair.client.write_tls(&mut wire).unwrap();
    }
    assert_eq!(pair.server.handle_received(&wire).unwrap(), wire.len());
    assert!(!pair.server.peer_closed(), "QUIT is still unread");
    let mut buf = [0u8; 16];
    assert_eq!(pair.server.read_plaintext(&mut buf), 6);
    assert_eq!(&buf[..6], b"QUIT\r\n");
    assert!(pair.server.peer_closed());
}

#[test]
fn rfc8314_greeting_written_during_the_handshake_is_sent_encrypted_after_it() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    // The event loop writes the banner as soon as it accepts the connection.
    let banner = b"220 mx.example.org ESMTP\r\n";
    assert_eq!(pair.server.write_plaintext(banner).unwrap(), banner.len());
    pair.drive().unwrap();
    assert_eq!(pair.client_received, banner);
    let sent = String::from_utf8_lossy(&pair.server_sent);
    assert!(
        !sent.contains("ESMTP"),
        "the banner never went out in clear"
    );
}

#[test]
fn server_order_prefers_aes_128_gcm_sha256_over_the_clients_first_choice() {
    let pki = Pki::new();
    let acc = acceptor(&pki, TlsSettings::new());
    // rustls' default client, like OpenSSL, lists AES-256-GCM-SHA384 first.
    let mut pair = connect(&acc, &pki.client_config(tls13()), "mx.example.org");
    pair.drive().unwrap();
    let info = pair.server.tls_info().unwrap();
    assert_eq!(info.cipher_suite_name(), "TLS13_AES_128_GCM_SHA256");
}
