//! Durable Maildir delivery for smtps hosts, and a discarding sink for benchmarks.
//!
//! A message is written into `tmp/` under a unique name, flushed and `fsync`ed, renamed into
//! `new/`, and the `new/` directory is `fsync`ed — only then does [`Delivery::commit`] return
//! the [`QueueId`] a host may answer `250` with (RFC 5321 §6.1: the `250` is a promise to
//! deliver). A delivery that is aborted, dropped or fails leaves nothing in `new/` (the layout
//! is the one of <https://cr.yp.to/proto/maildir.html>).
//!
//! File names are `<unix seconds>.P<pid>Q<counter>R<random>.<hostname>`: the process id and a
//! process-wide counter keep names unique within one host, 48 random bits keep them unique
//! across restarts that reuse a pid. The random part, as 12 hex digits, is also the queue id, so
//! an operator finds the file of a logged queue id with `ls new/ | grep <id>`.
//!
//! # Use from a `Handler`
//!
//! Begin a [`Delivery`] in `data_start` (with the `Received:` header of `smtps_relay::received`
//! as its first bytes), [`Delivery::write`] each body chunk, and in `message_end` hand the
//! delivery and the `Responder` to a thread of your own that calls [`Delivery::commit`] — it
//! `fsync`s, which a worker thread must not wait for — and answers `250 2.0.0 queued as <id>`
//! or, on an error, [`DeliveryError::smtp_reply`]. `smtpsd` and the workspace's
//! `examples/maildir_host.rs` do exactly that.
//!
//! ```
//! use smtps_maildir::Maildir;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("smtps-maildir-doc-{}", std::process::id()));
//! let maildir = Maildir::open_or_create(&dir)?.with_hostname("mx.example.org");
//! let mut delivery = maildir.begin(b"Received: from client.example by mx.example.org\r\n")?;
//! delivery.write(b"Subject: hello\r\n\r\nHi!\r\n")?;
//! let id = delivery.commit()?; // durable now: answer 250 2.0.0 queued as {id}
//!
//! let file = std::fs::read_dir(dir.join("new"))?.next().ok_or("no message")??;
//! assert!(file.file_name().to_string_lossy().contains(id.as_str()));
//! let stored = std::fs::read(file.path())?;
//! assert!(stored.ends_with(b"Hi!\r\n"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Capacity of the write buffer in front of each message file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Where accepted messages go: a [`Maildir`], or nowhere (the benchmark sink).
///
/// Both share one interface: [`Spool::begin`] → [`Delivery::write`]… → [`Delivery::commit`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Spool {
    /// Deliver durably into this Maildir.
    Maildir(Maildir),
    /// Accept and discard: no file is written; commit still returns a fresh queue id.
    Sink,
}

impl Spool {
    /// Starts one message: see [`Maildir::begin`]; for [`Spool::Sink`] nothing is written.
    pub fn begin(&self, received_header: &[u8]) -> Result<Delivery, DeliveryError> {
        match self {
            Self::Maildir(maildir) => maildir.begin(received_header),
            Self::Sink => Ok(Delivery::sink(received_header.len())),
        }
    }

    /// Starts one message whose first bytes depend on its queue id (a `Received:` header that
    /// names it): `header` is called once with the new id, before anything is written — except
    /// by [`Spool::Sink`], which writes nothing and does not call it.
    pub fn begin_with(
        &self,
        header: impl FnOnce(&QueueId) -> Vec<u8>,
    ) -> Result<Delivery, DeliveryError> {
        match self {
            Self::Maildir(maildir) => maildir.begin_with(header),
            // Nothing is written, so the header is not even built: the sink measures the
            // listener's own cost.
            Self::Sink => {
                drop(header);
                Ok(Delivery::sink(0))
            }
        }
    }
}

/// A Maildir: a directory with `tmp/`, `new/` and `cur/`.
///
/// It is `Send + Sync`: share one (in an `Arc`) between worker threads; each message gets
/// its own [`Delivery`].
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    tmp: PathBuf,
    new: PathBuf,
    hostname: String,
}

