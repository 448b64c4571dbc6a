//! `am-daemon demo`: the real engine against the built-in simulated cluster, telling a story in
//! virtual time, with a live text view and a closing report.

use crate::engine::Observer;
use crate::report::{self, Summary};
use crate::scenario::{self, Scenario, ScenarioError};
use am_core::{LogKind, Output, Time};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use supervisor::{HostState, Supervisor, VmState};

/// The default story: about 6 hosts, 120 VMs and one spare host. Every rung of the VM recovery
/// ladder, a user power-off, a host crash (revived), an isolated host (left alone), then every
/// original host failing until only the spare is left.
pub const DEFAULT_SCENARIO: &str = r#"
description = """
Six hosts, 120 VMs, one spare. VMs crash at every depth of the recovery ladder; a user switches
one off; a host crashes and is revived; another is isolated and left alone; then every original
host fails for good, one a minute, until only the spare host is left running everything."""
run_for = "900s"
faults = """
at 20s  vm vm-007 crash                 # reset brings it back
at 40s  vm vm-012 poweroff by alice     # a person switched it off: alarm, nothing else
at 60s  vm vm-023 hang                  # zero CPU, heartbeat red: reset
at 80s  vm vm-031 crash corrupt         # reset does not help: revert to the last good snapshot
at 100s vm vm-044 crash disklost        # nor does the snapshot: restore the backup clone
at 120s vm vm-055 crash hostlocal       # only another host helps: cold migration
at 150s host h2 crash                   # dead: its VMs restart by plan; revival brings it back
at 240s host h3 isolate                 # unreachable but alive: never restarted elsewhere
at 300s host h3 heal
at 360s host h1 crash permanent         # from here on every original host dies for good
at 420s host h4 crash permanent
at 480s host h5 crash permanent
at 540s host h6 crash permanent
at 600s host h2 crash permanent
at 660s host h3 crash permanent         # no original host left: the spare carries everything
"""

[generate]
hosts = 6
vms = 120
spares = 1
seed = 7
spares_hold_everything = true

[supervisor]
recovery_grace = "20s"
"#;

/// Demo options.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A scenario file instead of the built-in story.
    pub scenario: Option<std::path::PathBuf>,
    /// Overrides the seed of the cluster and the probes.
    pub seed: Option<u64>,
    /// Print the report as JSON instead of text, and no live view.
    pub json: bool,
    /// No live view, only the report.
    pub quiet: bool,
}

/// Loads the scenario the options name (or the built-in one) with the seed applied.
pub fn scenario(opts: &Options) -> Result<Scenario, ScenarioError> {
    let mut s = match &opts.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::from_toml(DEFAULT_SCENARIO, "built-in demo")?,
    };
    if let Some(seed) = opts.seed {
        if let Some(g) = s.generate.as_mut() {
            g.seed = seed;
        }
        if let Some(c) = s.cluster.as_mut() {
            c.seed = seed;
        }
        let mut p = s.probe.clone().unwrap_or_default();
        p.seed = seed;
        s.probe = Some(p);
    }
    Ok(s)
}

