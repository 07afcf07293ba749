//! `smtps_conn`: one SMTP connection without I/O — TLS and SMTP together — for hosts that own
//! their sockets (fork-per-connection, Exim style).

use std::ffi::{c_char, c_int};
use std::io;
use std::time::Instant;

use ::smtps_conn::smtps_proxy::{Command, OwnedHeader};
use ::smtps_conn::{CloseReason, Connection};
use smtps_proto::{Event, Reply};
use smtps_tls::TlsInfo;

use crate::callbacks::{smtps_abort_reason, smtps_close_reason};
use crate::config::{listener_mode, smtps_config, smtps_mode};
use crate::error::{conn_error, fail, io_error, smtps_result, tls_error};
use crate::ffi::{
    Castable, OwnershipBox, byte_slice, byte_slice_mut, c_str, check_out, take_box, to_boxed_ptr,
    try_mut_from_ptr, try_ref_from_ptr, try_str_opt, write_out,
};
use crate::panic::ffi_boundary;
use crate::params::{Params, find, write_found};
use crate::proxy::{find_ssl_tlv, find_tlv, tlv_out};
use crate::reply::verdict;
use crate::view::{smtps_bytes, smtps_str};

/// One connection: feed it the bytes read from the socket, take events and answer them, and
/// send the bytes it gives. STARTTLS is handled inside: when the client asks, the connection
/// queues the `220` and upgrades itself at the right byte.
///
/// Made by `smtps_conn_new`, freed by `smtps_conn_free`. Not thread-safe: use one connection
/// from one thread at a time (it may move between threads).
#[allow(non_camel_case_types)]
pub struct smtps_conn {
    _private: [u8; 0],
}

impl Castable for smtps_conn {
    type Ownership = OwnershipBox;
    type RustType = Conn;
}

/// What an `smtps_event` is.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum smtps_event_kind {
    /// Nothing to do now: send the output, then read more.
    None = 0,
    /// The client connected (for implicit TLS: after the handshake). Decide: accept to greet.
    Connect = 1,
    /// HELO or EHLO (`flag`: EHLO); `text` is the client's name. Decide.
    Helo = 2,
    /// AUTH: `text` the user, `secret` the password, `authzid` the authorization identity.
    /// Decide: accept answers `235 2.7.0`, refuse with `535 5.7.8`. A connection offers AUTH
    /// (PLAIN, LOGIN) in its EHLO reply whenever the session is secure (implicit TLS, after
    /// STARTTLS, or in plaintext with `smtps_config_set_danger_allow_plaintext_auth`), and
    /// nothing switches that off: a host that checks no credentials refuses every AUTH event
    /// (such as `502 5.5.1`).
    Auth = 3,
    /// MAIL FROM: `text` the address without `<>` (empty for `<>`). Decide.
    Mail = 4,
    /// RCPT TO: `text` the address without `<>`. Decide.
    Rcpt = 5,
    /// DATA, or the first BDAT (`flag`). Decide: accept sends `354`.
    DataStart = 6,
    /// Message octets in `data`, dot-unstuffed.
    Body = 7,
    /// The whole message (`size` octets) has arrived. Decide, once it is stored durably.
    MessageEnd = 8,
    /// The message in progress was dropped (`abort_reason`); it is never acknowledged.
    MessageAborted = 9,
    /// The transaction was reset (RSET, EHLO, STARTTLS).
    Reset = 10,
    /// The connection switched to TLS after STARTTLS; `size` counts the plaintext bytes
    /// pipelined after the command and discarded (CVE-2011-0411).
    StartTls = 11,
    /// A bare LF or CR was seen (`flag`: it was refused by policy).
    BareLineEnding = 12,
    /// QUIT was answered: send the output, then close.
    Quit = 13,
    /// Too many errors: the session closed itself with `421`.
    TooManyErrors = 14,
}

/// An event from `smtps_conn_next_event`. The views borrow the connection.
///
/// How long a view from `smtps_conn_*` stays valid (events, `smtps_conn_mail_from`,
/// `smtps_conn_recipient`, `smtps_conn_param`, `smtps_conn_tls_*`, `smtps_conn_sni`): until
/// the next call that may change the connection, which is every function taking a mutable
/// `smtps_conn *`: `smtps_conn_feed`, `_feed_eof`, `_read_fd`, `_write_fd`, `_take_output`,
/// `_next_event`, `_decide`, `_refuse_message`, `_close`, `_handle_timeout`,
/// `_expect_proxy_header` and `_free`. (Sending output moves input on inside the connection:
/// copy a `BODY` event's `data` before `smtps_conn_take_output` or `smtps_conn_write_fd`.)
/// Functions taking a `const smtps_conn *` only read and never invalidate a view:
/// `smtps_conn_wants_read`, `_wants_write`, `_is_closed`, `_next_timeout_ms`,
/// `_pending_output`, `_close_reason`, `_mail_from`, `_recipient_count`, `_recipient` (any
/// index), `_param` and `_proxy_*`; `smtps_conn_tls_version`, `_tls_cipher` and `_sni` only
/// read too. So `smtps_conn_recipient(conn, 1)` leaves the views of
/// `smtps_conn_recipient(conn, 0)`, `smtps_conn_mail_from(conn)` and the last event intact.
/// The PROXY views (`smtps_conn_proxy_*`) last until `smtps_conn_free`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct smtps_event {
    /// What happened.
    pub kind: smtps_event_kind,
    /// Whether the event awaits `smtps_conn_decide(conn, decision, ...)`. Until it is answered
    /// the session acts on nothing later (replies stay in order).
    pub awaits_decision: bool,
    /// The decision to answer, when `awaits_decision`.
    pub decision: u64,
    /// HELO name, MAIL/RCPT address, AUTH user.
    pub text: smtps_str,
    /// AUTH password (wiped when the decision is answered).
    pub secret: smtps_str,
    /// AUTH authorization identity (usually empty).
    pub authzid: smtps_str,
    /// Body octets (`SMTPS_EVENT_KIND_BODY`).
    pub data: smtps_bytes,
    /// Message size (`MESSAGE_END`), discarded octets (`START_TLS`).
    pub size: u64,
    /// EHLO (`HELO`), BDAT (`DATA_START`), refused (`BARE_LINE_ENDING`).
    pub flag: bool,
    /// Why (`MESSAGE_ABORTED`).
    pub abort_reason: smtps_abort_reason,
}

