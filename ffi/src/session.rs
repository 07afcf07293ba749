//! `smtps_session`: what a server-level callback knows about its session, lent to C for the
//! duration of the call.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use smtps_server::{Mode, ProxyHeader, SessionInfo};

use crate::config::{mode_number, smtps_mode};
use crate::ffi::{Castable, OwnershipRef, c_str, try_ref_from_ptr};
use crate::panic::ffi_boundary;
use crate::params::{Params, find, write_found};
use crate::proxy::{find_ssl_tlv, find_tlv, tlv_out};
use crate::view::{smtps_bytes, smtps_str};

/// One client session, as seen by a callback. Lent to the callback: valid only during the
/// call, never freed by the host. Read it with the `smtps_session_*` getters, on the thread
/// running the callback. Strings they return are views valid during the callback too; copy
/// what must outlive it.
#[allow(non_camel_case_types)]
pub struct smtps_session {
    _private: [u8; 0],
}

impl Castable for smtps_session {
    type Ownership = OwnershipRef;
    type RustType = SessionView;
}

/// State shared by every view of one session, whichever thread holds it.
pub(crate) struct SessionShared {
    /// The host's per-session pointer.
    pub(crate) userdata: AtomicPtr<c_void>,
    /// The id of the decision the running callback is asked for; 0 outside one.
    pub(crate) decision: AtomicU64,
}

/// The Rust value behind `smtps_session`: a copy of the session's information as of the event.
#[derive(Clone)]
pub(crate) struct SessionView {
    pub(crate) id: u64,
    peer: String,
    local: String,
    /// The balancer's address when a PROXY header named the client.
    proxied_by: Option<String>,
    /// The PROXY header, shared by every copy of the view (it never changes).
    proxy: Option<Arc<ProxyHeader>>,
    listener: usize,
    mode: Mode,
    tls: Option<(&'static str, &'static str, Option<String>)>,
    helo: Option<String>,
    /// EHLO rather than HELO: the accepted greeting's, or during `on_helo` the one decided.
    pub(crate) extended: bool,
    auth_id: Option<String>,
    mail_from: Option<String>,
    recipients: Vec<String>,
    /// The parameters of the MAIL or RCPT being decided; empty in other callbacks.
    pub(crate) params: Params,
    pub(crate) shared: Arc<SessionShared>,
}

impl SessionView {
    pub(crate) fn new(info: &SessionInfo) -> Self {
        let mut view = Self {
            id: info.id,
            peer: info.peer.to_string(),
            local: info.local.to_string(),
            proxied_by: info.proxied_by.map(|addr| addr.to_string()),
            proxy: info.proxy.clone().map(Arc::new),
            listener: info.listener,
            mode: info.mode,
            tls: None,
            helo: None,
            extended: false,
            auth_id: None,
            mail_from: None,
            recipients: Vec::new(),
            params: Params::new(),
            shared: Arc::new(SessionShared {
                userdata: AtomicPtr::new(std::ptr::null_mut()),
                decision: AtomicU64::new(0),
            }),
        };
        view.update(info);
        view
    }

    /// Brings `view` up to date with `info`, copying only when something changed (and only
    /// cloning the view if another thread still holds the old copy).
    pub(crate) fn refresh(view: &mut Arc<Self>, info: &SessionInfo) {
        if view.differs(info) {
            Arc::make_mut(view).update(info);
        }
    }

    fn differs(&self, info: &SessionInfo) -> bool {
        self.tls.is_some() != info.tls.is_some()
            || self.helo != info.helo
            || self.extended != info.extended
            || self.auth_id != info.auth_id
            || self.mail_from != info.mail_from
            || self.recipients != info.recipients
    }

    fn update(&mut self, info: &SessionInfo) {
        self.tls = info.tls.as_ref().map(|tls| {
            (
                tls.version_name(),
                tls.cipher_suite_name(),
                tls.server_name.clone(),
            )
        });
        self.helo.clone_from(&info.helo);
        self.extended = info.extended;
        self.auth_id.clone_from(&info.auth_id);
        self.mail_from.clone_from(&info.mail_from);
        self.recipients.clone_from(&info.recipients);
    }
}

