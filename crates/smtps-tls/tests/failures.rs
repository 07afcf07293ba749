//! Handshake and session failures: typed errors, alerts to send, and no panic on any input.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Write;

use common::{Pair, Pki, client, tls13};
use smtps_tls::{Error, TlsAcceptor, TlsError, TlsSettings, Transport};

fn acceptor() -> (Pki, TlsAcceptor) {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = TlsSettings::new()
        .default_certificate(leaf.source())
        .build()
        .unwrap();
    (pki, acc)
}

/// A minimal ClientHello record offering only `version` (0x0301 = TLS 1.0, 0x0302 = TLS 1.1),
/// as an old client sends it (RFC 2246 §7.4.1.2); with `sig_algs` it carries a
/// signature_algorithms extension (RFC 5246 §7.4.1.4.1), so that only the version is wrong.
fn legacy_client_hello(version: u16, sig_algs: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes()); // client_version
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session_id: empty
    // ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (which the server has), RSA_WITH_AES_128/256_CBC_SHA
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x2b, 0x00, 0x2f, 0x00, 0x35]);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    if sig_algs {
        // extensions (10 bytes): signature_algorithms = ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
        body.extend_from_slice(&[0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04]);
        body.extend_from_slice(&[0x04, 0x03, 0x08, 0x04]);
    }
    let mut hs = vec![0x01]; // client_hello
    hs.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake, record version TLS 1.0
    record.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

fn expect_handshake_failure(err: Error) -> (rustls::Error, bool) {
    match err {
        Error::Tls(TlsError::Handshake {
            error,
            looks_like_plaintext,
        }) => (error, looks_like_plaintext),
        other => panic!("expected a handshake failure, got {other:?}"),
    }
}

#[test]
fn rfc8996_tls10_and_tls11_client_hellos_are_refused_with_protocol_version_alert() {
    for version in [0x0301u16, 0x0302] {
        let (_pki, acc) = acceptor();
        let mut server = Transport::new_implicit_tls(&acc).unwrap();
        let err = server
            .handle_received(&legacy_client_hello(version, true))
            .unwrap_err();
        let (error, plaintext) = expect_handshake_failure(err);
        assert_eq!(
            error,
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered),
            "{version:#x}"
        );
        assert!(!plaintext);
        // Alert record: type 21, then level fatal (2), description protocol_version (70).
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        assert_eq!(out.first(), Some(&21), "{out:?}");
        assert_eq!(&out[5..7], &[2, 70], "{out:?}");
        assert!(server.tls_info().is_none());
    }
}

#[test]
fn minimal_tls10_client_hello_without_extensions_is_refused_with_alert() {
    for version in [0x0301u16, 0x0302] {
        let (_pki, acc) = acceptor();
        let mut server = Transport::new_implicit_tls(&acc).unwrap();
        let err = server
            .handle_received(&legacy_client_hello(version, false))
            .unwrap_err();
        let (error, _) = expect_handshake_failure(err);
        assert!(
            matches!(error, rustls::Error::PeerIncompatible(_)),
            "{version:#x}: {error:?}"
        );
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        assert_eq!(&out[..1], &[21], "a fatal alert goes out");
        assert_eq!(out[5], 2);
    }
}

#[test]
fn rfc8314_plaintext_ehlo_to_implicit_tls_is_refused() {
    let (_pki, acc) = acceptor();
    let mut server = Transport::new_implicit_tls(&acc).unwrap();
    let err = server.handle_received(b"EHLO foo\r\n").unwrap_err();
    let msg = err.to_string();
    let (error, plaintext) = expect_handshake_failure(err);
    assert!(plaintext, "{error:?}");
    assert!(msg.contains("plaintext"), "{msg}");
    let mut buf = [0u8; 64];
    assert_eq!(server.read_plaintext(&mut buf), 0, "nothing is handed up");
    // The error is sticky and `wants_read` turns off.
    assert!(server.handle_received(b"QUIT\r\n").is_err());
    assert!(!server.wants_read());
}

