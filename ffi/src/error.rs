//! `smtps_result`, the one result type of the C ABI, and every mapping from a Rust error to it.
//!
//! Numbers are stable and grouped by hundreds: 1xx the caller's arguments, 2xx the order of
//! calls, 3xx configuration, 4xx the operating system, 5xx TLS sessions, 9xx library bugs.
//! A retired number stays reserved in a comment here and is never reused.
//!
//! Alongside the code, each failure records a detailed message (naming the file, the address,
//! the rustls error) in a thread-local slot that `smtps_last_error()` copies out.

use std::cell::RefCell;
use std::ffi::c_char;
use std::fmt::Display;

use crate::ffi::{byte_slice_mut, check_out, write_out};
use crate::panic::ffi_boundary;

/// The result of a call: `SMTPS_RESULT_OK` (0) or what went wrong.
///
/// `smtps_result_message()` describes a code; `smtps_last_error()` gives the details of the
/// calling thread's last failure.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum smtps_result {
    /// Success.
    Ok = 0,

    // 1xx: the caller's arguments.
    /// A required pointer argument was NULL.
    NullParameter = 100,
    /// An argument is out of range, or a string is not UTF-8.
    InvalidParameter = 101,
    /// An address is not `IP:port` (`[::]:465`, `127.0.0.1:587`).
    InvalidAddress = 102,
    /// A reply code, enhanced status or text is invalid, or does not fit the decision (2xx to
    /// accept, 3xx to accept DATA, 4xx/5xx to refuse; the status class must match the code's).
    InvalidReply = 103,
    /// The caller's buffer is too small; the size needed was written where the call says.
    BufferTooSmall = 104,

    // 2xx: the order of calls.
    /// The object is not in a state that allows this call (started twice, dispatch on a
    /// server that does not use the host's poll loop, ...).
    WrongState = 200,
    /// No longer returned (since 0.2 replies name a decision, `SMTPS_RESULT_UNKNOWN_DECISION`);
    /// kept so that the numbers stay stable.
    UnknownSession = 201,
    /// The decision is not awaited: answered already (by the host, or by the library after its
    /// decision timeout or at shutdown), its session or connection closed, or the number was
    /// never a decision id. Nothing changed.
    UnknownDecision = 202,
    /// The server has been stopped; it can only be freed.
    ServerStopped = 203,
    /// The server was already stopped (a second stop).
    AlreadyStopped = 204,
    /// The call is not allowed from inside a callback (it would wait for itself).
    InCallback = 205,

    // 3xx: configuration.
    /// No listener was configured.
    NoListeners = 300,
    /// TLS is needed (a TLS listener or connection) but no certificate was configured.
    TlsNotConfigured = 301,
    /// A certificate or key file cannot be read.
    CertificateFile = 302,
    /// A certificate is malformed or missing from its file.
    Certificate = 303,
    /// A private key is missing, encrypted or unsupported.
    PrivateKey = 304,
    /// The private key does not match the certificate.
    KeyMismatch = 305,
    /// Another TLS configuration problem (see `smtps_last_error()`).
    TlsConfig = 306,
    /// A listener reads PROXY protocol headers (`smtps_config_set_listener_proxy`) but no
    /// trusted source was added (`smtps_config_add_proxy_trusted`).
    ProxyNotConfigured = 307,

    // 4xx: the operating system.
    /// A listener cannot be bound (address in use, permission denied, not local).
    Bind = 400,
    /// Another operating-system failure (threads, poll, sockets).
    Io = 401,
    /// A worker thread panicked.
    WorkerPanicked = 402,

    // 5xx: TLS sessions.
    /// The TLS handshake failed.
    TlsHandshake = 500,
    /// A TLS session failed after the handshake.
    TlsSession = 501,

    // 9xx: bugs.
    /// The library panicked: a bug. The details are in `smtps_last_error()`.
    Panic = 900,
}

