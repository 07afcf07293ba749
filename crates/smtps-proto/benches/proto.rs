//! Throughput of the protocol layer: DATA body decoding and a whole session.
//!
//! `cargo bench -p smtps-proto --bench proto`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtps_proto::data::{DataDecoder, dot_stuff};
use smtps_proto::{Event, Security, ServerSession, SessionConfig, Verdict};

#[path = "support/text_body.rs"]
mod support;
use support::text_body;

/// A 10 MiB body of 78-character lines (80 with CRLF): every tenth line starting with a dot if
/// `dots`, none otherwise (the common case: a message whose wire form needs no unstuffing).
fn body_with_dots(dots: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(10 << 20);
    let mut n = 0u32;
    while body.len() < 10 << 20 {
        if dots && n.is_multiple_of(10) {
            body.push(b'.');
        }
        while body.len() % 80 < 78 {
            body.push(b'a' + (n % 26) as u8);
        }
        body.extend_from_slice(b"\r\n");
        n += 1;
    }
    body
}

fn data_decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("data");
    group.sample_size(20);
    for (name, dots) in [("dot_stuffed", true), ("unstuffed", false)] {
        let mut wire = Vec::new();
        dot_stuff(&body_with_dots(dots), &mut wire);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        decode_spans_in_chunks(&mut group, &format!("decode_10MiB_{name}"), &wire);
        decode_in_chunks(&mut group, &format!("decode_copy_10MiB_{name}"), &wire);
    }
    group.finish();
}

/// Decodes `wire` 64 KiB at a time, as the session hands it over, into spans of the input
/// (what the session does): the octets are not copied.
fn decode_spans_in_chunks(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    wire: &[u8],
) {
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut decoder = DataDecoder::new(1000);
            let mut offset = 0;
            let mut spans = 0usize;
            while offset < wire.len() {
                let end = wire.len().min(offset + 64 * 1024);
                let progress = decoder.decode_spans(&wire[offset..end], |span| {
                    black_box(&span);
                    spans += 1;
                });
                offset += progress.consumed;
                if progress.end {
                    break;
                }
            }
            (offset, spans)
        });
    });
}

/// Decodes `wire` 64 KiB at a time with `decode`, which copies every message octet out.
fn decode_in_chunks(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    wire: &[u8],
) {
    let mut out = Vec::with_capacity(64 * 1024 + 1);
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut decoder = DataDecoder::new(1000);
            let mut offset = 0;
            while offset < wire.len() {
                out.clear();
                let end = wire.len().min(offset + 64 * 1024);
                let progress = decoder.decode(&wire[offset..end], &mut out);
                black_box(&out);
                offset += progress.consumed;
                if progress.end {
                    break;
                }
            }
            offset
        });
    });
}

fn session_message(c: &mut Criterion) {
    let config = Arc::new(SessionConfig::new("mx.example.org"));
    let mut message = Vec::new();
    message.extend_from_slice(b"EHLO client.example\r\n");
    let mut body = Vec::new();
    for i in 0..26 {
        body.extend_from_slice(
            format!(
                "Line {i:02} of a small message, about two KiB in all, padded with text .....\r\n"
            )
            .as_bytes(),
        );
    }
    let mut transaction = Vec::new();
    transaction.extend_from_slice(
        b"MAIL FROM:<alice@example.org> SIZE=2100\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n",
    );
    dot_stuff(&body, &mut transaction);
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100_pipelined_2KiB_messages", |b| {
        let mut wire = Vec::new();
        b.iter(|| {
            let mut session = ServerSession::new(config.clone(), Security::Tls);
            let mut delivered = 0;
            let mut feed = |session: &mut ServerSession, input: &[u8]| {
                let mut offset = 0;
                loop {
                    offset += session.handle_input(&input[offset..]);
                    while let Some(event) = session.poll_event() {
                        let decision = match event {
                            Event::BodyChunk(chunk) => {
                                black_box(chunk);
                                None
                            }
                            Event::MessageEnd { decision, .. } => {
                                delivered += 1;
                                Some(decision)
                            }
                            Event::Connect { decision }
                            | Event::Helo { decision, .. }
                            | Event::Mail { decision, .. }
                            | Event::Rcpt { decision, .. }
                            | Event::DataStart { decision, .. } => Some(decision),
                            _ => None,
                        };
                        if let Some(decision) = decision {
                            let _ = session.decide(decision, Verdict::Accept);
                        }
                    }
                    wire.clear();
                    session.poll_transmit(&mut wire);
                    if offset == input.len() {
                        break;
                    }
                }
            };
            feed(&mut session, &message);
            for _ in 0..100 {
                feed(&mut session, &transaction);
            }
            delivered
        });
    });
    group.finish();
}

/// Ten 100 KiB messages through a session, the input offered 16 KiB at a time (a TLS record's
/// plaintext), the host reading every body chunk.
fn session_large_messages(c: &mut Criterion) {
    let config = Arc::new(SessionConfig::new("mx.example.org"));
    let mut group = c.benchmark_group("session");
    group.sample_size(20);
    for (name, dot_every) in [
        ("10_100KiB_messages_dot_every_7", 7),
        ("10_100KiB_messages_no_dots", 0),
    ] {
        let mut wire = b"EHLO client.example\r\n".to_vec();
        for _ in 0..10 {
            wire.extend_from_slice(
                b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n",
            );
            dot_stuff(&text_body(dot_every), &mut wire);
        }
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            let mut replies = Vec::new();
            b.iter(|| {
                let mut session = ServerSession::new(config.clone(), Security::Tls);
                let (mut delivered, mut octets, mut chunks) = (0, 0, 0);
                let mut offset = 0;
                loop {
                    let end = wire.len().min(offset + 16 * 1024);
                    offset += session.handle_input(&wire[offset..end]);
                    while let Some(event) = session.poll_event() {
                        let decision = match event {
                            Event::BodyChunk(chunk) => {
                                octets += black_box(chunk).len();
                                chunks += 1;
                                None
                            }
                            Event::MessageEnd { decision, .. } => {
                                delivered += 1;
                                Some(decision)
                            }
                            other => other.decision(),
                        };
                        if let Some(decision) = decision {
                            let _ = session.decide(decision, Verdict::Accept);
                        }
                    }
                    replies.clear();
                    session.poll_transmit(&mut replies);
                    if offset == wire.len() {
                        break;
                    }
                }
                assert_eq!(delivered, 10);
                (octets, chunks)
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    data_decoding,
    session_message,
    session_large_messages
);
criterion_main!(benches);
