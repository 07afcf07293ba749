//! The operator's log lines, in one place: the session summary, the message line and the AUTH
//! lines that smtpsd (delivering or relaying) writes, in the stable `key=value` form documented
//! in `docs/LOGGING.md`. Anything that formats one of these lines goes through [`Line`].
//!
//! ```text
//! smtps: session=7 event=session_summary client=192.0.2.10:50412 listener=0.0.0.0:465 tls=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 sni=mx.example.org user=alice messages=1 bytes=1532 result=quit duration=0.412
//! smtps: session=7 event=message_summary queue_id=1767225600.M1P2Q3.mx from=<a@example.org> nrcpt=1 to=<b@example.net> size=1532 result=accepted code=250
//! smtps: session=9 event=auth_failed client=203.0.113.5 user=admin failures=3
//! smtps: session=9 event=auth_throttled client=203.0.113.5 user=admin by=client failures=5 action=reply
//! ```
//!
//! A value is written bare when it is a non-empty run of printable ASCII other than space,
//! `"`, `\` and `=`, and is not `-`; otherwise it is quoted: `"` … `"`, with `\"`, `\\` and
//! `\xHH` (any octet outside printable ASCII) escaped. A bare `-` means "none".

use std::fmt::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smtps_server::{CloseReason, SessionInfo};

/// The keys of the session line, in order (`docs/LOGGING.md`).
pub const SESSION_KEYS: &[&str] = &[
    "session", "event", "client", "listener", "tls", "cipher", "sni", "user", "messages", "bytes",
    "result", "duration",
];

/// The keys of the message line, in order (`docs/LOGGING.md`).
pub const MESSAGE_KEYS: &[&str] = &[
    "session", "event", "queue_id", "from", "nrcpt", "to", "size", "result", "code",
];

/// One log line under construction: `smtps: ` then `key=value` pairs separated by one space.
#[derive(Debug, Clone)]
pub struct Line {
    text: String,
}

impl Line {
    /// A line for `event` of session `session` (`session=ID event=NAME`), or of no session
    /// (`event=NAME` alone).
    #[must_use]
    pub fn new(session: Option<u64>, event: &str) -> Self {
        let mut line = Self {
            text: String::from("smtps:"),
        };
        if let Some(id) = session {
            line = line.field("session", id);
        }
        line.field("event", event)
    }

    /// Adds `key=value`; `value` is quoted if it needs to be.
    #[must_use]
    pub fn field(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.text.push(' ');
        self.text.push_str(key);
        self.text.push('=');
        let start = self.text.len();
        let _ = write!(self.text, "{value}");
        let value = self.text.split_off(start);
        push_value(&mut self.text, &value);
        self
    }

    /// Adds `key=value`, or `key=-` when there is no value.
    #[must_use]
    pub fn optional(self, key: &str, value: Option<impl fmt::Display>) -> Self {
        match value {
            Some(value) => self.field(key, value),
            None => self.absent(key),
        }
    }

    /// Adds `key=-`: the value is absent.
    #[must_use]
    pub fn absent(mut self, key: &str) -> Self {
        self.text.push(' ');
        self.text.push_str(key);
        self.text.push_str("=-");
        self
    }

