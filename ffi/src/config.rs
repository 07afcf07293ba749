//! `smtps_config`: listeners, certificates, SMTP settings, limits, timeouts, workers and the
//! PROXY protocol's trusted sources, shared by both levels of the API.

use std::ffi::c_char;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use smtps_proto::{Extensions, SessionConfig};
use smtps_server::{
    ConnectionLimits, ListenerConfig, Mode, Network, ProxyPolicy, ServerConfig, Timeouts, Untrusted,
};
use smtps_tls::{CertificateSource, TlsAcceptor, TlsSettings};

use crate::error::{fail, smtps_result, tls_error};
use crate::ffi::{
    Castable, OwnershipBox, c_str, take_box, to_boxed_ptr, try_mut_from_ptr, try_ref_from_ptr,
    try_str,
};
use crate::panic::ffi_boundary;
use crate::proxy::parse_ip;

/// Configuration for a server (`smtps_server_new`) or for connections (`smtps_conn_new`).
///
/// Made by `smtps_config_new`, freed by `smtps_config_free`. Setters must not run while another
/// thread uses the same config; once it is only read (by `smtps_server_new`, `smtps_conn_new`)
/// it may be shared between threads. A server copies what it needs: the config may be freed
/// right after `smtps_server_new`. Connections do not keep it either.
#[allow(non_camel_case_types)]
pub struct smtps_config {
    _private: [u8; 0],
}

impl Castable for smtps_config {
    type Ownership = OwnershipBox;
    type RustType = Config;
}

/// How a listener or connection speaks TLS: one of the `SMTPS_MODE_*` values.
#[allow(non_camel_case_types)]
pub type smtps_mode = u32;
/// TLS from the first byte: submission on port 465 (RFC 8314).
pub const SMTPS_MODE_IMPLICIT_TLS: smtps_mode = 0;
/// Plaintext with STARTTLS offered (RFC 3207): relay on port 25.
pub const SMTPS_MODE_START_TLS: smtps_mode = 1;
/// Plaintext with STARTTLS offered and required before MAIL (`530 5.7.0`): port 587.
pub const SMTPS_MODE_START_TLS_REQUIRED: smtps_mode = 2;
/// Plaintext only, no STARTTLS (loopback, or behind a TLS terminator).
pub const SMTPS_MODE_PLAIN: smtps_mode = 3;

/// Whether a listener reads a PROXY protocol header (haproxy's proxy-protocol.txt, v1 or v2)
/// before anything else: one of the `SMTPS_PROXY_*` values, set with
/// `smtps_config_set_listener_proxy`.
#[allow(non_camel_case_types)]
pub type smtps_proxy_mode = u32;
/// No header is read: every client is served as the socket shows it (the default).
pub const SMTPS_PROXY_OFF: smtps_proxy_mode = 0;
/// Connections from a trusted source (`smtps_config_add_proxy_trusted`) must begin with a
/// header; a missing or malformed one closes the connection without a banner. Connections
/// from any other source are closed at once, without a banner (proxy-protocol.txt §2: a
/// receiver must not guess whether a header comes).
pub const SMTPS_PROXY_REQUIRED: smtps_proxy_mode = 1;
/// As `SMTPS_PROXY_REQUIRED` for trusted sources; any other source is served directly, with
/// its socket's addresses and no header read.
pub const SMTPS_PROXY_OR_DIRECT: smtps_proxy_mode = 2;

/// A timer to set with `smtps_config_set_timeout`: one of the `SMTPS_TIMEOUT_*` values.
#[allow(non_camel_case_types)]
pub type smtps_timeout = u32;
/// From accept (or STARTTLS) to the end of the TLS handshake. Default 30 s.
pub const SMTPS_TIMEOUT_HANDSHAKE: smtps_timeout = 0;
/// Waiting for the next command. Default 300 s (RFC 5321 §4.5.3.2.7).
pub const SMTPS_TIMEOUT_COMMAND: smtps_timeout = 1;
/// Waiting for the next block of message data. Default 180 s.
pub const SMTPS_TIMEOUT_DATA_BLOCK: smtps_timeout = 2;
/// Waiting for the host to decide; past it the command is answered `451 4.3.0`. Default 300 s.
pub const SMTPS_TIMEOUT_DECISION: smtps_timeout = 3;
/// A whole session. Default 3600 s.
pub const SMTPS_TIMEOUT_SESSION: smtps_timeout = 4;
/// How long a closing connection may take to send its last replies to a client that does
/// not read; then they are dropped and the connection is over. Default 5 s.
pub const SMTPS_TIMEOUT_CLOSE_LINGER: smtps_timeout = 5;
/// From accept to the end of the PROXY protocol header, on connections that expect one; then
/// the connection closes without a banner. Default 10 s (proxy-protocol.txt §2 asks for at
/// least 3 s).
pub const SMTPS_TIMEOUT_PROXY_HEADER: smtps_timeout = 6;

