//! The header's version macros match the package version.
#![allow(clippy::unwrap_used, missing_docs)]

fn header() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../include/smtps.h");
    std::fs::read_to_string(path).unwrap()
}

fn define(header: &str, name: &str) -> String {
    let prefix = format!("#define {name} ");
    header
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from include/smtps.h"))
        .trim()
        .to_owned()
}

#[test]
fn version_macros_match_cargo_toml() {
    let header = header();
    let parts: Vec<u32> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|part| part.parse().unwrap())
        .collect();
    assert_eq!(define(&header, "SMTPS_VERSION_MAJOR"), parts[0].to_string());
    assert_eq!(define(&header, "SMTPS_VERSION_MINOR"), parts[1].to_string());
    assert_eq!(define(&header, "SMTPS_VERSION_PATCH"), parts[2].to_string());
    let packed = (parts[0] << 16) | (parts[1] << 8) | parts[2];
    assert_eq!(
        define(&header, "SMTPS_VERSION_NUMBER"),
        format!("{packed:#08x}")
    );
}
