//! The invariants of docs/architecture.md that a reading of the source can check, as
//! rust-analyzer's tidy tests do: a change that breaks one fails here, naming the file and line.
//!
//! 1. `planner` and `supervisor` do no I/O and read no clock: no tokio, no std::{fs, net,
//!    process, thread}, no `Instant`/`SystemTime`, and their dependencies are only the pure ones.
//! 2. Every state change of the supervisor goes through its one transition writer:
//!    `LogKind::Transition` is built, and a host's or VM's `state` assigned, only in `record.rs`.
//! 4. Only `vsphere-soap` knows XML: it alone depends on quick-xml or names it.
//!
//! And the style rule that a room has one job: no source file grows past its size (a ratchet for
//! the few still past 800 lines).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no Rust files under {}", dir.display());
    out
}

/// Lines of `file` that contain `needle`, outside comments; test code (`tests/`, `tests.rs`, and
/// a file's `#[cfg(test)]` module at its end) is not looked at.
fn offending(files: &[PathBuf], needles: &[&str], allow: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(root()).unwrap_or(f);
        let is_test = rel.components().any(|c| c.as_os_str() == "tests") || rel.ends_with("tests.rs");
        if is_test || allow(rel) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for needle in needles {
                if code.contains(needle) {
                    found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

/// The `[dependencies]` names of a crate's manifest.
fn dependencies(krate: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("crates").join(krate).join("Cargo.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn planner_and_supervisor_do_no_io_and_read_no_clock() {
    for krate in ["planner", "supervisor"] {
        let files = rust_files(&root().join("crates").join(krate).join("src"));
        let bad = offending(
            &files,
            &[
                "tokio",
                "std::fs",
                "std::net",
                "std::process",
                "std::thread",
                "Instant",
                "SystemTime",
                "std::env",
            ],
            |_| false,
        );
        assert!(bad.is_empty(), "{krate} must stay pure:\n{}", bad.join("\n"));
        let pure = ["am-core", "planner", "serde", "thiserror"];
        let deps = dependencies(krate);
        let impure: Vec<&String> = deps.iter().filter(|d| !pure.contains(&d.as_str())).collect();
        assert!(
            impure.is_empty(),
            "{krate} depends on {impure:?}: only {pure:?} keep it pure"
        );
    }
}

#[test]
fn every_supervisor_state_change_goes_through_the_one_writer() {
    let files = rust_files(&root().join("crates/supervisor/src"));
    let writer = |p: &Path| p.ends_with("crates/supervisor/src/record.rs");
    let bad = offending(
        &files,
        &[
            "LogKind::Transition {",
            ".state = ",
            "state: HostState::",
            "state: VmState::",
        ],
        writer,
    );
    // A record's construction starts from a placeholder state that first_*_state replaces.
    let bad: Vec<String> = bad
        .into_iter()
        .filter(|l| !(l.contains("state: HostState::Removed,") || l.contains("state: VmState::Unprotected,")))
        .collect();
    assert!(
        bad.is_empty(),
        "state changes outside record.rs (use set_host_state / set_vm_state / first_*_state):\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_vsphere_soap_knows_xml() {
    let crates = std::fs::read_dir(root().join("crates")).unwrap();
    let mut checked = 0;
    for c in crates.filter_map(Result::ok) {
        let name = c.file_name().to_string_lossy().into_owned();
        if name == "vsphere-soap" || !c.path().join("Cargo.toml").is_file() {
            continue;
        }
        checked += 1;
        let deps = dependencies(&name);
        assert!(
            !deps.iter().any(|d| d.contains("xml")),
            "{name} depends on an XML crate ({deps:?}): only vsphere-soap speaks XML"
        );
        let bad = offending(
            &rust_files(&c.path().join("src")),
            &["quick_xml", "<soapenv:", "xmlns"],
            |_| false,
        );
        assert!(bad.is_empty(), "XML outside vsphere-soap:\n{}", bad.join("\n"));
    }
    assert!(checked >= 10, "looked at {checked} crates");
}

/// Files past ~800 lines are asking to be split. The ones still past it may not grow; the list
/// only shrinks (remove a file once it is under 800 lines).
#[test]
fn no_source_file_grows_past_its_room() {
    const LIMIT: usize = 800;
    const RATCHET: &[(&str, usize)] = &[
        ("crates/planner/src/engine.rs", 1745),
        ("crates/am-api/src/snapshot.rs", 820),
        ("crates/am-vsphere/src/hypervisor.rs", 835),
        ("crates/sim/src/tests/ops.rs", 850),
    ];
    let mut bad = Vec::new();
    for dir in ["crates", "tests", "xtask"] {
        for f in rust_files(&root().join(dir)) {
            let rel = f.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            let max = RATCHET.iter().find(|(p, _)| *p == rel).map_or(LIMIT, |(_, n)| *n);
            if lines > max {
                bad.push(format!("{rel}: {lines} lines (at most {max})"));
            }
        }
    }
    assert!(bad.is_empty(), "split these rooms:\n{}", bad.join("\n"));
}
