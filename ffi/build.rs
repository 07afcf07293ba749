//! Gives the cdylib an ELF SONAME on Linux, and puts a link named after it beside the library.
//!
//! The SONAME follows the version in the workspace `Cargo.toml`, with the rule cargo-c uses:
//! `libsmtps.so.MAJOR` from 1.0 on, `libsmtps.so.0.MINOR` for 0.x (Cargo's semver treats every
//! 0.x minor as breaking, so 0.1 and 0.2 must not share a name), `libsmtps.so.0.0.PATCH` for
//! 0.0.x. Installed, `ffi/install.sh` makes `libsmtps.so.0.1 -> libsmtps.so.0.1.0`.
//!
//! A program linked with `-lsmtps` records the SONAME (not `libsmtps.so`) as NEEDED, so the
//! loader looks for `libsmtps.so.0.1`. Cargo only writes `libsmtps.so`; for programs linked
//! against the build tree (`tests/c/`, `-Ltarget/release -lsmtps -Wl,-rpath,...`) this script
//! makes the symlink `target/<profile>/libsmtps.so.0.1 -> libsmtps.so` too.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let soname = format!("libsmtps.so.{}", soversion());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    if let Some(dir) = profile_dir() {
        link_soname(&dir, &soname);
    }
}

/// `1` for 1.x.y, `0.1` for 0.1.x, `0.0.3` for 0.0.3.
fn soversion() -> String {
    let part = |name: &str| env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (major, minor, patch) = (
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    );
    match (major.as_str(), minor.as_str()) {
        ("0", "0") => format!("0.0.{patch}"),
        ("0", _) => format!("0.{minor}"),
        _ => major,
    }
}

/// The directory the cdylib is written to: OUT_DIR is `<profile>/build/smtps-ffi-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(env::var_os("OUT_DIR")?);
    let build = out.parent()?.parent()?;
    if build.file_name()? != "build" {
        return None;
    }
    Some(build.parent()?.to_path_buf())
}

/// `dir/<soname> -> libsmtps.so` (relative; dangling until the cdylib is linked).
fn link_soname(dir: &Path, soname: &str) {
    let link = dir.join(soname);
    if std::fs::read_link(&link).is_ok_and(|target| target == Path::new("libsmtps.so")) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink("libsmtps.so", &link);
    #[cfg(not(unix))]
    let made = Err::<(), _>(std::io::Error::other("not a Unix build host"));
    if let Err(e) = made {
        println!(
            "cargo:warning=cannot link {} -> libsmtps.so: {e}",
            link.display()
        );
    }
}
