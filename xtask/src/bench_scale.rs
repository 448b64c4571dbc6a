//! `cargo xtask bench-scale`: one `am-daemon run` (release) against the vcsim test bed at 2,000
//! and 10,000 VMs (on 100 and on 1,000 hosts): how long until it is ready, its CPU at rest and
//! its peak memory, with the backup cache on (the default) and off, and the backup tasks it
//! starts on vCenter a minute against the budget, each as a ratio to issue 12's goals; then
//! `am-daemon demo` against the simulated cluster at 50,000 VMs (`bench_scale_sim.rs`). Linux
//! only (`/proc`).

use crate::{Result, bench_scale_sim, rund};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Issue 12's goals: idle CPU (share of one core), peak RSS (at 10,000 VMs), ready after start.
pub const GOAL_CPU_PCT: f64 = 2.0;
pub const GOAL_RSS_MIB: f64 = 50.0;
pub const GOAL_READY_S: f64 = 5.0;
/// `[supervisor.backup] tasks_per_minute`'s default: the backup cache's budget on one vCenter
/// (snapshots, clones and their removals started a minute).
pub const BACKUP_BUDGET_PER_MIN: f64 = 60.0;
/// The backup cache's operations (`Action::name`).
pub const BACKUP_OPS: [&str; 4] = ["create_snapshot", "remove_snapshot", "clone", "delete_backup"];

struct Opts {
    sizes: Vec<(u32, u32)>,
    warmup: Duration,
    window: Duration,
    vcsim: bool,
    sim: bench_scale_sim::SimOpts,
}

fn parse(rest: &[&str]) -> Result<Opts> {
    let mut o = Opts {
        // 2,000 and 10,000 VMs, and 10,000 on 1,000 hosts (issue 12's goal).
        sizes: vec![(20, 100), (100, 100), (1000, 10)],
        warmup: Duration::from_secs(40),
        window: Duration::from_secs(60),
        vcsim: true,
        sim: bench_scale_sim::SimOpts::default(),
    };
    let mut sized = false;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match *a {
            "--hosts-vms" => {
                let v = it
                    .next()
                    .ok_or("--hosts-vms needs HOSTSxVMS_PER_HOST, e.g. 100x100")?;
                let (h, v) = v.split_once('x').ok_or("--hosts-vms: write HOSTSxVMS_PER_HOST")?;
                let h = h.parse().map_err(|e| format!("--hosts-vms hosts: {e}"))?;
                let v = v.parse().map_err(|e| format!("--hosts-vms VMs per host: {e}"))?;
                // Repeatable: the first replaces the default sizes, the others add to it.
                if !sized {
                    o.sizes.clear();
                    sized = true;
                }
                o.sizes.push((h, v));
            }
            "--warmup" => o.warmup = Duration::from_secs(value("--warmup")?),
            "--window" => o.window = Duration::from_secs(value("--window")?),
            "--sim-vms" => {
                o.sim.vms = u32::try_from(value("--sim-vms")?).map_err(|_| "--sim-vms: too large")?;
            }
            "--sim-window" => o.sim.window_s = value("--sim-window")?,
            "--no-sim" => o.sim.vms = 0,
            "--no-vcsim" | "--only-sim" => o.vcsim = false,
            other => return Err(format!("bench-scale: unknown option {other}")),
        }
    }
    if !o.vcsim && o.sim.vms == 0 {
        return Err("bench-scale: --no-vcsim with --no-sim (or --sim-vms 0) measures nothing".into());
    }
    if o.sim.window_s == 0 {
        return Err("bench-scale: --sim-window must be at least 1 s".into());
    }
    Ok(o)
}

struct Row {
    vms: u32,
    hosts: u32,
    backups: bool,
    ready: Duration,
    cpu_pct: f64,
    rss_mib: f64,
    /// Backup tasks started a minute over the window (cache on only).
    backup_per_min: Option<f64>,
}

pub fn bench_scale(root: &Path, rest: &[&str]) -> Result<()> {
    let o = parse(rest)?;
    if o.vcsim {
        crate::build_vcsim()?;
    }
    let daemon = rund::build_release(root)?;
    let out_dir = rund::target_dir(root).join("bench-scale");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let tck = clock_ticks()?;
    let mut tables = Vec::new();
    if o.vcsim {
        tables.push(vcsim_part(&daemon, &out_dir, &o, tck)?);
    }
    if o.sim.vms > 0 {
        let row = bench_scale_sim::measure(&daemon, &out_dir, &o.sim, tck)?;
        tables.push(bench_scale_sim::render(&row, &o.sim));
    }
    let table = tables.join("\n");
    println!("{table}");
    let results = out_dir.join("results.md");
    std::fs::write(&results, &table).map_err(|e| format!("{}: {e}", results.display()))?;
    eprintln!("bench-scale: written to {}", results.display());
    Ok(())
}