impl Default for smtps_event {
    fn default() -> Self {
        Self {
            kind: smtps_event_kind::None,
            awaits_decision: false,
            decision: 0,
            text: smtps_str::default(),
            secret: smtps_str::default(),
            authzid: smtps_str::default(),
            data: smtps_bytes::default(),
            size: 0,
            flag: false,
            abort_reason: smtps_abort_reason::Other,
        }
    }
}

/// The Rust value behind `smtps_conn`: the connection of `smtps-conn`, plus what C needs to
/// hold on to between calls.
pub(crate) struct Conn {
    inner: Connection,
    /// Text of the last event (owned here so the event can borrow it).
    text: String,
    /// The ESMTP parameters of the last event, when it was a MAIL or RCPT.
    params: Params,
    /// The buffer of `smtps_conn_read_fd`, made at its first use.
    read_buf: Option<Box<[u8]>>,
    /// The decision handed out and not answered yet (one at a time per session).
    awaiting: Option<smtps_proto::DecisionId>,
    /// The PROXY header, copied once it was read; never changed afterwards, so views of it
    /// stay valid until the connection is freed.
    proxy: Option<ProxyCopy>,
}

/// What the PROXY accessors lend to C.
struct ProxyCopy {
    header: OwnedHeader,
    /// The header's source, `IP:port`; empty without addresses (LOCAL, `UNKNOWN`).
    client: String,
    /// The header's destination, likewise.
    destination: String,
}

impl Conn {
    /// Copies the PROXY header once the connection has read it (after a feed).
    fn note_proxy_header(&mut self) {
        if self.proxy.is_some() {
            return;
        }
        let Some(header) = self.inner.proxy_header() else {
            return;
        };
        let header = header.to_owned_header();
        let (client, destination) = match header.addresses {
            Some(addresses) if header.command == Command::Proxy => (
                addresses.source.to_string(),
                addresses.destination.to_string(),
            ),
            _ => (String::new(), String::new()),
        };
        self.proxy = Some(ProxyCopy {
            header,
            client,
            destination,
        });
    }
}

/// Makes a connection in `mode` (`SMTPS_MODE_*`) with `config`'s settings as they are now. In
/// `SMTPS_MODE_IMPLICIT_TLS` the first event comes after the handshake; otherwise
/// `SMTPS_EVENT_KIND_CONNECT` comes at once. `config` may be freed afterwards (also by a
/// forked child: its copy is its own). On success `*conn_out` receives the connection, freed
/// by `smtps_conn_free`. Starts no thread.
///
/// What applies from `config`: the host name; the extensions (`smtps_config_set_extension`);
/// the limits `SMTPS_LIMIT_MESSAGE_SIZE`, `_RECIPIENTS`, `_ERRORS`, `_TRANSACTIONS`,
/// `_BODY_CHUNK` and `_JUNK_COMMANDS`; the policies `smtps_config_set_require_auth` and
/// `smtps_config_set_danger_allow_plaintext_auth` (and `SMTPS_MODE_START_TLS_REQUIRED` adds
/// TLS before MAIL); every `SMTPS_TIMEOUT_*` but `SMTPS_TIMEOUT_DECISION` (see
/// `smtps_conn_next_timeout_ms`); and the certificates, default and SNI (loaded on first use
/// and shared with later connections; see `smtps_config_load_certificates`). Later setter calls
/// do not reach a connection already made, except a certificate reload. Server-only settings
/// are ignored: listeners and their PROXY and port-sharing settings, workers,
/// `SMTPS_LIMIT_CONNECTIONS`, `SMTPS_LIMIT_CONNECTIONS_PER_IP`, `SMTPS_TIMEOUT_DECISION`; the
/// trusted PROXY sources serve only `smtps_config_proxy_trusts`.
///
/// AUTH is not a setting here: the connection offers it whenever the session is secure (see
/// `SMTPS_EVENT_KIND_AUTH`); a host without a user database refuses each AUTH event.
///
/// `SMTPS_RESULT_TLS_NOT_CONFIGURED` for a TLS mode without a certificate.
///
/// # Safety
/// `config` is NULL or a live config not being changed by another thread; `conn_out` is NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_new(
    config: *const smtps_config,
    mode: smtps_mode,
    conn_out: *mut *mut smtps_conn,
) -> smtps_result {
    ffi_boundary! {
        let config = try_ref_from_ptr!(config);
        check_out!(conn_out);
        let mode = match listener_mode(mode) {
            Ok(mode) => mode,
            Err(error) => return error,
        };
        let acceptor = match config.acceptor() {
            Ok(acceptor) => acceptor,
            Err(error) => return error,
        };
        let mut inner = match Connection::new(mode, config.session_config(), acceptor, Instant::now()) {
            Ok(inner) => inner,
            Err(error) => return conn_error(error),
        };
        inner.set_timeouts(config.timeouts());
        let conn = Conn {
            inner,
            text: String::new(),
            params: Params::new(),
            read_buf: None,
            awaiting: None,
            proxy: None,
        };
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(conn_out, to_boxed_ptr::<smtps_conn>(conn)) };
        smtps_result::Ok
    }
}

/// Frees a connection. NULL is a no-op.
///
/// # Safety
/// `conn` is NULL or from `smtps_conn_new` and not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_free(conn: *mut smtps_conn) {
    ffi_boundary! {
        // SAFETY: a pointer from `smtps_conn_new`, or NULL, by contract.
        drop(unsafe { take_box(conn) });
    }
}

