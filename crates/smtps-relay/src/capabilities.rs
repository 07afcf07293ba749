//! What the backend's EHLO reply advertises (RFC 5321 §4.1.1.1, one keyword per line after
//! the first), and what the relay may therefore send it.

use crate::reply::BackendReply;

/// The backend's extensions, from its EHLO reply.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// CHUNKING: BDAT (RFC 3030).
    pub chunking: bool,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// BINARYMIME (RFC 3030).
    pub binary_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// REQUIRETLS (RFC 8689).
    pub requiretls: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// SIZE (RFC 1870): `Some(0)` for no stated limit.
    pub size: Option<u64>,
    /// XCLIENT (Postfix): the attribute names it accepts, upper case.
    pub xclient: Option<Vec<String>>,
}

impl Capabilities {
    /// Reads an EHLO reply; unknown keywords are ignored.
    #[must_use]
    pub fn from_ehlo(reply: &BackendReply) -> Self {
        let mut caps = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "BINARYMIME" => caps.binary_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "REQUIRETLS" => caps.requiretls = true,
                "STARTTLS" => caps.starttls = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "XCLIENT" => {
                    caps.xclient = Some(words.map(str::to_ascii_uppercase).collect());
                }
                _ => {}
            }
        }
        caps
    }

    /// Whether XCLIENT takes attribute `name`.
    #[must_use]
    pub fn xclient_takes(&self, name: &str) -> bool {
        self.xclient
            .as_ref()
            .is_some_and(|names| names.iter().any(|n| n == name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn postfix_ehlo_reply_is_read() {
        let reply = BackendReply {
            code: 250,
            lines: [
                "mx.example",
                "PIPELINING",
                "SIZE 10240000",
                "VRFY",
                "ETRN",
                "STARTTLS",
                "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
            .map(String::from)
            .to_vec(),
        };
        let caps = Capabilities::from_ehlo(&reply);
        assert!(caps.pipelining && caps.chunking && caps.eight_bit_mime && caps.dsn);
        assert!(caps.smtputf8 && caps.starttls && !caps.binary_mime && !caps.requiretls);
        assert_eq!(caps.size, Some(10_240_000));
        assert!(caps.xclient_takes("LOGIN") && caps.xclient_takes("DESTPORT"));
        assert!(!caps.xclient_takes("TTL"));
        let bare = BackendReply {
            code: 250,
            lines: vec!["exim.example Hello".into(), "size".into()],
        };
        let caps = Capabilities::from_ehlo(&bare);
        assert_eq!(caps.size, Some(0));
        assert!(caps.xclient.is_none());
    }
}