    /// The finished line (without a line ending).
    #[must_use]
    pub fn finish(self) -> String {
        self.text
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The summary line of a finished session.
///
/// `bytes` counts the message octets the client sent (every message that reached its end,
/// accepted or not); `duration` runs from the connection to its close.
#[must_use]
pub fn session(info: &SessionInfo, reason: &CloseReason, bytes: u64, duration: Duration) -> String {
    let tls = info.tls.as_ref();
    let reason = reason.to_string();
    // `CloseReason` displays as a keyword, with the cause in parentheses for some.
    let (result, detail) = match reason.split_once(" (") {
        Some((word, rest)) => (word.to_owned(), Some(rest.trim_end_matches(')').to_owned())),
        None => (reason, None),
    };
    let line = Line::new(Some(info.id), "session_summary")
        .field("client", info.peer)
        .field("listener", info.local)
        .optional("tls", tls.map(smtps_tls::TlsInfo::version_name))
        .optional("cipher", tls.map(smtps_tls::TlsInfo::cipher_suite_name))
        .optional("sni", tls.and_then(|t| t.server_name.as_deref()))
        .optional("user", info.auth_id.as_deref())
        .field("messages", info.messages)
        .field("bytes", bytes)
        .field("result", result)
        .field(
            "duration",
            format_args!("{}.{:03}", duration.as_secs(), duration.subsec_millis()),
        );
    match detail {
        Some(detail) => line.field("error", detail).finish(),
        None => line.finish(),
    }
}

/// How a message ended, for [`MessageLog::line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageResult {
    /// Accepted (`2xx`): the message is the host's.
    Accepted(u16),
    /// Refused with this code (`4xx` or `5xx`).
    Refused(u16),
}

/// The envelope of a message as the message line shows it, taken at its end (when the
/// queue id and the verdict may still be unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLog {
    session: u64,
    from: String,
    recipients: Vec<String>,
    size: u64,
}

impl MessageLog {
    /// The message that just ended in `info`'s session, `size` octets long.
    #[must_use]
    pub fn new(info: &SessionInfo, size: u64) -> Self {
        Self {
            session: info.id,
            from: info.mail_from.clone().unwrap_or_default(),
            recipients: info.recipients.clone(),
            size,
        }
    }

    /// The message line once the verdict (and the queue id, if there is one) is known.
    #[must_use]
    pub fn line(&self, queue_id: Option<&str>, result: MessageResult) -> String {
        let to = self
            .recipients
            .iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(",");
        let (word, code) = match result {
            MessageResult::Accepted(code) => ("accepted", code),
            MessageResult::Refused(code) => ("refused", code),
        };
        let line = Line::new(Some(self.session), "message_summary")
            .optional("queue_id", queue_id)
            .field("from", format_args!("<{}>", self.from))
            .field("nrcpt", self.recipients.len());
        let line = if to.is_empty() {
            line.absent("to")
        } else {
            line.field("to", to)
        };
        line.field("size", self.size)
            .field("result", word)
            .field("code", code)
            .finish()
    }
}

/// `time` in RFC 3339 form, UTC, to the millisecond: `2026-03-01T12:00:00.123Z` (times
/// before 1970 print as the epoch).
#[must_use]
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = crate::received::civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// Writes `value` bare or quoted (see the module documentation).
fn push_value(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && value != "-"
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='));
    if bare {
        out.push_str(value);
        return;
    }
    out.push('"');
    for byte in value.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' ' => out.push(' '),
            b if b.is_ascii_graphic() => out.push(char::from(b)),
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bare_or_quoted() {
        let cases: &[(&str, &str)] = &[
            ("alice", "k=alice"),
            ("<a@b.example>", "k=<a@b.example>"),
            ("", "k=\"\""),
            ("-", "k=\"-\""),
            ("two words", "k=\"two words\""),
            ("a=b", "k=\"a=b\""),
            ("say \"hi\"\\", "k=\"say \\\"hi\\\"\\\\\""),
            ("tab\there", "k=\"tab\\x09here\""),
            ("caf\u{e9}", "k=\"caf\\xc3\\xa9\""),
            ("line\r\nbreak", "k=\"line\\x0d\\x0abreak\""),
        ];
        for (value, expected) in cases {
            let line = Line::new(None, "x").field("k", value).finish();
            assert_eq!(line, format!("smtps: event=x {expected}"), "{value:?}");
        }
    }

    #[test]
    fn rfc3339_timestamps_are_utc_with_milliseconds() {
        let at = |secs: u64, millis: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn absent_values_are_a_dash() {
        let line = Line::new(Some(4), "y")
            .optional("user", None::<&str>)
            .optional("sni", Some("mx"))
            .finish();
        assert_eq!(line, "smtps: session=4 event=y user=- sni=mx");
    }
}