/// The client's first octets are a PROXY protocol header (haproxy's proxy-protocol.txt: v1
/// text, §2.1, or v2 binary, §2.2) from a load balancer: the connection reads it before
/// anything else (before TLS, before the banner), within `SMTPS_TIMEOUT_PROXY_HEADER`. A
/// missing, malformed, truncated or unsupported header closes the connection without a banner
/// (`SMTPS_CLOSE_REASON_PROXY_HEADER`); nothing of it is applied. Once it is read,
/// `smtps_conn_proxy_client`, `smtps_conn_proxy_destination` and `smtps_conn_proxy_tlv` give
/// what it says, and the session starts on the octet after it.
///
/// Call it right after `smtps_conn_new`, before any other call, and only for a socket whose
/// peer is a trusted balancer (`smtps_config_proxy_trusts`; proxy-protocol.txt §2: never guess
/// whether a header comes, and accept one only from trusted proxies). Calling it twice is
/// harmless. `SMTPS_RESULT_WRONG_STATE` when it comes too late (after input was fed, after the
/// end of stream, or once the session started: an event was polled) — the connection is then
/// left as it was.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_expect_proxy_header(conn: *mut smtps_conn) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        if conn.inner.expect_proxy_header() {
            smtps_result::Ok
        } else {
            fail(
                smtps_result::WrongState,
                "smtps_conn_expect_proxy_header comes right after smtps_conn_new, \
                 before any input or event",
            )
        }
    }
}

/// The client a PROXY protocol header named (proxy-protocol.txt §2.1, §2.2: its source
/// address), `IP:port` (`[v6]:port` for IPv6). Empty before the header was read, without
/// `smtps_conn_expect_proxy_header`, for a LOCAL header (a health check) or `UNKNOWN` (then
/// the socket's peer is the client), and for NULL. The view is valid until `smtps_conn_free`.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_proxy_client(conn: *const smtps_conn) -> smtps_str {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        smtps_str::opt(conn.proxy.as_ref().map(|proxy| proxy.client.as_str()))
    }
}

/// The address the client connected to on the balancer, as the PROXY header names it (its
/// destination address), `IP:port`. Empty as for `smtps_conn_proxy_client`. The view is valid
/// until `smtps_conn_free`.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_proxy_destination(conn: *const smtps_conn) -> smtps_str {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        smtps_str::opt(conn.proxy.as_ref().map(|proxy| proxy.destination.as_str()))
    }
}

/// Finds the first TLV of type `tlv_type` (`SMTPS_PP2_TYPE_*`, or any other type octet) in the
/// connection's PROXY v2 header (proxy-protocol.txt §2.2) and sets `*value_out` to its value,
/// valid until `smtps_conn_free`. As `smtps_session_proxy_tlv`: false, leaving `*value_out`
/// alone, when there is no such TLV, no header (yet), a v1 header, or a NULL argument.
///
/// # Safety
/// `conn` is NULL or a live connection; `value_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_proxy_tlv(
    conn: *const smtps_conn,
    tlv_type: u8,
    value_out: *mut smtps_bytes,
) -> bool {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        let value = conn.proxy.as_ref().and_then(|proxy| find_tlv(&proxy.header, tlv_type));
        // SAFETY: NULL or writable, by contract.
        unsafe { tlv_out(value, value_out) }
    }
}

/// Finds the first sub-TLV of type `subtype` (`SMTPS_PP2_SUBTYPE_SSL_*`) inside the
/// PP2_TYPE_SSL TLV of the connection's PROXY v2 header (proxy-protocol.txt §2.2.6) and sets
/// `*value_out` to its value, valid until `smtps_conn_free`. False, leaving `*value_out`
/// alone, when there is none or an argument is NULL.
///
/// # Safety
/// `conn` is NULL or a live connection; `value_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_proxy_ssl_tlv(
    conn: *const smtps_conn,
    subtype: u8,
    value_out: *mut smtps_bytes,
) -> bool {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        let value = conn.proxy.as_ref().and_then(|proxy| find_ssl_tlv(&proxy.header, subtype));
        // SAFETY: NULL or writable, by contract.
        unsafe { tlv_out(value, value_out) }
    }
}

/// Offers `len` bytes read from the socket; `*taken_out` receives how many were taken. Keep
/// the rest and offer it again after draining events (`smtps_conn_next_event`) and output:
/// that is the back-pressure. `len` 0 with `data` NULL is allowed.
///
/// `SMTPS_RESULT_TLS_HANDSHAKE` / `SMTPS_RESULT_TLS_SESSION` when TLS fails (details in
/// `smtps_last_error()`): the connection is then closed (`smtps_conn_is_closed`,
/// `SMTPS_CLOSE_REASON_TLS`) and its output holds the TLS alert: send what
/// `smtps_conn_take_output` still gives, then close the socket (`smtps_conn_next_timeout_ms`
/// gives the linger until then, -1 after). After the connection closed, bytes are taken and
/// ignored.
///
/// # Safety
/// `conn` is NULL or a live connection; `data` is valid for `len` bytes; `taken_out` is NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_feed(
    conn: *mut smtps_conn,
    data: *const u8,
    len: usize,
    taken_out: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        check_out!(taken_out);
        // SAFETY: valid for `len` bytes by contract.
        let Some(data) = (unsafe { byte_slice(data, len) }) else {
            return crate::panic::NullParameterOrDefault::value();
        };
        let result = conn.inner.feed(Instant::now(), data);
        conn.note_proxy_header();
        let taken = match result {
            Ok(taken) => taken,
            Err(error) => return conn_error(error),
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(taken_out, taken) };
        smtps_result::Ok
    }
}

/// Tells the connection that the client closed its side (a socket read returned 0). A
/// message in progress is aborted; the session closes once its output is sent.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_feed_eof(conn: *mut smtps_conn) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        conn.inner.feed_eof();
        smtps_result::Ok
    }
}

/// Sets `*event_out` to the next event; `kind` is `SMTPS_EVENT_KIND_NONE` when there is none
/// (send the output, read more input, or answer the awaited decision). Call it until it gives
/// NONE after every feed and every decision. The event's views are valid until the next call
/// taking a mutable `smtps_conn *` (see `smtps_event`).
///
/// # Safety
/// `conn` is NULL or a live connection; `event_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_next_event(
    conn: *mut smtps_conn,
    event_out: *mut smtps_event,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        check_out!(event_out);
        let event = next_event(conn);
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(event_out, event) };
        smtps_result::Ok
    }
}

