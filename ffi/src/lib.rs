//! The C ABI of smtps: lets a mail server written in C add SMTP listeners with implicit TLS
//! (RFC 8314) and STARTTLS (RFC 3207) without TLS or SMTP parsing code of its own.
//!
//! The header is `include/smtps.h`, generated from this crate by `ffi/regen-header.sh`; its
//! comments are these doc comments. `ffi/README.md` states the conventions (names, ownership,
//! results, threads) and has a quick start.
//!
//! # Two levels
//!
//! - **Server level** (`smtps_server_*`): the library listens, accepts, does TLS and SMTP on
//!   its own worker threads, and calls the host's `smtps_callbacks` for every decision. A
//!   callback answers at once or defers, and the host then answers from any thread with
//!   `smtps_server_reply`. The server runs on library threads (`smtps_server_start`), on the
//!   calling thread (`smtps_server_run`), or with every callback run from the host's own poll
//!   loop (`smtps_server_start_polled` + `smtps_server_dispatch`).
//! - **Connection level** (`smtps_conn_*`): sans-IO. The host owns the socket (a
//!   fork-per-connection server); it feeds received bytes, takes events and answers them, and
//!   sends what the connection gives. STARTTLS happens inside.
//!
//! Behind a load balancer both levels read a PROXY protocol header (haproxy's
//! `doc/proxy-protocol.txt`, v1 or v2) from trusted sources first and report the client it
//! names (`smtps_config_set_listener_proxy`, `smtps_conn_expect_proxy_header`).
//!
//! # Rules every export keeps
//!
//! Every export runs inside `ffi_boundary!` (no panic crosses into C), checks its pointers
//! (`SMTPS_RESULT_NULL_PARAMETER`, or NULL/false/0), reports misuse as a result code, and
//! records details for `smtps_last_error()`. Pointer casts live in `ffi.rs`, error mapping in
//! `error.rs`.
#![deny(missing_docs)]
// C type names are lower case (`smtps_config`), as C users expect.
#![allow(non_camel_case_types)]
// Exports must be `pub` to be exported, whatever the module's visibility.
#![allow(unreachable_pub)]

mod callbacks;
mod config;
mod conn;
mod error;
mod ffi;
mod handler;
mod panic;
mod params;
mod proxy;
mod reply;
mod server;
mod session;
mod view;

pub use callbacks::*;
pub use config::*;
pub use conn::*;
pub use error::*;
pub use proxy::*;
pub use server::*;
pub use session::*;
pub use view::*;

/// The library's version, `MAJOR.MINOR.PATCH`, as a NUL-terminated static string (never
/// freed). Compare with the `SMTPS_VERSION_*` macros of the header the host was built with.
///
/// # Safety
/// None: no arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_version() -> *const std::ffi::c_char {
    panic::ffi_boundary! {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_function_matches_cargo_toml() {
        // SAFETY: no arguments; returns a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(super::smtps_version()) };
        assert_eq!(version.to_str().ok(), Some(env!("CARGO_PKG_VERSION")));
    }
}
