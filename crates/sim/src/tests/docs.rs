//! The formats documented in the crate docs parse as documented.

use crate::{ClusterSpec, FaultScript, Sim};
use am_core::RestartPriority;

/// The lines of the first fenced block of `lang` in the crate docs.
fn doc_block(lang: &str) -> String {
    let src = include_str!("../lib.rs");
    let docs: Vec<&str> = src
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = docs.iter().position(|l| *l == format!("```{lang}")).unwrap() + 1;
    let len = docs[start..].iter().position(|l| *l == "```").unwrap();
    docs[start..start + len].join("\n")
}

#[test]
fn the_documented_cluster_spec_parses() {
    let spec = ClusterSpec::from_toml_str(&doc_block("toml")).unwrap();
    assert_eq!(spec.seed, 42);
    assert_eq!(spec.hosts.len(), 2);
    assert_eq!(spec.vms[0].priority, RestartPriority::High);
    assert!(spec.spares.contains_key("spare-1"));
    assert!(spec.initial_snapshots && spec.initial_clones);
}

#[tokio::test(start_paused = true)]
async fn the_documented_fault_script_parses_and_fits_a_generated_cluster() {
    let script = FaultScript::parse(&doc_block("text")).unwrap();
    assert_eq!(script.faults.len(), 20);
    let sim = Sim::new(&ClusterSpec::generate(5, 12, 1, 3)).unwrap();
    sim.check_script(&script).unwrap();
    assert!(sim.run_script(script).await.is_empty());
    assert_eq!(sim.fault_history().len(), 20);
}