fn next_event(conn: &mut Conn) -> smtps_event {
    let mut out = smtps_event::default();
    let Some(event) = conn.inner.poll_event() else {
        return out;
    };
    let text = &mut conn.text;
    text.clear();
    conn.params.clear();
    let awaiting = event.decision();
    match event {
        Event::Connect { .. } => out.kind = smtps_event_kind::Connect,
        Event::Helo { extended, name, .. } => {
            out.kind = smtps_event_kind::Helo;
            out.flag = extended;
            *text = name.to_string();
        }
        Event::Auth {
            authorization_id,
            authentication_id,
            password,
            ..
        } => {
            out.kind = smtps_event_kind::Auth;
            // These borrow the session's buffers, untouched until its next `&mut` call.
            out.text = smtps_str::new(authentication_id);
            out.secret = smtps_str::new(password);
            out.authzid = smtps_str::new(authorization_id);
        }
        Event::Mail { from, params, .. } => {
            out.kind = smtps_event_kind::Mail;
            *text = from.address();
            conn.params = crate::params::mail(&params);
        }
        Event::Rcpt { to, params, .. } => {
            out.kind = smtps_event_kind::Rcpt;
            *text = to.address();
            conn.params = crate::params::rcpt(&params);
        }
        Event::DataStart { chunked, .. } => {
            out.kind = smtps_event_kind::DataStart;
            out.flag = chunked;
        }
        Event::BodyChunk(chunk) => {
            out.kind = smtps_event_kind::Body;
            out.data = smtps_bytes::new(chunk);
        }
        Event::MessageEnd { size, .. } => {
            out.kind = smtps_event_kind::MessageEnd;
            out.size = size;
        }
        Event::MessageAborted { reason } => {
            out.kind = smtps_event_kind::MessageAborted;
            out.abort_reason = reason.into();
        }
        Event::Reset => out.kind = smtps_event_kind::Reset,
        Event::StartTls { discarded } => {
            out.kind = smtps_event_kind::StartTls;
            out.size = discarded as u64;
        }
        Event::BareLineEnding { rejected, .. } => {
            out.kind = smtps_event_kind::BareLineEnding;
            out.flag = rejected;
        }
        Event::Quit => out.kind = smtps_event_kind::Quit,
        Event::TooManyErrors => out.kind = smtps_event_kind::TooManyErrors,
        _ => return next_event(conn),
    }
    if let Some(decision) = awaiting {
        out.awaits_decision = true;
        out.decision = decision.as_u64();
        conn.awaiting = Some(decision);
    }
    if !conn.text.is_empty() {
        out.text = smtps_str::new(&conn.text);
    }
    out
}

/// The MAIL FROM address of the transaction in progress as the host accepted it, without `<>`
/// (empty for the null reverse path, and outside a transaction: after RSET, a new EHLO,
/// STARTTLS, or the end of a message). Valid until the next call taking a mutable
/// `smtps_conn *` (see `smtps_event`; other getters leave it valid).
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_mail_from(conn: *const smtps_conn) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(conn).inner.mail_from()) }
}

/// The number of recipients of the transaction in progress the host accepted.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_recipient_count(conn: *const smtps_conn) -> usize {
    ffi_boundary! { try_ref_from_ptr!(conn).inner.recipients().len() }
}

/// Accepted recipient number `index` (from 0, in the order accepted), without `<>`; empty if
/// out of range. Valid until the next call taking a mutable `smtps_conn *` (see
/// `smtps_event`): reading another index, `smtps_conn_mail_from` or any other getter leaves it
/// valid.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_recipient(conn: *const smtps_conn, index: usize) -> smtps_str {
    ffi_boundary! {
        let recipients = try_ref_from_ptr!(conn).inner.recipients();
        smtps_str::opt(recipients.get(index).map(String::as_str))
    }
}

/// Finds the ESMTP parameter `keyword` (case-insensitive) of the last event, when it was
/// `SMTPS_EVENT_KIND_MAIL` or `SMTPS_EVENT_KIND_RCPT`, and sets `*value_out` to its value, valid
/// until the next call taking a mutable `smtps_conn *` (see `smtps_event`). Keywords and values
/// as for `smtps_session_param`
/// (`SIZE`, `BODY`, `SMTPUTF8`, `AUTH`, `RET`, `ENVID`, `REQUIRETLS` on MAIL; `NOTIFY`, `ORCPT`
/// on RCPT).
///
/// Returns false, leaving `*value_out` alone, when the command had no such parameter, the last
/// event was another, or for a NULL argument.
///
/// # Safety
/// `conn` is NULL or a live connection; `keyword` is NULL or NUL-terminated; `value_out` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_param(
    conn: *const smtps_conn,
    keyword: *const c_char,
    value_out: *mut smtps_str,
) -> bool {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        // SAFETY: NULL or NUL-terminated, by contract.
        let Ok(keyword) = (unsafe { c_str(keyword) }) else {
            return false;
        };
        // SAFETY: NULL or writable, by contract.
        unsafe { write_found(find(&conn.params, keyword), value_out) }
    }
}

