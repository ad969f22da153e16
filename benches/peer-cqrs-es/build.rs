//! Puts the locked versions of the crates the peer measures into the binary, so
//! every JSON line says exactly what was compared. Reads Cargo.lock only.

use std::process::Command;

/// Packages whose version each report line carries, and the variable each goes to.
const REPORTED: &[(&str, &str)] = &[
    ("cqrs-es", "PEER_VERSION_CQRS_ES"),
    ("postgres-es", "PEER_VERSION_POSTGRES_ES"),
    ("sqlx", "PEER_VERSION_SQLX"),
    ("tokio", "PEER_VERSION_TOKIO"),
];

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (package, variable) in REPORTED {
        let version = locked_version(&lock, package).unwrap_or("unknown");
        println!("cargo:rustc-env={variable}={version}");
    }
    // The compiler matters to a figure as much as the crates do.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PEER_VERSION_RUSTC={rustc_version}");
}

/// The `version` line that follows `name = "<package>"` in a Cargo.lock.
fn locked_version<'a>(lock: &'a str, package: &str) -> Option<&'a str> {
    let name_line = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    lines.find(|line| line.trim() == name_line)?;
    let version_line = lines.next()?.trim();
    version_line.strip_prefix("version = \"")?.strip_suffix('"')
}
