//! Borrowed views handed to C: a pointer and a length, valid only as long as each function
//! says (usually the callback or until the next call on the same object). Never NUL-terminated:
//! print with `printf("%.*s", (int)s.len, s.data)`. Modelled on rustls-ffi
//! `librustls/src/rslice.rs`.

use std::ffi::c_char;

/// A borrowed UTF-8 string: `len` bytes at `data`, not NUL-terminated.
///
/// `data` is never NULL (an empty string points at a static empty string). The bytes belong
/// to the library; the view says how long they stay valid.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct smtps_str {
    /// The first byte.
    pub data: *const c_char,
    /// The number of bytes.
    pub len: usize,
}

/// Borrowed bytes: `len` bytes at `data`.
///
/// `data` is never NULL (empty bytes point at a static empty buffer). The bytes belong to the
/// library; the view says how long they stay valid.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct smtps_bytes {
    /// The first byte.
    pub data: *const u8,
    /// The number of bytes.
    pub len: usize,
}

impl smtps_str {
    /// Views `text`; the caller guarantees `text` outlives the view's documented validity.
    pub(crate) fn new(text: &str) -> Self {
        Self {
            data: text.as_ptr().cast::<c_char>(),
            len: text.len(),
        }
    }

    /// Views `text`, or the empty string for `None`.
    pub(crate) fn opt(text: Option<&str>) -> Self {
        Self::new(text.unwrap_or(""))
    }
}

impl Default for smtps_str {
    fn default() -> Self {
        Self::new("")
    }
}

impl smtps_bytes {
    /// Views `bytes`; the caller guarantees they outlive the view's documented validity.
    pub(crate) fn new(bytes: &[u8]) -> Self {
        Self {
            data: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

impl Default for smtps_bytes {
    fn default() -> Self {
        Self::new(&[])
    }
}
