//! The top-level README lists every `SESSION_*` variable the code reads,
//! and nothing the code does not read.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The `SESSION_*` names in `text` that start right after `open` and end
/// right before `close` (a quoted string literal, or a code span).
fn names(text: &str, open: char, close: char) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let marker = format!("{open}SESSION_");
    let mut rest = text;
    while let Some(at) = rest.find(&marker) {
        let candidate = &rest[at + open.len_utf8()..];
        let len = candidate
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(candidate.len());
        if candidate[len..].starts_with(close) && !candidate[..len].ends_with('_') {
            found.insert(candidate[..len].to_owned());
        }
        rest = &rest[at + marker.len()..];
    }
    found
}

/// Every `.rs` file under `dir`, skipping test directories and build output.
fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | "tests" | "fuzz" | "benches") {
                sources(&path, into);
            }
        } else if name.ends_with(".rs") {
            into.push(path);
        }
    }
}

#[test]
fn readme_lists_every_setting_the_code_reads() {
    let root = root();
    let mut files = Vec::new();
    sources(&root.join("crates"), &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let mut read = BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("source file");
        read.extend(names(&text, '"', '"'));
    }
    // A sanity check that the scan sees the settings at all.
    for known in [
        "SESSION_ENGINE",
        "SESSION_COOKIE_AGE",
        "SESSION_REDIS_NEAR_CACHE_MS",
    ] {
        assert!(read.contains(known), "{known} not found in the code");
    }
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let listed = names(&readme, '`', '`');
    let missing: Vec<_> = read.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&read).collect();
    assert!(
        missing.is_empty(),
        "read by the code, not in README.md: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "in README.md, not read by the code: {unknown:?}"
    );
}

#[test]
fn readme_is_a_page_a_newcomer_reads() {
    let size = fs::metadata(root().join("README.md"))
        .expect("README.md")
        .len();
    assert!(
        size <= 12_000,
        "README.md is {size} bytes; the limit is 12 KB"
    );
}

/// The crate docs' "Timeouts" section says each store's total timeout is,
/// by default, below the layer's, so that the engine ends a hung call
/// itself and the layer's timeout is the backstop.
#[test]
fn each_stores_default_total_timeout_is_below_the_layers() {
    let layer = cloakroom::SessionConfig::default().backend_timeout;
    let stores = [
        ("redis", cloakroom::redis::RedisOptions::new().timeout()),
        (
            "memcached",
            cloakroom::memcached::MemcachedOptions::from_url("memcached://127.0.0.1")
                .expect("a URL")
                .timeout(),
        ),
        (
            "sql",
            cloakroom::sql::SqlOptions::new("sqlite::memory:").timeout(),
        ),
    ];
    for (engine, total) in stores {
        assert!(total < layer, "{engine}: {total:?} is not below {layer:?}");
    }
    let docs = fs::read_to_string(root().join("crates/cloakroom/src/lib.rs")).expect("lib.rs");
    assert!(docs.contains("//! # Timeouts"), "the section is gone");
    let readme = fs::read_to_string(root().join("crates/cloakroom/README.md")).expect("README");
    assert!(
        readme.contains("\"Timeouts\" section"),
        "the crate README links it"
    );
}

#[test]
fn names_are_found_only_whole() {
    let text =
        r#"let a = "SESSION_COOKIE_AGE"; "SESSION_"; "SESSION_X_"; "XSESSION_Y" `SESSION_Z`"#;
    let found = names(text, '"', '"');
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["SESSION_COOKIE_AGE"]
    );
    assert_eq!(
        names(text, '`', '`').into_iter().collect::<Vec<_>>(),
        ["SESSION_Z"]
    );
}

/// The README's counts of conformance cases are the suites' own.
#[test]
fn readme_counts_the_conformance_cases() {
    let root = root();
    let suites = fs::read_to_string(root.join("tests/src/lib.rs")).expect("tests/src/lib.rs");
    let counts: Vec<usize> = suites
        .split("conformance_suite!(@cases $engine;")
        .skip(1)
        .map(|block| {
            let list = &block[..block.find(");").expect("the end of a case list")];
            list.split(',')
                .filter(|case| !case.trim().is_empty())
                .count()
        })
        .collect();
    let [server, cookie] = counts[..] else {
        panic!("expected two case lists, found {counts:?}");
    };
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let claim = format!(
        "`tests/src/cases.rs`: {server} cases on each server-side engine, {cookie} on the cookie engines"
    );
    assert!(flat.contains(&claim), "README.md should say: {claim}");
}
