//! The `--ticket-keys` file: session-ticket keys shared by every node behind a balancer, so
//! that a client resumes its TLS session (RFC 8446 §2.2, RFC 5077) on whichever node the
//! balancer picks next.
//!
//! # Format
//!
//! One key a line, base64 (RFC 4648 §4) of 48 random bytes (a 16-byte key name and a 32-byte
//! AES-256-GCM key; `smtpsd gen-ticket-key` prints one). The first key seals new tickets;
//! it and the next [`TicketKeys::MAX_PREVIOUS`] open them. Blank lines and lines starting
//! with `#` are ignored.
//!
//! # Rotation
//!
//! Daily, on every node: put a new key on the first line and keep the previous first key on
//! the second (drop the oldest), then `SIGHUP`. Do it in two steps across a fleet — first
//! add the new key on the *second* line everywhere and reload, then move it to the first —
//! so that no node seals with a key another node cannot open yet.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64ct::{Base64, Encoding};
use smtps_tls::{TicketKey, TicketKeys};

/// Why a ticket key file cannot be used; names the file and the line.
#[derive(Debug)]
#[non_exhaustive]
pub enum TicketKeyError {
    /// The file cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not base64 of 48 bytes.
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// No key in the file.
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The TLS library refused a key.
    Tls(smtps_tls::Error),
}

impl fmt::Display for TicketKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(
                f,
                "cannot read the ticket key file {}: {source}",
                path.display()
            ),
            Self::BadLine { path, line } => write!(
                f,
                "{}:{line}: not a ticket key: each line holds the base64 of 48 random bytes \
                 (make one with `smtpsd gen-ticket-key`)",
                path.display()
            ),
            Self::Empty { path } => write!(
                f,
                "the ticket key file {} holds no key; add one made with `smtpsd gen-ticket-key`",
                path.display()
            ),
            Self::Tls(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for TicketKeyError {}

/// The keys of a file, first (sealing) key first.
///
/// # Errors
/// [`TicketKeyError`] naming the file, and the line at fault.
pub fn read(path: &Path) -> Result<Vec<TicketKey>, TicketKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| TicketKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || TicketKeyError::BadLine {
            path: path.to_owned(),
            line: index + 1,
        };
        let mut bytes = [0u8; TicketKey::LEN];
        let decoded = Base64::decode(line, &mut bytes).map_err(|_| bad())?;
        if decoded.len() != TicketKey::LEN {
            return Err(bad());
        }
        keys.push(TicketKey::from_bytes(&bytes).map_err(|_| bad())?);
    }
    if keys.is_empty() {
        return Err(TicketKeyError::Empty {
            path: path.to_owned(),
        });
    }
    if keys.len() > 1 + TicketKeys::MAX_PREVIOUS {
        log::warn!(
            "smtpsd: {} holds {} keys; only the first {} are used",
            path.display(),
            keys.len(),
            1 + TicketKeys::MAX_PREVIOUS
        );
    }
    Ok(keys)
}

/// Loads the file into a new key set.
///
/// # Errors
/// As [`read`].
pub fn load(path: &Path) -> Result<Arc<TicketKeys>, TicketKeyError> {
    let keys = read(path)?;
    let set = TicketKeys::new(&keys[0]).map_err(TicketKeyError::Tls)?;
    set.set(&keys[0], &keys[1..]).map_err(TicketKeyError::Tls)?;
    Ok(set)
}

/// Rereads the file into `set` (on `SIGHUP`); on error the old keys stay.
///
/// # Errors
/// As [`read`].
pub fn reload(set: &TicketKeys, path: &Path) -> Result<usize, TicketKeyError> {
    let keys = read(path)?;
    set.set(&keys[0], &keys[1..]).map_err(TicketKeyError::Tls)?;
    Ok(keys.len().min(1 + TicketKeys::MAX_PREVIOUS))
}

/// A new random key, as a line for the file.
///
/// # Errors
/// The random generator failed.
pub fn generate_line() -> Result<String, smtps_tls::Error> {
    Ok(Base64::encode_string(&TicketKey::generate()?.to_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("smtpsd-ticket-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn generated_lines_read_back_first_key_first() {
        let (a, b) = (generate_line().unwrap(), generate_line().unwrap());
        let path = file("ok", &format!("# rotated daily\n{a}\n\n  {b}  \n"));
        let keys = read(&path).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(Base64::encode_string(&keys[0].to_bytes()), a);
        assert_eq!(Base64::encode_string(&keys[1].to_bytes()), b);
        let set = load(&path).unwrap();
        assert_eq!(reload(&set, &path).unwrap(), 2);
    }

    #[test]
    fn bad_files_are_named_with_the_line() {
        let short = Base64::encode_string(&[7u8; 32]);
        let path = file("bad", &format!("{}\n{short}\n", generate_line().unwrap()));
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains(&format!("{}:2:", path.display())), "{error}");
        let path = file("junk", "not base64!\n");
        assert!(read(&path).unwrap_err().to_string().contains(":1:"));
        let path = file("empty", "# nothing yet\n");
        assert!(matches!(read(&path), Err(TicketKeyError::Empty { .. })));
        let missing = Path::new("/nonexistent/smtpsd/keys");
        let error = read(missing).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/smtpsd/keys"), "{error}");
    }
}
