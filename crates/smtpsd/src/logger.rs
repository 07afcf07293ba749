//! The logger for the `log` facade: one line per record, to standard error (with an RFC 3339
//! UTC timestamp), to the local syslog daemon (`/dev/log`), or to systemd's journal through
//! standard error with `sd-daemon(3)` priority prefixes. The lines' format is in
//! `docs/LOGGING.md`.

use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::SystemTime;

use smtps_relay::logline::rfc3339;

/// Where log lines go (`--log-target`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogTarget {
    /// Standard error: `2026-03-01T12:00:00.123Z INFO smtps: ...`.
    #[default]
    Stderr,
    /// The local syslog daemon on `/dev/log`: RFC 3164 datagrams, facility `mail`,
    /// `<22>smtpsd[PID]: smtps: ...` (the daemon adds the time and host).
    Syslog,
    /// systemd's journal: standard error with a `<N>` priority prefix (`sd-daemon(3)`) and no
    /// timestamp (the journal keeps its own), for a service whose stderr is the journal.
    Journald,
}

impl FromStr for LogTarget {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "stderr" => Ok(Self::Stderr),
            "syslog" => Ok(Self::Syslog),
            "journald" => Ok(Self::Journald),
            _ => Err(()),
        }
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stderr => "stderr",
            Self::Syslog => "syslog",
            Self::Journald => "journald",
        })
    }
}

/// The syslog socket of `--log-target syslog`.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Why the logger could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoggerError {
    /// The syslog socket could not be reached.
    Syslog(std::io::Error),
}

impl fmt::Display for LoggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syslog(error) => write!(
                f,
                "cannot log to syslog: {SYSLOG_SOCKET}: {error}; is a syslog daemon (rsyslog, \
                 syslog-ng, systemd-journald) running? Or pass --log-target stderr"
            ),
        }
    }
}

impl std::error::Error for LoggerError {}

/// Installs the logger with the given level and target. Installing twice keeps the first.
///
/// # Errors
/// `--log-target syslog` when `/dev/log` cannot be reached.
pub fn init(level: log::LevelFilter, target: LogTarget) -> Result<(), LoggerError> {
    let sink = match target {
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::Journald => Sink::Journald,
        LogTarget::Syslog => {
            Sink::Syslog(Syslog::connect(Path::new(SYSLOG_SOCKET)).map_err(LoggerError::Syslog)?)
        }
    };
    if LOGGER.set(Logger { sink }).is_ok()
        && let Some(logger) = LOGGER.get()
        && log::set_logger(logger).is_ok()
    {
        log::set_max_level(level);
    }
    Ok(())
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

struct Logger {
    sink: Sink,
}

enum Sink {
    Stderr,
    Journald,
    Syslog(Syslog),
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        match &self.sink {
            Sink::Stderr => stderr(&stderr_line(SystemTime::now(), level, record.args())),
            Sink::Journald => stderr(&format!("<{}>{}\n", severity(level), record.args())),
            Sink::Syslog(syslog) => {
                if let Err(error) = syslog.send(level, record.args()) {
                    // The daemon went away: the line is not lost, and says why it is here.
                    stderr(&stderr_line(
                        SystemTime::now(),
                        level,
                        &format_args!("{} (syslog: {error})", record.args()),
                    ));
                }
            }
        }
    }

    fn flush(&self) {}
}

/// A standard-error line: `TIMESTAMP LEVEL MESSAGE\n`.
fn stderr_line(now: SystemTime, level: log::Level, message: &dyn fmt::Display) -> String {
    format!("{} {level} {message}\n", rfc3339(now))
}

/// One write per line keeps lines from different threads whole.
fn stderr(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The syslog severity of a level (RFC 5424 §6.2.1), also the `sd-daemon(3)` prefix.
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// The `mail` facility (RFC 5424 §6.2.1).
const FACILITY_MAIL: u8 = 2;
/// Longest datagram sent; longer lines are cut (syslog daemons take at least 2 KiB, most 8).
const MAX_DATAGRAM: usize = 8192;

/// RFC 3164 datagrams to a local syslog socket.
struct Syslog {
    socket: UnixDatagram,
    tag: String,
}

impl Syslog {
    fn connect(path: &Path) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self {
            socket,
            tag: format!("smtpsd[{}]", std::process::id()),
        })
    }

    fn send(&self, level: log::Level, message: &fmt::Arguments<'_>) -> std::io::Result<()> {
        let datagram = syslog_datagram(&self.tag, level, message);
        self.socket.send(&datagram).map(|_| ())
    }
}

/// `<PRI>TAG: MESSAGE`, without the optional timestamp and host (RFC 3164 §4.3.3: the
/// receiving daemon adds them), at most [`MAX_DATAGRAM`] octets, with no line break.
fn syslog_datagram(tag: &str, level: log::Level, message: &dyn fmt::Display) -> Vec<u8> {
    let pri = FACILITY_MAIL * 8 + severity(level);
    let mut text = format!("<{pri}>{tag}: {message}");
    text.retain(|c| c != '\n' && c != '\r');
    let mut bytes = text.into_bytes();
    bytes.truncate(MAX_DATAGRAM);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stderr_lines_start_with_an_rfc3339_timestamp_and_the_level() {
        let at = UNIX_EPOCH + Duration::from_millis(1_767_225_600_042);
        assert_eq!(
            stderr_line(at, log::Level::Warn, &"smtps: event=x"),
            "2026-01-01T00:00:00.042Z WARN smtps: event=x\n"
        );
    }

    #[test]
    fn targets_parse_and_print_alike() {
        for target in [LogTarget::Stderr, LogTarget::Syslog, LogTarget::Journald] {
            assert_eq!(target.to_string().parse::<LogTarget>(), Ok(target));
        }
        assert!("file".parse::<LogTarget>().is_err());
    }

    #[test]
    fn syslog_datagrams_reach_a_unix_socket_with_the_mail_facility() {
        let dir = TempDir::new("syslog");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::connect(&path).unwrap();
        syslog
            .send(log::Level::Warn, &format_args!("smtps: event=a\nb"))
            .unwrap();
        syslog
            .send(log::Level::Info, &format_args!("{}", "x".repeat(10_000)))
            .unwrap();
        let mut buf = vec![0; 65_536];
        let n = server.recv(&mut buf).unwrap();
        let expected = format!("<20>smtpsd[{}]: smtps: event=ab", std::process::id());
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), expected);
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(n, MAX_DATAGRAM);
        assert!(buf.starts_with(b"<22>smtpsd["));
    }

    #[test]
    fn a_missing_syslog_socket_is_named_with_what_to_do() {
        let error = LoggerError::Syslog(
            Syslog::connect(Path::new("/nonexistent/log"))
                .err()
                .unwrap(),
        );
        let text = error.to_string();
        assert!(
            text.contains("/dev/log") && text.contains("--log-target stderr"),
            "{text}"
        );
    }
}
