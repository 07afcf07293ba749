//! No panic crosses the C boundary: every export runs its body in [`ffi_boundary!`], which
//! turns a panic into `SMTPS_RESULT_PANIC` (or NULL, `false`, 0 for other return types) and
//! records the panic message as the thread's last error. Modelled on rustls-ffi
//! `librustls/src/panic.rs`.

use std::ptr::{null, null_mut};

use crate::error::smtps_result;
use crate::view::{smtps_bytes, smtps_str};

/// The value an export returns when its body panicked.
pub(crate) trait PanicOrDefault {
    fn value() -> Self;
}

/// The value an export returns when a required pointer argument was NULL.
pub(crate) trait NullParameterOrDefault {
    fn value() -> Self;
}

/// Return types whose `Default` is the right answer to both a panic and a NULL argument.
pub(crate) trait Defaultable: Default {}

impl Defaultable for () {}
impl Defaultable for bool {}
impl Defaultable for u16 {}
impl Defaultable for u32 {}
impl Defaultable for u64 {}
impl Defaultable for usize {}
impl Defaultable for smtps_str {}
impl Defaultable for smtps_bytes {}

impl<T: Defaultable> PanicOrDefault for T {
    fn value() -> Self {
        T::default()
    }
}

impl<T: Defaultable> NullParameterOrDefault for T {
    fn value() -> Self {
        T::default()
    }
}

impl<T> PanicOrDefault for *mut T {
    fn value() -> Self {
        null_mut()
    }
}

impl<T> PanicOrDefault for *const T {
    fn value() -> Self {
        null()
    }
}

impl<T> NullParameterOrDefault for *mut T {
    fn value() -> Self {
        null_mut()
    }
}

impl<T> NullParameterOrDefault for *const T {
    fn value() -> Self {
        null()
    }
}

/// A millisecond count where -1 means "none" (`smtps_conn_next_timeout_ms`): a panic gives
/// -1, never 0, which would have the host spin.
impl PanicOrDefault for i64 {
    fn value() -> Self {
        -1
    }
}

impl PanicOrDefault for crate::callbacks::smtps_close_reason {
    fn value() -> Self {
        Self::Other
    }
}

impl PanicOrDefault for smtps_result {
    fn value() -> Self {
        smtps_result::Panic
    }
}

impl NullParameterOrDefault for smtps_result {
    fn value() -> Self {
        crate::error::set_last_error("a required pointer argument is NULL");
        smtps_result::NullParameter
    }
}

/// Runs an export's body, catching any panic.
macro_rules! ffi_boundary {
    ($($body:tt)*) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(payload) => {
                $crate::error::set_last_error_from_panic(&*payload);
                $crate::panic::PanicOrDefault::value()
            }
        }
    };
}

pub(crate) use ffi_boundary;
