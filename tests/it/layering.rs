//! ARCHITECTURE.md's boundaries, checked against the source: which module may name which crate
//! or module. A rule broken here is a boundary crossed in the code, whatever the tests of
//! behaviour say.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to `src/` (`/`-separated).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            (relative, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// Code lines only: comments and doc comments may name anything.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(index, line)| (index + 1, line))
}

/// Every place outside `allowed` (path prefixes under `src/`) whose code mentions `needle`.
fn offenders(needle: &str, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if allowed.iter().any(|prefix| path.starts_with(prefix)) {
            continue;
        }
        for (line_number, line) in code_lines(&text) {
            if line.contains(needle) {
                found.push(format!("src/{path}:{line_number}: {}", line.trim()));
            }
        }
    }
    found
}

fn check(needle: &str, allowed: &[&str], rule: &str) {
    let found = offenders(needle, allowed);
    assert!(found.is_empty(), "{rule}; `{needle}` appears in:\n{}", found.join("\n"));
}

#[test]
fn only_http_and_the_simulator_know_axum() {
    check("axum::", &["http/", "simulator/"], "only http (ours) and simulator (WeCom's) speak axum");
}

#[test]
fn unsafe_code_lives_only_where_the_finance_sdk_is_called() {
    check(
        "unsafe ",
        &["finance/ffi.rs", "finance/worker.rs"],
        "unsafe is for the SDK's C API and the worker's descriptors only",
    );
    check("libloading", &["finance/ffi.rs"], "only the FFI loads the SDK");
}

#[test]
fn only_store_knows_sql() {
    check("rusqlite", &["store/"], "only store knows the database engine");
}

#[test]
fn only_the_index_knows_tantivy() {
    check("tantivy", &["search/index.rs"], "the search index is the only place that knows Tantivy");
}

#[test]
fn storage_leaves_the_async_workers_through_one_hand_off() {
    check("spawn_blocking", &["store/mod.rs"], "store::blocking is the one hand-off to the blocking pool");
}

#[test]
fn only_the_front_door_and_the_wiring_use_the_front_door() {
    check(
        "crate::inbound",
        &["inbound/", "http/", "app.rs", "fuzzing.rs"],
        "the domain lives in domain, not in inbound",
    );
}

#[test]
fn the_domain_depends_on_nothing_of_ours() {
    let found: Vec<String> = sources()
        .into_iter()
        .filter(|(path, _)| path.starts_with("domain/"))
        .flat_map(|(path, text)| {
            code_lines(&text)
                .filter(|(_, line)| line.contains("crate::") && !line.contains("crate::domain"))
                .map(|(line_number, line)| format!("src/{path}:{line_number}: {}", line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(found.is_empty(), "domain is a leaf:\n{}", found.join("\n"));
}

#[test]
fn crypto_does_no_io_and_never_logs() {
    for needle in ["tracing::", "std::fs", "tokio::", "std::net", "reqwest"] {
        let found: Vec<String> =
            offenders(needle, &[]).into_iter().filter(|place| place.starts_with("src/crypto/")).collect();
        assert!(found.is_empty(), "crypto is pure; `{needle}` appears in:\n{}", found.join("\n"));
    }
}

#[test]
fn nothing_but_the_wiring_and_the_cli_imports_app() {
    check("crate::app", &["app.rs", "cli/", "bench/", "demo.rs"], "app is the top: nothing below it imports it");
}

#[test]
fn the_rules_see_the_code() {
    // A guard against a walk that finds nothing and so passes every rule.
    let files = sources();
    assert!(files.iter().any(|(path, _)| path == "http/mod.rs"));
    assert!(files.iter().any(|(path, text)| path == "store/mod.rs" && text.contains("spawn_blocking")));
    assert!(!offenders("axum::", &[]).is_empty(), "axum is found where it is used");
}