impl Maildir {
    /// Opens the Maildir at `path`, creating it and its `tmp/`, `new/` and `cur/` directories
    /// (mode 0700) where they are missing. Existing directories keep their mode.
    ///
    /// File names carry the system's host name (`/proc/sys/kernel/hostname`, else
    /// `localhost`); [`Maildir::with_hostname`] sets another.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self, DeliveryError> {
        let root = path.as_ref().to_path_buf();
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in [
            root.clone(),
            root.join("tmp"),
            root.join("new"),
            root.join("cur"),
        ] {
            builder
                .create(&dir)
                .map_err(|source| DeliveryError::from_io(Action::CreateDirectory, &dir, source))?;
            let metadata = fs::metadata(&dir)
                .map_err(|source| DeliveryError::from_io(Action::CreateDirectory, &dir, source))?;
            if !metadata.is_dir() {
                return Err(DeliveryError::Io {
                    action: Action::CreateDirectory,
                    path: dir,
                    source: io::Error::other("it exists and is not a directory"),
                });
            }
        }
        let hostname = system_hostname().unwrap_or_else(|| "localhost".to_owned());
        Ok(Self {
            tmp: root.join("tmp"),
            new: root.join("new"),
            root,
            hostname: sanitize_hostname(&hostname),
        })
    }

    /// Removes files in `tmp/` last modified more than `age` ago: what a crash left half
    /// written. The Maildir convention is 36 hours, long enough that no delivery still in
    /// progress (by this or another program) is touched. Returns how many were removed;
    /// files that cannot be removed are skipped.
    pub fn clean_tmp(&self, age: std::time::Duration) -> usize {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return 0;
        };
        let now = std::time::SystemTime::now();
        entries
            .filter_map(Result::ok)
            .filter(|entry| {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| now.duration_since(modified).is_ok_and(|d| d > age))
            })
            .filter(|entry| fs::remove_file(entry.path()).is_ok())
            .count()
    }

    /// Uses `hostname` in file names instead of the system's (`/` and `:` are escaped as the
    /// Maildir convention asks, as `\057` and `\072`).
    #[must_use]
    pub fn with_hostname(mut self, hostname: &str) -> Self {
        self.hostname = sanitize_hostname(hostname);
        self
    }

    /// Starts one message: creates a unique file in `tmp/` (mode 0600) and writes
    /// `received_header` (the prepended trace header, RFC 5321 §4.4) as its first bytes.
    pub fn begin(&self, received_header: &[u8]) -> Result<Delivery, DeliveryError> {
        self.begin_with(|_| received_header.to_vec())
    }

    /// Like [`Maildir::begin`], for a header that names the message's queue id: `header` is
    /// called once with the new id, and its bytes are written first.
    pub fn begin_with(
        &self,
        header: impl FnOnce(&QueueId) -> Vec<u8>,
    ) -> Result<Delivery, DeliveryError> {
        let name = UniqueName::new(&self.hostname);
        let tmp_path = self.tmp.join(&name.file_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|source| DeliveryError::from_io(Action::Create, &tmp_path, source))?;
        let mut delivery = Delivery {
            target: Target::File(Box::new(FileTarget {
                writer: BufWriter::with_capacity(WRITE_BUFFER, file),
                new_path: self.new.join(&name.file_name),
                new_dir: self.new.clone(),
                tmp_path,
            })),
            queue_id: name.queue_id,
            bytes_written: 0,
        };
        let bytes = header(&delivery.queue_id);
        delivery.write(&bytes)?;
        Ok(delivery)
    }

    /// The Maildir's root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }
}

/// One message on its way into a [`Spool`]: write the body with [`Delivery::write`], then
/// [`Delivery::commit`] or [`Delivery::abort`]. Dropping it uncommitted aborts it.
#[derive(Debug)]
pub struct Delivery {
    target: Target,
    queue_id: QueueId,
    bytes_written: u64,
}