/// The id of the decision the running callback is asked for: pass it to
/// `smtps_server_reply` to answer this decision, now or after returning `SMTPS_ANSWER_DEFER`.
/// Every decision (`on_connect`, `on_helo`, `on_auth`, `on_mail`, `on_rcpt`, `on_data_start`,
/// `on_message_end`, and an `on_body` call, which only refuses) gets its own id, never reused,
/// so a late or repeated reply can never answer a later command of the session: it gets
/// `SMTPS_RESULT_UNKNOWN_DECISION`. Decision ids are at least 2^32, never a session id. 0 in
/// the notices (`on_message_aborted`, `on_reset`, `on_disconnect`) and for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_decision_id(session: *const smtps_session) -> u64 {
    ffi_boundary! { try_ref_from_ptr!(session).shared.decision.load(Ordering::Relaxed) }
}

/// Finds the ESMTP parameter `keyword` (case-insensitive) of the MAIL or RCPT command being
/// decided and sets `*value_out` to its value, valid during the callback. In `on_mail`:
/// `SIZE` (octets, RFC 1870), `BODY` (`7BIT`, `8BITMIME`, `BINARYMIME`), `SMTPUTF8` (RFC 6531;
/// empty value), `AUTH` (RFC 4954 §5, xtext as sent), `RET` (`FULL`/`HDRS`) and `ENVID` (xtext
/// as sent) of RFC 3461 DSN, `REQUIRETLS` (RFC 8689; empty value). In `on_rcpt`: `NOTIFY`
/// (`NEVER`, or `SUCCESS`, `FAILURE`, `DELAY` joined by commas) and `ORCPT`
/// (`addr-type;xtext` as sent). Only parameters of extensions the server offers ever arrive;
/// the others were refused with `555 5.5.4` before the callback.
///
/// Returns false, leaving `*value_out` alone, when the command had no such parameter, in any
/// other callback, or for a NULL argument.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback; `keyword` is NULL or
/// NUL-terminated; `value_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_param(
    session: *const smtps_session,
    keyword: *const c_char,
    value_out: *mut smtps_str,
) -> bool {
    ffi_boundary! {
        let view = try_ref_from_ptr!(session);
        // SAFETY: NULL or NUL-terminated, by contract.
        let Ok(keyword) = (unsafe { c_str(keyword) }) else {
            return false;
        };
        // SAFETY: NULL or writable, by contract.
        unsafe { write_found(find(&view.params, keyword), value_out) }
    }
}

/// The session's id: unique within the process, for the host's own tables and logs (a reply
/// names the decision, `smtps_session_decision_id`). 0 for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_id(session: *const smtps_session) -> u64 {
    ffi_boundary! { try_ref_from_ptr!(session).id }
}

/// The client's address, `IP:port` (`[v6]:port` for IPv6). Empty for NULL.
///
/// On a listener that reads PROXY headers (`smtps_config_set_listener_proxy`) this is the
/// client the header names (proxy-protocol.txt §2.1, §2.2), not the balancer
/// (`smtps_session_proxied_by`); for a LOCAL header or `UNKNOWN`, the socket's peer.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_peer(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::new(&try_ref_from_ptr!(session).peer) }
}

/// The local address the client connected to, `IP:port`. Empty for NULL. Behind a balancer,
/// the destination the PROXY header names (the address the client connected to on the
/// balancer).
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_local(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::new(&try_ref_from_ptr!(session).local) }
}

/// The load balancer's address, `IP:port` (the socket's peer), when a PROXY protocol header
/// named the client (proxy-protocol.txt §2); empty for a direct client, for the balancer's own
/// LOCAL connections (health checks), for `UNKNOWN`, and for NULL. The view is valid during
/// the callback.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_proxied_by(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(session).proxied_by.as_deref()) }
}

/// Finds the first TLV of type `tlv_type` (`SMTPS_PP2_TYPE_*`, or any other type octet) in the
/// session's PROXY v2 header (proxy-protocol.txt §2.2: the type-length-value vectors after the
/// addresses) and sets `*value_out` to its value. The header was checked when it was read (a
/// PP2_TYPE_CRC32C verified, PP2_TYPE_AUTHORITY UTF-8, PP2_TYPE_UNIQUE_ID at most 128
/// octets); values of other types are as the balancer sent them. The view is valid during the
/// callback.
///
/// Returns false, leaving `*value_out` alone, when there is no such TLV, no header (a direct
/// client), a v1 header (it has none), or a NULL argument.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback; `value_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_proxy_tlv(
    session: *const smtps_session,
    tlv_type: u8,
    value_out: *mut smtps_bytes,
) -> bool {
    ffi_boundary! {
        let view = try_ref_from_ptr!(session);
        let value = view.proxy.as_deref().and_then(|header| find_tlv(header, tlv_type));
        // SAFETY: NULL or writable, by contract.
        unsafe { tlv_out(value, value_out) }
    }
}

