//! Command-line parsing throughput: `parse_command` over a realistic mix of one transaction's
//! lines, reported in commands per second (criterion "elements").
//!
//! Run: `cargo bench -p smtps-proto --bench command`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smtps_proto::command::parse_command;

/// One transaction as a typical client sends it, plus RSET and NOOP.
const MIX: [&[u8]; 9] = [
    b"EHLO mail.client-example.org",
    b"MAIL FROM:<alice.sender@client-example.org> SIZE=123456 BODY=8BITMIME",
    b"RCPT TO:<bob@example.com>",
    b"RCPT TO:<carol.recipient@mail.example.net>",
    b"RCPT TO:<dave+lists@example.com>",
    b"DATA",
    b"QUIT",
    b"RSET",
    b"NOOP",
];

fn parse_mix(c: &mut Criterion) {
    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(MIX.len() as u64));
    group.bench_function("parse_mix", |b| {
        b.iter(|| {
            for line in MIX {
                let _ = black_box(parse_command(black_box(line)));
            }
        });
    });
    // Each line alone, to see where the time goes.
    for (name, line) in [
        "ehlo",
        "mail",
        "rcpt",
        "rcpt_dot",
        "rcpt_plus",
        "data",
        "quit",
        "rset",
        "noop",
    ]
    .into_iter()
    .zip(MIX)
    {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| black_box(parse_command(black_box(line))));
        });
    }
    group.finish();
}

criterion_group!(benches, parse_mix);
criterion_main!(benches);
