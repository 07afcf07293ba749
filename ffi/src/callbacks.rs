//! The callbacks a server-level host gives (`smtps_callbacks`), the answers they return, and
//! the reasons they are told.

use std::ffi::c_void;

use smtps_proto::AbortReason;
use smtps_server::CloseReason;

use crate::session::smtps_session;
use crate::view::{smtps_bytes, smtps_str};

/// A callback's answer: one of the `SMTPS_ANSWER_*` values.
///
/// A callback may instead give a reply of its own, with text, by calling
/// `smtps_server_reply(server, smtps_session_decision_id(session), ...)` before it returns:
/// when that call returned `SMTPS_RESULT_OK`, the reply wins and the return value is ignored
/// entirely (return `SMTPS_ANSWER_ACCEPT`, say; no value, not even one outside
/// `SMTPS_ANSWER_*`, logs anything then). When it failed (`SMTPS_RESULT_INVALID_REPLY`), the
/// return value decides as if no reply had been given. Otherwise a value outside
/// `SMTPS_ANSWER_*` is a host bug: the client gets `451 4.3.0` (it retries later) and the
/// library logs an error.
#[allow(non_camel_case_types)]
pub type smtps_answer = u32;
/// Accept with the default reply (`250 2.1.0 Sender OK`, `354`, ...). For `on_body`: go on.
pub const SMTPS_ANSWER_ACCEPT: smtps_answer = 0;
/// Refuse with the event's default refusal: `554 5.7.1` for a connection, `550 5.7.1` for
/// HELO, MAIL and RCPT, `535 5.7.8` for AUTH, `554 5.7.1` for DATA and the end of a message.
/// For `on_body`: refuse the message (`451 4.3.0` at its end; the rest of the body is read
/// and not passed on).
pub const SMTPS_ANSWER_REJECT: smtps_answer = 1;
/// Answer later with `smtps_server_reply(server, decision_id, ...)`, from any thread, where
/// `decision_id` is `smtps_session_decision_id(session)` read in this callback. Until then the
/// session waits (up to `SMTPS_TIMEOUT_DECISION`, then the library answers `451 4.3.0` and a
/// late reply gets `SMTPS_RESULT_UNKNOWN_DECISION`). The reply may even come from another
/// thread before this callback returns. For `on_body` and the notices, the same as
/// `SMTPS_ANSWER_ACCEPT`.
pub const SMTPS_ANSWER_DEFER: smtps_answer = 2;

/// Why a message in progress was dropped (`on_message_aborted`). It is never acknowledged;
/// discard what was spooled.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum smtps_abort_reason {
    /// Larger than `SMTPS_LIMIT_MESSAGE_SIZE`; answered `552 5.3.4`.
    TooLarge = 0,
    /// A bare LF or CR refused by policy; answered `550 5.5.2`.
    BareLineEnding = 1,
    /// A text line over the limit; answered `554 5.6.0`.
    LineTooLong = 2,
    /// The client went away mid-message.
    ClientLeft = 3,
    /// The session was closed (timeout, shutdown).
    Closed = 4,
    /// Another reason (a newer library version).
    Other = 99,
}

impl From<AbortReason> for smtps_abort_reason {
    fn from(reason: AbortReason) -> Self {
        match reason {
            AbortReason::TooLarge => Self::TooLarge,
            AbortReason::BareLineEnding => Self::BareLineEnding,
            AbortReason::LineTooLong => Self::LineTooLong,
            AbortReason::ClientLeft => Self::ClientLeft,
            AbortReason::Closed => Self::Closed,
            _ => Self::Other,
        }
    }
}

/// Why a connection closed (`on_disconnect`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum smtps_close_reason {
    /// The client sent QUIT.
    Quit = 0,
    /// The client closed the connection.
    ClientClosed = 1,
    /// A timer expired.
    Timeout = 2,
    /// Too many errors or commands.
    TooManyErrors = 3,
    /// Over a connection limit.
    Limit = 4,
    /// The host refused the connection or answered `421`.
    Refused = 5,
    /// The server is shutting down.
    Shutdown = 6,
    /// The TLS handshake or a TLS record failed.
    Tls = 7,
    /// A socket error.
    Io = 8,
    /// The PROXY protocol header expected first was malformed, truncated, unsupported or
    /// missing (haproxy's proxy-protocol.txt); the connection closed without a banner.
    ProxyHeader = 9,
    /// Another reason (a newer library version).
    Other = 99,
}

impl From<&CloseReason> for smtps_close_reason {
    fn from(reason: &CloseReason) -> Self {
        match reason {
            CloseReason::Quit => Self::Quit,
            CloseReason::ClientClosed => Self::ClientClosed,
            CloseReason::Timeout(_) => Self::Timeout,
            CloseReason::TooManyErrors => Self::TooManyErrors,
            CloseReason::Limit => Self::Limit,
            CloseReason::Refused => Self::Refused,
            CloseReason::Shutdown => Self::Shutdown,
            CloseReason::Tls(_) => Self::Tls,
            CloseReason::Io(_) => Self::Io,
            CloseReason::ProxyHeader(_) => Self::ProxyHeader,
            _ => Self::Other,
        }
    }
}