impl Delivery {
    /// Appends `chunk` (a piece of the dot-unstuffed body, in order) to the message.
    ///
    /// After an error the delivery is unusable: abort it (or drop it) and answer the client
    /// with [`DeliveryError::smtp_reply`].
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), DeliveryError> {
        if let Target::File(file) = &mut self.target {
            file.writer
                .write_all(chunk)
                .map_err(|source| DeliveryError::from_io(Action::Write, &file.tmp_path, source))?;
        }
        self.bytes_written += chunk.len() as u64;
        Ok(())
    }

    /// Makes the message durable and visible: flush, `fsync` the file, rename it from `tmp/`
    /// into `new/`, `fsync` `new/`. Returns only once all of that succeeded; on an error the
    /// temporary file is removed and nothing is in `new/`.
    pub fn commit(mut self) -> Result<QueueId, DeliveryError> {
        let target = std::mem::replace(&mut self.target, Target::Done);
        match target {
            Target::File(file) => {
                let tmp_path = file.tmp_path.clone();
                let result = file.commit();
                if result.is_err() {
                    remove_quietly(&tmp_path);
                }
                result?;
            }
            Target::Sink | Target::Done => {}
        }
        Ok(self.queue_id.clone())
    }

    /// Gives the message up: the temporary file is removed, nothing reaches `new/`.
    pub fn abort(mut self) {
        self.discard();
    }

    /// The queue id the message will be committed under.
    pub fn queue_id(&self) -> &QueueId {
        &self.queue_id
    }

    /// Bytes written so far, the header included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    fn sink(header_len: usize) -> Self {
        Self {
            target: Target::Sink,
            queue_id: UniqueName::new("sink").queue_id,
            bytes_written: header_len as u64,
        }
    }

    fn discard(&mut self) {
        if let Target::File(file) = std::mem::replace(&mut self.target, Target::Done) {
            let FileTarget {
                writer, tmp_path, ..
            } = *file;
            // Close before unlinking; buffered bytes are thrown away, not flushed.
            let (file, _unflushed) = writer.into_parts();
            drop(file);
            remove_quietly(&tmp_path);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.discard();
    }
}

/// The id a committed message is known by: 12 lowercase hex digits, also part of its file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueId(String);

impl QueueId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a message could not be delivered. Every variant is temporary for the client
/// ([`DeliveryError::smtp_reply`]): the message was not accepted and may be sent again.
#[derive(Debug)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The file system is full or the user's quota is exhausted (ENOSPC, EDQUOT).
    NoSpace {
        /// The file or directory being written.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Any other I/O failure.
    Io {
        /// What was being done.
        action: Action,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl DeliveryError {
    /// The SMTP reply for this failure: `452 4.3.1` for [`DeliveryError::NoSpace`] (RFC 3463
    /// "mail system full"), `451 4.3.0` otherwise. Returns (code, enhanced status, text).
    pub fn smtp_reply(&self) -> (u16, &'static str, &'static str) {
        match self {
            Self::NoSpace { .. } => (452, "4.3.1", "Insufficient system storage"),
            Self::Io { .. } => (451, "4.3.0", "Local error in processing"),
        }
    }

    /// The path the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            Self::NoSpace { path, .. } | Self::Io { path, .. } => path,
        }
    }

    fn from_io(action: Action, path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => {
                Self::NoSpace { path, source }
            }
            _ => Self::Io {
                action,
                path,
                source,
            },
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSpace { path, source } => write!(
                f,
                "no space to write {}: {source}; free disk space or raise the quota \
                 (clients are told to retry later)",
                path.display()
            ),
            Self::Io {
                action: Action::CreateDirectory,
                path,
                source,
            } => write!(
                f,
                "cannot create the maildir directory {}: {source}; check that its parent \
                 exists and is writable by this user, or choose another directory",
                path.display()
            ),
            Self::Io {
                action,
                path,
                source,
            } => write!(
                f,
                "cannot {action} {}: {source}; check the maildir's permissions and file system",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoSpace { source, .. } | Self::Io { source, .. } => Some(source),
        }
    }
}

