//! [`Mode`]: how a listener (and so each of its connections) speaks TLS.

use std::fmt;
use std::str::FromStr;

/// How a connection begins, and whether it must switch to TLS: the one listener mode shared by
/// the engine, the mio server, `smtpsd` (`--listen ADDR=MODE`) and the C ABI (`SMTPS_MODE_*`).
///
/// Written and parsed as `implicit-tls`, `starttls`, `starttls-required` and `plain`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// TLS from the first octet: submission on port 465 (RFC 8314 §3.3). The session starts
    /// after the handshake.
    ImplicitTls,
    /// Plaintext with STARTTLS offered (RFC 3207): relay on port 25.
    StartTls,
    /// Plaintext with STARTTLS offered and required before MAIL (`530 5.7.0`): submission on
    /// port 587 without "partial security" (RFC 8314 §3.1).
    StartTlsRequired,
    /// Plaintext only, no STARTTLS: for loopback, or behind a TLS terminator.
    Plain,
}

impl Mode {
    /// Every mode, in the order of the C enum.
    pub const ALL: [Self; 4] = [
        Self::ImplicitTls,
        Self::StartTls,
        Self::StartTlsRequired,
        Self::Plain,
    ];

    /// Whether the mode needs a certificate.
    #[must_use]
    pub fn uses_tls(self) -> bool {
        self != Self::Plain
    }

    /// Whether the session offers STARTTLS (RFC 3207 §4).
    #[must_use]
    pub fn offers_starttls(self) -> bool {
        matches!(self, Self::StartTls | Self::StartTlsRequired)
    }

    /// The name `--listen` and logs use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImplicitTls => "implicit-tls",
            Self::StartTls => "starttls",
            Self::StartTlsRequired => "starttls-required",
            Self::Plain => "plain",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is none of `implicit-tls`, `starttls`, `starttls-required`, `plain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown listener mode `{}`: expected implicit-tls, starttls, starttls-required or plain",
            self.0
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_parses_back_from_its_name() {
        for mode in Mode::ALL {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_choices() {
        let error = "tls".parse::<Mode>().expect_err("not a mode");
        assert!(error.to_string().contains("starttls-required"), "{error}");
    }
}