/// A limit to set with `smtps_config_set_limit`: one of the `SMTPS_LIMIT_*` values.
#[allow(non_camel_case_types)]
pub type smtps_limit = u32;
/// Largest message in octets, advertised with SIZE. Default 25 MiB.
pub const SMTPS_LIMIT_MESSAGE_SIZE: smtps_limit = 0;
/// Recipients per message. Default 100.
pub const SMTPS_LIMIT_RECIPIENTS: smtps_limit = 1;
/// Protocol errors before the session is closed. Default 10.
pub const SMTPS_LIMIT_ERRORS: smtps_limit = 2;
/// Transactions per session; 0 for no limit (the default).
pub const SMTPS_LIMIT_TRANSACTIONS: smtps_limit = 3;
/// Largest body chunk handed to the host at once. Default 64 KiB.
pub const SMTPS_LIMIT_BODY_CHUNK: smtps_limit = 4;
/// Connections open at once (server level). Default 10000.
pub const SMTPS_LIMIT_CONNECTIONS: smtps_limit = 5;
/// Connections open at once from one IP address (server level). Default 50.
pub const SMTPS_LIMIT_CONNECTIONS_PER_IP: smtps_limit = 6;
/// NOOP, RSET, VRFY, EXPN and HELP commands since the last accepted message;
/// more end the session with `421 4.7.0`. Default 1000.
pub const SMTPS_LIMIT_JUNK_COMMANDS: smtps_limit = 7;

/// An SMTP extension a host may offer or withhold, for `smtps_config_set_extension`: one of the
/// `SMTPS_EXTENSION_*` values.
#[allow(non_camel_case_types)]
pub type smtps_extension = u32;
/// PIPELINING (RFC 2920). On by default.
pub const SMTPS_EXTENSION_PIPELINING: smtps_extension = 0;
/// SIZE (RFC 1870), with `SMTPS_LIMIT_MESSAGE_SIZE`. On by default.
pub const SMTPS_EXTENSION_SIZE: smtps_extension = 1;
/// 8BITMIME (RFC 6152): `BODY=8BITMIME` bodies. On by default.
pub const SMTPS_EXTENSION_8BITMIME: smtps_extension = 2;
/// SMTPUTF8 (RFC 6531): UTF-8 in addresses and headers. Off by default: offer it only if the
/// host stores and relays UTF-8 addresses (`smtps_session_param(s, "SMTPUTF8", ...)` tells
/// which transactions use it).
pub const SMTPS_EXTENSION_SMTPUTF8: smtps_extension = 4;
/// CHUNKING (RFC 3030): BDAT. On by default.
pub const SMTPS_EXTENSION_CHUNKING: smtps_extension = 5;
/// BINARYMIME (RFC 3030): binary bodies over BDAT. On by default.
pub const SMTPS_EXTENSION_BINARYMIME: smtps_extension = 6;
/// DSN (RFC 3461): `NOTIFY`, `ORCPT`, `RET`, `ENVID`. Off by default: offering it promises
/// delivery status notifications as the client asks (RFC 3461 §5), which only the host can
/// keep; read the values with `smtps_session_param`.
pub const SMTPS_EXTENSION_DSN: smtps_extension = 7;
/// AUTH (RFC 4954). On by default, offered over TLS only: a server offers it only when its
/// callbacks include `on_auth` as well; a connection-level host that checks no credentials
/// switches it off here.
pub const SMTPS_EXTENSION_AUTH: smtps_extension = 9;
/// REQUIRETLS (RFC 8689). Off by default: it promises TLS for every onward hop.
pub const SMTPS_EXTENSION_REQUIRETLS: smtps_extension = 10;

/// The extension behind a raw `smtps_extension`, for the ones a host may switch.
fn extension(value: smtps_extension) -> Option<Extensions> {
    Some(match value {
        SMTPS_EXTENSION_PIPELINING => Extensions::PIPELINING,
        SMTPS_EXTENSION_SIZE => Extensions::SIZE,
        SMTPS_EXTENSION_8BITMIME => Extensions::EIGHT_BIT_MIME,
        SMTPS_EXTENSION_SMTPUTF8 => Extensions::SMTP_UTF8,
        SMTPS_EXTENSION_CHUNKING => Extensions::CHUNKING,
        SMTPS_EXTENSION_BINARYMIME => Extensions::BINARY_MIME,
        SMTPS_EXTENSION_DSN => Extensions::DSN,
        SMTPS_EXTENSION_AUTH => Extensions::AUTH,
        SMTPS_EXTENSION_REQUIRETLS => Extensions::REQUIRE_TLS,
        _ => return None,
    })
}