impl smtps_result {
    /// The fixed, human-readable description of a result.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Ok => "success",
            Self::NullParameter => "a required pointer argument is NULL",
            Self::InvalidParameter => "an argument is out of range or not valid UTF-8",
            Self::InvalidAddress => "invalid socket address (expected IP:port)",
            Self::InvalidReply => "invalid reply, or one that does not fit the decision",
            Self::BufferTooSmall => "the buffer is too small for the result",
            Self::WrongState => "the object is not in a state that allows this call",
            Self::UnknownSession => "no decision is awaited from this session",
            Self::UnknownDecision => {
                "this decision is not awaited (answered already, timed out, or closed)"
            }
            Self::ServerStopped => "the server has been stopped",
            Self::AlreadyStopped => "the server was already stopped",
            Self::InCallback => "this call is not allowed inside a callback",
            Self::NoListeners => "no listener configured",
            Self::TlsNotConfigured => "TLS needed but no certificate configured",
            Self::CertificateFile => "cannot read a certificate or key file",
            Self::Certificate => "malformed or missing certificate",
            Self::PrivateKey => "missing, encrypted or unsupported private key",
            Self::KeyMismatch => "the private key does not match the certificate",
            Self::TlsConfig => "unusable TLS configuration",
            Self::ProxyNotConfigured => "a listener reads PROXY headers but no source is trusted",
            Self::Bind => "cannot bind a listener",
            Self::Io => "operating-system error",
            Self::WorkerPanicked => "a worker thread panicked",
            Self::TlsHandshake => "TLS handshake failed",
            Self::TlsSession => "TLS session failed",
            Self::Panic => "internal error (panic)",
        }
    }

    /// The result for a raw number from C, if it names one.
    fn from_u32(value: u32) -> Option<Self> {
        const ALL: [smtps_result; 26] = [
            smtps_result::Ok,
            smtps_result::NullParameter,
            smtps_result::InvalidParameter,
            smtps_result::InvalidAddress,
            smtps_result::InvalidReply,
            smtps_result::BufferTooSmall,
            smtps_result::WrongState,
            smtps_result::UnknownSession,
            smtps_result::UnknownDecision,
            smtps_result::ServerStopped,
            smtps_result::AlreadyStopped,
            smtps_result::InCallback,
            smtps_result::NoListeners,
            smtps_result::TlsNotConfigured,
            smtps_result::CertificateFile,
            smtps_result::Certificate,
            smtps_result::PrivateKey,
            smtps_result::KeyMismatch,
            smtps_result::TlsConfig,
            smtps_result::ProxyNotConfigured,
            smtps_result::Bind,
            smtps_result::Io,
            smtps_result::WorkerPanicked,
            smtps_result::TlsHandshake,
            smtps_result::TlsSession,
            smtps_result::Panic,
        ];
        ALL.into_iter().find(|result| *result as u32 == value)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `detail` as the calling thread's last error.
pub(crate) fn set_last_error(detail: impl Display) {
    let text = detail.to_string();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = text);
}

/// Records `detail` and returns `result`: the one way a failure leaves an export.
pub(crate) fn fail(result: smtps_result, detail: impl Display) -> smtps_result {
    set_last_error(detail);
    result
}

/// Records the message of a caught panic.
pub(crate) fn set_last_error_from_panic(payload: &(dyn std::any::Any + Send)) {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic");
    set_last_error(format_args!("panic in smtps (a bug): {text}"));
}

/// Maps a TLS error (configuration, session, misuse) and records its details.
pub(crate) fn tls_error(error: &smtps_tls::Error) -> smtps_result {
    use smtps_tls::{ConfigError, Error, TlsError};
    let result = match error {
        Error::Config(config) => match config {
            ConfigError::Read { .. } => smtps_result::CertificateFile,
            ConfigError::Pem { .. }
            | ConfigError::NoCertificate { .. }
            | ConfigError::MalformedCertificate { .. }
            | ConfigError::NoDefaultCertificate => smtps_result::Certificate,
            ConfigError::NoPrivateKey { .. }
            | ConfigError::EncryptedPrivateKey { .. }
            | ConfigError::UnsupportedPrivateKey { .. } => smtps_result::PrivateKey,
            ConfigError::KeyMismatch { .. } => smtps_result::KeyMismatch,
            _ => smtps_result::TlsConfig,
        },
        Error::Tls(TlsError::Handshake { .. }) => smtps_result::TlsHandshake,
        Error::Tls(_) => smtps_result::TlsSession,
        Error::Usage(_) => smtps_result::WrongState,
        _ => smtps_result::TlsConfig,
    };
    fail(result, error)
}

/// Maps a server set-up or run-time error and records its details.
pub(crate) fn server_error(error: &smtps_server::Error) -> smtps_result {
    use smtps_server::Error;
    let result = match error {
        Error::Bind { .. } => smtps_result::Bind,
        Error::TlsNotConfigured { .. } => smtps_result::TlsNotConfigured,
        Error::NoListeners => smtps_result::NoListeners,
        Error::WorkerPanicked => smtps_result::WorkerPanicked,
        _ => smtps_result::Io,
    };
    fail(result, error)
}

