//! Writes the seed corpora of `smtps_fuzzing::seeds` to `fuzz/corpus/<target>/seed-<name>.bin`
//! and runs each through its target as a self-check:
//!
//! ```text
//! cargo run -p smtps-fuzzing --example write_seeds
//! ```
//!
//! Commit the output. TLS seeds that hold a ClientHello change on every run (it is random);
//! the others are checked for drift by `tests/corpus.rs`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for seed in smtps_fuzzing::seeds::all() {
        let dir = root.join(seed.target);
        let path = dir.join(format!("seed-{}.bin", seed.name));
        if let Err(error) = std::fs::create_dir_all(&dir).and_then(|()| {
            if !seed.deterministic && path.exists() {
                return Ok(()); // keep the committed random seed stable
            }
            std::fs::write(&path, &seed.bytes)
        }) {
            eprintln!("{}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        smtps_fuzzing::run_target(seed.target, &seed.bytes);
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