/// What a C host offers until it says otherwise: what the library serves on its own, not the
/// extensions whose promises only the host can keep (DSN, SMTPUTF8, REQUIRETLS).
fn default_extensions() -> Extensions {
    Extensions::default().without(Extensions::DSN | Extensions::SMTP_UTF8)
}

/// The Rust value behind `smtps_config`.
pub(crate) struct Config {
    session: SessionConfig,
    /// Each listener's PROXY setting is a policy whose trusted list is filled from
    /// `proxy_trusted` when a server is made.
    listeners: Vec<ListenerConfig>,
    /// The sources trusted to send PROXY headers (`untrusted` unused here).
    proxy_trusted: ProxyPolicy,
    certificate: Option<(PathBuf, PathBuf)>,
    sni: Vec<(String, PathBuf, PathBuf)>,
    workers: usize,
    timeouts: Timeouts,
    limits: ConnectionLimits,
    /// The acceptor built from the certificate settings, once asked for; shared by every
    /// connection made from this config and by servers built from it.
    acceptor: Mutex<Option<Arc<TlsAcceptor>>>,
}

impl Config {
    fn new() -> Self {
        let mut session = SessionConfig::new("localhost");
        session.extensions = default_extensions();
        Self {
            session,
            listeners: Vec::new(),
            proxy_trusted: ProxyPolicy::new(Vec::new()),
            certificate: None,
            sni: Vec::new(),
            workers: 0,
            timeouts: Timeouts::default(),
            limits: ConnectionLimits::default(),
            acceptor: Mutex::new(None),
        }
    }

    /// Forgets a built acceptor after a certificate setting changed.
    fn invalidate_tls(&mut self) {
        *self
            .acceptor
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The TLS acceptor, built (reading the files) on first use; `None` without a certificate.
    pub(crate) fn acceptor(&self) -> Result<Option<Arc<TlsAcceptor>>, smtps_result> {
        let Some((chain, key)) = &self.certificate else {
            if self.sni.is_empty() {
                return Ok(None);
            }
            return Err(fail(
                smtps_result::TlsNotConfigured,
                "SNI certificates given without a default certificate \
                 (smtps_config_set_certificate_files)",
            ));
        };
        let mut cached = self.acceptor.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(acceptor) = &*cached {
            return Ok(Some(Arc::clone(acceptor)));
        }
        let mut settings =
            TlsSettings::new().default_certificate(CertificateSource::files(chain, key));
        for (name, chain, key) in &self.sni {
            settings = settings.sni_certificate(name.clone(), CertificateSource::files(chain, key));
        }
        let acceptor = Arc::new(settings.build().map_err(|error| tls_error(&error))?);
        *cached = Some(Arc::clone(&acceptor));
        Ok(Some(acceptor))
    }

    /// The timers.
    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The SMTP settings for a connection (the engine applies what its mode adds, such as
    /// `require_tls_for_mail` for `SMTPS_MODE_START_TLS_REQUIRED`).
    pub(crate) fn session_config(&self) -> Arc<SessionConfig> {
        Arc::new(self.session.clone())
    }

    /// The server configuration, with the TLS acceptor built and the trusted PROXY sources in
    /// every listener that reads headers.
    pub(crate) fn server_config(&self) -> Result<ServerConfig, smtps_result> {
        let mut config = ServerConfig::new(self.session.clone());
        config.listeners.clone_from(&self.listeners);
        for (index, listener) in config.listeners.iter_mut().enumerate() {
            let Some(policy) = &mut listener.proxy else {
                continue;
            };
            if self.proxy_trusted.trusted.is_empty() {
                return Err(fail(
                    smtps_result::ProxyNotConfigured,
                    format_args!(
                        "listener {index} ({}) reads PROXY headers but no trusted source: \
                         smtps_config_add_proxy_trusted",
                        listener.addr
                    ),
                ));
            }
            policy.trusted.clone_from(&self.proxy_trusted.trusted);
        }
        config.tls = self.acceptor()?;
        config.workers = self.workers;
        config.timeouts = self.timeouts;
        config.limits = self.limits.clone();
        Ok(config)
    }
}

/// The listener mode for a raw `smtps_mode`.
pub(crate) fn listener_mode(mode: smtps_mode) -> Result<Mode, smtps_result> {
    match mode {
        SMTPS_MODE_IMPLICIT_TLS => Ok(Mode::ImplicitTls),
        SMTPS_MODE_START_TLS => Ok(Mode::StartTls),
        SMTPS_MODE_START_TLS_REQUIRED => Ok(Mode::StartTlsRequired),
        SMTPS_MODE_PLAIN => Ok(Mode::Plain),
        other => Err(fail(
            smtps_result::InvalidParameter,
            format_args!("{other} is not an smtps_mode"),
        )),
    }
}

/// The `smtps_mode` of a listener mode.
pub(crate) fn mode_number(mode: Mode) -> smtps_mode {
    match mode {
        Mode::ImplicitTls => SMTPS_MODE_IMPLICIT_TLS,
        Mode::StartTls => SMTPS_MODE_START_TLS,
        Mode::StartTlsRequired => SMTPS_MODE_START_TLS_REQUIRED,
        _ => SMTPS_MODE_PLAIN,
    }
}

/// A new configuration with defaults: host name `localhost`, no listener, no certificate, one
/// worker per core, the RFC timeouts and limits.
///
/// Returns NULL only if the library panicked. Free with `smtps_config_free`.
///
/// # Safety
/// None: no arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_new() -> *mut smtps_config {
    ffi_boundary! { to_boxed_ptr::<smtps_config>(Config::new()) }
}

/// Frees a configuration. NULL is a no-op. Servers and connections made from it are not
/// affected.
///
/// # Safety
/// `config` is NULL or from `smtps_config_new`, not freed before, and not in use by another
/// thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_free(config: *mut smtps_config) {
    ffi_boundary! {
        // SAFETY: the caller hands back a pointer from `smtps_config_new`, or NULL.
        drop(unsafe { take_box(config) });
    }
}