/// Answers a decision. `code` 0 accepts with the default reply; 2xx (3xx for DATA) accepts
/// with the host's reply; 4xx/5xx refuses (`421` closes). `enhanced` (such as `"2.0.0"`) and
/// `text` are NULL or NUL-terminated UTF-8, copied.
///
/// `SMTPS_RESULT_UNKNOWN_DECISION` if `decision` is not the awaited one (answered already, or
/// dropped by `smtps_conn_close`, `SMTPS_TIMEOUT_SESSION` or a socket error);
/// `SMTPS_RESULT_INVALID_REPLY` if the reply is malformed or does not fit (the decision then
/// still waits).
///
/// # Safety
/// `conn` is NULL or a live connection; `enhanced` and `text` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_decide(
    conn: *mut smtps_conn,
    decision: u64,
    code: u16,
    enhanced: *const c_char,
    text: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        let enhanced = try_str_opt!(enhanced);
        let text = try_str_opt!(text);
        let verdict = match verdict(code, enhanced, text, None) {
            Ok(verdict) => verdict,
            Err(error) => return error,
        };
        // Decision ids are only made by the session; a foreign number is simply unknown.
        let Some(id) = conn.awaiting.filter(|id| id.as_u64() == decision) else {
            return fail(smtps_result::UnknownDecision, format_args!("decision {decision} is not awaited"));
        };
        // The idle timer restarts when the answer comes: tell the connection the time.
        conn.inner.handle_timeout(Instant::now());
        match conn.inner.decide(id, verdict) {
            Ok(()) => {
                conn.awaiting = None;
                smtps_result::Ok
            }
            Err(error) => conn_error(error),
        }
    }
}

/// Refuses the message being received (the host's spool failed): the rest of the body is read
/// and not passed on, then answered with this reply (4xx or 5xx; NULL texts give
/// `452 4.3.1`-style defaults). Does nothing outside a message body (after
/// `SMTPS_EVENT_KIND_MESSAGE_END` was polled, answer its decision instead).
///
/// Neither `SMTPS_EVENT_KIND_MESSAGE_END` nor `SMTPS_EVENT_KIND_MESSAGE_ABORTED` follows for
/// the refused message, even when its end had already been read: the host made the call, so
/// it deletes its spool file when it makes it. Once the refused message's end has been read,
/// `smtps_conn_mail_from` and `smtps_conn_recipient_count` report no transaction.
///
/// # Safety
/// `conn` is NULL or a live connection; `enhanced` and `text` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_refuse_message(
    conn: *mut smtps_conn,
    code: u16,
    enhanced: *const c_char,
    text: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        let enhanced = try_str_opt!(enhanced);
        let text = try_str_opt!(text);
        let reply = match negative_reply(code, enhanced, text) {
            Ok(reply) => reply,
            Err(error) => return error,
        };
        conn.inner.refuse_message(reply);
        smtps_result::Ok
    }
}

/// Closes the session with a final reply (4xx or 5xx, such as `421 4.4.2` on the host's
/// timeout): a message in progress is aborted, and the connection closes once the output is
/// sent. Before the session began (a PROXY header or an implicit-TLS handshake under way) it
/// closes without a reply.
///
/// Allowed at any time, also while a decision is awaited: that decision is dropped, never
/// answered (`smtps_conn_decide` then returns `SMTPS_RESULT_UNKNOWN_DECISION`), and the client
/// gets only this reply. If a message had started (a `SMTPS_EVENT_KIND_MESSAGE_END` awaiting
/// its decision included), `SMTPS_EVENT_KIND_MESSAGE_ABORTED` (`SMTPS_ABORT_REASON_CLOSED`)
/// follows: poll the events after the call, and delete that message's spool file.
///
/// # Safety
/// `conn` is NULL or a live connection; `enhanced` and `text` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_close(
    conn: *mut smtps_conn,
    code: u16,
    enhanced: *const c_char,
    text: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        let enhanced = try_str_opt!(enhanced);
        let text = try_str_opt!(text);
        let reply = match negative_reply(code, enhanced, text) {
            Ok(reply) => reply,
            Err(error) => return error,
        };
        conn.inner.close(&reply, CloseReason::Refused);
        smtps_result::Ok
    }
}

fn negative_reply(
    code: u16,
    enhanced: Option<&str>,
    text: Option<&str>,
) -> Result<Reply, smtps_result> {
    match verdict(code, enhanced, text, None)? {
        smtps_proto::Verdict::Reject(reply) => Ok(reply),
        _ => Err(fail(
            smtps_result::InvalidReply,
            "a 4xx or 5xx reply is needed",
        )),
    }
}

/// Reads what `fd` (a socket or pipe, normally non-blocking) has into the connection, with
/// one `read(2)`, and sets `*read_out` to the octets read. 0 means nothing now: the connection
/// wants no input (`smtps_conn_wants_read` is false), `fd` would block, or the stream ended
/// (noted as by `smtps_conn_feed_eof`). Poll `fd` for reading only while
/// `smtps_conn_wants_read()` is true. Then take the events.
///
/// `SMTPS_RESULT_IO` for another read error (named in `smtps_last_error`): the connection then
/// closes (`SMTPS_CLOSE_REASON_IO`) and drops its output.
///
/// `SMTPS_RESULT_TLS_HANDSHAKE` / `SMTPS_RESULT_TLS_SESSION` when what was read failed TLS,
/// as for `smtps_conn_feed` (details in `smtps_last_error`, `*read_out` set): the connection
/// closes itself, with `smtps_conn_is_closed()` true, `smtps_conn_close_reason()`
/// `SMTPS_CLOSE_REASON_TLS`, and the TLS alert in its output. Send the alert while
/// `smtps_conn_wants_write` (`smtps_conn_next_timeout_ms` gives the linger meanwhile, -1 once it
/// is sent or dropped), then close the socket.
///
/// # Safety
/// `conn` is NULL or a live connection; `fd` is an open descriptor; `read_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_read_fd(
    conn: *mut smtps_conn,
    fd: c_int,
    read_out: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        check_out!(read_out);
        let buf = conn.read_buf.get_or_insert_with(|| vec![0; READ_CHUNK].into_boxed_slice());
        let failed_before = conn.inner.close_reason().is_some();
        let n = match conn.inner.read_from(Instant::now(), &mut Fd(fd), buf) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => return io_error("reading the client's descriptor", &error),
        };
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(read_out, n) };
        match conn.inner.close_reason() {
            Some(CloseReason::Tls(error)) if !failed_before => {
                tls_error(&smtps_tls::Error::Tls(error.clone()))
            }
            _ => smtps_result::Ok,
        }
    }
}