#[test]
fn garbage_after_the_handshake_is_a_session_error() {
    let (pki, acc) = acceptor();
    let mut pair = Pair::new(
        client(&pki.client_config(tls13()), "mx.example.org"),
        Transport::new_implicit_tls(&acc).unwrap(),
    );
    pair.drive().unwrap();
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0xab; 32]);
    let err = pair.server.handle_received(&record).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tls(TlsError::Session(rustls::Error::DecryptError))
        ),
        "{err:?}"
    );
    assert!(pair.server.wants_write(), "an alert waits to be sent");
    assert!(pair.server.write_plaintext(b"x").is_err());
}

/// The LCG from Numerical Recipes; deterministic so a failure reproduces.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        u32::try_from(self.0 >> 33).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next()).unwrap() % n.max(1)
    }
}

/// Feeds `input` in random-sized pieces the way an event loop would; must never panic.
fn feed_like_a_loop(server: &mut Transport, input: &[u8], rng: &mut Lcg) {
    let mut rest = input;
    let mut buf = [0u8; 512];
    let mut out = Vec::new();
    for _ in 0..10_000 {
        if rest.is_empty() {
            break;
        }
        let piece = 1 + rng.below(rest.len());
        match server.handle_received(&rest[..piece]) {
            Ok(n) => rest = &rest[n..],
            Err(_) => break,
        }
        while server.read_plaintext(&mut buf) > 0 {}
        server.poll_transmit(&mut out);
    }
    server.poll_transmit(&mut out);
    let _ = server.tls_info();
    server.handle_eof();
}

#[test]
fn random_bytes_never_panic() {
    let (_pki, acc) = acceptor();
    let mut rng = Lcg(0x5eed);
    let mut failures = 0;
    for i in 0..3000 {
        let len = rng.below(700);
        let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // A third start like a TLS handshake record, to get past the record layer.
        if i % 3 == 0 && input.len() > 5 {
            input[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
        }
        let mut server = Transport::new_implicit_tls(&acc).unwrap();
        feed_like_a_loop(&mut server, &input, &mut rng);
        failures += usize::from(server.failure().is_some());
        assert!(
            server.tls_info().is_none(),
            "random bytes completed a handshake"
        );
    }
    assert!(failures > 1000, "only {failures} inputs were refused");
}

#[test]
fn mutated_client_hellos_never_panic() {
    let (pki, acc) = acceptor();
    let config = pki.client_config(tls13());
    let mut hello = Vec::new();
    client(&config, "mx.example.org")
        .write_tls(&mut hello)
        .unwrap();
    let mut rng = Lcg(42);
    for _ in 0..2000 {
        let mut input = hello.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(input.len());
            input[at] = rng.byte();
        }
        if rng.below(4) == 0 {
            input.truncate(rng.below(input.len()));
        }
        let mut server = Transport::new_implicit_tls(&acc).unwrap();
        feed_like_a_loop(&mut server, &input, &mut rng);
    }
}

#[test]
fn random_bytes_after_the_handshake_never_panic() {
    let (pki, acc) = acceptor();
    let config = pki.client_config(tls13());
    let mut rng = Lcg(7);
    for _ in 0..200 {
        let mut pair = Pair::new(
            client(&config, "mx.example.org"),
            Transport::new_implicit_tls(&acc).unwrap(),
        );
        pair.drive().unwrap();
        pair.client.writer().write_all(b"DATA\r\n").unwrap();
        let mut wire = Vec::new();
        pair.client.write_tls(&mut wire).unwrap();
        for _ in 0..=rng.below(3) {
            let at = rng.below(wire.len());
            wire[at] = rng.byte();
        }
        feed_like_a_loop(&mut pair.server, &wire, &mut rng);
    }
}

#[test]
fn plaintext_transport_takes_any_bytes() {
    let mut rng = Lcg(99);
    let mut server = Transport::new_plaintext();
    let mut all = Vec::new();
    let mut read = Vec::new();
    let mut buf = [0u8; 100];
    for _ in 0..500 {
        let chunk: Vec<u8> = (0..rng.below(300)).map(|_| rng.byte()).collect();
        all.extend_from_slice(&chunk);
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let n = server.handle_received(rest).unwrap();
            rest = &rest[n..];
            loop {
                let m = server.read_plaintext(&mut buf);
                if m == 0 {
                    break;
                }
                read.extend_from_slice(&buf[..m]);
            }
        }
    }
    assert_eq!(read, all);
}