/// Sets the server's host name, used in the greeting and the EHLO reply. `hostname` is a
/// NUL-terminated UTF-8 string, copied.
///
/// # Safety
/// `config` is a live config; `hostname` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_hostname(
    config: *mut smtps_config,
    hostname: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let hostname = try_str!(hostname);
        if hostname.is_empty() || hostname.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return fail(smtps_result::InvalidParameter, format_args!("{hostname:?} is not a host name"));
        }
        config.session.hostname = hostname.to_owned();
        smtps_result::Ok
    }
}

/// Adds a listener on `addr` (NUL-terminated `IP:port`, such as `"[::]:465"` or
/// `"127.0.0.1:0"`; port 0 picks a free port, see `smtps_server_local_port`) in `mode`.
///
/// Returns `SMTPS_RESULT_INVALID_ADDRESS` for an address that does not parse,
/// `SMTPS_RESULT_INVALID_PARAMETER` for an unknown mode.
///
/// # Safety
/// `config` is a live config; `addr` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_add_listener(
    config: *mut smtps_config,
    addr: *const c_char,
    mode: smtps_mode,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let addr = try_str!(addr);
        let mode = match listener_mode(mode) {
            Ok(mode) => mode,
            Err(error) => return error,
        };
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            return fail(
                smtps_result::InvalidAddress,
                format_args!("{addr:?} is not IP:port (such as [::]:465 or 0.0.0.0:587)"),
            );
        };
        config.listeners.push(ListenerConfig::new(addr, mode));
        smtps_result::Ok
    }
}

/// Sets whether listener `listener_index` (from 0, in `smtps_config_add_listener` order) reads
/// a PROXY protocol header first (haproxy's proxy-protocol.txt, v1 text or v2 binary, sent by
/// a load balancer before the client's first octet): `SMTPS_PROXY_OFF` (the default),
/// `SMTPS_PROXY_REQUIRED` or `SMTPS_PROXY_OR_DIRECT`. Only the sources added with
/// `smtps_config_add_proxy_trusted` may send one (proxy-protocol.txt §2 and §5: accepting it
/// from anyone would let any client claim any address); `smtps_server_new` fails with
/// `SMTPS_RESULT_PROXY_NOT_CONFIGURED` if a listener reads headers and none was added.
///
/// On such a listener the session reports the client the header names:
/// `smtps_session_peer` and `smtps_session_local` give the header's source and destination,
/// `smtps_session_proxied_by` the balancer, and `smtps_session_proxy_tlv` its TLVs. A LOCAL
/// header (the balancer's health check) is served with the socket's addresses.
///
/// `SMTPS_RESULT_INVALID_PARAMETER` for a listener index not added yet or an unknown mode.
/// Server level only: a connection-level host asks `smtps_config_proxy_trusts` and calls
/// `smtps_conn_expect_proxy_header` itself.
///
/// # Safety
/// `config` is NULL or a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_listener_proxy(
    config: *mut smtps_config,
    listener_index: usize,
    mode: smtps_proxy_mode,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let untrusted = match mode {
            SMTPS_PROXY_OFF => None,
            SMTPS_PROXY_REQUIRED => Some(Untrusted::Refuse),
            SMTPS_PROXY_OR_DIRECT => Some(Untrusted::Direct),
            other => {
                let detail = format_args!("{other} is not an smtps_proxy_mode");
                return fail(smtps_result::InvalidParameter, detail);
            }
        };
        let count = config.listeners.len();
        let Some(listener) = config.listeners.get_mut(listener_index) else {
            let detail = format_args!(
                "no listener {listener_index}: {count} added (smtps_config_add_listener)"
            );
            return fail(smtps_result::InvalidParameter, detail);
        };
        // The trusted sources are filled in when a server is made (`Config::server_config`).
        listener.proxy = untrusted.map(|rule| ProxyPolicy::new(Vec::new()).untrusted(rule));
        smtps_result::Ok
    }
}

