//! Fuzz target logic for `smtps`, as plain functions over a byte slice.
//!
//! Each function decodes its input, drives one entry point of `smtps-proto`, `smtps-tls`,
//! `smtps-conn` or `smtps-proxy`,
//! and asserts invariants — a panic is a finding. The cargo-fuzz crate in `fuzz/` calls them
//! from its targets (`fuzz/fuzz_targets/<name>.rs`), and `tests/corpus.rs` replays every file
//! of `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` through them, so corpus regressions
//! run in an ordinary `cargo test` on stable Rust.
//!
//! | target | function | checks |
//! | --- | --- | --- |
//! | `command` | [`command()`] | `parse_command` never panics; paths survive `Display` |
//! | `session` | [`session()`] | reply syntax, legal event order, STARTTLS boundary; differential: `pipelined_decisions` on answers as off ([`session::differential`]) |
//! | `data_decoder` | [`data_decoder()`] | differential against [`data::reference_decode`]; stuffing round trip |
//! | `tls_transport` | [`tls_transport()`] | no panic; nothing pre-TLS or forged comes out after the upgrade |
//! | `conn` | [`conn()`] | the C ABI's connection object (`smtps_conn::Connection`) with a real TLS client, optionally behind a PROXY protocol header: reply syntax, valid record stream, no event before the handshake, nothing pre-TLS acted on; no event or output before the PROXY header, the header read is the one sent, a bad one closes with `ProxyHeader` |
//! | `proxy_header` | [`proxy_header()`] | `smtps_proxy::parse_header` never panics, takes at most the input, gives the same header on exactly its octets, with one more octet and after every split; v1 and v2 encodings of the same addresses parse equal |
//!
//! # Known issues
//!
//! A bug found by fuzzing and not yet fixed in the crate that owns it is listed in
//! [`KNOWN_ISSUES`]; the harness tolerates exactly that behaviour (so fuzzing can go on to find
//! other bugs) unless [`set_strict`] is on. The corpus test replays the regression input of each
//! known issue in strict mode and expects it to fail; when the owner fixes the bug, that test
//! says so and the entry is removed.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::cell::Cell;

pub mod command;
pub mod conn;
pub mod data;
pub mod proxy;
pub mod seeds;
pub mod session;
pub mod tls;
pub mod wire;

pub use command::command;
pub use conn::conn;
pub use data::data_decoder;
pub use proxy::proxy_header;
pub use session::session;
pub use tls::tls_transport;

/// Bugs found by fuzzing that are not fixed yet, by name; each has an input in
/// `fuzz/regressions/<target>/<name>.bin`. See the [crate documentation](crate).
pub const KNOWN_ISSUES: &[&str] = &[];

thread_local! {
    static STRICT: Cell<bool> = const { Cell::new(false) };
}

/// Turns strict mode on or off for this thread: in strict mode no [`KNOWN_ISSUES`] entry is
/// tolerated.
pub fn set_strict(strict: bool) {
    STRICT.with(|s| s.set(strict));
}

/// Whether the harness tolerates the known issue `name` now: a check that a known bug breaks
/// is written `assert!(ok || known_issue("name"), ...)` until the bug is fixed.
pub fn known_issue(name: &str) -> bool {
    !STRICT.with(Cell::get) && KNOWN_ISSUES.contains(&name)
}

/// The target names, as in `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [&str; 6] = [
    "command",
    "session",
    "data_decoder",
    "tls_transport",
    "conn",
    "proxy_header",
];

/// Runs `data` through the target named `target`.
///
/// # Panics
/// If the target's checks fail, or `target` is not one of [`TARGETS`].
pub fn run_target(target: &str, data: &[u8]) {
    match target {
        "command" => command(data),
        "session" => session(data),
        "data_decoder" => data_decoder(data),
        "tls_transport" => tls_transport(data),
        "conn" => conn(data),
        "proxy_header" => proxy_header(data),
        other => panic!("unknown fuzz target {other}"),
    }
}
