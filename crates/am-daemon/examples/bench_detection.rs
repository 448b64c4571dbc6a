//! End-to-end detection benchmark: the real engine (probes, supervisor, executor) against the
//! simulated cluster, in virtual time, with default settings.
//!
//! - Host crash at a random moment: time to `unreachable` (the probe verdict plus the management
//!   server's signal), to `dead` (storage heartbeat silent, guests judged), and to the last of its
//!   VMs answering again; p50, p99 and max over many seeded runs.
//! - Soak: an hour of 20 % random probe loss on a healthy cluster: every false transition
//!   (suspect hosts, unreachable, dead, VM recoveries) counted.
//!
//! `cargo run --release -p am-daemon --example bench_detection -- [RUNS] [--write-docs]`

// A benchmark binary: a failed run is a failed benchmark.
#![allow(clippy::expect_used)]

use am_core::{LogKind, Subject};
use am_daemon::scenario::{self, Generate, Scenario};
use std::time::Duration;

fn scenario(seed: u64, faults: String, run_for: Duration) -> Scenario {
    Scenario {
        description: String::new(),
        run_for,
        faults,
        generate: Some(Generate {
            seed,
            initial_clones: false,
            ..Generate::new(4, 16)
        }),
        cluster: None,
        supervisor: supervisor::Config::default(),
        probe: Some(probe::Settings {
            seed,
            ..probe::Settings::default()
        }),
        log_backups: false,
        allow_down: vec!["*".into()],
        capabilities: None,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100);
    let write_docs = args.iter().any(|a| a == "--write-docs");

    let (mut unreachable, mut dead, mut recovered) = (Vec::new(), Vec::new(), Vec::new());
    for seed in 0..runs {
        // Crash h2 at 20 s plus a sub-second offset that differs per run.
        let crash_ms = 20_000 + (seed * 7_919) % 2_000;
        let faults = format!("at {crash_ms}ms host h2 crash permanent");
        let s = scenario(seed, faults, Duration::from_secs(60));
        let out = scenario::run_blocking(&s, None).expect("scenario runs");
        let crash = crash_ms as f64 / 1000.0;
        let when = |to: &str| {
            out.log.iter().find_map(|e| match (&e.subject, &e.kind) {
                (Subject::Host(h), LogKind::Transition { to: t, .. }) if h.as_str() == "h2" && t == to => {
                    Some(e.at.as_secs_f64() - crash)
                }
                _ => None,
            })
        };
        unreachable.extend(when("unreachable"));
        dead.extend(when("dead"));
        let last = out
            .log
            .iter()
            .filter(|e| matches!(&e.kind, LogKind::Transition { from, to, .. } if from == "verifying(failover)" && to == "healthy"))
            .map(|e| e.at.as_secs_f64() - crash)
            .fold(f64::NAN, f64::max);
        if last.is_finite() {
            recovered.push(last);
        }
    }
    for v in [&mut unreachable, &mut dead, &mut recovered] {
        v.sort_by(|a, b| a.total_cmp(b));
    }

    // Soak: one hour, 20 % probe loss from the start, nothing fails.
    let soak = scenario(4242, "at 1s probes loss 20%".into(), Duration::from_secs(3600));
    let out = scenario::run_blocking(&soak, None).expect("soak runs");
    let false_moves = out
        .log
        .iter()
        .filter(|e| matches!(&e.kind, LogKind::Transition { from, .. } if from != "new"))
        .count();
    let probes_per_hour = (4.0 * 10.0 + 16.0 * 4.0) * 3600.0; // hosts at 10/s, guests at 4/s

    let row = |name: &str, v: &[f64]| {
        format!(
            "| {name} | {} | {:.2} s | {:.2} s | {:.2} s |",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    let body = format!(
        "Measured by `cargo run --release -p am-daemon --example bench_detection -- {runs} --write-docs`: the real \
         engine (probe monitor, supervisor, executor) against the simulated cluster in virtual time, default \
         settings, 4 hosts and 16 VMs, storage heartbeat every 2 s; host h2 crashes at a different sub-second \
         moment in each of {runs} seeded runs.\n\n\
         | from the crash to | runs | p50 | p99 | max |\n| --- | --- | --- | --- | --- |\n{}\n{}\n{}\n\n\
         `unreachable` is the detector's verdict joined with vCenter's connection state: the probe's 2.5 s bound. \
         `dead` waits on purpose until the host's storage heartbeat is stale (6 s window) and its guests' own \
         detectors have had time to judge them (`guest_evidence_after`, raised to the guest detector's bound): \
         before that a crashed host cannot be told from an isolated one, and restarting the VMs of an isolated \
         host is the split brain this product never does. Recovery adds the failover itself (2 s in the \
         simulator) and the guest answering again.\n\n\
         Soak: one virtual hour of 20 % random probe loss (about {:.0} probes) on the healthy cluster: **{} false \
         transitions** (no host suspected, no VM recovered).\n",
        row("unreachable", &unreachable),
        row("dead (VMs restarted)", &dead),
        row("last VM answering again", &recovered),
        probes_per_hour,
        false_moves,
    );
    println!("{body}");
    if write_docs {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let heading = "## End-to-end detection (daemon + simulated cluster)";
        let section = format!("{heading}\n\n{body}");
        let new = match old.find(heading) {
            Some(start) => {
                let rest = &old[start + heading.len()..];
                let end = rest
                    .find("\n## ")
                    .map(|i| start + heading.len() + i + 1)
                    .unwrap_or(old.len());
                format!("{}{}{}", &old[..start], section, &old[end..])
            }
            None => format!("{}\n\n{section}", old.trim_end()),
        };
        std::fs::write(&path, new).expect("write docs/benchmarks.md");
    }
}
