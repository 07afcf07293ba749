//! The AUTH user file: who may authenticate (AUTH PLAIN and LOGIN, RFC 4954, over TLS only),
//! with passwords stored as argon2 hashes in PHC string form.
//!
//! ```text
//! # smtpsd users: name:hash, one a line; make hashes with `smtpsd hash-password`
//! alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$...
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. A name cannot contain `:` or
//! whitespace. [`UserFile::verify`] costs one argon2 verification whether or not the user
//! exists, so response times do not tell which names are valid.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// An argon2id hash (default parameters, as [`hash_password`] makes) of a random password
/// nobody knows: an unknown user is verified against it so that the failure takes as long as
/// a wrong password for a known user.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$+VDFckADTtQDn3rTMw4N0w$dsJ7Vv3oT8rEbmFDUqqzO0XppiAtwpd4+nyEzosp9ag";

/// The users loaded from a user file.
#[derive(Clone)]
pub struct UserFile {
    path: PathBuf,
    users: HashMap<String, String>,
}

impl UserFile {
    /// Reads and parses the user file at `path`. Warns (through `log`) if the file is readable
    /// by other users.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, UsersError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o004 != 0
        {
            log::warn!(
                "the user file {} is readable by everyone; consider chmod 600",
                path.display()
            );
        }
        Self::parse(path, &text)
    }

    /// Parses user file text; `path` is used only in error messages.
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<Self, UsersError> {
        let path = path.as_ref();
        let mut users = HashMap::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |reason: &'static str| UsersError::Syntax {
                path: path.to_path_buf(),
                line: line_no,
                reason,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| syntax("expected `name:$argon2id$...`"))?;
            if user.is_empty() {
                return Err(syntax("the user name is empty"));
            }
            if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(syntax("the user name contains whitespace"));
            }
            if !hash.starts_with("$argon2") {
                return Err(syntax(
                    "only argon2 hashes (PHC strings, `$argon2id$...`) are supported; \
                     make one with `smtpsd hash-password`",
                ));
            }
            let parsed = PasswordHash::new(hash).map_err(|_| {
                syntax("the argon2 hash is malformed; make a new one with `smtpsd hash-password`")
            })?;
            if !matches!(
                parsed.algorithm.as_str(),
                "argon2id" | "argon2i" | "argon2d"
            ) {
                return Err(syntax("unknown argon2 variant; use argon2id"));
            }
            if parsed.hash.is_none() || argon2::Params::try_from(&parsed).is_err() {
                return Err(syntax(
                    "the argon2 hash has no hash value or bad parameters; \
                     make a new one with `smtpsd hash-password`",
                ));
            }
            if let Some(&first_line) = first_seen.get(user) {
                return Err(UsersError::Duplicate {
                    path: path.to_path_buf(),
                    line: line_no,
                    first_line,
                    user: user.to_owned(),
                });
            }
            first_seen.insert(user.to_owned(), line_no);
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Self {
            path: path.to_path_buf(),
            users,
        })
    }

    /// Whether `password` is `user`'s password. Costs one argon2 verification either way; the
    /// comparison of the hashes is constant-time (done by `argon2`).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            // Unreachable: every stored hash was parsed at load, and the dummy is valid.
            return false;
        };
        let matches = Argon2::default().verify_password(password, &parsed).is_ok();
        matches && known
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file lists no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The file the users were loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for UserFile {
    // Names only: hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("UserFile")
            .field("path", &self.path)
            .field("users", &names)
            .finish()
    }
}