/// Finds the first sub-TLV of type `subtype` (`SMTPS_PP2_SUBTYPE_SSL_*`: the TLS version, the
/// client certificate's CN, the cipher, ...) inside the PP2_TYPE_SSL TLV of the session's
/// PROXY v2 header (proxy-protocol.txt §2.2.6: what the client negotiated with a balancer that
/// terminated TLS) and sets `*value_out` to its value, valid during the callback.
///
/// Returns false, leaving `*value_out` alone, when there is no such sub-TLV, no PP2_TYPE_SSL
/// TLV, no v2 header, or a NULL argument.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback; `value_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_proxy_ssl_tlv(
    session: *const smtps_session,
    subtype: u8,
    value_out: *mut smtps_bytes,
) -> bool {
    ffi_boundary! {
        let view = try_ref_from_ptr!(session);
        let value = view.proxy.as_deref().and_then(|header| find_ssl_tlv(header, subtype));
        // SAFETY: NULL or writable, by contract.
        unsafe { tlv_out(value, value_out) }
    }
}

/// The index of the listener (in `smtps_config_add_listener` order) the client came in on.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_listener(session: *const smtps_session) -> usize {
    ffi_boundary! { try_ref_from_ptr!(session).listener }
}

/// The listener's mode (`SMTPS_MODE_*`); `SMTPS_MODE_PLAIN` for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_mode(session: *const smtps_session) -> smtps_mode {
    ffi_boundary! {
        // SAFETY: see `try_ref_from_ptr`; NULL gives the plain mode rather than 0.
        match unsafe { crate::ffi::try_ref(session) } {
            Some(view) => mode_number(view.mode),
            None => crate::config::SMTPS_MODE_PLAIN,
        }
    }
}

/// Whether TLS is active (implicit TLS, or after STARTTLS).
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_is_tls(session: *const smtps_session) -> bool {
    ffi_boundary! { try_ref_from_ptr!(session).tls.is_some() }
}

/// The TLS version (`"TLSv1.3"`, `"TLSv1.2"`); empty without TLS.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_tls_version(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(session).tls.as_ref().map(|tls| tls.0)) }
}

/// The TLS cipher suite (`"TLS13_AES_256_GCM_SHA384"`); empty without TLS.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_tls_cipher(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(session).tls.as_ref().map(|tls| tls.1)) }
}

/// The server name the client asked for with SNI; empty if none (or without TLS).
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_sni(session: *const smtps_session) -> smtps_str {
    ffi_boundary! {
        smtps_str::opt(try_ref_from_ptr!(session).tls.as_ref().and_then(|tls| tls.2.as_deref()))
    }
}

/// The accepted HELO/EHLO name; empty before one was accepted.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_helo(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(session).helo.as_deref()) }
}

/// Whether the client greeted with EHLO (RFC 5321 §4.1.1.1) rather than HELO: inside
/// `on_helo`, for the greeting being decided; elsewhere, for the accepted one (false before
/// any). False for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_helo_extended(session: *const smtps_session) -> bool {
    ffi_boundary! { try_ref_from_ptr!(session).extended }
}

/// The authenticated user; empty before AUTH succeeded.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_auth_id(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(session).auth_id.as_deref()) }
}

/// The accepted MAIL FROM address of the transaction in progress, without `<>` (empty for the
/// null reverse path, and outside a transaction).
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_mail_from(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::opt(try_ref_from_ptr!(session).mail_from.as_deref()) }
}

/// The number of accepted recipients of the transaction in progress.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_recipient_count(session: *const smtps_session) -> usize {
    ffi_boundary! { try_ref_from_ptr!(session).recipients.len() }
}

/// Accepted recipient number `index` (from 0), without `<>`; empty if out of range.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_recipient(
    session: *const smtps_session,
    index: usize,
) -> smtps_str {
    ffi_boundary! {
        smtps_str::opt(try_ref_from_ptr!(session).recipients.get(index).map(String::as_str))
    }
}

/// The host's pointer for this session, as set by `smtps_session_set_userdata`; NULL before.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_userdata(session: *const smtps_session) -> *mut c_void {
    ffi_boundary! { try_ref_from_ptr!(session).shared.userdata.load(Ordering::Acquire) }
}

