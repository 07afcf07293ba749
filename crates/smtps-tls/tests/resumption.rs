//! Session resumption: tickets (RFC 5077, RFC 8446 §4.6.1), the stateful cache (RFC 5246
//! §7.4.1.2 session IDs, TLS 1.3 stateful tickets), and host-supplied ticket keys shared
//! between instances.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;

use common::{Leaf, Pair, Pki, client, tls12, tls13};
use rustls::{ClientConfig, SupportedProtocolVersion};
use smtps_tls::{SessionTickets, TicketKey, TicketKeys, TlsAcceptor, TlsSettings, Transport};

fn settings(leaf: &Leaf, tickets: SessionTickets, cache: usize) -> TlsSettings {
    TlsSettings::new()
        .default_certificate(leaf.source())
        .session_tickets(tickets)
        .session_cache(cache)
}

/// Connects once with `config` to `acceptor`, exchanges a line, and says whether it resumed.
fn connect(acceptor: &TlsAcceptor, config: &Arc<ClientConfig>) -> bool {
    let mut pair = Pair::new(
        client(config, "mx.example.org"),
        Transport::new_implicit_tls(acceptor).unwrap(),
    );
    pair.drive().unwrap();
    // Application data after the handshake makes sure the TLS 1.3 tickets were delivered.
    pair.server.write_plaintext(b"220 hi\r\n").unwrap();
    pair.drive().unwrap();
    let info = pair.server.tls_info().unwrap();
    if info.resumed && info.version_name() == "TLSv1.2" {
        assert_eq!(
            info.key_exchange_group, None,
            "no key exchange on TLS 1.2 resumption"
        );
    }
    info.resumed
}

fn first_then_second(
    acceptor: &TlsAcceptor,
    pki: &Pki,
    versions: &[&'static SupportedProtocolVersion],
) -> (bool, bool) {
    let config = pki.client_config(versions);
    (connect(acceptor, &config), connect(acceptor, &config))
}

#[test]
fn rfc8446_tls13_resumes_by_stateless_ticket() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = settings(&leaf, SessionTickets::Rotating, 0)
        .build()
        .unwrap();
    assert_eq!(first_then_second(&acc, &pki, tls13()), (false, true));
}

#[test]
fn rfc5077_tls12_resumes_by_ticket() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = settings(&leaf, SessionTickets::Rotating, 0)
        .build()
        .unwrap();
    assert_eq!(first_then_second(&acc, &pki, tls12()), (false, true));
}

#[test]
fn tls13_resumes_from_the_stateful_cache_without_tickets() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = settings(&leaf, SessionTickets::Off, 16).build().unwrap();
    assert_eq!(first_then_second(&acc, &pki, tls13()), (false, true));
}

#[test]
fn rfc5246_tls12_resumes_by_session_id_from_the_cache() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = settings(&leaf, SessionTickets::Off, 16).build().unwrap();
    assert_eq!(first_then_second(&acc, &pki, tls12()), (false, true));
}

#[test]
fn resumption_off_means_full_handshakes() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let acc = settings(&leaf, SessionTickets::Off, 0).build().unwrap();
    assert_eq!(first_then_second(&acc, &pki, tls13()), (false, false));
    assert_eq!(first_then_second(&acc, &pki, tls12()), (false, false));
}

#[test]
fn host_ticket_keys_let_another_instance_resume_the_session() {
    let pki = Pki::new();
    let leaf_a = pki.issue(&["mx.example.org"], None);
    let leaf_b = pki.issue(&["mx.example.org"], None);
    let key = TicketKey::generate().unwrap();
    // Two "processes": separate TicketKeys built from the same distributed key bytes.
    let keys_a = TicketKeys::new(&key).unwrap();
    let keys_b = TicketKeys::new(&TicketKey::from_bytes(&key.to_bytes()).unwrap()).unwrap();
    let a = settings(&leaf_a, SessionTickets::HostKeys(keys_a), 0)
        .build()
        .unwrap();
    let b = settings(&leaf_b, SessionTickets::HostKeys(Arc::clone(&keys_b)), 0)
        .build()
        .unwrap();
    let stranger = settings(
        &leaf_b,
        SessionTickets::HostKeys(TicketKeys::new(&TicketKey::generate().unwrap()).unwrap()),
        0,
    )
    .build()
    .unwrap();

    for versions in [tls13(), tls12()] {
        let config = pki.client_config(versions);
        assert!(!connect(&a, &config), "first contact is a full handshake");
        assert!(connect(&b, &config), "instance B opens A's ticket");
        let config = pki.client_config(versions);
        assert!(!connect(&a, &config));
        assert!(
            !connect(&stranger, &config),
            "different keys: no resumption"
        );
    }

    // The host rotates B's keys: tickets sealed with the old key still open on B.
    let config = pki.client_config(tls13());
    assert!(!connect(&a, &config));
    keys_b.rotate(&TicketKey::generate().unwrap()).unwrap();
    assert!(connect(&b, &config), "previous key still opens");
}

#[test]
fn host_ticket_keys_replaced_with_set_drop_old_tickets() {
    let pki = Pki::new();
    let leaf = pki.issue(&["mx.example.org"], None);
    let keys = TicketKeys::new(&TicketKey::generate().unwrap()).unwrap();
    let acc = settings(&leaf, SessionTickets::HostKeys(Arc::clone(&keys)), 0)
        .build()
        .unwrap();
    let config = pki.client_config(tls13());
    assert!(!connect(&acc, &config));
    keys.set(&TicketKey::generate().unwrap(), &[]).unwrap();
    assert!(!connect(&acc, &config), "old key gone: full handshake");
    assert!(connect(&acc, &config), "new ticket works");
}
