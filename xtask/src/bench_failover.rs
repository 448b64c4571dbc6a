//! `cargo xtask bench-failover`: a crashed host's VMs restarted by `am-daemon run` (release)
//! against the vcsim test bed, with a latency injected per `PowerOnVM_Task`: how long after the
//! `dead` verdict every restart command is issued, and the makespan against the bound the
//! executor's concurrency limits set (ceil(N/C)·L).

use crate::{Result, rund};
use std::path::Path;
use std::time::{Duration, Instant};

/// Issue 12's goals: every restart issued within this of the verdict; the makespan within this
/// of the bound.
const GOAL_ISSUED_MS: f64 = 10.0;
const GOAL_BOUND_RATIO: f64 = 1.1;
/// The executor's bounds in `am-daemon run` (`[executor]`'s defaults): in flight in all, and per
/// target host.
const MAX_IN_FLIGHT: u32 = 128;
const PER_HOST: u32 = 32;

struct Opts {
    vms: u32,
    targets: u32,
    latency_ms: u64,
}

fn parse(rest: &[&str]) -> Result<Opts> {
    let given = rund::numbers(rest, &["--vms", "--targets", "--latency-ms"])?;
    let o = Opts {
        vms: rund::small(&given, "--vms", 100)?,
        targets: rund::small(&given, "--targets", 10)?,
        latency_ms: given.get("--latency-ms").copied().unwrap_or(1000),
    };
    if o.vms == 0 || o.targets == 0 {
        return Err("--vms and --targets must be at least 1".into());
    }
    Ok(o)
}

/// What one failover showed, from the daemon's audit trail (its own clock, ms).
struct Figures {
    restarts: usize,
    /// From the `dead` verdict to the last restart command issued.
    issued_ms: f64,
    /// From the `dead` verdict to the last restart done.
    makespan_ms: f64,
    /// The quickest and the median restart, from its command to its outcome.
    min_ms: f64,
    median_ms: f64,
}