/// Runs the demo, printing to `out`; returns the report. Exit status 0 is `summary.ok()`.
pub fn run(opts: &Options, out: Arc<Mutex<dyn Write + Send>>) -> Result<Summary, ScenarioError> {
    let scenario = scenario(opts)?;
    let live = !(opts.json || opts.quiet);
    if live {
        if let Ok(mut w) = out.lock() {
            let _ = writeln!(
                w,
                "Availability Manager demo (virtual time)\n{}\n",
                scenario.description.trim()
            );
        }
    }
    let observer: Option<Observer> = if live { Some(live_view(out.clone())) } else { None };
    let outcome = scenario::run_blocking(&scenario, observer)?;
    if let Ok(mut w) = out.lock() {
        if opts.json {
            let json = serde_json::json!({
                "summary": outcome.summary,
                "ok": outcome.summary.ok(),
            });
            let _ = writeln!(w, "{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        } else {
            let _ = writeln!(
                w,
                "\n{}",
                am_api::render_stats(&outcome.snapshot, am_api::terminal_width())
            );
            let _ = writeln!(w, "\n{}", report::render(&outcome.summary));
            let verdict = if outcome.summary.ok() {
                "OK: every protected VM runs again and no invariant broke"
            } else {
                "FAILED: see above"
            };
            let _ = writeln!(w, "{verdict}");
        }
    }
    Ok(outcome.summary)
}

/// The live view: each decision as it is made, and a status line every simulated minute.
fn live_view(out: Arc<Mutex<dyn Write + Send>>) -> Observer {
    let mut next_status = Time::from_secs(60);
    Box::new(move |now: Time, output: &Output, sup: &Supervisor| {
        let Ok(mut w) = out.lock() else { return };
        for e in scenario::story(&output.log, false) {
            // A VM's step is told by its transition line; successes by the next transition.
            let vm_issue = matches!(
                (&e.kind, &e.subject),
                (LogKind::Issued { .. }, am_core::Subject::Vm(_))
            );
            if vm_issue || matches!(e.kind, LogKind::Finished { ok: true, .. }) {
                continue;
            }
            let _ = writeln!(w, "{e}");
        }
        if now >= next_status {
            next_status = Time::from_secs((now.as_millis() / 60_000 + 1) * 60);
            let _ = writeln!(w, "{}", status_line(now, sup));
        }
    })
}

/// One line summing up the cluster.
pub fn status_line(now: Time, sup: &Supervisor) -> String {
    let status = sup.status();
    let mut hosts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in status.hosts.values() {
        *hosts.entry(s.name()).or_default() += 1;
    }
    let mut vms: BTreeMap<String, usize> = BTreeMap::new();
    let backups = sup
        .inventory()
        .vms
        .values()
        .filter(|v| v.backup_of.is_some())
        .count();
    for (id, s) in &status.vms {
        if sup.inventory().vms.get(id).is_some_and(|v| v.backup_of.is_some()) {
            continue;
        }
        let key = match s {
            VmState::StayOff { .. } => "off".to_owned(),
            VmState::Recovering { .. } | VmState::Verifying { .. } | VmState::Deferred { .. } => {
                "recovering".to_owned()
            }
            VmState::Frozen { .. } => "frozen".to_owned(),
            other => other.name(),
        };
        *vms.entry(key).or_default() += 1;
    }
    let join = |m: Vec<(String, usize)>| {
        m.into_iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let up = status.hosts.values().filter(|s| **s == HostState::Up).count();
    format!(
        "── {:>8} hosts: {} ({} up) | VMs: {} | backups: {} | in flight: {} | alarms: {}",
        now.to_string(),
        join(hosts.into_iter().map(|(k, n)| (k.to_owned(), n)).collect()),
        up,
        join(vms.into_iter().collect()),
        backups,
        status.in_flight.len(),
        status.alarms.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_scenario_parses_and_names_real_vms() {
        let s = scenario(&Options::default()).unwrap();
        let spec = s.cluster().unwrap();
        assert_eq!(spec.hosts.len(), 6);
        assert_eq!(spec.vms.len(), 120);
        let sim = sim::Sim::new(&spec).unwrap();
        let script = sim::FaultScript::parse(&s.faults).unwrap();
        sim.check_script(&script).unwrap();
    }

    #[test]
    fn a_seed_changes_the_cluster() {
        let a = scenario(&Options {
            seed: Some(1),
            ..Options::default()
        })
        .unwrap()
        .cluster()
        .unwrap();
        let b = scenario(&Options {
            seed: Some(2),
            ..Options::default()
        })
        .unwrap()
        .cluster()
        .unwrap();
        assert_ne!(a, b);
    }
}