/// Attaches a host pointer to the session (a spool file, a per-client record), handed back by
/// `smtps_session_userdata` in every later callback of this session. The library never
/// dereferences or frees it: free it in `on_disconnect`, the session's last callback.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_set_userdata(
    session: *const smtps_session,
    userdata: *mut c_void,
) {
    ffi_boundary! {
        try_ref_from_ptr!(session).shared.userdata.store(userdata, Ordering::Release);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ffi::CString;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;
    use std::time::Duration;

    use smtps_testkit::{proxy_v2, proxy_v2_local};

    use super::*;
    use crate::callbacks::{SMTPS_ANSWER_ACCEPT, smtps_answer, smtps_callbacks};
    use crate::config::{
        SMTPS_MODE_PLAIN, SMTPS_PROXY_OFF, SMTPS_PROXY_OR_DIRECT, SMTPS_PROXY_REQUIRED,
        smtps_config_add_listener, smtps_config_add_proxy_trusted, smtps_config_free,
        smtps_config_new, smtps_config_set_listener_proxy, smtps_config_set_workers,
    };
    use crate::error::smtps_result;
    use crate::proxy::{
        SMTPS_PP2_SUBTYPE_SSL_CN, SMTPS_PP2_SUBTYPE_SSL_VERSION, SMTPS_PP2_TYPE_AUTHORITY,
        SMTPS_PP2_TYPE_SSL,
    };
    use crate::server::{
        smtps_server, smtps_server_free, smtps_server_local_port, smtps_server_new,
        smtps_server_start, smtps_server_stop,
    };

    /// What `on_connect` saw: peer, proxied by, authority, SSL version, SSL CN.
    type Seen = Mutex<Vec<[String; 5]>>;

    fn text(view: smtps_str) -> String {
        // SAFETY: a view valid during the callback that reads it.
        let bytes = unsafe { std::slice::from_raw_parts(view.data.cast::<u8>(), view.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn tlv(found: bool, value: smtps_bytes) -> String {
        if !found {
            return "-".to_owned();
        }
        // SAFETY: a view valid during the callback that reads it.
        let bytes = unsafe { std::slice::from_raw_parts(value.data, value.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    unsafe extern "C" fn on_connect(
        userdata: *mut c_void,
        session: *const smtps_session,
    ) -> smtps_answer {
        // SAFETY: the test's `Seen`, alive until the server is freed; the lent session.
        unsafe {
            let seen = &*userdata.cast::<Seen>();
            let mut value = smtps_bytes::default();
            let authority =
                smtps_session_proxy_tlv(session, SMTPS_PP2_TYPE_AUTHORITY, &raw mut value);
            let authority = tlv(authority, value);
            let version =
                smtps_session_proxy_ssl_tlv(session, SMTPS_PP2_SUBTYPE_SSL_VERSION, &raw mut value);
            let version = tlv(version, value);
            let cn = smtps_session_proxy_ssl_tlv(session, SMTPS_PP2_SUBTYPE_SSL_CN, &raw mut value);
            let cn = tlv(cn, value);
            seen.lock().unwrap().push([
                text(smtps_session_peer(session)),
                text(smtps_session_proxied_by(session)),
                authority,
                version,
                cn,
            ]);
        }
        SMTPS_ANSWER_ACCEPT
    }

    unsafe extern "C" fn on_message_end(
        _userdata: *mut c_void,
        _session: *const smtps_session,
        _size: u64,
    ) -> smtps_answer {
        SMTPS_ANSWER_ACCEPT
    }

    /// A running server with a plain listener per mode, trusting `trusted`.
    fn server(trusted: &str, modes: &[u32], seen: &Seen) -> (*mut smtps_server, Vec<u16>) {
        let callbacks = smtps_callbacks {
            on_connect: Some(on_connect),
            on_message_end: Some(on_message_end),
            ..smtps_callbacks::default()
        };
        // SAFETY: a live config, NUL-terminated strings, writable outs; `seen` outlives the
        // server (the caller frees it first).
        unsafe {
            let config = smtps_config_new();
            let addr = CString::new("127.0.0.1:0").unwrap();
            for (index, mode) in modes.iter().enumerate() {
                smtps_config_add_listener(config, addr.as_ptr(), SMTPS_MODE_PLAIN);
                smtps_config_set_listener_proxy(config, index, *mode);
            }
            let trusted = CString::new(trusted).unwrap();
            assert_eq!(
                smtps_config_add_proxy_trusted(config, trusted.as_ptr()),
                smtps_result::Ok
            );
            smtps_config_set_workers(config, 1);
            let mut server = std::ptr::null_mut();
            let userdata = std::ptr::from_ref(seen).cast_mut().cast::<c_void>();
            assert_eq!(
                smtps_server_new(config, &raw const callbacks, userdata, &raw mut server),
                smtps_result::Ok
            );
            smtps_config_free(config);
            assert_eq!(smtps_server_start(server), smtps_result::Ok);
            let ports = (0..modes.len())
                .map(|index| {
                    let mut port = 0;
                    smtps_server_local_port(server, index, &raw mut port);
                    port
                })
                .collect();
            (server, ports)
        }
    }

    /// Connects, sends `first`, and returns the first line the server says ("" if it closes).
    fn banner(port: u16, first: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(first).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        if !line.is_empty() {
            stream.write_all(b"QUIT\r\n").unwrap();
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
        }
        line
    }

    fn stop(server: *mut smtps_server) {
        // SAFETY: the server from `server`, freed once.
        unsafe {
            assert_eq!(smtps_server_stop(server, 1000), smtps_result::Ok);
            smtps_server_free(server);
        }
    }

    #[test]
    fn a_proxied_session_reports_the_client_the_balancer_and_the_tlvs() {
        let seen = Seen::default();
        let (server, ports) = server(
            "127.0.0.0/8",
            &[SMTPS_PROXY_REQUIRED, SMTPS_PROXY_OFF],
            &seen,
        );
        let mut ssl = vec![0x01, 0, 0, 0, 0];
        for (kind, value) in [(0x21u8, &b"TLSv1.3"[..]), (0x22, b"client.example")] {
            ssl.push(kind);
            ssl.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            ssl.extend_from_slice(value);
        }
        let header = proxy_v2(
            "192.0.2.7:40001".parse().unwrap(),
            "198.51.100.1:25".parse().unwrap(),
            &[
                (SMTPS_PP2_TYPE_AUTHORITY, b"mx.example.org"),
                (SMTPS_PP2_TYPE_SSL, &ssl),
            ],
        );
        assert!(banner(ports[0], &header).starts_with("220 "));
        assert!(banner(ports[0], &proxy_v2_local()).starts_with("220 "));
        assert_eq!(
            banner(ports[0], b"EHLO direct.test\r\n"),
            "",
            "no header: no banner"
        );
        assert!(
            banner(ports[1], b"").starts_with("220 "),
            "a listener without PROXY"
        );
        stop(server);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0][0], "192.0.2.7:40001");
        assert!(seen[0][1].starts_with("127.0.0.1:"), "{seen:?}");
        assert_eq!(
            seen[0][2..],
            ["mx.example.org", "TLSv1.3", "client.example"]
        );
        for direct in &seen[1..] {
            assert!(direct[0].starts_with("127.0.0.1:"), "{seen:?}");
            assert_eq!(direct[1..], ["", "-", "-", "-"], "{seen:?}");
        }
    }

    #[test]
    fn untrusted_sources_are_served_directly_on_an_or_direct_listener() {
        let seen = Seen::default();
        let (server, ports) = server(
            "10.0.0.0/8",
            &[SMTPS_PROXY_OR_DIRECT, SMTPS_PROXY_REQUIRED],
            &seen,
        );
        assert!(banner(ports[0], b"").starts_with("220 "));
        assert_eq!(
            banner(ports[1], b""),
            "",
            "untrusted on a REQUIRED listener"
        );
        stop(server);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0][0].starts_with("127.0.0.1:"), "{seen:?}");
        assert_eq!(seen[0][1], "");
        // SAFETY: NULL sessions and outputs are refused.
        unsafe {
            let mut value = smtps_bytes::default();
            assert_eq!(text(smtps_session_proxied_by(std::ptr::null())), "");
            assert!(!smtps_session_proxy_tlv(
                std::ptr::null(),
                SMTPS_PP2_TYPE_AUTHORITY,
                &raw mut value
            ));
            assert!(!smtps_session_proxy_ssl_tlv(
                std::ptr::null(),
                SMTPS_PP2_SUBTYPE_SSL_CN,
                &raw mut value
            ));
        }
    }
}