/// Sets whether listener `listener_index` (from 0, in `smtps_config_add_listener` order) may
/// share its port with listeners another process already has on it (`SO_REUSEPORT`, same
/// user): the kernel then spreads new clients across both. `false` (the default): a port
/// anyone listens on makes `smtps_server_new` fail with `SMTPS_RESULT_BIND` naming
/// it. `true` for a zero-downtime upgrade: start the new process beside the old, then stop the
/// old one (`smtps_server_stop` finishes its sessions).
///
/// `SMTPS_RESULT_INVALID_PARAMETER` for a listener index not added yet.
///
/// # Safety
/// `config` is NULL or a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_listener_share_port(
    config: *mut smtps_config,
    listener_index: usize,
    share: bool,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let count = config.listeners.len();
        let Some(listener) = config.listeners.get_mut(listener_index) else {
            let detail = format_args!(
                "no listener {listener_index}: {count} added (smtps_config_add_listener)"
            );
            return fail(smtps_result::InvalidParameter, detail);
        };
        listener.share_port = share;
        smtps_result::Ok
    }
}

/// Adds a source trusted to send PROXY protocol headers: a NUL-terminated IPv4 or IPv6 block
/// in CIDR notation (`"10.0.0.0/8"`, `"2001:db8::/32"`) or a single address (`"192.0.2.7"`,
/// `"::1"`). Repeat for each balancer or network. An IPv4-mapped IPv6 peer
/// (`::ffff:10.0.0.5`) matches an IPv4 block. The list serves every listener set with
/// `smtps_config_set_listener_proxy`, and `smtps_config_proxy_trusts` (proxy-protocol.txt §2:
/// only trusted proxies may use the protocol).
///
/// `SMTPS_RESULT_INVALID_ADDRESS`, with the value named in `smtps_last_error()`, for text that
/// is not an address or block, a prefix length out of range, or bits set past the prefix
/// (`"10.0.0.1/8"`: write the block's first address).
///
/// # Safety
/// `config` is NULL or a live config; `cidr` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_add_proxy_trusted(
    config: *mut smtps_config,
    cidr: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let cidr = try_str!(cidr);
        match cidr.parse::<Network>() {
            Ok(network) => {
                config.proxy_trusted.trusted.push(network);
                smtps_result::Ok
            }
            Err(error) => fail(smtps_result::InvalidAddress, error),
        }
    }
}

/// Whether `ip` is a source trusted to send PROXY protocol headers
/// (`smtps_config_add_proxy_trusted`): for a connection-level host that accepts its sockets
/// itself and decides, per connection, whether to call `smtps_conn_expect_proxy_header`.
/// `ip` is NUL-terminated text: an address (`"127.0.0.1"`, `"::1"`), optionally in brackets
/// or with a port (`"127.0.0.1:40000"`, `"[::1]:40000"`), as `inet_ntop` writes it. False for
/// NULL arguments, text that is not an address, and an empty trusted list. Thread-safe once
/// the config is only read.
///
/// # Safety
/// `config` is NULL or a live config; `ip` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_proxy_trusts(
    config: *const smtps_config,
    ip: *const c_char,
) -> bool {
    ffi_boundary! {
        let config = try_ref_from_ptr!(config);
        // SAFETY: NULL or NUL-terminated, by contract; NULL is an error, so false.
        let Ok(ip) = (unsafe { c_str(ip) }) else {
            return false;
        };
        parse_ip(ip).is_some_and(|ip| config.proxy_trusted.trusts(ip))
    }
}

/// Sets the default certificate chain and private key: PEM file paths (NUL-terminated),
/// read when a server or the first connection is made, or by
/// `smtps_config_load_certificates`, and again by the reload functions.
///
/// # Safety
/// `config` is a live config; `chain` and `key` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_certificate_files(
    config: *mut smtps_config,
    chain: *const c_char,
    key: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let chain = try_str!(chain);
        let key = try_str!(key);
        config.certificate = Some((chain.into(), key.into()));
        config.invalidate_tls();
        smtps_result::Ok
    }
}

/// Adds a certificate chain and key (PEM file paths) served to clients that ask for
/// `server_name` with SNI (`"mail.example.org"`, or a `"*.example.org"` wildcard). Clients
/// without SNI, or asking for another name, get the default certificate.
///
/// # Safety
/// `config` is a live config; the strings are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_add_sni_certificate_files(
    config: *mut smtps_config,
    server_name: *const c_char,
    chain: *const c_char,
    key: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let name = try_str!(server_name);
        let chain = try_str!(chain);
        let key = try_str!(key);
        config.sni.push((name.to_owned(), chain.into(), key.into()));
        config.invalidate_tls();
        smtps_result::Ok
    }
}