/// The host's callbacks, mirroring the Rust `Handler`. Every one is optional (NULL) except
/// `on_message_end`; each gets the `userdata` given to `smtps_server_new` and the session,
/// lent for the call. Views (`smtps_str`, `smtps_bytes`) are valid only during the call.
///
/// Threads: with `smtps_server_start` or `smtps_server_run`, callbacks run on the worker
/// threads; the callbacks of one session run one at a time on one thread, different sessions
/// run at the same time on different workers (with more than one worker, the host's shared
/// state needs locks). With `smtps_server_start_polled` every callback runs on the thread
/// calling `smtps_server_dispatch`. Callbacks must not block: defer instead.
///
/// A NULL decision callback accepts, except `on_auth` (refuses: `535 5.7.8`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct smtps_callbacks {
    /// A client connected (for implicit TLS, after the handshake): accept to greet it.
    pub on_connect: Option<
        unsafe extern "C" fn(userdata: *mut c_void, session: *const smtps_session) -> smtps_answer,
    >,
    /// HELO or EHLO with the client's `name`; `smtps_session_helo_extended` tells which.
    pub on_helo: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            name: smtps_str,
        ) -> smtps_answer,
    >,
    /// AUTH PLAIN or LOGIN with decoded credentials: `user` (authentication identity),
    /// `password`, `authzid` (authorization identity; usually empty). Accept answers
    /// `235 2.7.0`. The views are wiped after the call; do not keep them.
    pub on_auth: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            user: smtps_str,
            password: smtps_str,
            authzid: smtps_str,
        ) -> smtps_answer,
    >,
    /// MAIL FROM: `from` without `<>` (empty for the null reverse path `<>`).
    pub on_mail: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            from: smtps_str,
        ) -> smtps_answer,
    >,
    /// RCPT TO: `to` without `<>`.
    pub on_rcpt: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            to: smtps_str,
        ) -> smtps_answer,
    >,
    /// DATA or the first BDAT: the body is about to come. Open the spool file here.
    pub on_data_start: Option<
        unsafe extern "C" fn(userdata: *mut c_void, session: *const smtps_session) -> smtps_answer,
    >,
    /// Message octets, dot-unstuffed, in order. `SMTPS_ANSWER_REJECT` (or a 4xx/5xx
    /// `smtps_server_reply` during the call) refuses the message: the rest of its body is read
    /// and not passed on, and neither `on_message_end` nor `on_message_aborted` follows for
    /// it (the host made the call), even when its end had been read already. Delete the spool
    /// file when refusing.
    pub on_body: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            chunk: smtps_bytes,
        ) -> smtps_answer,
    >,
    /// The whole message (`size` octets) has arrived. Accept only once it is stored durably:
    /// the `250` is the promise to deliver. Required.
    ///
    /// A deferred commit can lose the race with the library: when `SMTPS_TIMEOUT_DECISION`
    /// passes first (or a shutdown's grace ends), the client gets `451 4.3.0` and will send
    /// the message again, and `smtps_server_reply` returns `SMTPS_RESULT_UNKNOWN_DECISION`:
    /// delete the stored copy then, or the message is delivered twice. A client that merely
    /// disconnects during the commit is still answered (`SMTPS_RESULT_OK`), as RFC 5321 §6.1
    /// prefers a possible duplicate to a loss.
    ///
    /// The rule for the deferred reply: any result of `smtps_server_reply` other than
    /// `SMTPS_RESULT_OK` means the client never got the `250` from it: delete the stored copy.
    /// `SMTPS_RESULT_OK` alone is not the whole story: `on_message_aborted` for the session
    /// (no `on_data_start` in between) means the `250` never went out, whichever came first,
    /// so keep tracking it for commits in flight (see `smtps_server_reply`).
    pub on_message_end: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            size: u64,
        ) -> smtps_answer,
    >,
    /// The message in progress was dropped and will never be acknowledged: discard what was
    /// spooled. It may arrive while a deferred `on_message_end` commit is still running on
    /// the host's threads (the session closed at shutdown or on `421`): the client never got
    /// `250`, so the stored copy must go even if the commit completes later; its reply then
    /// gets `SMTPS_RESULT_UNKNOWN_DECISION`. Not called for a message the host refused itself
    /// in `on_body`.
    pub on_message_aborted: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            reason: smtps_abort_reason,
        ),
    >,
    /// The transaction was reset (RSET, a new EHLO, STARTTLS).
    pub on_reset:
        Option<unsafe extern "C" fn(userdata: *mut c_void, session: *const smtps_session)>,
    /// The connection closed: the session's last callback (free its userdata here). Called for
    /// every session whose `on_connect` was called, also at shutdown.
    pub on_disconnect: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            session: *const smtps_session,
            reason: smtps_close_reason,
        ),
    >,
}
