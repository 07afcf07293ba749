//! The adapter's cost over bare rustls: full TLS 1.3 handshakes in memory, and 64 KiB bulk
//! transfers in each direction. Both sides of each comparison use the same `ServerConfig`.
//!
//! Run: `cargo bench -p smtps-tls --bench tls -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rustls::client::Resumption;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use smtps_testkit::{TestCertificate, client_connection};
use smtps_tls::{SessionTickets, TlsAcceptor, TlsSettings, Transport};

const BULK: usize = 64 * 1024;
/// The name the server's certificate is for.
const SERVER: &str = "mx.example.org";

struct Fixture {
    acceptor: TlsAcceptor,
    server_config: Arc<ServerConfig>,
    client_config: Arc<ClientConfig>,
}

fn fixture() -> Fixture {
    let cert = TestCertificate::generate(&[SERVER]);
    let acceptor = TlsSettings::new()
        .default_certificate(cert.source())
        .session_tickets(SessionTickets::Off)
        .session_cache(0)
        .build()
        .unwrap();
    let mut client_config =
        ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(cert.roots())
            .with_no_client_auth();
    client_config.resumption = Resumption::disabled();
    Fixture {
        server_config: acceptor.server_config(),
        acceptor,
        client_config: Arc::new(client_config),
    }
}

fn new_client(f: &Fixture) -> ClientConnection {
    client_connection(&f.client_config, SERVER)
}

/// Moves the client's pending bytes into `wire` (cleared first).
fn client_out(client: &mut ClientConnection, wire: &mut Vec<u8>) {
    wire.clear();
    while client.wants_write() {
        client.write_tls(wire).unwrap();
    }
}

fn client_in(client: &mut ClientConnection, mut data: &[u8]) {
    while !data.is_empty() {
        client.read_tls(&mut data).unwrap();
        client.process_new_packets().unwrap();
    }
}

fn handshake_bare(f: &Fixture, wire: &mut Vec<u8>) -> ServerConnection {
    let mut client = new_client(f);
    let mut server = ServerConnection::new(Arc::clone(&f.server_config)).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        client_out(&mut client, wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(wire).unwrap();
        }
        client_in(&mut client, wire);
    }
    server
}

fn handshake_adapter(f: &Fixture, wire: &mut Vec<u8>) -> Transport {
    let mut client = new_client(f);
    let mut server = Transport::new_implicit_tls(&f.acceptor).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        client_out(&mut client, wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            let n = server.handle_received(rd).unwrap();
            rd = &rd[n..];
        }
        wire.clear();
        server.poll_transmit(wire);
        client_in(&mut client, wire);
    }
    server
}

fn handshakes(c: &mut Criterion) {
    let f = fixture();
    let mut wire = Vec::with_capacity(16 * 1024);
    let mut g = c.benchmark_group("tls13_full_handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare_rustls", |b| {
        b.iter(|| black_box(handshake_bare(&f, &mut wire)));
    });
    g.bench_function("adapter", |b| {
        b.iter(|| black_box(handshake_adapter(&f, &mut wire)));
    });
    g.finish();
}

/// An established client plus both kinds of server, each with its own client.
fn established(
    f: &Fixture,
) -> (
    ClientConnection,
    ServerConnection,
    ClientConnection,
    Transport,
) {
    let mut wire = Vec::new();
    let mut bare_client = new_client(f);
    let mut bare = ServerConnection::new(Arc::clone(&f.server_config)).unwrap();
    while bare_client.is_handshaking() || bare.is_handshaking() {
        client_out(&mut bare_client, &mut wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            bare.read_tls(&mut rd).unwrap();
            bare.process_new_packets().unwrap();
        }
        wire.clear();
        while bare.wants_write() {
            bare.write_tls(&mut wire).unwrap();
        }
        client_in(&mut bare_client, &wire);
    }
    let mut adapter_client = new_client(f);
    let mut adapter = Transport::new_implicit_tls(&f.acceptor).unwrap();
    while adapter_client.is_handshaking() || adapter.is_handshaking() {
        client_out(&mut adapter_client, &mut wire);
        let mut rd = &wire[..];
        while !rd.is_empty() {
            let n = adapter.handle_received(rd).unwrap();
            rd = &rd[n..];
        }
        wire.clear();
        adapter.poll_transmit(&mut wire);
        client_in(&mut adapter_client, &wire);
    }
    (bare_client, bare, adapter_client, adapter)
}

/// The client encrypts the next 64 KiB (untimed setup).
fn encrypt_next(client: &mut ClientConnection, payload: &[u8]) -> Vec<u8> {
    client.writer().write_all(payload).unwrap();
    let mut wire = Vec::with_capacity(BULK + 1024);
    client_out(client, &mut wire);
    wire
}

fn bulk(c: &mut Criterion) {
    let f = fixture();
    let payload = vec![b'x'; BULK];
    let mut plain = vec![0u8; 16 * 1024];

    let mut g = c.benchmark_group("bulk_64k_client_to_server");
    g.throughput(Throughput::Bytes(BULK as u64));
    let (mut bare_client, mut bare, mut adapter_client, mut adapter) = established(&f);
    g.bench_function("bare_rustls", |b| {
        b.iter_batched(
            || encrypt_next(&mut bare_client, &payload),
            |wire| {
                let mut rd = &wire[..];
                let mut got = 0;
                while got < BULK {
                    if !rd.is_empty() && bare.read_tls(&mut rd).is_ok() {
                        bare.process_new_packets().unwrap();
                    }
                    while let Ok(n) = bare.reader().read(&mut plain) {
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                }
                wire
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("adapter", |b| {
        b.iter_batched(
            || encrypt_next(&mut adapter_client, &payload),
            |wire| {
                let mut rd = &wire[..];
                let mut got = 0;
                while got < BULK {
                    let n = adapter.handle_received(rd).unwrap();
                    rd = &rd[n..];
                    loop {
                        let n = adapter.read_plaintext(&mut plain);
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                }
                wire
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();

    let mut g = c.benchmark_group("bulk_64k_server_to_client");
    g.throughput(Throughput::Bytes(BULK as u64));
    let mut wire = Vec::with_capacity(2 * BULK);
    g.bench_function("bare_rustls", |b| {
        b.iter(|| {
            wire.clear();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                let n = bare.writer().write(rest).unwrap();
                rest = &rest[n..];
                while bare.wants_write() {
                    bare.write_tls(&mut wire).unwrap();
                }
            }
            black_box(wire.len())
        });
    });
    g.bench_function("adapter", |b| {
        b.iter(|| {
            wire.clear();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                let n = adapter.write_plaintext(rest).unwrap();
                rest = &rest[n..];
                adapter.poll_transmit(&mut wire);
            }
            black_box(wire.len())
        });
    });
    g.finish();
}

criterion_group!(benches, handshakes, bulk);
criterion_main!(benches);