/// The vcsim rows: each size with the backup cache on and off.
fn vcsim_part(daemon: &Path, out_dir: &Path, o: &Opts, tck: f64) -> Result<String> {
    let mut rows = Vec::new();
    for &(hosts, per_host) in &o.sizes {
        eprintln!("bench-scale: starting vcsim with {hosts} hosts x {per_host} VMs ...");
        let sim = am_testbed::Vcsim::start(&am_testbed::Spec {
            hosts,
            vms_per_host: per_host,
            ..am_testbed::Spec::default()
        });
        for backups in [true, false] {
            let dir = out_dir.join(format!(
                "{}-{hosts}hosts-{}",
                hosts * per_host,
                if backups { "cache" } else { "nocache" }
            ));
            let backup = if backups {
                ""
            } else {
                "[supervisor.backup]\nsnapshot_every = \"0s\"\n"
            };
            let d = rund::Daemon::start(
                daemon,
                &dir,
                &sim,
                &format!(
                    "[targets.hosts]\naddress = \"none\"\n[targets.guests]\naddress = \"none\"\n{backup}"
                ),
            )?;
            let (cpu_pct, rss_mib, backup_per_min) = measure(&d, o, tck)?;
            let backup_per_min = backup_per_min.filter(|_| backups);
            let ready = d.ready;
            drop(d);
            eprintln!(
                "bench-scale: {} VMs, backup cache {}: ready {:.1} s, idle CPU {cpu_pct:.2} %, peak RSS {rss_mib:.0} MiB{}",
                hosts * per_host,
                if backups { "on" } else { "off" },
                ready.as_secs_f64(),
                backup_per_min.map_or(String::new(), |b| format!(", {b:.1} backup tasks a minute"))
            );
            rows.push(Row {
                vms: hosts * per_host,
                hosts,
                backups,
                ready,
                cpu_pct,
                rss_mib,
                backup_per_min,
            });
        }
    }
    Ok(render(&rows, o))
}

/// CPU over the window after the warm-up, peak RSS, and the backup tasks started a minute over
/// the window (from `/metrics`), of the ready daemon `d`.
fn measure(d: &rund::Daemon, o: &Opts, tck: f64) -> Result<(f64, f64, Option<f64>)> {
    let pid = d.pid();
    std::thread::sleep(o.warmup);
    let tasks_before = backup_tasks_started(d);
    let before = cpu_ticks(pid)?;
    let t = Instant::now();
    std::thread::sleep(o.window);
    let used = (cpu_ticks(pid)? - before) / tck;
    let elapsed = t.elapsed().as_secs_f64();
    let tasks = backup_tasks_started(d)
        .zip(tasks_before)
        .map(|(after, before)| (after - before) * 60.0 / elapsed);
    let cpu_pct = 100.0 * used / elapsed;
    Ok((cpu_pct, peak_rss_mib(pid)?, tasks))
}

/// The backup tasks the daemon's executor started so far (`am_executor_actions_started_total`
/// of the backup operations in `/metrics`); `None` when the metrics cannot be read.
fn backup_tasks_started(d: &rund::Daemon) -> Option<f64> {
    let (status, body) = am_testbed::http(&d.addr, "GET", "/metrics").ok()?;
    if status != 200 {
        return None;
    }
    Some(
        body.lines()
            .filter_map(|l| l.strip_prefix("am_executor_actions_started_total{"))
            .filter(|l| BACKUP_OPS.iter().any(|op| l.contains(&format!("op=\"{op}\""))))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.trim().parse::<f64>().ok()))
            .sum(),
    )
}

pub fn clock_ticks() -> Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("getconf CLK_TCK: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("getconf CLK_TCK: {e}"))
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("/proc stat without a command")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<f64> {
        f.get(i)
            .ok_or(format!("/proc/{pid}/stat: too few fields"))?
            .parse()
            .map_err(|e| format!("/proc/{pid}/stat: {e}"))
    };
    // After the name: state is field 0, utime 11, stime 12.
    Ok(field(11)? + field(12)?)
}

/// Peak resident memory of a process (`VmHWM`), MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or(format!("/proc/{pid}/status has no VmHWM"))?;
    Ok(kib / 1024.0)
}

fn render(rows: &[Row], o: &Opts) -> String {
    let mut s = format!(
        "`cargo xtask bench-scale`: am-daemon run (release) against am-vcsim, nothing probed, defaults otherwise; ready = /readyz 200 after start; CPU over {} s after {} s at rest; ratios are to issue 12's goals (<= {GOAL_CPU_PCT} % of a core, <= {GOAL_RSS_MIB} MiB, ready <= {GOAL_READY_S} s; below 1 meets it); backup tasks = snapshots, clones and their removals the daemon started on vCenter a minute over the same window (`am_executor_actions_started_total` in /metrics), as a ratio to the per-vCenter budget (`[supervisor.backup] tasks_per_minute`, default {BACKUP_BUDGET_PER_MIN}).\n\n| VMs | hosts | backup cache | ready | idle CPU | peak RSS | backup tasks on vCenter |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        o.window.as_secs(),
        o.warmup.as_secs()
    );
    for r in rows {
        let ready = r.ready.as_secs_f64();
        let tasks = r.backup_per_min.map_or_else(
            || "-".to_owned(),
            |b| format!("{b:.1} a minute ({:.2}x the budget)", b / BACKUP_BUDGET_PER_MIN),
        );
        s.push_str(&format!(
            "| {} | {} | {} | {ready:.1} s ({:.2}x) | {:.2} % ({:.2}x) | {:.0} MiB ({:.2}x) | {tasks} |\n",
            r.vms,
            r.hosts,
            if r.backups { "on" } else { "off" },
            ready / GOAL_READY_S,
            r.cpu_pct,
            r.cpu_pct / GOAL_CPU_PCT,
            r.rss_mib,
            r.rss_mib / GOAL_RSS_MIB
        ));
    }
    s
}