/// Writes the connection's pending output to `fd` (a socket or pipe, normally non-blocking)
/// with one `send(2)` (`MSG_NOSIGNAL`: a peer that reset never raises SIGPIPE) or `write(2)`
/// for a descriptor that is not a socket, and sets `*written_out` to the octets written: 0
/// when nothing waits or `fd` would block. Call it while `smtps_conn_wants_write()`, polling
/// `fd` for writing when it wrote less than was pending.
///
/// `SMTPS_RESULT_IO` for another write error (named in `smtps_last_error`): the connection
/// then closes (`SMTPS_CLOSE_REASON_IO`) and drops its output.
///
/// # Safety
/// `conn` is NULL or a live connection; `fd` is an open descriptor; `written_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_write_fd(
    conn: *mut smtps_conn,
    fd: c_int,
    written_out: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        check_out!(written_out);
        let n = match conn.inner.write_to(&mut Fd(fd)) {
            Ok(n) => n,
            Err(error)
                if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) =>
            {
                0
            }
            Err(error) => return io_error("writing to the client's descriptor", &error),
        };
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(written_out, n) };
        smtps_result::Ok
    }
}

/// Octets [`smtps_conn_read_fd`] asks for at once: a TLS record and then some.
const READ_CHUNK: usize = 32 * 1024;

/// A host's descriptor as a reader and writer.
struct Fd(c_int);

impl io::Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; the descriptor is the host's,
        // open by the export's contract.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl io::Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes; the descriptor is open, as above.
        let n = unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ENOTSOCK) {
            return Err(error);
        }
        // A pipe (inetd-style hosts): write(2), which cannot take MSG_NOSIGNAL.
        // SAFETY: as above.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies bytes to send to the socket into `buf` (up to `len`); `*n_out` receives how many (0
/// when there is nothing to send). Call it until it gives 0 after every event round.
///
/// # Safety
/// `conn` is NULL or a live connection; `buf` is valid for `len` writable bytes; `n_out` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_take_output(
    conn: *mut smtps_conn,
    buf: *mut u8,
    len: usize,
    n_out: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let conn = try_mut_from_ptr!(conn);
        check_out!(n_out);
        // SAFETY: valid for `len` writable bytes by contract.
        let Some(buf) = (unsafe { byte_slice_mut(buf, len) }) else {
            return crate::panic::NullParameterOrDefault::value();
        };
        let n = conn.inner.take_output(buf);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(n_out, n) };
        smtps_result::Ok
    }
}

/// Whether the host should read from the socket and feed the connection: false while input
/// waits inside it, while more than `SMTPS_CONN_OUTPUT_LIMIT` octets of output wait for
/// `smtps_conn_take_output` (back-pressure on a client that pipelines without reading: send
/// first), after the end of stream, and once closed. False for NULL.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_wants_read(conn: *const smtps_conn) -> bool {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        conn.inner.wants_read()
    }
}

/// Whether output waits for `smtps_conn_take_output`.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_wants_write(conn: *const smtps_conn) -> bool {
    ffi_boundary! { try_ref_from_ptr!(conn).inner.wants_write() }
}

/// Whether the connection is over (QUIT, `421`, the client left, TLS failed): once
/// `smtps_conn_wants_write` is false too, close the socket and free the connection. True for
/// NULL.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_is_closed(conn: *const smtps_conn) -> bool {
    ffi_boundary! {
        // SAFETY: see `try_ref_from_ptr`; NULL counts as closed.
        match unsafe { crate::ffi::try_ref(conn) } {
            Some(conn) => conn.inner.is_closed(),
            None => true,
        }
    }
}

/// The TLS version (`"TLSv1.3"`); empty without TLS. Valid until the next call taking a
/// mutable `smtps_conn *` (see `smtps_event`); this one only reads.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_tls_version(conn: *mut smtps_conn) -> smtps_str {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        smtps_str::opt(conn.inner.tls_info().map(TlsInfo::version_name))
    }
}

/// The TLS cipher suite; empty without TLS. Valid until the next call taking a mutable
/// `smtps_conn *` (see `smtps_event`); this one only reads.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_tls_cipher(conn: *mut smtps_conn) -> smtps_str {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        smtps_str::opt(conn.inner.tls_info().map(TlsInfo::cipher_suite_name))
    }
}

/// The SNI server name the client asked for; empty if none. Valid until the next call taking
/// a mutable `smtps_conn *` (see `smtps_event`); this one only reads.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_sni(conn: *mut smtps_conn) -> smtps_str {
    ffi_boundary! {
        let conn = try_ref_from_ptr!(conn);
        smtps_str::opt(conn.inner.tls_info().and_then(|tls| tls.server_name.as_deref()))
    }
}

/// The output bound of a connection: while more than this many octets of output wait for
/// `smtps_conn_take_output`, the connection takes no input (`smtps_conn_feed` takes 0 octets,
/// `smtps_conn_wants_read` is false) and gives no events. A connection holds at most this,
/// plus one reply, plus 64 KiB inside the TLS layer, whatever the client sends.
pub const SMTPS_CONN_OUTPUT_LIMIT: usize = 65536;

/// Milliseconds until `smtps_conn_handle_timeout` should be called (0: now), or -1 when no
/// timer runs: only once the connection is over (`smtps_conn_is_closed`) and its output sent
/// or dropped (`smtps_conn_wants_write` false), as after a QUIT whose `221` was taken, or a
/// TLS failure whose alert was sent. Never -1 while the connection is open, even while a
/// decision is awaited (the connection level has no decision timer; `SMTPS_TIMEOUT_SESSION`
/// runs), and while a closing connection still has output (`SMTPS_TIMEOUT_CLOSE_LINGER`).
/// Use it as the timeout of the host's `poll()`, and ask again after every call that changes
/// the connection; -1 means close the socket and free the connection.
///
/// The timers are the config's `SMTPS_TIMEOUT_HANDSHAKE`, `_COMMAND`, `_DATA_BLOCK`,
/// `_SESSION`, `_CLOSE_LINGER` and `_PROXY_HEADER`, measured on the library's monotonic
/// clock. -1 for NULL.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_next_timeout_ms(conn: *const smtps_conn) -> i64 {
    ffi_boundary! {
        // SAFETY: see `try_ref_from_ptr`; NULL has no timer.
        let Some(conn) = (unsafe { crate::ffi::try_ref(conn) }) else {
            return -1;
        };
        match conn.inner.poll_timeout() {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up: waking a millisecond early would find nothing due yet.
                i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
            }
            None => -1,
        }
    }
}

