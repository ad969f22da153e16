//! Enforces the functional core: the pure modules never reach for I/O, the
//! clock or randomness. A new pure module is added to `PURE` below.
//!
//! Everything the library compiles is checked, including code after a test
//! module: a small scanner tells comments, literals and code apart, and skips
//! only items marked `#[cfg(test)]` (by matching their braces) and the files
//! that such a `mod name;` declares.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Files and folders that must stay pure.
const PURE: &[&str] = &[
    "src/aggregate.rs",
    "src/account",
    "src/order",
    "src/saga",
    "src/store/plan.rs",
    "src/store/chain.rs",
    "src/projections/coalesce.rs",
    "src/events/codec.rs",
    "src/submission",
    "src/trading_day",
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

/// What a character of a source file is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Code,
    Comment,
    /// Inside a string, byte-string or char literal (quotes included).
    Literal,
}

/// Classifies every character of `text`: comments (line, nested block, doc),
/// string literals (plain, byte, raw with any number of `#`) and char literals,
/// told apart from lifetimes. Enough of Rust's lexer to find braces and
/// attributes that are really code.
fn classify(text: &[char]) -> Vec<Class> {
    let mut classes = vec![Class::Code; text.len()];
    let at = |i: usize| text.get(i).copied().unwrap_or('\0');
    // A `b` prefix only counts at a token start: `verb` followed by a quote is no byte string.
    let token_start = |i: usize| i == 0 || !(at(i - 1).is_alphanumeric() || at(i - 1) == '_');
    let mut i = 0;
    while i < text.len() {
        let start = i;
        let class = match (at(i), at(i + 1)) {
            ('/', '/') => {
                while i < text.len() && at(i) != '\n' {
                    i += 1;
                }
                Class::Comment
            }
            ('/', '*') => {
                let mut depth = 0;
                while i < text.len() {
                    match (at(i), at(i + 1)) {
                        ('/', '*') => {
                            depth += 1;
                            i += 2;
                        }
                        ('*', '/') => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                Class::Comment
            }
            _ if raw_string_hashes(text, i).is_some() => {
                let (hashes, body) = raw_string_hashes(text, i).unwrap_or_default();
                i = body;
                // The body ends at a quote followed by as many `#` as opened it.
                while i < text.len() && !(at(i) == '"' && (1..=hashes).all(|k| at(i + k) == '#')) {
                    i += 1;
                }
                i += 1 + hashes;
                Class::Literal
            }
            ('"', _) | ('b', '"') if at(i) == '"' || token_start(i) => {
                i += if at(i) == 'b' { 2 } else { 1 };
                while i < text.len() && at(i) != '"' {
                    i += if at(i) == '\\' { 2 } else { 1 };
                }
                i += 1;
                Class::Literal
            }
            ('\'', _) | ('b', '\'') if at(i) == '\'' || token_start(i) => {
                let quote = if at(i) == 'b' { i + 1 } else { i };
                if at(quote + 1) == '\\' {
                    // An escaped char: runs to the next quote ('\n', '\'', '\u{1F600}').
                    i = quote + 3;
                    while i < text.len() && at(i) != '\'' {
                        i += 1;
                    }
                    i += 1;
                    Class::Literal
                } else if at(quote + 2) == '\'' {
                    i = quote + 3;
                    Class::Literal
                } else {
                    // A lifetime or label: code.
                    i = quote + 1;
                    Class::Code
                }
            }
            _ => {
                i += 1;
                Class::Code
            }
        };
        let end = i.min(text.len());
        classes[start..end].fill(class);
        i = end.max(start + 1);
    }
    classes
}

/// If a raw (byte) string starts at `i` (`r"`, `r#"`, `br##"`...), the number
/// of `#` and where its body starts.
fn raw_string_hashes(text: &[char], i: usize) -> Option<(usize, usize)> {
    let at = |i: usize| text.get(i).copied().unwrap_or('\0');
    // `r` or `br` must start a token: `bar"` is not a raw string.
    if i > 0 && (at(i - 1).is_alphanumeric() || at(i - 1) == '_') {
        return None;
    }
    let mut j = i;
    if at(j) == 'b' {
        j += 1;
    }
    if at(j) != 'r' {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while at(j) == '#' {
        hashes += 1;
        j += 1;
    }
    (at(j) == '"').then_some((hashes, j + 1))
}

/// Character ranges of the items under `#[cfg(test)]` (attribute included),
/// and the names of test-only modules declared as `mod name;`.
fn test_items(code: &[char]) -> (Vec<Range<usize>>, Vec<String>) {
    let text: String = code.iter().collect();
    let mut ranges = Vec::new();
    let mut declared = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("#[") {
        let start = from + found;
        let Some(attribute_end) = matching(code, char_index(&text, start) + 1) else {
            break;
        };
        let inner: String = code[char_index(&text, start) + 2..attribute_end]
            .iter()
            .filter(|c| !c.is_whitespace())
            .collect();
        from = byte_index(&text, attribute_end + 1);
        if inner != "cfg(test)" {
            continue;
        }
        let item_start = attribute_end + 1;
        let item_end = item_end(code, item_start);
        let item: String = code[item_start..item_end].iter().collect();
        if let Some(name) = declared_module(&item) {
            declared.push(name);
        }
        ranges.push(char_index(&text, start)..item_end);
        from = byte_index(&text, item_end);
    }
    (ranges, declared)
}

/// The name in `mod name;` (after any further attributes and a visibility), if
/// the item is a module declared in its own file.
fn declared_module(item: &str) -> Option<String> {
    let words: Vec<&str> = item
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let position = words.iter().position(|w| *w == "mod")?;
    let name = words.get(position + 1)?;
    (item.trim_end().ends_with(';') && !item.contains('{')).then(|| name.to_string())
}

/// Where the item starting at `start` ends (exclusive): after the first `;`
/// outside brackets, or after the `}` matching the first `{` outside them.
/// Attributes before the item (`#[...]`) are bracketed, so they are skipped whole.
fn item_end(code: &[char], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < code.len() {
        match code[i] {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => return i + 1,
            '{' if depth == 0 => return matching(code, i).map_or(code.len(), |end| end + 1),
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    code.len()
}

/// The index of the bracket closing the one at `open` (any of `(`, `[`, `{`).
fn matching(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in code.iter().enumerate().skip(open) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn char_index(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

fn byte_index(text: &str, chars: usize) -> usize {
    text.char_indices().nth(chars).map_or(text.len(), |(byte, _)| byte)
}

/// What one file contributes to the check.
struct Scanned {
    /// `(line number, code of that line)`: comments and test items blanked,
    /// string literals kept (a forbidden name in one is still suspicious).
    lines: Vec<(usize, String)>,
    /// Modules this file declares under `#[cfg(test)]` as `mod name;`.
    test_modules: Vec<String>,
}

fn scan(source: &str) -> Scanned {
    let text: Vec<char> = source.chars().collect();
    let classes = classify(&text);
    // Structure only from real code: braces and attributes in comments or literals do not count.
    let code: Vec<char> = text
        .iter()
        .zip(&classes)
        .map(|(&c, &class)| if class == Class::Code || c == '\n' { c } else { ' ' })
        .collect();
    let code_text: String = code.iter().collect();
    // `#![cfg(test)]` at the top makes the whole file a test module.
    if code_text.replace(char::is_whitespace, "").contains("#![cfg(test)]") {
        return Scanned {
            lines: Vec::new(),
            test_modules: Vec::new(),
        };
    }
    let (skipped, test_modules) = test_items(&code);
    let checked: String = text
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let in_test = skipped.iter().any(|range| range.contains(&i));
            if c == '\n' || (classes[i] != Class::Comment && !in_test) {
                c
            } else {
                ' '
            }
        })
        .collect();
    Scanned {
        lines: checked
            .lines()
            .enumerate()
            .map(|(number, line)| (number + 1, line.to_string()))
            .collect(),
        test_modules,
    }
}

/// The files a `mod name;` in `file` may live in.
fn module_files(file: &Path, name: &str) -> [PathBuf; 2] {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let folder = match stem {
        "mod" | "lib" | "main" => file.parent().map(Path::to_path_buf).unwrap_or_default(),
        _ => file.with_extension(""),
    };
    [folder.join(format!("{name}.rs")), folder.join(name).join("mod.rs")]
}

fn violations_in(lines: &[(usize, String)], file: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (number, code) in lines {
        for word in FORBIDDEN {
            if code.contains(word) {
                found.push(format!("{}:{number}: `{word}` in {:?}", file.display(), code.trim()));
            }
        }
    }
    found
}

#[test]
fn pure_modules_import_no_io_clock_or_randomness() {
    // Proves decide/evolve and their helpers stay free of effects, in every line the library compiles.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for entry in PURE {
        rust_files(&root.join(entry), &mut files);
    }
    assert!(files.len() >= 8, "expected the pure modules to be found, got {files:?}");
    let scanned: Vec<(PathBuf, Scanned)> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            (file.clone(), scan(&text))
        })
        .collect();
    // Files declared by `#[cfg(test)] mod name;` are test code, wherever they sit.
    let test_only: BTreeSet<PathBuf> = scanned
        .iter()
        .flat_map(|(file, scanned)| scanned.test_modules.iter().flat_map(|name| module_files(file, name)))
        .collect();
    assert!(
        test_only.iter().any(|file| file.ends_with("order/tests.rs")),
        "the order's test modules should be recognised as test-only, got {test_only:?}"
    );
    let mut violations = Vec::new();
    let mut checked_lines = 0;
    for (file, scanned) in scanned.iter().filter(|(file, _)| !test_only.contains(file)) {
        checked_lines += scanned.lines.len();
        violations.extend(violations_in(&scanned.lines, file));
    }
    assert!(checked_lines > 1_000, "too little code checked: {checked_lines} lines");
    assert!(
        violations.is_empty(),
        "the pure core reaches for effects:\n{}",
        violations.join("\n")
    );
}

#[test]
fn code_after_a_test_module_is_checked() {
    // Proves the scanner skips the test module only, not the rest of the file, and is
    // not fooled by braces or attributes in strings and comments.
    let source = r####"
use crate::aggregate::Aggregate;

#[cfg(test)]
mod tests {
    use tokio::time::Instant;
    const TRICKY: &str = "} not the end";
    const RAW: &str = r#"}"}"#;
    const BRACE: char = '}';
    fn lifetime<'a>(s: &'a str) -> &'a str { s }
    // } nor is this
    /* } nested /* } */ still a comment */
}

impl Aggregate for OrderAggregate {
    fn now() { let _ = tokio::time::Instant::now(); }
}

/// A doc comment may name sqlx.
#[cfg(test)]
mod properties;

#[cfg(test)]
fn helper() -> std::net::TcpStream { todo!() }

fn after() -> &'static str { "std::env in a string" }
"####;
    let scanned = scan(source);
    let found = violations_in(&scanned.lines, Path::new("fixture.rs"));
    let lines: Vec<&str> = found
        .iter()
        .map(|v| v.split(": `").next().unwrap_or_default())
        .collect();
    assert_eq!(
        lines,
        ["fixture.rs:16", "fixture.rs:26"],
        "expected the impl after the test module and the string, got {found:#?}"
    );
    assert_eq!(scanned.test_modules, ["properties"]);
}

#[test]
fn a_file_marked_test_only_is_skipped_whole() {
    // Proves an inner `#![cfg(test)]` exempts the whole file, as the compiler does.
    let scanned = scan("#![cfg(test)]\nuse tokio::net::TcpStream;\n");
    assert!(scanned.lines.is_empty());
}

#[test]
fn test_only_module_files_are_found_beside_their_parent() {
    // Proves `mod tests;` resolves to the files the compiler would load.
    assert_eq!(
        module_files(Path::new("src/order/mod.rs"), "tests"),
        [
            PathBuf::from("src/order/tests.rs"),
            PathBuf::from("src/order/tests/mod.rs")
        ]
    );
    assert_eq!(
        module_files(Path::new("src/saga/amount.rs"), "tests"),
        [
            PathBuf::from("src/saga/amount/tests.rs"),
            PathBuf::from("src/saga/amount/tests/mod.rs")
        ]
    );
}