/// Reads the certificate files now, so that a mistake shows before serving (and, for a
/// fork-per-connection host, once in the parent rather than in every child). Later
/// `smtps_conn_new` and `smtps_server_new` calls share what was loaded.
///
/// Fork safety: no `smtps_config_*` function starts a thread (nor do `smtps_conn_*`,
/// `smtps_server_new` and `smtps_server_start_polled`; only `smtps_server_start` and
/// `smtps_server_run` do), so a parent may fork after this call and each child use the config
/// and the loaded certificates. TLS randomness is safe in the children: the crypto library
/// (aws-lc) detects a fork (`MADV_WIPEONFORK` on Linux; without it, it reseeds on every
/// request) and reseeds, so no two children share random state; the session-ticket keys made
/// at load time are shared, as within one server. A child may `smtps_config_free` its
/// inherited config (its copy is its own; connections keep what they need), and the parent
/// may free its own at any time. Do not fork a process that runs a server on library threads
/// and then use the library in the child.
///
/// Returns `SMTPS_RESULT_TLS_NOT_CONFIGURED` without a certificate, or the file's error
/// (`SMTPS_RESULT_CERTIFICATE_FILE`, `SMTPS_RESULT_PRIVATE_KEY`, ...) with the file named in
/// `smtps_last_error()`.
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_load_certificates(
    config: *const smtps_config,
) -> smtps_result {
    ffi_boundary! {
        let config = try_ref_from_ptr!(config);
        match config.acceptor() {
            Ok(Some(_)) => smtps_result::Ok,
            Ok(None) => fail(smtps_result::TlsNotConfigured, "no certificate configured"),
            Err(error) => error,
        }
    }
}

/// Reads the certificate files again (after a renewal) for connections made from this config
/// from now on. On failure the previous certificates stay in use. Thread-safe. (A server has
/// its own: `smtps_server_reload_certificates`.)
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_reload_certificates(
    config: *const smtps_config,
) -> smtps_result {
    ffi_boundary! {
        let config = try_ref_from_ptr!(config);
        let cached = config.acceptor.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match cached {
            Some(acceptor) => match acceptor.reload() {
                Ok(()) => smtps_result::Ok,
                Err(error) => tls_error(&error),
            },
            None => match config.acceptor() {
                Ok(Some(_)) => smtps_result::Ok,
                Ok(None) => fail(smtps_result::TlsNotConfigured, "no certificate configured"),
                Err(error) => error,
            },
        }
    }
}

/// Sets the number of worker threads of a server (each with its own event loop); 0, the
/// default, means one per core.
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_workers(
    config: *mut smtps_config,
    workers: usize,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        config.workers = workers;
        smtps_result::Ok
    }
}

/// Sets a timer (`SMTPS_TIMEOUT_*`) in milliseconds, more than 0. Timers apply to the server
/// level and to connections made from this config with `smtps_conn_new` (see
/// `smtps_conn_next_timeout_ms`), except `SMTPS_TIMEOUT_DECISION`, which only the server
/// level enforces (a connection-level host owns its decisions).
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_timeout(
    config: *mut smtps_config,
    timeout: smtps_timeout,
    milliseconds: u64,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        if milliseconds == 0 {
            return fail(smtps_result::InvalidParameter, "a timeout must be more than 0 ms");
        }
        let value = Duration::from_millis(milliseconds);
        let timeouts = &mut config.timeouts;
        let slot = match timeout {
            SMTPS_TIMEOUT_HANDSHAKE => &mut timeouts.handshake,
            SMTPS_TIMEOUT_COMMAND => &mut timeouts.command,
            SMTPS_TIMEOUT_DATA_BLOCK => &mut timeouts.data_block,
            SMTPS_TIMEOUT_DECISION => &mut timeouts.decision,
            SMTPS_TIMEOUT_SESSION => &mut timeouts.session,
            SMTPS_TIMEOUT_CLOSE_LINGER => &mut timeouts.close_linger,
            SMTPS_TIMEOUT_PROXY_HEADER => &mut timeouts.proxy_header,
            other => {
                return fail(smtps_result::InvalidParameter, format_args!("{other} is not an smtps_timeout"));
            }
        };
        *slot = value;
        smtps_result::Ok
    }
}