/// Hashes `password` for a user file: argon2id with the `argon2` crate's default parameters
/// (RFC 9106's second recommended option scaled to OWASP's minimum: m=19 MiB, t=2, p=1) and a
/// random 128-bit salt. Returns the PHC string, `$argon2id$v=19$...`.
pub fn hash_password(password: &[u8]) -> Result<String, UsersError> {
    let mut salt = [0_u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| UsersError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Hash(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password, &salt)
        .map_err(|e| UsersError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Why a user file could not be loaded, or a password not hashed.
#[derive(Debug)]
#[non_exhaustive]
pub enum UsersError {
    /// The file could not be read.
    Read {
        /// The user file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A line is not `name:hash`.
    Syntax {
        /// The user file.
        path: PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A user is listed twice.
    Duplicate {
        /// The user file.
        path: PathBuf,
        /// The second line naming the user.
        line: usize,
        /// The first line naming the user.
        first_line: usize,
        /// The user name.
        user: String,
    },
    /// Hashing failed (no randomness for the salt, or an argon2 error).
    Hash(String),
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(
                f,
                "cannot read the user file {}: {source}; check the path given to --users",
                path.display()
            ),
            Self::Syntax { path, line, reason } => {
                write!(f, "{}:{line}: {reason}", path.display())
            }
            Self::Duplicate {
                path,
                line,
                first_line,
                user,
            } => write!(
                f,
                "{}:{line}: user {user:?} is already listed on line {first_line}; keep one",
                path.display()
            ),
            Self::Hash(reason) => write!(f, "cannot hash the password: {reason}"),
        }
    }
}

impl std::error::Error for UsersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    /// A cheap hash (m=8 KiB, t=1) so tests stay fast in debug builds; verification reads the
    /// parameters from the PHC string.
    fn cheap_hash(password: &[u8]) -> String {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon.hash_password(password, &salt).unwrap().to_string()
    }

    #[test]
    fn verify_accepts_the_right_password_only() {
        let text = format!(
            "# comment\n\n  alice:{}\nbob:{}\n",
            cheap_hash(b"wonderland"),
            cheap_hash(b"builder")
        );
        let users = UserFile::parse("users", &text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify("alice", b"wonderland"));
        assert!(users.verify("bob", b"builder"));
        assert!(!users.verify("alice", b"builder"));
        assert!(!users.verify("Alice", b"wonderland"));
        assert!(!users.verify("alice", b""));
    }

    #[test]
    fn unknown_user_is_rejected_even_with_the_dummy_password() {
        let users = UserFile::parse("users", "").unwrap();
        assert!(users.is_empty());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!users.verify("nobody", b"anything"));
    }

    #[test]
    fn hash_password_makes_an_argon2id_string_that_verifies() {
        let hash = hash_password(b"s3cret").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_ne!(hash, hash_password(b"s3cret").unwrap(), "salts differ");
        let users = UserFile::parse("users", &format!("carol:{hash}")).unwrap();
        assert!(users.verify("carol", b"s3cret"));
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let hash = cheap_hash(b"x");
        let cases = [
            ("# ok\nno-colon-here\n", 2, "expected"),
            (":$argon2id$v=19$m=8,t=1,p=1$abc$def\n", 1, "empty"),
            ("a b:{hash}\n", 1, "whitespace"),
            ("alice:plaintext\n", 1, "only argon2"),
            ("alice:$6$salt$abcdef\n", 1, "only argon2"),
            ("alice:$argon2id$v=19$garbage\n", 1, "no hash value"),
            (
                "alice:$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n",
                1,
                "bad parameters",
            ),
            ("alice:$argon2id$$$\n", 1, "malformed"),
            (
                "alice:$argon2x$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n",
                1,
                "variant",
            ),
        ];
        for (text, line, needle) in cases {
            let text = text.replace("{hash}", &hash);
            let err = UserFile::parse("/etc/smtpsd/users", &text).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("/etc/smtpsd/users:{line}: ")),
                "{message}"
            );
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn a_user_listed_twice_is_an_error_naming_both_lines() {
        let hash = cheap_hash(b"x");
        let text = format!("alice:{hash}\n#\nalice:{hash}\n");
        let err = UserFile::parse("users", &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "users:3: user \"alice\" is already listed on line 1; keep one"
        );
    }

    #[test]
    fn load_reads_the_file_and_a_missing_file_names_its_path() {
        let dir = TempDir::new("users");
        let path = dir.path().join("users");
        std::fs::write(&path, format!("dave:{}\n", cheap_hash(b"pw"))).unwrap();
        let users = UserFile::load(&path).unwrap();
        assert!(users.verify("dave", b"pw"));
        assert_eq!(users.path(), path);
        assert!(!format!("{users:?}").contains("argon2"));

        let missing = dir.path().join("missing");
        let err = UserFile::load(&missing).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("--users"), "{err}");
    }
}
