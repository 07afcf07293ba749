//! Replays the committed fuzz corpora through the target functions, so that corpus regressions
//! run in an ordinary `cargo test` on stable Rust:
//!
//! - every seed (`fuzz/corpus/<target>/seed-*.bin`) and up to [`MAX_OTHER_FILES`] other corpus
//!   files per target must pass;
//! - every `fuzz/regressions/<target>/<name>.bin` must pass in strict mode, unless `<name>` is
//!   in [`smtps_fuzzing::KNOWN_ISSUES`]: then it must still fail in strict mode (so a fix is
//!   noticed and the entry removed) and pass with the issue tolerated;
//! - the deterministic seeds on disk must match `smtps_fuzzing::seeds` (no drift).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use smtps_fuzzing::{KNOWN_ISSUES, run_target, set_strict};

/// Corpus files other than seeds replayed per target (keeps the test fast in debug builds).
const MAX_OTHER_FILES: usize = 250;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files in `dir`, sorted by name; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs one input; returns the panic message if the target panicked.
fn outcome(target: &str, path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    catch_unwind(AssertUnwindSafe(|| run_target(target, &data))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

fn replay(target: &str) {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    let (seeds, others): (Vec<_>, Vec<_>) = corpus.into_iter().partition(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"))
    });
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let mut failures = Vec::new();
    set_strict(false);
    let replayed = seeds.len() + others.len().min(MAX_OTHER_FILES);
    eprintln!("{target}: replaying {replayed} corpus files");
    for path in seeds.iter().chain(others.iter().take(MAX_OTHER_FILES)) {
        if let Err(message) = outcome(target, path) {
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    for path in files(&fuzz_dir().join("regressions").join(target)) {
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let known = KNOWN_ISSUES.contains(&name);
        set_strict(true);
        let strict = outcome(target, &path);
        set_strict(false);
        match (known, strict) {
            (false, Err(message)) => failures.push(format!("{}: {message}", path.display())),
            (true, Ok(())) => failures.push(format!(
                "{}: known issue {name:?} no longer reproduces — remove it from KNOWN_ISSUES",
                path.display()
            )),
            (true, Err(_)) => {
                if let Err(message) = outcome(target, &path) {
                    failures.push(format!(
                        "{}: fails even with {name:?} tolerated: {message}",
                        path.display()
                    ));
                }
            }
            (false, Ok(())) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn command_corpus() {
    replay("command");
}

#[test]
fn session_corpus() {
    replay("session");
}

#[test]
fn data_decoder_corpus() {
    replay("data_decoder");
}

#[test]
fn tls_transport_corpus() {
    replay("tls_transport");
}

#[test]
fn conn_corpus() {
    replay("conn");
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header");
}

#[test]
fn seeds_on_disk_match_the_generator() {
    for seed in smtps_fuzzing::seeds::all() {
        let path = fuzz_dir()
            .join("corpus")
            .join(seed.target)
            .join(format!("seed-{}.bin", seed.name));
        let on_disk = std::fs::read(&path).unwrap_or_default();
        if seed.deterministic {
            assert!(
                on_disk == seed.bytes,
                "{} differs from smtps_fuzzing::seeds; run \
                 `cargo run -p smtps-fuzzing --example write_seeds`",
                path.display()
            );
        } else {
            assert!(!on_disk.is_empty(), "{} is missing", path.display());
        }
    }
}

#[test]
fn every_known_issue_has_a_regression_input() {
    for name in KNOWN_ISSUES {
        let found = smtps_fuzzing::TARGETS.iter().any(|target| {
            fuzz_dir()
                .join("regressions")
                .join(target)
                .join(format!("{name}.bin"))
                .is_file()
        });
        assert!(
            found,
            "known issue {name:?} has no fuzz/regressions/*/{name}.bin"
        );
    }
}