/// Sets a limit (`SMTPS_LIMIT_*`). Values that do not fit the limit's type, and 0 where it
/// makes no sense, are `SMTPS_RESULT_INVALID_PARAMETER`.
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_limit(
    config: *mut smtps_config,
    limit: smtps_limit,
    value: u64,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let invalid = || fail(smtps_result::InvalidParameter, format_args!("{value} is out of range for limit {limit}"));
        let size = usize::try_from(value).ok().filter(|v| *v > 0);
        let count = u32::try_from(value).ok().filter(|v| *v > 0);
        let limits = &mut config.session.limits;
        match limit {
            SMTPS_LIMIT_MESSAGE_SIZE if value > 0 => limits.message_size = value,
            SMTPS_LIMIT_RECIPIENTS => match size { Some(v) => limits.recipients = v, None => return invalid() },
            SMTPS_LIMIT_ERRORS => match count { Some(v) => limits.errors = v, None => return invalid() },
            SMTPS_LIMIT_TRANSACTIONS => match u32::try_from(value) {
                Ok(0) => limits.transactions = None,
                Ok(v) => limits.transactions = Some(v),
                Err(_) => return invalid(),
            },
            SMTPS_LIMIT_BODY_CHUNK => match size { Some(v) => limits.body_chunk = v, None => return invalid() },
            SMTPS_LIMIT_CONNECTIONS => match size { Some(v) => config.limits.connections = v, None => return invalid() },
            SMTPS_LIMIT_CONNECTIONS_PER_IP => match size { Some(v) => config.limits.connections_per_ip = v, None => return invalid() },
            SMTPS_LIMIT_JUNK_COMMANDS if value > 0 => limits.junk_commands = value,
            _ => return invalid(),
        }
        smtps_result::Ok
    }
}

/// Offers (`true`) or withholds (`false`) an SMTP extension (`SMTPS_EXTENSION_*`) in the EHLO
/// reply, and accepts or refuses its parameters. `SMTPS_EXTENSION_AUTH` off withholds AUTH at
/// both levels (EHLO lists no AUTH and `AUTH` gets `502 5.5.1`); on (the default), a server
/// still offers it only when its callbacks include `on_auth`, a connection (`smtps_conn_new`)
/// once secure. STARTTLS follows the listener's mode; LIMITS and ENHANCEDSTATUSCODES are
/// always on.
///
/// `SMTPS_RESULT_INVALID_PARAMETER` for a value that is not an `SMTPS_EXTENSION_*`.
///
/// # Safety
/// `config` is NULL or a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_extension(
    config: *mut smtps_config,
    extension_id: smtps_extension,
    offered: bool,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        let Some(ext) = extension(extension_id) else {
            return fail(
                smtps_result::InvalidParameter,
                format_args!("{extension_id} is not an SMTPS_EXTENSION_* value"),
            );
        };
        let extensions = &mut config.session.extensions;
        *extensions = if offered { *extensions | ext } else { extensions.without(ext) };
        smtps_result::Ok
    }
}

/// Whether MAIL is refused (`530 5.7.0`) until the client has authenticated: a submission
/// server's setting (RFC 4954 §6). Off by default.
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_require_auth(
    config: *mut smtps_config,
    required: bool,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        config.session.policy.require_auth_for_mail = required;
        smtps_result::Ok
    }
}

