//! The building blocks of `smtpsd`, the standalone SMTPS daemon on the `smtps` library.
//!
//! Each module is independent of the event loop and tested on its own:
//!
//! - [`maildir`]: durable Maildir delivery (`tmp/` → fsync → `new/` → fsync), and a sink.
//! - [`received`]: the `Received:` trace header (RFC 5321 §4.4, RFC 3848).
//! - [`users`]: the AUTH user file with argon2 password hashes.
//! - [`devcert`]: the self-signed certificate of `--dev` mode.
//! - [`config`]: the command line.
//! - [`systemd`]: sd_notify (ready, reload, stop, watchdog) and handed-over sockets.
//! - [`daemon`]: the options turned into a running server with a delivering handler.
//! - [`logger`]: the logger for the `log` facade: stderr, syslog or journald.
//! - [`metrics_http`]: `--metrics`: the counters for Prometheus on a listener of their own.
//! - [`certwatch`]: certificate expiry warnings, at start and daily.

#![deny(unsafe_code)] // allowed once: clock_gettime in `systemd`
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod certwatch;
pub mod config;
pub mod daemon;
pub mod devcert;
pub mod logger;
pub use smtps_maildir as maildir;
pub mod metrics_http;
pub use smtps_relay::received;
pub mod systemd;
pub mod ticket_keys;
pub mod users;

/// The system's host name, as the kernel knows it (`/proc/sys/kernel/hostname`), or `None`
/// when it cannot be read or is empty.
pub fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, unique per test, removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("smtpsd-test-{}-{n}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
