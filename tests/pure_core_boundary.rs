//! Enforces the functional core: the pure modules never reach for I/O, the
//! clock or randomness. A new pure module is added to `PURE` below.

use std::path::{Path, PathBuf};

/// Files and folders that must stay pure.
const PURE: &[&str] = &[
    "src/aggregate.rs",
    "src/order",
    "src/saga",
    "src/store/plan.rs",
    "src/store/chain.rs",
    "src/projections/coalesce.rs",
    "src/events/codec.rs",
    "src/ledger/account",
    "src/submission",
];

/// What a pure module must not mention outside comments.
const FORBIDDEN: &[&str] = &[
    "sqlx",
    "actix",
    "lapin",
    "tokio",
    "reqwest",
    "std::fs",
    "std::net",
    "std::time::SystemTime",
    "std::time::Instant",
    "Utc::now",
    "Local::now",
    "new_v4",
    "new_v7",
    "rand::",
    "thread_rng",
    "std::env",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            rust_files(&entry.map(|e| e.path()).unwrap_or_default(), out);
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Test modules may use ids and clocks freely; they are not the core.
fn is_test_file(path: &Path) -> bool {
    matches!(path.file_stem().and_then(|s| s.to_str()), Some("tests" | "properties"))
}

#[test]
fn pure_modules_import_no_io_clock_or_randomness() {
    // Proves decide/evolve and their helpers stay free of effects.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for entry in PURE {
        rust_files(&root.join(entry), &mut files);
    }
    assert!(files.len() >= 8, "expected the pure modules to be found, got {files:?}");
    let mut violations = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut in_tests = false;
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // Unit tests at the bottom of a file are not the core either.
            if code.trim_start().starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if in_tests {
                continue;
            }
            for word in FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!("{}:{}: `{word}` in {code:?}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the pure core reaches for effects:\n{}",
        violations.join("\n")
    );
}
