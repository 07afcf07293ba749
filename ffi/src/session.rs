//! `smtps_session`: what a server-level callback knows about its session, lent to C for the
//! duration of the call.

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};

use smtps_server::{Mode, SessionInfo};

use crate::config::{mode_number, smtps_mode};
use crate::ffi::{Castable, OwnershipRef, try_ref_from_ptr};
use crate::panic::ffi_boundary;
use crate::view::smtps_str;

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
}

/// The Rust value behind `smtps_session`: a copy of the session's information as of the event.
#[derive(Clone)]
pub(crate) struct SessionView {
    pub(crate) id: u64,
    peer: String,
    local: String,
    listener: usize,
    mode: Mode,
    tls: Option<(&'static str, &'static str, Option<String>)>,
    helo: Option<String>,
    /// EHLO rather than HELO: the accepted greeting's, or during `on_helo` the one decided.
    pub(crate) extended: bool,
    auth_id: Option<String>,
    mail_from: Option<String>,
    recipients: Vec<String>,
    pub(crate) shared: Arc<SessionShared>,
}

impl SessionView {
    pub(crate) fn new(info: &SessionInfo) -> Self {
        let mut view = Self {
            id: info.id,
            peer: info.peer.to_string(),
            local: info.local.to_string(),
            listener: info.listener,
            mode: info.mode,
            tls: None,
            helo: None,
            extended: false,
            auth_id: None,
            mail_from: None,
            recipients: Vec::new(),
            shared: Arc::new(SessionShared {
                userdata: AtomicPtr::new(std::ptr::null_mut()),
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

/// The session's id: unique within the process, the key for `smtps_server_reply`. 0 for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_id(session: *const smtps_session) -> u64 {
    ffi_boundary! { try_ref_from_ptr!(session).id }
}

/// The client's address, `IP:port` (`[v6]:port` for IPv6). Empty for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_peer(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::new(&try_ref_from_ptr!(session).peer) }
}

/// The local address the client connected to, `IP:port`. Empty for NULL.
///
/// # Safety
/// `session` is NULL or the session lent to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_session_local(session: *const smtps_session) -> smtps_str {
    ffi_boundary! { smtps_str::new(&try_ref_from_ptr!(session).local) }
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
