//! Temporary directories.

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A new, empty directory, unique to this process and call, removed with its contents on drop.
///
/// It dereferences to its [`Path`], so `dir.join("cert.pem")` and `&dir` as a `&Path` work.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A directory under the system's temporary directory ([`std::env::temp_dir`]), named
    /// `smtps-<label>-<process id>-<n>`.
    ///
    /// # Panics
    /// If the directory cannot be created.
    #[must_use]
    pub fn new(label: &str) -> Self {
        Self::new_in(std::env::temp_dir(), label)
    }

    /// A directory under `parent` (created if missing), such as `env!("CARGO_TARGET_TMPDIR")`
    /// in an integration test; named as by [`TempDir::new`].
    ///
    /// # Panics
    /// If the directory cannot be created.
    #[must_use]
    pub fn new_in(parent: impl AsRef<Path>, label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let parent = parent.as_ref();
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        // A directory left by an earlier process with the same id is skipped, never reused.
        for _ in 0..1000 {
            let path = parent.join(format!(
                "smtps-{label}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Self { path },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
        panic!("no free directory name under {}", parent.display());
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a test that failed to clean up must not fail again here.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_new_distinct_and_removed_on_drop() {
        let a = TempDir::new("kit");
        let b = TempDir::new("kit");
        assert_ne!(a.path(), b.path());
        assert!(a.is_dir() && b.is_dir());
        std::fs::write(a.join("file"), b"x").expect("write");
        let kept = a.to_path_buf();
        drop(a);
        assert!(!kept.exists(), "{} left behind", kept.display());
        assert!(b.is_dir());
    }
}
