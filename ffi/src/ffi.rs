//! Every pointer cast between C handles and Rust values, in one place.
//!
//! A C handle type (`smtps_config`, `smtps_server`, ...) is an opaque `#[repr(C)]` struct with
//! no fields; [`Castable`] names the Rust value behind it and, through its `Ownership` marker,
//! how the pointer was made: a `Box` the caller owns and frees ([`OwnershipBox`]), or a
//! reference lent to C for the duration of a call ([`OwnershipRef`]). The helpers below are the
//! only code that turns one into the other; each is bound to the marker it is sound for, so a
//! borrowed pointer cannot be freed and an owned one cannot be mistaken for a borrow.
//! Modelled on rustls-ffi `librustls/src/ffi.rs`.

use std::ffi::{CStr, c_char};

use crate::error::smtps_result;

/// The pointer is a `Box<RustType>` owned by the C caller, freed by its `_free` function.
pub(crate) struct OwnershipBox;

/// The pointer is a `&RustType` lent to C for the duration of one call (a callback argument).
pub(crate) struct OwnershipRef;

/// Marks how a [`Castable`] pointer was made.
pub(crate) trait OwnershipMarker {}

impl OwnershipMarker for OwnershipBox {}
impl OwnershipMarker for OwnershipRef {}

/// Links an opaque C type to the Rust type behind its pointers.
pub(crate) trait Castable {
    /// How pointers to this type are made.
    type Ownership: OwnershipMarker;
    /// The Rust value behind the pointer.
    type RustType;
}

/// Moves `value` to the heap and hands ownership to C.
pub(crate) fn to_boxed_ptr<C>(value: C::RustType) -> *mut C
where
    C: Castable<Ownership = OwnershipBox>,
{
    Box::into_raw(Box::new(value)).cast::<C>()
}

/// Takes ownership back from C; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or came from [`to_boxed_ptr`] for the same `C` and was not freed since.
pub(crate) unsafe fn take_box<C>(ptr: *mut C) -> Option<Box<C::RustType>>
where
    C: Castable<Ownership = OwnershipBox>,
{
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller promises `ptr` came from `Box::into_raw` of a `C::RustType`.
    Some(unsafe { Box::from_raw(ptr.cast::<C::RustType>()) })
}

/// Lends `value` to C as a borrowed handle.
pub(crate) fn lend<C>(value: &C::RustType) -> *const C
where
    C: Castable<Ownership = OwnershipRef>,
{
    std::ptr::from_ref(value).cast::<C>()
}

/// A shared reference to the value behind a handle of either ownership; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `C` (boxed and not freed, or lent and still in its
/// call), not mutated through another reference while the result lives.
pub(crate) unsafe fn try_ref<'a, C: Castable>(ptr: *const C) -> Option<&'a C::RustType> {
    // SAFETY: as promised by the caller; `as_ref` handles NULL.
    unsafe { ptr.cast::<C::RustType>().as_ref() }
}

/// An exclusive reference to the value behind an owned handle; `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a live boxed handle of type `C` that no other reference aliases.
pub(crate) unsafe fn try_mut<'a, C>(ptr: *mut C) -> Option<&'a mut C::RustType>
where
    C: Castable<Ownership = OwnershipBox>,
{
    // SAFETY: as promised by the caller; `as_mut` handles NULL.
    unsafe { ptr.cast::<C::RustType>().as_mut() }
}

/// Writes an output parameter, if it is not NULL. Returns whether it was written.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: non-NULL and valid for writes, as promised by the caller.
    unsafe { out.write(value) };
    true
}

/// Borrows a NUL-terminated C string as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char) -> Result<&'a str, smtps_result> {
    if ptr.is_null() {
        crate::error::set_last_error("a required string argument is NULL");
        return Err(smtps_result::NullParameter);
    }
    // SAFETY: non-NULL and NUL-terminated, as promised by the caller.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|_| {
        crate::error::set_last_error("a string argument is not valid UTF-8");
        smtps_result::InvalidParameter
    })
}

/// Like [`c_str`], with NULL meaning "none".
///
/// # Safety
/// As for [`c_str`].
pub(crate) unsafe fn c_str_opt<'a>(ptr: *const c_char) -> Result<Option<&'a str>, smtps_result> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { c_str(ptr) }.map(Some)
}

/// Borrows `len` bytes at `ptr`; a NULL `ptr` is allowed only with `len == 0`.
///
/// # Safety
/// `ptr` is valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn byte_slice<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return (len == 0).then_some(&[][..]);
    }
    // SAFETY: valid for `len` bytes, as promised by the caller.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` writable bytes at `ptr`; a NULL `ptr` is allowed only with `len == 0`.
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes for `'a` and aliased by nothing else.
pub(crate) unsafe fn byte_slice_mut<'a>(ptr: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if ptr.is_null() {
        return (len == 0).then_some(&mut [][..]);
    }
    // SAFETY: valid for `len` writable bytes, as promised by the caller.
    Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// A shared reference from a handle, or an early return of `SMTPS_RESULT_NULL_PARAMETER` (or
/// the return type's default).
macro_rules! try_ref_from_ptr {
    ($ptr:expr) => {
        // SAFETY: every export documents that its handle arguments are NULL or live.
        match unsafe { $crate::ffi::try_ref($ptr) } {
            Some(value) => value,
            None => return $crate::panic::NullParameterOrDefault::value(),
        }
    };
}

/// An exclusive reference from an owned handle, or an early return as for
/// [`try_ref_from_ptr`].
macro_rules! try_mut_from_ptr {
    ($ptr:expr) => {
        // SAFETY: every export documents that its handle arguments are NULL or live and not
        // used from another thread at the same time.
        match unsafe { $crate::ffi::try_mut($ptr) } {
            Some(value) => value,
            None => return $crate::panic::NullParameterOrDefault::value(),
        }
    };
}

/// A `&str` from a C string argument, or an early return of the error.
macro_rules! try_str {
    ($ptr:expr) => {
        // SAFETY: every export documents its string arguments as NUL-terminated or NULL.
        match unsafe { $crate::ffi::c_str($ptr) } {
            Ok(text) => text,
            Err(error) => return error.into(),
        }
    };
}

/// An `Option<&str>` from a nullable C string argument, or an early return of the error.
macro_rules! try_str_opt {
    ($ptr:expr) => {
        // SAFETY: every export documents its string arguments as NUL-terminated or NULL.
        match unsafe { $crate::ffi::c_str_opt($ptr) } {
            Ok(text) => text,
            Err(error) => return error.into(),
        }
    };
}

/// Fails with `SMTPS_RESULT_NULL_PARAMETER` if an output pointer is NULL.
macro_rules! check_out {
    ($($ptr:expr),+) => {
        if $($ptr.is_null())||+ {
            return $crate::panic::NullParameterOrDefault::value();
        }
    };
}

pub(crate) use {check_out, try_mut_from_ptr, try_ref_from_ptr, try_str, try_str_opt};
