//! `cargo xtask bench-scale`: one `am-daemon run` (release) against the vcsim test bed at 2,000
//! and 10,000 VMs: how long until it is ready, its CPU at rest and its peak memory, with the backup
//! cache on (the default) and off, each as a ratio to issue 12's goals. Linux only (`/proc`).

use crate::{Result, rund};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Issue 12's goals: idle CPU (share of one core), peak RSS, ready after start.
const GOAL_CPU_PCT: f64 = 2.0;
const GOAL_RSS_MIB: f64 = 50.0;
const GOAL_READY_S: f64 = 5.0;

struct Opts {
    sizes: Vec<(u32, u32)>,
    warmup: Duration,
    window: Duration,
}

fn parse(rest: &[&str]) -> Result<Opts> {
    let mut o = Opts {
        sizes: vec![(20, 100), (100, 100)],
        warmup: Duration::from_secs(40),
        window: Duration::from_secs(60),
    };
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
                o.sizes = vec![(h, v)];
            }
            "--warmup" => o.warmup = Duration::from_secs(value("--warmup")?),
            "--window" => o.window = Duration::from_secs(value("--window")?),
            other => return Err(format!("bench-scale: unknown option {other}")),
        }
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
}

pub fn bench_scale(root: &Path, rest: &[&str]) -> Result<()> {
    let o = parse(rest)?;
    crate::build_vcsim()?;
    let daemon = rund::build_release(root)?;
    let out_dir = rund::target_dir(root).join("bench-scale");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let tck = clock_ticks()?;
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
                "{}-{}",
                hosts * per_host,
                if backups { "cache" } else { "nocache" }
            ));
            let backup = if backups {
                ""
            } else {
                "[supervisor.backup]\nsnapshot_every = \"0s\"\n"
            };
            let d = rund::Daemon::start(
                &daemon,
                &dir,
                &sim,
                &format!(
                    "[targets.hosts]\naddress = \"none\"\n[targets.guests]\naddress = \"none\"\n{backup}"
                ),
            )?;
            let (cpu_pct, rss_mib) = measure(d.pid(), &o, tck)?;
            let ready = d.ready;
            drop(d);
            eprintln!(
                "bench-scale: {} VMs, backup cache {}: ready {:.1} s, idle CPU {cpu_pct:.2} %, peak RSS {rss_mib:.0} MiB",
                hosts * per_host,
                if backups { "on" } else { "off" },
                ready.as_secs_f64()
            );
            rows.push(Row {
                vms: hosts * per_host,
                hosts,
                backups,
                ready,
                cpu_pct,
                rss_mib,
            });
        }
    }
    let table = render(&rows, &o);
    println!("{table}");
    let results = out_dir.join("results.md");
    std::fs::write(&results, &table).map_err(|e| format!("{}: {e}", results.display()))?;
    eprintln!("bench-scale: written to {}", results.display());
    Ok(())
}

/// CPU over the window after the warm-up, and peak RSS, of the ready daemon `pid`.
fn measure(pid: u32, o: &Opts, tck: f64) -> Result<(f64, f64)> {
    std::thread::sleep(o.warmup);
    let before = cpu_ticks(pid)?;
    let t = Instant::now();
    std::thread::sleep(o.window);
    let used = (cpu_ticks(pid)? - before) / tck;
    let cpu_pct = 100.0 * used / t.elapsed().as_secs_f64();
    Ok((cpu_pct, peak_rss_mib(pid)?))
}

fn clock_ticks() -> Result<f64> {
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
fn cpu_ticks(pid: u32) -> Result<f64> {
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

fn peak_rss_mib(pid: u32) -> Result<f64> {
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
        "`cargo xtask bench-scale`: am-daemon run (release) against am-vcsim, nothing probed, defaults otherwise; ready = /readyz 200 after start; CPU over {} s after {} s at rest; ratios are to issue 12's goals (<= {GOAL_CPU_PCT} % of a core, <= {GOAL_RSS_MIB} MiB, ready <= {GOAL_READY_S} s; below 1 meets it).\n\n| VMs | hosts | backup cache | ready | idle CPU | peak RSS |\n| --- | --- | --- | --- | --- | --- |\n",
        o.window.as_secs(),
        o.warmup.as_secs()
    );
    for r in rows {
        let ready = r.ready.as_secs_f64();
        s.push_str(&format!(
            "| {} | {} | {} | {ready:.1} s ({:.2}x) | {:.2} % ({:.2}x) | {:.0} MiB ({:.2}x) |\n",
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