/// Maps a session misuse (a decision) and records its details.
pub(crate) fn session_error(error: smtps_proto::Error) -> smtps_result {
    use smtps_proto::Error;
    let result = match error {
        Error::UnknownDecision => smtps_result::UnknownDecision,
        Error::InvalidVerdict => smtps_result::InvalidReply,
        _ => smtps_result::WrongState,
    };
    fail(result, error)
}

/// Maps an error of a sans-IO connection and records its details.
pub(crate) fn conn_error(error: ::smtps_conn::Error) -> smtps_result {
    match error {
        ::smtps_conn::Error::TlsNotConfigured => fail(
            smtps_result::TlsNotConfigured,
            "a TLS mode needs a certificate (smtps_config_set_certificate_files)",
        ),
        ::smtps_conn::Error::Tls(error) => tls_error(&error),
        ::smtps_conn::Error::Session(error) => session_error(error),
        _ => fail(smtps_result::WrongState, error),
    }
}

/// Maps an operating-system error and records what was being done.
pub(crate) fn io_error(context: &str, error: &std::io::Error) -> smtps_result {
    fail(smtps_result::Io, format_args!("{context}: {error}"))
}

/// Copies `text` into a caller buffer: at most `len - 1` bytes (cut at a UTF-8 boundary)
/// followed by a NUL; `*out_n` gets the bytes written, without the NUL.
///
/// # Safety
/// `buf` is valid for `len` writable bytes; `out_n` is valid for a write.
unsafe fn copy_text(text: &str, buf: *mut c_char, len: usize, out_n: *mut usize) -> smtps_result {
    check_out!(buf, out_n);
    // SAFETY: the export's contract: `buf` holds `len` writable bytes.
    let Some(out) = (unsafe { byte_slice_mut(buf.cast::<u8>(), len) }) else {
        return smtps_result::NullParameter;
    };
    let mut n = text.len().min(len.saturating_sub(1));
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    if len > 0 {
        out[..n].copy_from_slice(&text.as_bytes()[..n]);
        out[n] = 0;
    }
    // SAFETY: `out_n` is non-NULL (checked above) and writable by contract.
    unsafe { write_out(out_n, n) };
    smtps_result::Ok
}

/// Writes a description of `result` into `buf` as a NUL-terminated string, cut to fit.
///
/// `len` is the size of `buf` in bytes; at most `len - 1` bytes of text are written (never a
/// partial UTF-8 character), then a NUL. `*out_n` receives the number of text bytes written
/// (without the NUL). An unknown number gets a text saying so. Thread-safe.
///
/// Returns `SMTPS_RESULT_NULL_PARAMETER` if `buf` or `out_n` is NULL.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes and `out_n` for one `size_t` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_result_message(
    result: u32,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let text = smtps_result::from_u32(result).map_or("unknown result code", smtps_result::message);
        // SAFETY: forwarded from this function's contract.
        unsafe { copy_text(text, buf, len, out_n) }
    }
}

/// Writes the details of the calling thread's last failure into `buf`, as
/// `smtps_result_message()` does: the file and problem of a bad PEM, the address that cannot
/// be bound, the rustls error. Empty if no call on this thread has failed yet.
///
/// The detail is kept until the next failure on the same thread; successful calls do not
/// clear it, so read it right after the call that failed. Each thread has its own.
///
/// Returns `SMTPS_RESULT_NULL_PARAMETER` if `buf` or `out_n` is NULL.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes and `out_n` for one `size_t` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_last_error(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let text = LAST_ERROR.with(|slot| slot.borrow().clone());
        // SAFETY: forwarded from this function's contract.
        unsafe { copy_text(&text, buf, len, out_n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_its_number_and_a_message() {
        for value in 0..1000 {
            if let Some(result) = smtps_result::from_u32(value) {
                assert_eq!(result as u32, value);
                assert!(!result.message().is_empty());
            }
        }
    }

    #[test]
    fn messages_are_cut_at_character_boundaries() {
        let mut buf = [0x55 as c_char; 4];
        let mut n = 99;
        // SAFETY: the buffer and count are local and writable.
        let result = unsafe { copy_text("aé€", buf.as_mut_ptr(), buf.len(), &raw mut n) };
        assert_eq!(result, smtps_result::Ok);
        assert_eq!(n, 3);
        assert_eq!(buf[3], 0);
    }
}
