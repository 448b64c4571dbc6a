//! Scenario tests in the spirit of Proxmox's HA simulator tests: each directory of
//! `tests/scenarios/` holds a `scenario.toml` (cluster, fault script, settings) and the
//! `log.expect` the supervisor must write, one decision per line in virtual time. The runner runs
//! the real engine against the simulated cluster and diffs the story. A missing `log.expect` fails
//! the test (it is written, to review like code and commit); `AM_BLESS=1` rewrites them all.
//!
//! Beyond the log, every scenario must end with every protected VM running (except those its
//! `allow_down` names) and with no invariant broken (a VM on two hosts, a host over capacity, a
//! user power-off overridden), as the simulator, which knows the truth, sees it.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use am_daemon::scenario::{self, Scenario};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn scenario_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("scenario.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Runs one scenario; returns a failure description, or None.
fn check(dir: &Path, bless: bool) -> Option<String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let scn = match Scenario::load(&dir.join("scenario.toml")) {
        Ok(s) => s,
        Err(e) => return Some(format!("{name}: {e}")),
    };
    let outcome = match scenario::run_blocking(&scn, None) {
        Ok(o) => o,
        Err(e) => return Some(format!("{name}: {e}")),
    };
    let mut story = String::new();
    for line in scenario::story(&outcome.log, scn.log_backups) {
        let _ = writeln!(story, "{line}");
    }
    let mut problems = Vec::new();
    if !outcome.summary.violations.is_empty() {
        problems.push(format!("invariants broken: {:?}", outcome.summary.violations));
    }
    if !outcome.summary.protected_not_running.is_empty() {
        problems.push(format!(
            "protected VMs not running at the end: {:?}",
            outcome.summary.protected_not_running
        ));
    }
    let expect_path = dir.join("log.expect");
    match std::fs::read_to_string(&expect_path) {
        Ok(expected) if !bless => {
            if expected != story {
                let diff = first_difference(&expected, &story);
                problems.push(format!(
                    "log differs from log.expect (AM_BLESS=1 rewrites it):\n{diff}"
                ));
            }
        }
        found => {
            if let Err(e) = std::fs::write(&expect_path, &story) {
                problems.push(format!("cannot write {}: {e}", expect_path.display()));
            }
            if found.is_err() && !bless {
                problems.push(
                    "no log.expect: written now, review and commit it (a scenario without its expected story asserts nothing)".into(),
                );
            }
        }
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!("{name}: {}", problems.join("; ")))
    }
}

fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let at = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    let show = |lines: &[&str]| {
        lines
            .iter()
            .skip(at)
            .take(3)
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "  first difference at line {} ({} lines expected, {} produced)\n  expected:\n{}\n  got:\n{}",
        at + 1,
        e.len(),
        g.len(),
        show(&e),
        show(&g)
    )
}

#[test]
fn scenarios_tell_the_expected_story() {
    let bless = std::env::var_os("AM_BLESS").is_some();
    let dirs = scenario_dirs();
    // A guard against scenarios lost by a move or a bad glob: raise it as scenarios are added.
    assert!(dirs.len() >= 33, "at least 33 scenarios, found {}", dirs.len());
    let failures: Vec<String> = dirs.iter().filter_map(|d| check(d, bless)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn a_scenario_runs_the_same_twice() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/host-crash-failover-and-revive");
    let scn = Scenario::load(&dir.join("scenario.toml")).expect("loads");
    let run = || {
        let o = scenario::run_blocking(&scn, None).expect("runs");
        o.log.iter().map(|l| l.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(run(), run(), "same inputs, same log");
}