/// Whether AUTH is offered and accepted without TLS. Sends passwords in clear text: only for
/// tests. Off by default.
///
/// # Safety
/// `config` is a live config.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_config_set_danger_allow_plaintext_auth(
    config: *mut smtps_config,
    allowed: bool,
) -> smtps_result {
    ffi_boundary! {
        let config = try_mut_from_ptr!(config);
        config.session.policy.danger_allow_plaintext_auth = allowed;
        smtps_result::Ok
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ffi::CString;

    use super::*;
    use crate::error::smtps_last_error;

    fn c(text: &str) -> CString {
        CString::new(text).unwrap()
    }

    fn last_error() -> String {
        let mut buf = [0 as c_char; 512];
        let mut n = 0;
        // SAFETY: a local buffer and count.
        unsafe { smtps_last_error(buf.as_mut_ptr(), buf.len(), &raw mut n) };
        // SAFETY: `smtps_last_error` NUL-terminated it.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A config with two plain listeners, freed by the caller.
    fn config_with_listeners() -> *mut smtps_config {
        // SAFETY: each call gets the live config and NUL-terminated strings.
        unsafe {
            let config = smtps_config_new();
            for _ in 0..2 {
                let addr = c("127.0.0.1:0");
                assert_eq!(
                    smtps_config_add_listener(config, addr.as_ptr(), SMTPS_MODE_PLAIN),
                    smtps_result::Ok
                );
            }
            config
        }
    }

    #[test]
    fn trusted_sources_are_blocks_or_addresses_and_bad_ones_are_named() {
        let config = config_with_listeners();
        // SAFETY: a live config and NUL-terminated strings throughout.
        unsafe {
            for good in [
                "10.0.0.0/8",
                "192.0.2.7",
                "2001:db8::/32",
                "::1",
                "127.0.0.1/32",
            ] {
                let text = c(good);
                assert_eq!(
                    smtps_config_add_proxy_trusted(config, text.as_ptr()),
                    smtps_result::Ok,
                    "{good}"
                );
            }
            for bad in [
                "",
                "localhost",
                "10.0.0.1/8",
                "10.0.0.0/33",
                "::/129",
                " 10.0.0.0/8",
            ] {
                let text = c(bad);
                assert_eq!(
                    smtps_config_add_proxy_trusted(config, text.as_ptr()),
                    smtps_result::InvalidAddress,
                    "{bad:?}"
                );
                assert!(
                    last_error().contains(&format!("{bad:?}")),
                    "{}",
                    last_error()
                );
            }
            assert_eq!(
                smtps_config_add_proxy_trusted(config, std::ptr::null()),
                smtps_result::NullParameter
            );
            let trusts = |ip: &str| smtps_config_proxy_trusts(config, c(ip).as_ptr());
            for trusted in [
                "10.1.2.3",
                "10.1.2.3:40000",
                "::ffff:10.1.2.3",
                "192.0.2.7",
                "[2001:db8::5]:25",
                "2001:db8::5",
                "::1",
                "[::1]",
                "127.0.0.1",
            ] {
                assert!(trusts(trusted), "{trusted}");
            }
            for untrusted in [
                "192.0.2.8",
                "11.0.0.1",
                "2001:db9::1",
                "127.0.0.2",
                "",
                " ::1",
            ] {
                assert!(!trusts(untrusted), "{untrusted}");
            }
            assert!(!smtps_config_proxy_trusts(config, std::ptr::null()));
            assert!(!smtps_config_proxy_trusts(
                std::ptr::null(),
                c("10.0.0.1").as_ptr()
            ));
            smtps_config_free(config);
        }
    }

    #[test]
    fn listener_proxy_modes_reach_the_server_config_with_the_trusted_list() {
        let config = config_with_listeners();
        // SAFETY: a live config and NUL-terminated strings throughout.
        unsafe {
            assert_eq!(
                smtps_config_set_listener_proxy(config, 2, SMTPS_PROXY_REQUIRED),
                smtps_result::InvalidParameter
            );
            assert!(last_error().contains("no listener 2"), "{}", last_error());
            assert_eq!(
                smtps_config_set_listener_proxy(config, 0, 3),
                smtps_result::InvalidParameter
            );
            assert_eq!(
                smtps_config_set_listener_proxy(std::ptr::null_mut(), 0, SMTPS_PROXY_REQUIRED),
                smtps_result::NullParameter
            );
            assert_eq!(
                smtps_config_set_listener_proxy(config, 1, SMTPS_PROXY_OR_DIRECT),
                smtps_result::Ok
            );
            let rust = crate::ffi::try_ref(config).unwrap();
            let Err(error) = rust.server_config() else {
                panic!("a PROXY listener without trusted sources");
            };
            assert_eq!(error, smtps_result::ProxyNotConfigured);
            assert!(
                last_error()
                    .contains("listener 1 (127.0.0.1:0) reads PROXY headers but no trusted source"),
                "{}",
                last_error()
            );

            let cidr = c("10.0.0.0/8");
            assert_eq!(
                smtps_config_add_proxy_trusted(config, cidr.as_ptr()),
                smtps_result::Ok
            );
            assert_eq!(
                smtps_config_set_listener_proxy(config, 0, SMTPS_PROXY_REQUIRED),
                smtps_result::Ok
            );
            let rust = crate::ffi::try_ref(config).unwrap();
            let server = rust.server_config().unwrap();
            let want: Vec<Network> = vec!["10.0.0.0/8".parse().unwrap()];
            let required = server.listeners[0].proxy.as_ref().unwrap();
            assert_eq!(
                (&required.trusted, required.untrusted),
                (&want, Untrusted::Refuse)
            );
            let or_direct = server.listeners[1].proxy.as_ref().unwrap();
            assert_eq!(
                (&or_direct.trusted, or_direct.untrusted),
                (&want, Untrusted::Direct)
            );

            assert_eq!(
                smtps_config_set_listener_proxy(config, 0, SMTPS_PROXY_OFF),
                smtps_result::Ok
            );
            let rust = crate::ffi::try_ref(config).unwrap();
            assert!(rust.server_config().unwrap().listeners[0].proxy.is_none());
            assert_eq!(
                smtps_config_set_timeout(config, SMTPS_TIMEOUT_PROXY_HEADER, 3000),
                smtps_result::Ok
            );
            let rust = crate::ffi::try_ref(config).unwrap();
            assert_eq!(rust.timeouts().proxy_header, Duration::from_secs(3));
            smtps_config_free(config);
        }
    }
}
