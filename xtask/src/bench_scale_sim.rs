//! The simulated-cluster part of `cargo xtask bench-scale`: `am-daemon demo` (release), the real
//! daemon loop (supervisor, planner, executor, probe driver) against the built-in simulated
//! cluster in virtual time, at 50,000 VMs (500 hosts x 100). A scenario is written into
//! `target/bench-scale/sim-N/`: the cluster at rest for the warm-up and the window, then one host
//! crashes. The daemon's JSON log (stderr, `--log-level debug`) is read as it comes: its audit
//! lines carry virtual time (`at_ms`), and each productive step's `am::step` line the wall time
//! the engine spent on it (`wall_us`: from the observation to the last command handed to the
//! executor). CPU (`/proc/PID/stat`) is read at the step lines that open and close the window, so
//! the CPU at rest is the process's CPU over the virtual seconds simulated.
//!
//! The simulated cluster runs in the same process, on the same thread: its cost (a derived view
//! of every VM published after every API call, the invariant checks, the simulated probes) is in
//! every figure, CPU and memory alike.

use crate::Result;
use crate::bench_scale::{
    BACKUP_BUDGET_PER_MIN, BACKUP_OPS, GOAL_CPU_PCT, GOAL_READY_S, GOAL_RSS_MIB, cpu_ticks, peak_rss_mib,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Issue 12's goal: every restart command issued within this of the `dead` verdict.
const GOAL_ISSUED_MS: f64 = 10.0;
/// The memory goal is for this many VMs: scaled linearly to the size measured.
const GOAL_RSS_VMS: f64 = 10_000.0;
/// The host that crashes.
const CRASHED: &str = "h1";

/// The simulated part's options.
pub struct SimOpts {
    /// VMs (0: no simulated part).
    pub vms: u32,
    /// VMs per host.
    pub per_host: u32,
    /// Virtual seconds before the window.
    pub warmup_s: u64,
    /// Virtual seconds at rest measured.
    pub window_s: u64,
    /// Virtual seconds after the crash.
    pub settle_s: u64,
}

impl Default for SimOpts {
    fn default() -> Self {
        SimOpts {
            vms: 50_000,
            per_host: 100,
            warmup_s: 60,
            window_s: 300,
            settle_s: 60,
        }
    }
}

/// What one run showed.
pub struct SimRow {
    vms: u32,
    hosts: u32,
    /// From the process's start to the end of the daemon's first step.
    ready: Duration,
    /// The first step alone (inventory taken in, first plans made).
    first_step: Duration,
    /// CPU over the window, as a share of one core per virtual second.
    cpu_pct: f64,
    window_virtual_s: f64,
    window_wall_s: f64,
    /// The engine's productive steps in the window (their `wall_us`), per virtual second, as a
    /// share of one core: a lower bound of the daemon's own part (without its quiet steps, probe
    /// driver and executor).
    steps_pct: f64,
    rss_mib: f64,
    /// Backup tasks issued a virtual minute, from the warm-up to the crash.
    backup_per_min: f64,
    /// VMs of the crashed host waiting for a restart, and those whose restart was issued.
    waiting: usize,
    restarts: usize,
    /// From the `dead` verdict to the last restart issued, in virtual time and wall time.
    issued_virtual_ms: f64,
    issued_wall_ms: f64,
    /// The verdict's own step: its wall time and its commands.
    dead_step_ms: f64,
    dead_step_commands: u64,
    /// The report's row of the crash: detection and recovery (virtual seconds), outcome.
    detected_s: Option<f64>,
    recovered_s: Option<f64>,
    outcome: String,
    ok: bool,
}

/// The scenario: the generated cluster at rest, then `CRASHED` crashes at `crash_s`.
fn scenario(o: &SimOpts, hosts: u32, crash_s: u64) -> String {
    format!(
        r#"description = "cargo xtask bench-scale: {hosts} hosts x {per} VMs at rest for {crash_s} s, then {CRASHED} crashes"
run_for = "{run}s"
faults = "at {crash_s}s host {CRASHED} crash"
[generate]
hosts = {hosts}
vms = {vms}
seed = 1
# As `am-daemon run` sees vCenter with its defaults: no backup clones (clone_every = "0s"), no
# storage heartbeat (vCenter shows none), hosts probed on their management address. Guests are not
# probed (as in bench-failover; `run` probes them by default: 50,000 probes a second is the probe
# benchmark's subject, and here it would be the simulated prober's cost as much as the daemon's).
initial_clones = false
storage_heartbeats = false
guest_probes = false
"#,
        per = o.per_host,
        run = crash_s + o.settle_s,
        vms = o.vms,
    )
}

/// The demo process, killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the scenario once and measures it.
pub fn measure(daemon: &Path, out_dir: &Path, o: &SimOpts, tck: f64) -> Result<SimRow> {
    let hosts = o.vms.div_ceil(o.per_host.max(1));
    let dir = out_dir.join(format!("sim-{}", o.vms));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let crash_s = o.warmup_s + o.window_s;
    let file = dir.join("scenario.toml");
    std::fs::write(&file, scenario(o, hosts, crash_s)).map_err(|e| format!("{}: {e}", file.display()))?;
    let log_path = dir.join("daemon.log");
    let report_path = dir.join("report.json");
    let create = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut log = BufWriter::new(create(&log_path)?);
    eprintln!(
        "bench-scale: am-daemon demo against the simulated cluster, {hosts} hosts x {} VMs, {} s of virtual time ...",
        o.per_host,
        crash_s + o.settle_s
    );
    let started = Instant::now();
    let mut demo = Demo(
        Command::new(daemon)
            .args([
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "demo",
                "--json",
                "--quiet",
            ])
            .arg("--scenario")
            .arg(&file)
            .stdout(create(&report_path)?)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", daemon.display()))?,
    );
    let pid = demo.0.id();
    let peak = Arc::new(Mutex::new(0.0_f64));
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            // VmHWM only grows; a zombie has none (the loop ends with the process).
            while let Ok(mib) = peak_rss_mib(pid) {
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(mib);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let stderr = demo.0.stderr.take().ok_or("the demo has no stderr")?;
    let mut w = Watch::new(o.warmup_s * 1000, crash_s * 1000, started);
    for line in BufReader::new(stderr).lines() {
        let line = line.map_err(|e| format!("the demo's log: {e}"))?;
        let _ = writeln!(log, "{line}");
        w.line(&line, pid)?;
    }
    let _ = log.flush();
    let status = demo.0.wait().map_err(|e| e.to_string())?;
    let _ = sampler.join();
    if status.code() == Some(2) || status.code().is_none() {
        return Err(format!(
            "am-daemon demo failed ({status}); see {}",
            log_path.display()
        ));
    }
    let report: serde_json::Value = std::fs::read_to_string(&report_path)
        .map_err(|e| format!("{}: {e}", report_path.display()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", report_path.display())))?;
    let row = report["summary"]["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["subject"] == format!("host {CRASHED}")))
        .cloned()
        .unwrap_or_default();
    let rss_mib = *peak.lock().map_err(|_| "RSS sampler poisoned")?;
    let r = w.finish(o, tck, hosts, rss_mib, &row, report["ok"] == true)?;
    eprintln!(
        "bench-scale: simulated {} VMs: ready {:.1} s, CPU at rest {:.2} % of a core per virtual second, peak RSS {:.0} MiB, {} restarts issued {:.1} ms (wall) after the verdict",
        r.vms,
        r.ready.as_secs_f64(),
        r.cpu_pct,
        r.rss_mib,
        r.restarts,
        r.issued_wall_ms
    );
    Ok(r)
}

/// The verdict's step: when its line was read, its wall time and commands.
struct DeadStep {
    at_ms: u64,
    read: Option<(Instant, u64, u64)>,
}

/// Follows the log as it comes.
struct Watch {
    warmup_ms: u64,
    crash_ms: u64,
    started: Instant,
    ready: Option<(Duration, u64)>,
    /// CPU ticks at the step lines that open and close the window: (at_ms, ticks, read at).
    first: Option<(u64, f64, Instant)>,
    last: Option<(u64, f64, Instant)>,
    backup_issued: usize,
    /// Wall time of the productive steps inside the window, µs.
    steps_us: u64,
    dead: Option<DeadStep>,
    /// The crashed host's VMs waiting for a restart, and the restarts issued (virtual ms).
    waiting: BTreeSet<String>,
    issued: BTreeMap<String, u64>,
    /// A restart was issued in the step whose line comes next.
    restart_in_step: bool,
    /// The last step that issued a restart: when its line was read, its wall time.
    last_restart_step: Option<(Instant, u64)>,
}

impl Watch {
    fn new(warmup_ms: u64, crash_ms: u64, started: Instant) -> Watch {
        Watch {
            warmup_ms,
            crash_ms,
            started,
            ready: None,
            first: None,
            last: None,
            backup_issued: 0,
            steps_us: 0,
            dead: None,
            waiting: BTreeSet::new(),
            issued: BTreeMap::new(),
            restart_in_step: false,
            last_restart_step: None,
        }
    }

    fn line(&mut self, line: &str, pid: u32) -> Result<()> {
        // The first step's roll call (a line per host and VM) is skipped unparsed.
        if !line.contains("\"at_ms\"") || line.contains("\"from\":\"new\"") {
            return Ok(());
        }
        let read = Instant::now();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return Ok(());
        };
        let at = v["at_ms"].as_u64().unwrap_or_default();
        let str_of = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        match v["target"].as_str() {
            Some("am::step") => {
                let wall_us = v["wall_us"].as_u64().unwrap_or_default();
                let commands = v["commands"].as_u64().unwrap_or_default();
                if self.ready.is_none() {
                    self.ready = Some((read.duration_since(self.started), wall_us));
                }
                // The window opens at the first step at or after the warm-up and closes at the
                // first at or after the crash (the host's first suspicion, or a backup task): the
                // quiet stretches between steps are in it, one step past the crash too.
                if at >= self.warmup_ms && self.last.is_none() {
                    let ticks = cpu_ticks(pid)?;
                    if at < self.crash_ms {
                        if self.first.is_some() {
                            self.steps_us += wall_us;
                        }
                        self.first.get_or_insert((at, ticks, read));
                    } else if self.first.is_some() {
                        self.last = Some((at, ticks, read));
                    }
                }
                if let Some(d) = self.dead.as_mut().filter(|d| d.read.is_none()) {
                    d.read = Some((read, wall_us, commands));
                }
                if std::mem::take(&mut self.restart_in_step) {
                    self.last_restart_step = Some((read, wall_us));
                }
            }
            Some("am::audit") => {
                let (kind, subject, op) = (str_of("kind"), str_of("subject"), str_of("op"));
                if kind == "issued"
                    && BACKUP_OPS.contains(&op.as_str())
                    && self.first.is_some_and(|f| at >= f.0)
                    && self.last.is_none()
                    && at < self.crash_ms
                {
                    self.backup_issued += 1;
                }
                if kind == "transition"
                    && self.dead.is_none()
                    && at >= self.crash_ms
                    && subject == format!("host {CRASHED}")
                    && v["to"] == "dead"
                {
                    self.dead = Some(DeadStep {
                        at_ms: at,
                        read: None,
                    });
                }
                if self.dead.is_some() {
                    if kind == "transition" && v["reason"] == format!("host {CRASHED} dead") {
                        self.waiting.insert(subject.clone());
                    }
                    if kind == "issued"
                        && matches!(op.as_str(), "failover" | "power_on")
                        && self.waiting.contains(&subject)
                        && !self.issued.contains_key(&subject)
                    {
                        self.issued.insert(subject, at);
                        self.restart_in_step = true;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(
        self,
        o: &SimOpts,
        tck: f64,
        hosts: u32,
        rss_mib: f64,
        row: &serde_json::Value,
        ok: bool,
    ) -> Result<SimRow> {
        let (ready, first_step_us) = self.ready.ok_or("the demo logged no step")?;
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return Err(
                "no step of the daemon opens or closes the window at rest: nothing to measure it by".into(),
            );
        };
        let window_virtual_s = (last.0 - first.0) as f64 / 1000.0;
        let cpu_pct = 100.0 * (last.1 - first.1) / tck / window_virtual_s;
        let dead = self.dead.ok_or(format!("{CRASHED} was never declared dead"))?;
        let (dead_read, dead_wall_us, dead_commands) =
            dead.read.ok_or("the verdict's step has no step line")?;
        let last_issued = self.issued.values().copied().max().unwrap_or(dead.at_ms);
        // From the start of the verdict's step to the end of the last step that issued a
        // restart (the verdict's own step: its wall time).
        let issued_wall_us = self.last_restart_step.map_or(dead_wall_us as f64, |(read, us)| {
            if read == dead_read {
                us as f64
            } else {
                read.duration_since(dead_read).as_micros() as f64 + dead_wall_us as f64
            }
        });
        Ok(SimRow {
            vms: o.vms,
            hosts,
            ready,
            first_step: Duration::from_micros(first_step_us),
            cpu_pct,
            window_virtual_s,
            window_wall_s: last.2.duration_since(first.2).as_secs_f64(),
            steps_pct: 100.0 * self.steps_us as f64 / 1e6 / window_virtual_s,
            rss_mib,
            backup_per_min: self.backup_issued as f64 * 60.0 / window_virtual_s,
            waiting: self.waiting.len(),
            restarts: self.issued.len(),
            issued_virtual_ms: (last_issued - dead.at_ms) as f64,
            issued_wall_ms: issued_wall_us / 1000.0,
            dead_step_ms: dead_wall_us as f64 / 1000.0,
            dead_step_commands: dead_commands,
            detected_s: row["detection_s"].as_f64(),
            recovered_s: row["recovery_s"].as_f64(),
            outcome: row["outcome"].as_str().unwrap_or("no report row").to_owned(),
            ok,
        })
    }
}

/// The table (markdown) with the reading of its columns.
pub fn render(r: &SimRow, o: &SimOpts) -> String {
    let scaled = GOAL_RSS_MIB * f64::from(r.vms) / GOAL_RSS_VMS;
    let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
    let mut s = format!(
        "`cargo xtask bench-scale`, simulated cluster: am-daemon demo (release), the daemon's loop against the built-in simulated cluster in virtual time, {hosts} hosts x {per} VMs (`[generate]`, seed 1, no backup clones), hosts probed on their management address, guests not probed, no storage heartbeat (vCenter shows none), defaults otherwise (backup cache on); {CRASHED} crashes after {crash} s. **The simulated cluster runs in the same process and thread: every figure includes its cost.** Ready = process start to the end of the daemon's first step (inventory in, first plans made; includes the simulator building the cluster), the step alone in brackets; CPU = the process's CPU over {win:.1} s of virtual time at rest (from the daemon's first step after {warm} s to its first at or after the crash), per virtual second, as a share of one core ({wall:.0} s of wall time), and in brackets the wall time of the engine's productive steps in it (`am::step`), per virtual second: a lower bound of the daemon's own part; RSS = VmHWM over the run; backup tasks = snapshots and removals issued a virtual minute over the same window, against the budget (`tasks_per_minute` {BACKUP_BUDGET_PER_MIN}); issued = from {CRASHED}'s `dead` verdict to its last VM's restart handed to the executor, in virtual time (audit trail) / wall time (the engine's `am::step` lines). Ratios to issue 12's goals (<= {GOAL_CPU_PCT} % of a core, ready <= {GOAL_READY_S} s, every restart issued within {GOAL_ISSUED_MS} ms) and, for memory, to its goal at 10,000 VMs (<= {GOAL_RSS_MIB} MiB) **scaled** to {vms} VMs: <= {scaled:.0} MiB; below 1 meets it.\n\n| VMs | hosts | ready (first step) | CPU at rest | peak RSS | MiB per 1,000 VMs | backup tasks | {CRASHED}'s restarts issued | issued after the verdict (virtual / wall) | {CRASHED}: detected / recovered, outcome |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        hosts = r.hosts,
        per = o.per_host,
        crash = o.warmup_s + o.window_s,
        win = r.window_virtual_s,
        warm = o.warmup_s,
        wall = r.window_wall_s,
        vms = r.vms,
    );
    let ready = r.ready.as_secs_f64();
    s.push_str(&format!(
        "| {} | {} | {ready:.1} s ({:.2}x) ({:.2} s) | {:.2} % ({:.2}x) (steps {:.2} %) | {:.0} MiB ({:.2}x scaled) | {:.2} | {:.1} a minute ({:.2}x the budget) | {} of {} | {:.0} ms / {:.1} ms ({:.2}x); the verdict's step {:.1} ms, {} commands | {} / {}, {}{} |\n",
        r.vms,
        r.hosts,
        ready / GOAL_READY_S,
        r.first_step.as_secs_f64(),
        r.cpu_pct,
        r.cpu_pct / GOAL_CPU_PCT,
        r.steps_pct,
        r.rss_mib,
        r.rss_mib / scaled,
        r.rss_mib / (f64::from(r.vms) / 1000.0),
        r.backup_per_min,
        r.backup_per_min / BACKUP_BUDGET_PER_MIN,
        r.restarts,
        r.waiting,
        r.issued_virtual_ms,
        r.issued_wall_ms,
        r.issued_wall_ms / GOAL_ISSUED_MS,
        r.dead_step_ms,
        r.dead_step_commands,
        secs(r.detected_s),
        secs(r.recovered_s),
        r.outcome,
        if r.ok { "" } else { " (the demo: not every protected VM runs again)" },
    ));
    s
}
