//! The service manager's protocols, written out (no libsystemd): `sd_notify(3)` readiness,
//! reload and stop notices and the watchdog over `NOTIFY_SOCKET`, and the listening sockets a
//! supervisor hands over (`sd_listen_fds(3)`: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`).
//!
//! Everything here is a no-op when the variables are absent: smtpsd started by hand, by a
//! test or by another supervisor behaves as before.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Sends `sd_notify` messages to the socket named by `NOTIFY_SOCKET` (a path, or an abstract
/// name written with a leading `@`).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; inert without it (or when it is unusable, which
    /// is logged).
    #[must_use]
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { target: None };
        };
        match connect(name.as_encoded_bytes()) {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(error) => {
                log::warn!(
                    "smtpsd: NOTIFY_SOCKET={}: cannot use it: {error}",
                    name.to_string_lossy()
                );
                Self { target: None }
            }
        }
    }

    /// Whether a service manager listens.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: the listeners are open (connections queue from now on).
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd's `Type=notify-reload` requires.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading certificates\nMONOTONIC_USEC={}",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`: a graceful shutdown began.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: transactions in flight may finish");
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments); a failure is logged at debug
    /// level (the manager may be gone during shutdown).
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(error) = socket.send_to_addr(state.as_bytes(), addr)
        {
            log::debug!("smtpsd: sd_notify {state:?} failed: {error}");
        }
    }
}

/// The watchdog interval the service manager asks for: half of `WATCHDOG_USEC`, if it is set
/// (and `WATCHDOG_PID`, when set, is this process).
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// A thread sending `WATCHDOG=1` every `interval` until dropped.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging through `notifier`.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(notifier: std::sync::Arc<Notifier>, interval: Duration) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("smtpsd-watchdog".into())
            .spawn(move || {
                notifier.watchdog();
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    notifier.watchdog();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The listening sockets a supervisor handed over, as `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES` describe them: descriptor `3 + i` is named `names[i]` (systemd's
/// `FileDescriptorName=`, or `unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFds {
    /// One name per descriptor, in descriptor order from 3.
    pub names: Vec<String>,
}

impl ListenFds {
    /// The first descriptor passed (`SD_LISTEN_FDS_START`).
    pub const START: i32 = 3;

    /// Reads the variables for this process; `Ok(None)` when none were handed over (or they
    /// are meant for another process: `LISTEN_PID` is not ours).
    ///
    /// # Errors
    /// The variables are malformed; the message names the variable.
    pub fn from_env() -> Result<Option<Self>, String> {
        let var = |name| std::env::var(name).ok();
        Self::parse(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        )
    }

    /// [`Self::from_env`] on given values (testable).
    ///
    /// # Errors
    /// The variables are malformed; the message names the variable.
    pub fn parse(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
        our_pid: u32,
    ) -> Result<Option<Self>, String> {
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(None);
        };
        let pid: u32 = pid
            .parse()
            .map_err(|_| format!("LISTEN_PID={pid:?} is not a process id"))?;
        if pid != our_pid {
            return Ok(None);
        }
        let count: usize = fds
            .parse()
            .map_err(|_| format!("LISTEN_FDS={fds:?} is not a count"))?;
        let names: Vec<String> = match names {
            Some(names) => names.split(':').map(str::to_owned).collect(),
            None => vec!["unknown".to_owned(); count],
        };
        if names.len() != count {
            return Err(format!(
                "LISTEN_FDNAMES has {} names for LISTEN_FDS={count} descriptors",
                names.len()
            ));
        }
        Ok((count > 0).then_some(Self { names }))
    }
}

impl ListenFds {
    /// Takes the descriptors `3..3 + n` as listening TCP sockets, with their names. Call once,
    /// and only for the variables of this process ([`Self::from_env`]).
    ///
    /// # Errors
    /// A descriptor is not a listening TCP socket; the message names it.
    pub fn take(self) -> Result<Vec<(String, std::net::TcpListener)>, String> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut sockets = Vec::new();
        for (i, name) in (Self::START..).zip(self.names) {
            // Close-on-exec, as sd_listen_fds(3) sets it; and a check that `i` is open at all
            // (owning a closed descriptor would be an I/O-safety violation).
            // SAFETY: fcntl(2) on a descriptor number only sets that descriptor's flags.
            #[allow(unsafe_code)]
            let open = unsafe { libc::fcntl(i, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
            if !open {
                return Err(format!(
                    "descriptor {i} ({name}) is not open, though LISTEN_FDS counts it"
                ));
            }
            // SAFETY: LISTEN_PID names this process, so the supervisor opened descriptors
            // 3..3+LISTEN_FDS for it (sd_listen_fds(3)); nothing else in smtpsd uses them, and
            // `take` consumes the only ListenFds, so each is owned once.
            #[allow(unsafe_code)]
            let fd = unsafe { OwnedFd::from_raw_fd(i) };
            let socket = socket2::Socket::from(fd);
            let listening = socket.r#type().ok() == Some(socket2::Type::STREAM)
                && socket.is_listener().unwrap_or(false);
            if !listening {
                return Err(format!(
                    "descriptor {i} ({name}) is not a listening TCP socket; give the socket unit \
                     ListenStream= lines only"
                ));
            }
            sockets.push((name, std::net::TcpListener::from(socket)));
        }
        Ok(sockets)
    }
}

fn connect(name: &[u8]) -> io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
    use std::os::unix::net::SocketAddr;
    let addr = match name.strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name)?
        }
        None => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(name)))?
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock `MONOTONIC_USEC` is read against.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which lives for the call;
    // CLOCK_MONOTONIC exists on every Linux.
    #[allow(unsafe_code)]
    let result = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    if result != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_are_for_us_or_ignored() {
        let parse = |pid, fds, names| ListenFds::parse(pid, fds, names, 42);
        assert_eq!(parse(None, None, None), Ok(None));
        assert_eq!(parse(Some("41"), Some("2"), None), Ok(None));
        assert_eq!(
            parse(Some("42"), Some("2"), Some("submissions:submission")),
            Ok(Some(ListenFds {
                names: vec!["submissions".into(), "submission".into()]
            }))
        );
        assert_eq!(
            parse(Some("42"), Some("1"), None),
            Ok(Some(ListenFds {
                names: vec!["unknown".into()]
            }))
        );
        assert!(parse(Some("42"), Some("2"), Some("one")).is_err());
        assert!(parse(Some("x"), Some("2"), None).is_err());
        assert!(parse(Some("42"), Some("-1"), None).is_err());
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = crate::test_support::TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let (socket, addr) = connect(path.as_os_str().as_encoded_bytes()).unwrap();
        let notifier = Notifier {
            target: Some((socket, addr)),
        };
        notifier.reloading();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\n"), "{text}");
        assert!(text.contains("MONOTONIC_USEC="), "{text}");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("smtpsd-test-{}", std::process::id());
        let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let receiver = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let (socket, addr) = connect(format!("@{name}").as_bytes()).unwrap();
        Notifier {
            target: Some((socket, addr)),
        }
        .ready();
        let n = receiver.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"READY=1"));
    }
}