/// The step of a delivery that failed, for [`DeliveryError::Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Creating `tmp/`, `new/` or `cur/`.
    CreateDirectory,
    /// Creating the message file in `tmp/`.
    Create,
    /// Writing to the message file.
    Write,
    /// Flushing and `fsync`ing the message file.
    Sync,
    /// Renaming the message file into `new/`.
    Rename,
    /// Opening and `fsync`ing `new/`.
    SyncDirectory,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CreateDirectory => "create the directory",
            Self::Create => "create the message file",
            Self::Write => "write the message file",
            Self::Sync => "flush and fsync the message file",
            Self::Rename => "move the message into new/ from",
            Self::SyncDirectory => "fsync the directory",
        })
    }
}

#[derive(Debug)]
enum Target {
    File(Box<FileTarget>),
    Sink,
    Done,
}

#[derive(Debug)]
struct FileTarget {
    writer: BufWriter<File>,
    tmp_path: PathBuf,
    new_path: PathBuf,
    new_dir: PathBuf,
}

impl FileTarget {
    fn commit(self) -> Result<(), DeliveryError> {
        let Self {
            writer,
            tmp_path,
            new_path,
            new_dir,
        } = self;
        let sync_error = |source| DeliveryError::from_io(Action::Sync, &tmp_path, source);
        let file = writer
            .into_inner()
            .map_err(|e| sync_error(e.into_error()))?;
        file.sync_all().map_err(sync_error)?;
        drop(file);
        fs::rename(&tmp_path, &new_path)
            .map_err(|source| DeliveryError::from_io(Action::Rename, &tmp_path, source))?;
        let synced = File::open(&new_dir).and_then(|dir| dir.sync_all());
        if let Err(source) = synced {
            // Not known to be durable: take it back out of new/ so it is not half-accepted.
            remove_quietly(&new_path);
            return Err(DeliveryError::from_io(
                Action::SyncDirectory,
                &new_dir,
                source,
            ));
        }
        Ok(())
    }
}

/// A fresh Maildir file name and the queue id derived from it.
struct UniqueName {
    file_name: String,
    queue_id: QueueId,
}

impl UniqueName {
    fn new(hostname: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let random = random_u64() & 0xffff_ffff_ffff;
        let queue_id = format!("{random:012x}");
        let file_name = format!(
            "{secs}.P{}Q{count}R{queue_id}.{hostname}",
            std::process::id()
        );
        Self {
            file_name,
            queue_id: QueueId(queue_id),
        }
    }
}