/// Fires the timers that are due: an idle or overlong session is answered `421 4.4.2` and
/// closes (send the output, then close), a stalled TLS handshake closes, a closing connection
/// whose client does not read drops its output. Then poll events and output as after a
/// feed. Calling it early is harmless.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_handle_timeout(conn: *mut smtps_conn) -> smtps_result {
    ffi_boundary! {
        try_mut_from_ptr!(conn).inner.handle_timeout(Instant::now());
        smtps_result::Ok
    }
}

/// Octets of output waiting for `smtps_conn_take_output`, as counted against
/// `SMTPS_CONN_OUTPUT_LIMIT`. 0 for NULL.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_pending_output(conn: *const smtps_conn) -> usize {
    ffi_boundary! {
        // SAFETY: see `try_ref_from_ptr`.
        unsafe { crate::ffi::try_ref(conn) }.map_or(0, |conn| conn.inner.pending_output())
    }
}

/// Why the connection closed (`SMTPS_CLOSE_REASON_*`), once `smtps_conn_is_closed` is true:
/// QUIT, the client left, which kind of timer (`SMTPS_CLOSE_REASON_TIMEOUT`), too many
/// errors, the host's `421` or `smtps_conn_close` (`REFUSED`), TLS, a socket error, a bad or
/// missing PROXY header (`PROXY_HEADER`).
/// `SMTPS_CLOSE_REASON_OTHER` while open and for NULL.
///
/// # Safety
/// `conn` is NULL or a live connection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_conn_close_reason(conn: *const smtps_conn) -> smtps_close_reason {
    ffi_boundary! {
        // SAFETY: see `try_ref_from_ptr`.
        match unsafe { crate::ffi::try_ref(conn) }.and_then(|conn| conn.inner.close_reason()) {
            Some(reason) => reason.into(),
            None => smtps_close_reason::Other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ptr::{null, null_mut};

    use smtps_testkit::{proxy_v1, proxy_v2, proxy_v2_local};

    use super::*;
    use crate::config::{SMTPS_MODE_PLAIN, smtps_config_free, smtps_config_new};
    use crate::proxy::{
        SMTPS_PP2_SUBTYPE_SSL_CN, SMTPS_PP2_SUBTYPE_SSL_VERSION, SMTPS_PP2_TYPE_AUTHORITY,
        SMTPS_PP2_TYPE_NETNS, SMTPS_PP2_TYPE_SSL, SMTPS_PP2_TYPE_UNIQUE_ID,
    };

    #[test]
    fn the_c_output_limit_is_the_engines() {
        assert_eq!(SMTPS_CONN_OUTPUT_LIMIT, ::smtps_conn::OUTPUT_LIMIT);
    }

    /// A plain connection, freed by the caller.
    fn plain() -> *mut smtps_conn {
        let mut conn = null_mut();
        // SAFETY: a fresh config, a writable out pointer; the config is freed after use.
        unsafe {
            let config = smtps_config_new();
            assert_eq!(
                smtps_conn_new(config, SMTPS_MODE_PLAIN, &raw mut conn),
                smtps_result::Ok
            );
            smtps_config_free(config);
        }
        conn
    }

    /// Feeds all of `data`; returns the octets taken.
    fn feed(conn: *mut smtps_conn, data: &[u8]) -> usize {
        let mut taken = 0;
        // SAFETY: a live connection, `data` valid for its length, a writable count.
        let result = unsafe { smtps_conn_feed(conn, data.as_ptr(), data.len(), &raw mut taken) };
        assert_eq!(result, smtps_result::Ok);
        taken
    }

    fn next_kind(conn: *mut smtps_conn) -> smtps_event_kind {
        let mut event = smtps_event::default();
        // SAFETY: a live connection and a writable event.
        let result = unsafe { smtps_conn_next_event(conn, &raw mut event) };
        assert_eq!(result, smtps_result::Ok);
        event.kind
    }

    fn text(view: smtps_str) -> String {
        // SAFETY: the view is valid until the next call on the connection, which comes later.
        let bytes = unsafe { std::slice::from_raw_parts(view.data.cast::<u8>(), view.len) };
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn tlv(conn: *const smtps_conn, kind: u8, ssl: bool) -> Option<Vec<u8>> {
        let mut value = smtps_bytes::default();
        // SAFETY: a live connection and a writable view.
        let found = unsafe {
            if ssl {
                smtps_conn_proxy_ssl_tlv(conn, kind, &raw mut value)
            } else {
                smtps_conn_proxy_tlv(conn, kind, &raw mut value)
            }
        };
        // SAFETY: the view borrows the connection, alive here.
        found.then(|| unsafe { std::slice::from_raw_parts(value.data, value.len) }.to_vec())
    }

    fn addr(text: &str) -> std::net::SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_v2_header_gives_the_client_the_destination_and_the_tlvs() {
        let mut ssl = vec![0x01, 0, 0, 0, 0];
        for (kind, value) in [(0x21u8, &b"TLSv1.3"[..]), (0x22, b"client.example")] {
            ssl.push(kind);
            ssl.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            ssl.extend_from_slice(value);
        }
        let header = proxy_v2(
            addr("[2001:db8::7]:40001"),
            addr("[2001:db8::1]:25"),
            &[
                (SMTPS_PP2_TYPE_AUTHORITY, b"mx.example.org"),
                (SMTPS_PP2_TYPE_UNIQUE_ID, b"req-42"),
                (SMTPS_PP2_TYPE_SSL, &ssl),
                (SMTPS_PP2_TYPE_AUTHORITY, b"second.example.org"),
            ],
        );
        let conn = plain();
        // SAFETY: a live connection throughout, freed at the end.
        unsafe {
            assert_eq!(smtps_conn_expect_proxy_header(conn), smtps_result::Ok);
            assert_eq!(
                smtps_conn_expect_proxy_header(conn),
                smtps_result::Ok,
                "twice"
            );
            assert_eq!(
                next_kind(conn),
                smtps_event_kind::None,
                "nothing before the header"
            );
            // The header in two pieces, the second with the client's first command.
            assert_eq!(feed(conn, &header[..20]), 20);
            assert_eq!(text(smtps_conn_proxy_client(conn)), "", "not complete yet");
            assert_eq!(tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, false), None);
            let mut rest = header[20..].to_vec();
            rest.extend_from_slice(b"EHLO c.test\r\n");
            assert_eq!(feed(conn, &rest), rest.len());
            assert_eq!(text(smtps_conn_proxy_client(conn)), "[2001:db8::7]:40001");
            assert_eq!(text(smtps_conn_proxy_destination(conn)), "[2001:db8::1]:25");
            assert_eq!(
                tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, false).as_deref(),
                Some(&b"mx.example.org"[..]),
                "the first of its type"
            );
            assert_eq!(
                tlv(conn, SMTPS_PP2_TYPE_UNIQUE_ID, false).as_deref(),
                Some(&b"req-42"[..])
            );
            assert_eq!(tlv(conn, SMTPS_PP2_TYPE_SSL, false), Some(ssl));
            assert_eq!(tlv(conn, SMTPS_PP2_TYPE_NETNS, false), None);
            assert_eq!(
                tlv(conn, SMTPS_PP2_SUBTYPE_SSL_VERSION, true).as_deref(),
                Some(&b"TLSv1.3"[..])
            );
            assert_eq!(
                tlv(conn, SMTPS_PP2_SUBTYPE_SSL_CN, true).as_deref(),
                Some(&b"client.example"[..])
            );
            assert_eq!(tlv(conn, 0x23, true), None);
            // The output view is written only on success, and NULL is refused.
            let mut untouched = smtps_bytes::new(b"x");
            assert!(!smtps_conn_proxy_tlv(conn, 0x30, &raw mut untouched));
            assert_eq!(untouched.len, 1);
            assert!(!smtps_conn_proxy_tlv(
                conn,
                SMTPS_PP2_TYPE_AUTHORITY,
                null_mut()
            ));
            assert!(!smtps_conn_proxy_ssl_tlv(
                conn,
                SMTPS_PP2_SUBTYPE_SSL_CN,
                null_mut()
            ));
            // The session starts after the header, and the views outlive later calls.
            let client = smtps_conn_proxy_client(conn);
            assert_eq!(next_kind(conn), smtps_event_kind::Connect);
            assert_eq!(text(client), "[2001:db8::7]:40001");
            assert_eq!(
                smtps_conn_expect_proxy_header(conn),
                smtps_result::WrongState,
                "the header was read"
            );
            smtps_conn_free(conn);
        }
    }

    #[test]
    fn v1_local_and_absent_headers_have_no_client_or_tlvs() {
        // SAFETY: live connections throughout, each freed at the end.
        unsafe {
            let conn = plain();
            assert_eq!(smtps_conn_expect_proxy_header(conn), smtps_result::Ok);
            feed(
                conn,
                &proxy_v1(addr("192.0.2.1:56324"), addr("198.51.100.7:25")),
            );
            assert_eq!(text(smtps_conn_proxy_client(conn)), "192.0.2.1:56324");
            assert_eq!(text(smtps_conn_proxy_destination(conn)), "198.51.100.7:25");
            assert_eq!(
                tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, false),
                None,
                "v1 has no TLVs"
            );
            smtps_conn_free(conn);

            let conn = plain();
            assert_eq!(smtps_conn_expect_proxy_header(conn), smtps_result::Ok);
            feed(conn, &proxy_v2_local());
            assert_eq!(text(smtps_conn_proxy_client(conn)), "", "a health check");
            assert_eq!(text(smtps_conn_proxy_destination(conn)), "");
            assert_eq!(next_kind(conn), smtps_event_kind::Connect);
            smtps_conn_free(conn);

            let conn = plain();
            assert_eq!(next_kind(conn), smtps_event_kind::Connect);
            assert_eq!(text(smtps_conn_proxy_client(conn)), "");
            assert_eq!(tlv(conn, SMTPS_PP2_TYPE_AUTHORITY, false), None);
            assert_eq!(
                smtps_conn_expect_proxy_header(conn),
                smtps_result::WrongState,
                "after the session started"
            );
            smtps_conn_free(conn);

            assert_eq!(
                smtps_conn_expect_proxy_header(null_mut()),
                smtps_result::NullParameter
            );
            assert_eq!(text(smtps_conn_proxy_client(null())), "");
            assert_eq!(text(smtps_conn_proxy_destination(null())), "");
            assert_eq!(tlv(null(), SMTPS_PP2_TYPE_AUTHORITY, false), None);
            assert_eq!(tlv(null(), SMTPS_PP2_SUBTYPE_SSL_CN, true), None);
        }
    }

    #[test]
    fn a_bad_or_missing_header_closes_without_a_banner() {
        // SAFETY: live connections throughout, each freed at the end.
        unsafe {
            let conn = plain();
            assert_eq!(smtps_conn_expect_proxy_header(conn), smtps_result::Ok);
            feed(conn, b"EHLO c.test\r\n");
            assert_eq!(next_kind(conn), smtps_event_kind::None);
            assert!(smtps_conn_is_closed(conn));
            assert!(!smtps_conn_wants_write(conn), "no banner");
            assert_eq!(
                smtps_conn_close_reason(conn),
                smtps_close_reason::ProxyHeader
            );
            assert_eq!(text(smtps_conn_proxy_client(conn)), "");
            smtps_conn_free(conn);

            let conn = plain();
            feed(conn, b"EHLO c.test\r\n");
            assert_eq!(
                smtps_conn_expect_proxy_header(conn),
                smtps_result::WrongState,
                "after input"
            );
            assert_eq!(
                next_kind(conn),
                smtps_event_kind::Connect,
                "served as before"
            );
            smtps_conn_free(conn);
        }
    }
}
