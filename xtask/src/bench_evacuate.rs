//! `cargo xtask bench-evacuate`: the makespan of evacuating one host's VMs by live migration,
//! `am-daemon run` (release) against the vcsim test bed with a latency injected per
//! `MigrateVM_Task`, in parallel within the bounds against the same evacuation one move at a
//! time, and against the bound the concurrency limits set (ceil(N/C)·L).

use crate::{Result, rund};
use std::path::Path;
use std::time::{Duration, Instant};

/// Issue 14's goals: at least this much faster than serial, within this of the bound.
const GOAL_SPEEDUP: f64 = 20.0;
const GOAL_BOUND_RATIO: f64 = 1.1;

struct Opts {
    vms: u32,
    targets: u32,
    latency_ms: u64,
    per_source: u32,
    per_target: u32,
    in_flight: u32,
}

fn parse(rest: &[&str]) -> Result<Opts> {
    let given = rund::numbers(
        rest,
        &[
            "--vms",
            "--targets",
            "--latency-ms",
            "--per-source",
            "--per-target",
            "--in-flight",
        ],
    )?;
    let o = Opts {
        vms: rund::small(&given, "--vms", 100)?,
        targets: rund::small(&given, "--targets", 10)?,
        latency_ms: given.get("--latency-ms").copied().unwrap_or(1000),
        per_source: rund::small(&given, "--per-source", 32)?,
        per_target: rund::small(&given, "--per-target", 8)?,
        in_flight: rund::small(&given, "--in-flight", 64)?,
    };
    if o.vms == 0 || o.targets == 0 || o.per_source == 0 || o.per_target == 0 || o.in_flight == 0 {
        return Err("every option must be at least 1".into());
    }
    Ok(o)
}

pub fn bench_evacuate(root: &Path, rest: &[&str]) -> Result<()> {
    let o = parse(rest)?;
    crate::build_vcsim()?;
    let daemon = rund::build_release(root)?;
    let out_dir = rund::target_dir(root).join("bench-evacuate");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let parallel = (o.per_source, o.per_target, o.in_flight);
    let mut rows = Vec::new();
    for (label, bounds) in [("parallel", parallel), ("serial", (1, 1, 1))] {
        let makespan = run_once(&o, &daemon, &out_dir.join(label), bounds)?;
        eprintln!(
            "bench-evacuate: {label}: {} VMs in {:.2} s",
            o.vms,
            makespan.as_secs_f64()
        );
        rows.push((label, bounds, makespan));
    }
    let table = render(&o, &rows);
    println!("{table}");
    let results = out_dir.join("results.md");
    std::fs::write(&results, &table).map_err(|e| format!("{}: {e}", results.display()))?;
    eprintln!("bench-evacuate: written to {}", results.display());
    Ok(())
}

/// One evacuation: a fresh test bed and daemon; from the request to the host drained.
fn run_once(
    o: &Opts,
    daemon: &Path,
    dir: &Path,
    (per_source, per_target, in_flight): (u32, u32, u32),
) -> Result<Duration> {
    let (sim, source) = rund::packed_bed(o.vms, o.targets, "MigrateVM_Task", o.latency_ms, 0)?;
    let d = rund::Daemon::start(
        daemon,
        dir,
        &sim,
        &format!(
            "[targets.hosts]\naddress = \"none\"\n[targets.guests]\naddress = \"none\"\n[supervisor]\nevacuation_per_host = {per_source}\nevacuation_per_target = {per_target}\nevacuation_in_flight = {in_flight}\n[supervisor.backup]\nsnapshot_every = \"0s\"\n"
        ),
    )?;
    let asked = Instant::now();
    let (code, body) = d.post(&format!("/api/v1/hosts/{source}/evacuate?reason=benchmark"))?;
    if code != 202 {
        return Err(format!("evacuate refused ({code}): {body}"));
    }
    loop {
        match d.host_state(&source)?.as_str() {
            "drained" => return Ok(asked.elapsed()),
            "up" if asked.elapsed() > Duration::from_secs(5) => {
                return Err(format!(
                    "the evacuation of {source} did not finish; see the daemon's events"
                ));
            }
            _ => {}
        }
        if asked.elapsed() > Duration::from_secs(60 + 3 * u64::from(o.vms)) {
            return Err(format!("{source} not drained after {:?}", asked.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[allow(clippy::cast_precision_loss)]
fn render(o: &Opts, rows: &[(&str, (u32, u32, u32), Duration)]) -> String {
    let latency = o.latency_ms as f64 / 1000.0;
    let bound_of = |(s, t, a): (u32, u32, u32)| {
        let c = s.min(a).min(t.saturating_mul(o.targets)).max(1);
        f64::from(o.vms.div_ceil(c)) * latency
    };
    let serial = rows
        .iter()
        .find(|r| r.0 == "serial")
        .map_or(f64::NAN, |r| r.2.as_secs_f64());
    let mut out = format!(
        "`cargo xtask bench-evacuate`: am-daemon run (release) against am-vcsim, {} VMs packed on one host, {} target hosts, {} ms injected per MigrateVM_Task; makespan = from the API request to the host drained; bound = ceil(N/C)·L with C = min(per source, in all, per target x targets); goals: >= {GOAL_SPEEDUP}x serial, <= {GOAL_BOUND_RATIO}x the bound.\n\n| run | per source / per target / in all | makespan | bound | makespan / bound | speedup vs serial |\n| --- | --- | --- | --- | --- | --- |\n",
        o.vms, o.targets, o.latency_ms
    );
    for (label, bounds, makespan) in rows {
        let m = makespan.as_secs_f64();
        let b = bound_of(*bounds);
        out.push_str(&format!(
            "| {label} | {} / {} / {} | {m:.2} s | {b:.1} s | {:.3}x | {:.1}x |\n",
            bounds.0,
            bounds.1,
            bounds.2,
            m / b,
            serial / m
        ));
    }
    out
}