/// 64 random bits from the operating system; should that fail (it does not on Linux once
/// booted), a mix of the clock and a counter, which is still unique enough for names that
/// also carry the pid and a process-wide counter.
fn random_u64() -> u64 {
    let mut bytes = [0_u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    static FALLBACK: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ u64::from(nanos);
    mixed.wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Escapes `/` and `:` in a host name for use in a Maildir file name (the Maildir convention).
fn sanitize_hostname(hostname: &str) -> String {
    let mut out = String::with_capacity(hostname.len());
    for c in hostname.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            c if c.is_control() || c.is_whitespace() => out.push('_'),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push_str("localhost");
    }
    out
}

/// The system's host name, as the kernel knows it, or `None` when it cannot be read or is
/// empty.
fn system_hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("cannot remove {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use smtps_testkit::TempDir;

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn open_or_create_makes_tmp_new_cur_with_mode_0700() {
        let dir = TempDir::new("create");
        let root = dir.path().join("a/b/maildir");
        let maildir = Maildir::open_or_create(&root).unwrap();
        assert_eq!(maildir.path(), root);
        for sub in ["", "tmp", "new", "cur"] {
            let mode = fs::metadata(root.join(sub)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
        // Opening again is fine.
        Maildir::open_or_create(&root).unwrap();
    }

    #[test]
    fn open_or_create_names_the_path_when_a_file_is_in_the_way() {
        let dir = TempDir::new("in-the-way");
        let root = dir.path().join("maildir");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("new"), b"x").unwrap();
        let err = Maildir::open_or_create(&root).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&root.join("new").display().to_string()),
            "{text}"
        );
        assert!(text.contains("choose another directory"), "{text}");
    }

    #[test]
    fn committed_message_is_in_new_with_header_first_and_tmp_is_empty() {
        let dir = TempDir::new("commit");
        let maildir = Maildir::open_or_create(dir.path())
            .unwrap()
            .with_hostname("mx.example");
        let mut delivery = maildir.begin(b"Received: x\r\n").unwrap();
        delivery.write(b"Subject: hi\r\n\r\n").unwrap();
        delivery.write(b"body\r\n").unwrap();
        assert_eq!(delivery.bytes_written(), 13 + 15 + 6);
        let expected_id = delivery.queue_id().clone();
        let id = delivery.commit().unwrap();
        assert_eq!(id, expected_id);
        assert_eq!(id.as_str().len(), 12);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));

        assert!(entries(&dir.path().join("tmp")).is_empty());
        let new = entries(&dir.path().join("new"));
        assert_eq!(new.len(), 1);
        let name = new[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.contains(id.as_str()), "{name}");
        assert!(name.ends_with(".mx.example"), "{name}");
        assert_eq!(
            fs::read(&new[0]).unwrap(),
            b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        let mode = fs::metadata(&new[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn uncommitted_message_is_only_in_tmp() {
        let dir = TempDir::new("pending");
        let maildir = Maildir::open_or_create(dir.path()).unwrap();
        let mut delivery = maildir.begin(b"H: v\r\n").unwrap();
        delivery.write(&[b'x'; 100_000]).unwrap();
        assert_eq!(entries(&dir.path().join("tmp")).len(), 1);
        assert!(entries(&dir.path().join("new")).is_empty());
        delivery.abort();
        assert!(entries(&dir.path().join("tmp")).is_empty());
        assert!(entries(&dir.path().join("new")).is_empty());
    }

    #[test]
    fn dropping_an_uncommitted_delivery_removes_the_tmp_file() {
        let dir = TempDir::new("drop");
        let maildir = Maildir::open_or_create(dir.path()).unwrap();
        {
            let mut delivery = maildir.begin(b"").unwrap();
            delivery.write(b"partial").unwrap();
        }
        assert!(entries(&dir.path().join("tmp")).is_empty());
        assert!(entries(&dir.path().join("new")).is_empty());
    }

    #[test]
    fn large_message_is_delivered_byte_exact() {
        let dir = TempDir::new("large");
        let maildir = Maildir::open_or_create(dir.path()).unwrap();
        let body: Vec<u8> = (0..3 * WRITE_BUFFER + 17)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut delivery = maildir.begin(b"R: 1\r\n").unwrap();
        for chunk in body.chunks(1000) {
            delivery.write(chunk).unwrap();
        }
        delivery.commit().unwrap();
        let new = entries(&dir.path().join("new"));
        let content = fs::read(&new[0]).unwrap();
        assert_eq!(&content[..6], b"R: 1\r\n");
        assert_eq!(&content[6..], &body[..]);
    }

    #[test]
    fn names_and_queue_ids_are_unique_across_threads() {
        let dir = TempDir::new("unique");
        let maildir = std::sync::Arc::new(Maildir::open_or_create(dir.path()).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let maildir = maildir.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|_| maildir.begin(b"x").unwrap().commit().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: HashSet<QueueId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 100);
        assert_eq!(entries(&dir.path().join("new")).len(), 100);
    }

    #[test]
    fn begin_with_hands_the_queue_id_to_the_header() {
        let dir = TempDir::new("begin-with");
        let spool = Spool::Maildir(Maildir::open_or_create(dir.path()).unwrap());
        let delivery = spool
            .begin_with(|id| format!("Received: id {id}\r\n").into_bytes())
            .unwrap();
        let id = delivery.commit().unwrap();
        let new = entries(&dir.path().join("new"));
        assert_eq!(
            fs::read(&new[0]).unwrap(),
            format!("Received: id {id}\r\n").into_bytes()
        );
    }

    #[test]
    fn sink_accepts_and_writes_nothing() {
        let spool = Spool::Sink;
        let mut delivery = spool.begin(b"Received: x\r\n").unwrap();
        delivery.write(b"body").unwrap();
        assert_eq!(delivery.bytes_written(), 17);
        let a = delivery.commit().unwrap();
        let b = spool.begin_with(|_| Vec::new()).unwrap().commit().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 12);
    }

    #[test]
    fn unwritable_tmp_is_an_io_error_naming_the_file() {
        let dir = TempDir::new("readonly");
        let maildir = Maildir::open_or_create(dir.path()).unwrap();
        fs::remove_dir(dir.path().join("tmp")).unwrap();
        let err = maildir.begin(b"").unwrap_err();
        assert!(matches!(
            err,
            DeliveryError::Io {
                action: Action::Create,
                ..
            }
        ));
        assert_eq!(err.smtp_reply().0, 451);
        assert!(err.to_string().contains("tmp"), "{err}");
    }

    #[test]
    fn enospc_and_edquot_are_no_space_with_452() {
        for code in [libc::ENOSPC, libc::EDQUOT] {
            let err = DeliveryError::from_io(
                Action::Write,
                Path::new("/x"),
                io::Error::from_raw_os_error(code),
            );
            assert!(matches!(err, DeliveryError::NoSpace { .. }));
            assert_eq!(
                err.smtp_reply(),
                (452, "4.3.1", "Insufficient system storage")
            );
        }
    }

    #[test]
    fn a_full_disk_while_writing_is_no_space_and_leaves_nothing() {
        // /dev/full fails every write with ENOSPC: a stand-in for a full maildir.
        let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let dir = TempDir::new("full");
        let tmp_path = dir.path().join("msg");
        fs::write(&tmp_path, b"").unwrap();
        let mut delivery = Delivery {
            target: Target::File(Box::new(FileTarget {
                writer: BufWriter::with_capacity(16, full),
                tmp_path: tmp_path.clone(),
                new_path: dir.path().join("new-msg"),
                new_dir: dir.path().to_path_buf(),
            })),
            queue_id: QueueId("000000000000".into()),
            bytes_written: 0,
        };
        let err = delivery.write(&[b'x'; 64]).unwrap_err();
        assert!(matches!(err, DeliveryError::NoSpace { .. }), "{err}");
        drop(delivery);
        assert!(!tmp_path.exists());
        assert!(!dir.path().join("new-msg").exists());
    }

    #[test]
    fn spool_is_shared_between_threads_and_deliveries_move_between_them() {
        fn shared<T: Send + Sync>() {}
        fn movable<T: Send>() {}
        shared::<Spool>();
        shared::<Maildir>();
        movable::<Delivery>();
        shared::<QueueId>();
        shared::<DeliveryError>();
    }

    #[test]
    fn hostname_slash_and_colon_are_escaped() {
        assert_eq!(sanitize_hostname("a/b:c"), "a\\057b\\072c");
        assert_eq!(sanitize_hostname(""), "localhost");
        assert_eq!(sanitize_hostname("a b\n"), "a_b_");
    }

    #[test]
    fn clean_tmp_removes_only_stale_files() {
        let dir = TempDir::new("clean-tmp");
        let maildir = Maildir::open_or_create(dir.path()).unwrap();
        let stale = dir.path().join("tmp/stale");
        let fresh = dir.path().join("tmp/fresh");
        fs::write(&stale, b"half a message").unwrap();
        fs::write(&fresh, b"being written").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 3600);
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            maildir.clean_tmp(std::time::Duration::from_secs(36 * 3600)),
            1
        );
        assert!(!stale.exists() && fresh.exists());
    }
}