pub fn bench_failover(root: &Path, rest: &[&str]) -> Result<()> {
    let o = parse(rest)?;
    crate::build_vcsim()?;
    let daemon = rund::build_release(root)?;
    let out_dir = rund::target_dir(root).join("bench-failover");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mgmt_port = am_testbed::free_port();
    let (sim, source) = rund::packed_bed(o.vms, o.targets, "PowerOnVM_Task", o.latency_ms, mgmt_port)?;
    // Hosts probed on their management address (two signals: no one-at-a-time canary).
    let d = rund::Daemon::start(
        &daemon,
        &out_dir.join("run"),
        &sim,
        &format!(
            "[targets.hosts]\nport = {mgmt_port}\n[targets.guests]\naddress = \"none\"\n[supervisor.backup]\nsnapshot_every = \"0s\"\n"
        ),
    )?;
    // Probes settle (every host answering) before the crash.
    std::thread::sleep(Duration::from_secs(5));
    let calls_before = sim.get("/calls");
    sim.post(&format!("/host/crash?name={source}"));
    let crashed = Instant::now();
    let figures = loop {
        if let Some(f) = figures(&d, &source, o.vms)? {
            break f;
        }
        if crashed.elapsed() > Duration::from_secs(120 + 2 * u64::from(o.vms)) {
            return Err(format!(
                "{source}'s VMs not all restarted after {:?}",
                crashed.elapsed()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let calls = calls_between(&calls_before, &sim.get("/calls"));
    let c = MAX_IN_FLIGHT.min(PER_HOST.saturating_mul(o.targets)).max(1);
    let rounds = f64::from(o.vms.div_ceil(c));
    let bound_ms = rounds * o.latency_ms as f64;
    // One restart is more than its power-on: unregister, register and reads (the quickest
    // restart, the least contended, is its latency).
    let bound_min_ms = rounds * figures.min_ms;
    let mut table = format!(
        "`cargo xtask bench-failover`: am-daemon run (release) against am-vcsim, {} VMs packed on one host that crashes, {} surviving hosts, {} ms injected per PowerOnVM_Task, hosts probed on their management address; times from the daemon's audit trail (its step times), from the `dead` verdict; C = min(executor in flight {MAX_IN_FLIGHT}, per target host {PER_HOST} x hosts) = {c}; bound = ceil(N/C)·L with L the injected latency, and with L the quickest restart; goals: every restart issued within {GOAL_ISSUED_MS} ms, makespan <= {GOAL_BOUND_RATIO}x the bound.\n\n| restarts | last one issued after the verdict | one restart (quickest / median) | makespan | bound (L injected) | makespan / bound | bound (L quickest) | makespan / bound |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n| {} | {:.1} ms | {:.2} s / {:.2} s | {:.2} s | {:.1} s | {:.3}x | {:.2} s | {:.3}x |\n",
        o.vms,
        o.targets,
        o.latency_ms,
        figures.restarts,
        figures.issued_ms,
        figures.min_ms / 1000.0,
        figures.median_ms / 1000.0,
        figures.makespan_ms / 1000.0,
        bound_ms / 1000.0,
        figures.makespan_ms / bound_ms,
        bound_min_ms / 1000.0,
        figures.makespan_ms / bound_min_ms,
    );
    let per_restart = |n: f64| n / f64::from(o.vms);
    let total: f64 = calls.iter().map(|c| c.1).sum();
    table.push_str(&format!(
        "\nSOAP calls vCenter served from the crash to the last restart (all of the daemon's, the feed and probes included): {total:.0}, {:.1} per restart\n\n| method | calls | per restart | time serving them (sum) |\n| --- | --- | --- | --- |\n",
        per_restart(total)
    ));
    for (m, n, ms) in &calls {
        table.push_str(&format!(
            "| {m} | {n:.0} | {:.2} | {:.2} s |\n",
            per_restart(*n),
            ms / 1000.0
        ));
    }
    println!("{table}");
    let results = out_dir.join("results.md");
    std::fs::write(&results, &table).map_err(|e| format!("{}: {e}", results.display()))?;
    eprintln!("bench-failover: written to {}", results.display());
    Ok(())
}

/// The SOAP calls served between two readings of the test bed's `/calls`, busiest first:
/// (method, calls, ms serving them).
fn calls_between(before: &serde_json::Value, after: &serde_json::Value) -> Vec<(String, f64, f64)> {
    let field = |v: &serde_json::Value, m: &str, f: &str| v[m][f].as_f64().unwrap_or(0.0);
    let mut out: Vec<(String, f64, f64)> = after
        .as_object()
        .map(|o| {
            o.keys()
                .map(|m| {
                    (
                        m.clone(),
                        field(after, m, "count") - field(before, m, "count"),
                        field(after, m, "ms") - field(before, m, "ms"),
                    )
                })
                .filter(|c| c.1 > 0.0)
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The figures once every restart of the VMs of `source` is done, from `/api/v1/events`.
fn figures(d: &rund::Daemon, source: &str, vms: u32) -> Result<Option<Figures>> {
    let (_, body) = am_testbed::http(&d.addr, "GET", "/api/v1/events?limit=1000")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("events: {e}"))?;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let at = |e: &serde_json::Value| e["at"].as_f64().unwrap_or(f64::NAN);
    let Some(dead) = events
        .iter()
        .find(|e| e["kind"] == "transition" && e["to"] == "dead" && e["name"] == source)
        .map(at)
    else {
        return Ok(None);
    };
    let mut issued = std::collections::BTreeMap::new();
    for e in &events {
        let op = e["action"]["op"].as_str().unwrap_or_default();
        if e["kind"] == "issued" && matches!(op, "failover" | "power_on") && at(e) >= dead {
            issued.insert(e["id"].as_u64().unwrap_or(0), at(e));
        }
    }
    let done: Vec<(f64, f64)> = events
        .iter()
        .filter(|e| e["kind"] == "finished" && e["ok"] == true)
        .filter_map(|e| {
            issued
                .get(&e["id"].as_u64().unwrap_or(u64::MAX))
                .map(|i| (at(e), at(e) - i))
        })
        .collect();
    if done.len() < vms as usize {
        return Ok(None);
    }
    let last_issued = issued.values().copied().fold(f64::MIN, f64::max);
    let last_done = done.iter().map(|d| d.0).fold(f64::MIN, f64::max);
    let mut took: Vec<f64> = done.iter().map(|d| d.1).collect();
    took.sort_by(f64::total_cmp);
    Ok(Some(Figures {
        restarts: done.len(),
        issued_ms: last_issued - dead,
        makespan_ms: last_done - dead,
        min_ms: took.first().copied().unwrap_or(f64::NAN),
        median_ms: took.get(took.len() / 2).copied().unwrap_or(f64::NAN),
    }))
}
