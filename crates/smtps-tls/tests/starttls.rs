//! The STARTTLS upgrade boundary (RFC 3207 §4, §4.2; CVE-2011-0411).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{self, Write};

use common::{Pair, Pki, client, tls13};
use smtps_tls::{Error, TlsAcceptor, TlsError, TlsSettings, Transport, UsageError};

const READY: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

fn setup() -> (Pki, TlsAcceptor) {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = TlsSettings::new()
        .default_certificate(leaf.source())
        .build()
        .unwrap();
    (pki, acc)
}

/// Plays the SMTP layer: takes exactly one line from the transport.
fn take_line(t: &mut Transport) -> Vec<u8> {
    let buf = t.received_plaintext();
    let end = buf.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let line = buf[..end].to_vec();
    t.consume_plaintext(end);
    line
}

/// Runs a STARTTLS exchange where the client's packet carries `after` right behind the
/// command; returns the upgraded pair and the discarded count.
fn upgrade_with_pipelined(after: &[u8]) -> (Pair, usize) {
    let (pki, acc) = setup();
    let mut server = Transport::new_plaintext();
    let mut packet = b"STARTTLS\r\n".to_vec();
    packet.extend_from_slice(after);
    assert_eq!(server.handle_received(&packet).unwrap(), packet.len());
    assert_eq!(take_line(&mut server), b"STARTTLS\r\n");

    server.write_plaintext(READY).unwrap();
    let upgrade = server.start_tls(&acc).unwrap();
    assert_eq!(upgrade.plaintext_pending, READY.len());
    assert!(server.is_tls() && server.is_handshaking());

    // The 220 goes out in plaintext, and nothing else yet.
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    assert_eq!(out, READY);

    let mut pair = Pair::new(
        client(&pki.client_config(tls13()), "mx.example.org"),
        server,
    );
    pair.drive().unwrap();
    assert!(!pair.server.is_handshaking());
    (pair, upgrade.discarded)
}

#[test]
fn rfc3207_pipelined_rset_after_starttls_is_discarded_and_counted() {
    let (mut pair, discarded) = upgrade_with_pipelined(b"RSET\r\n");
    assert_eq!(discarded, 6);
    assert!(
        pair.server_received.is_empty(),
        "{:?}",
        pair.server_received
    );
    pair.client.writer().write_all(b"EHLO client\r\n").unwrap();
    pair.drive().unwrap();
    assert_eq!(pair.server_received, b"EHLO client\r\n");
}

#[test]
fn cve_2011_0411_injected_command_is_never_read_as_tls_plaintext() {
    let injected = b"MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<victim@example.org>\r\n";
    let (mut pair, discarded) = upgrade_with_pipelined(injected);
    assert_eq!(discarded, injected.len());
    pair.client.writer().write_all(b"EHLO client\r\n").unwrap();
    pair.drive().unwrap();
    assert_eq!(pair.server_received, b"EHLO client\r\n");
    let mut buf = [0u8; 256];
    assert_eq!(pair.server.read_plaintext(&mut buf), 0);
}

#[test]
fn rfc3207_injection_split_across_reads_is_discarded_too() {
    let (pki, acc) = setup();
    let mut server = Transport::new_plaintext();
    server.handle_received(b"STARTTLS\r\nRS").unwrap();
    server.handle_received(b"ET\r\n").unwrap();
    assert_eq!(take_line(&mut server), b"STARTTLS\r\n");
    server.write_plaintext(READY).unwrap();
    assert_eq!(server.start_tls(&acc).unwrap().discarded, 6);
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    let mut pair = Pair::new(
        client(&pki.client_config(tls13()), "mx.example.org"),
        server,
    );
    pair.drive().unwrap();
    assert!(pair.server_received.is_empty());
}

#[test]
fn clean_upgrade_discards_nothing() {
    let (_pair, discarded) = upgrade_with_pipelined(b"");
    assert_eq!(discarded, 0);
}

#[test]
fn rfc3207_ready_reply_precedes_tls_records_even_unflushed() {
    // The caller queues 220 and upgrades without flushing; a (non-compliant, eager) client's
    // ClientHello arrives before the 220 left. The 220 must still come out first, in plaintext.
    let (pki, acc) = setup();
    let mut server = Transport::new_plaintext();
    server.handle_received(b"STARTTLS\r\n").unwrap();
    take_line(&mut server);
    server.write_plaintext(READY).unwrap();
    server.start_tls(&acc).unwrap();

    let mut c = client(&pki.client_config(tls13()), "mx.example.org");
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    server.handle_received(&hello).unwrap();
    assert!(server.wants_write());

    // One byte at a time through write_transmit: order must hold across partial writes.
    struct OneByte(Vec<u8>);
    impl Write for OneByte {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf[0]);
            Ok(1)
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs.iter().find(|b| !b.is_empty()).unwrap();
            self.write(first)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut sink = OneByte(Vec::new());
    while server.wants_write() {
        server.write_transmit(&mut sink).unwrap();
    }
    assert!(sink.0.starts_with(READY));
    assert_eq!(
        sink.0[READY.len()],
        0x16,
        "a TLS handshake record follows the 220"
    );

    // And the client, given the TLS part, completes the handshake.
    let mut pair = Pair::new(c, server);
    let mut rd = &sink.0[READY.len()..];
    pair.client.read_tls(&mut rd).unwrap();
    pair.client.process_new_packets().unwrap();
    pair.drive().unwrap();
    assert!(!pair.server.is_handshaking());
}

#[test]
fn rfc3207_starttls_twice_is_refused() {
    let (_pki, acc) = setup();
    let mut server = Transport::new_plaintext();
    server.start_tls(&acc).unwrap();
    let err = server.start_tls(&acc).unwrap_err();
    assert!(matches!(err, Error::Usage(UsageError::AlreadyTls)), "{err}");
    let mut implicit = Transport::new_implicit_tls(&acc).unwrap();
    assert!(matches!(
        implicit.start_tls(&acc),
        Err(Error::Usage(UsageError::AlreadyTls))
    ));
}

#[test]
fn starttls_after_close_is_refused() {
    let (_pki, acc) = setup();
    let mut server = Transport::new_plaintext();
    server.close();
    assert!(matches!(
        server.start_tls(&acc),
        Err(Error::Usage(UsageError::Closed))
    ));
}

#[test]
fn plaintext_after_the_upgrade_point_fails_the_handshake() {
    // A client that ignores the 220 and keeps talking plaintext.
    let (_pki, acc) = setup();
    let mut server = Transport::new_plaintext();
    server.handle_received(b"STARTTLS\r\n").unwrap();
    take_line(&mut server);
    server.write_plaintext(READY).unwrap();
    server.start_tls(&acc).unwrap();
    let err = server.handle_received(b"MAIL FROM:<x@y>\r\n").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tls(TlsError::Handshake {
                looks_like_plaintext: true,
                ..
            })
        ),
        "{err}"
    );
    let mut buf = [0u8; 64];
    assert_eq!(server.read_plaintext(&mut buf), 0);
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    assert!(out.starts_with(READY));
}
