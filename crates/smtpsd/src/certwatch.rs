//! Certificate expiry: a warning at start and once a day for every certificate that expires
//! within [`WARN_WITHIN`], an error for every one that has expired, each naming its file. The
//! figure for monitoring is [`smtps_tls::CertificateInfo::seconds_to_expiry`].

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

use smtps_relay::logline::{Line, rfc3339};
use smtps_tls::{CertificateInfo, TlsAcceptor};

/// Certificates expiring within this are warned about: 14 days.
pub const WARN_WITHIN: Duration = Duration::from_secs(14 * 86_400);
/// How often the check repeats: once a day.
pub const CHECK_EVERY: Duration = Duration::from_secs(86_400);

/// The log lines (level and text) for the certificates that expire within [`WARN_WITHIN`] of
/// `now` or have expired; none for the others.
#[must_use]
pub fn check(certificates: &[CertificateInfo], now: SystemTime) -> Vec<(log::Level, String)> {
    let warn_within = i64::try_from(WARN_WITHIN.as_secs()).unwrap_or(i64::MAX);
    certificates
        .iter()
        .filter_map(|cert| {
            let left = cert.seconds_to_expiry(now);
            let (level, event, action) = if left <= 0 {
                (
                    log::Level::Error,
                    "certificate_expired",
                    "clients refuse it: renew it and send SIGHUP",
                )
            } else if left <= warn_within {
                (
                    log::Level::Warn,
                    "certificate_expiring",
                    "renew it and send SIGHUP",
                )
            } else {
                return None;
            };
            let line = Line::new(None, event)
                .field("file", &cert.source)
                .field("subject", &cert.subject)
                .field("not_after", rfc3339(cert.not_after))
                .field("seconds_left", left)
                .field("action", action)
                .finish();
            Some((level, line))
        })
        .collect()
}

/// Logs [`check`] for what `acceptor` serves now.
pub fn log_expiry(acceptor: &TlsAcceptor, now: SystemTime) {
    for (level, line) in check(&acceptor.certificates(), now) {
        log::log!(level, "{line}");
    }
}

/// The daily check: runs while this value lives.
#[derive(Debug)]
pub struct Watch {
    _stop: Sender<()>,
}

/// Checks now, then every [`CHECK_EVERY`] on a thread of its own (after a `SIGHUP` the
/// reloaded certificates are the ones checked), until the returned [`Watch`] is dropped.
#[must_use]
pub fn start(acceptor: Arc<TlsAcceptor>) -> Watch {
    log_expiry(&acceptor, SystemTime::now());
    let (stop, stopped) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("smtpsd-certwatch".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
                log_expiry(&acceptor, SystemTime::now());
            }
        });
    if let Err(error) = spawned {
        log::error!("smtpsd: cannot start the daily certificate check: {error}");
    }
    Watch { _stop: stop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtps_tls::{CertificateSource, TlsSettings};

    fn acceptor_valid_until(not_after: time_offset::Days) -> TlsAcceptor {
        let mut params = rcgen::CertificateParams::new(vec!["mx.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, not_after.0);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TlsSettings::new()
            .default_certificate(CertificateSource::pem(cert.pem(), key.serialize_pem()))
            .build()
            .unwrap()
    }

    mod time_offset {
        #[derive(Clone, Copy)]
        pub(super) struct Days(pub(super) u8);
    }

    /// 2030-01-01T00:00:00Z.
    fn new_year_2030() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
    }

    #[test]
    fn certificates_far_from_expiry_say_nothing() {
        let acceptor = acceptor_valid_until(time_offset::Days(31));
        assert!(check(&acceptor.certificates(), new_year_2030()).is_empty());
    }

    #[test]
    fn a_certificate_expiring_within_14_days_is_a_warning_naming_its_origin() {
        let acceptor = acceptor_valid_until(time_offset::Days(11));
        let lines = check(&acceptor.certificates(), new_year_2030());
        assert_eq!(lines.len(), 1, "{lines:?}");
        let (level, line) = &lines[0];
        assert_eq!(*level, log::Level::Warn);
        assert!(
            line.starts_with("smtps: event=certificate_expiring file=\"<in-memory"),
            "{line}"
        );
        assert!(
            line.contains(" not_after=2030-01-11T00:00:00.000Z seconds_left=864000 "),
            "{line}"
        );
    }

    #[test]
    fn an_expired_certificate_is_an_error() {
        let acceptor = acceptor_valid_until(time_offset::Days(1));
        let later = new_year_2030() + Duration::from_secs(3600);
        let lines = check(&acceptor.certificates(), later);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].0, log::Level::Error);
        assert!(
            lines[0].1.contains("event=certificate_expired "),
            "{lines:?}"
        );
        assert!(lines[0].1.contains(" seconds_left=-3600 "), "{lines:?}");
    }
}
