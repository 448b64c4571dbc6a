//! `am-daemon stats`: the snapshot as text, and a `top`-like refresher.

use crate::error::ApiError;
use crate::snapshot::{ClusterStats, Snapshot, subject_path};
use am_core::{PowerState, Resources, RestartPriority, Severity};
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

/// Width used when the terminal's is not known.
pub const DEFAULT_WIDTH: usize = 100;

/// The terminal width from `COLUMNS` (set by most shells), else [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(DEFAULT_WIDTH)
}

/// `1h 05m`, `3d 4h`, `42s`.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else if secs < 10.0 && secs.fract() != 0.0 {
        format!("{secs:.1}s")
    } else {
        format!("{sec}s")
    }
}

fn ghz(mhz: u64) -> String {
    format!("{:.1}", mhz as f64 / 1000.0)
}

fn gib(mib: u64) -> String {
    format!("{:.1}", mib as f64 / 1024.0)
}

fn pct(used: u64, cap: u64) -> String {
    if cap == 0 {
        "-".into()
    } else {
        format!("{:.0}%", used as f64 * 100.0 / cap as f64)
    }
}

fn usage_cpu(used: Resources, cap: Resources) -> String {
    format!(
        "{}/{} GHz {}",
        ghz(used.cpu_mhz),
        ghz(cap.cpu_mhz),
        pct(used.cpu_mhz, cap.cpu_mhz)
    )
}

fn usage_mem(used: Resources, cap: Resources) -> String {
    format!(
        "{}/{} GiB {}",
        gib(used.mem_mib),
        gib(cap.mem_mib),
        pct(used.mem_mib, cap.mem_mib)
    )
}

fn power(p: PowerState) -> &'static str {
    match p {
        PowerState::PoweredOn => "on",
        PowerState::PoweredOff => "off",
        PowerState::Suspended => "suspended",
    }
}

fn priority(p: RestartPriority) -> &'static str {
    match p {
        RestartPriority::Disabled => "disabled",
        RestartPriority::Lowest => "lowest",
        RestartPriority::Low => "low",
        RestartPriority::Medium => "medium",
        RestartPriority::High => "high",
        RestartPriority::Highest => "highest",
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "CRITICAL",
    }
}

/// Cuts `line` to `width` characters (an ellipsis marks the cut).
fn fit(line: &str, width: usize) -> String {
    let n = line.chars().count();
    if n <= width {
        return line.trim_end().to_owned();
    }
    let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
    s.push('~');
    s
}

/// A table: header and rows, columns padded to their widest cell; the last column is not padded.
fn table(out: &mut Vec<String>, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 < widths.len() {
                let _ = write!(s, "{c:<w$}");
            } else {
                s.push_str(c);
            }
        }
        s
    };
    out.push(line(&mut header.iter().copied()));
    for r in rows {
        out.push(line(&mut r.iter().map(String::as_str)));
    }
}

fn ratio_pct(a: f64) -> String {
    let p = a * 100.0;
    if p >= 99.0 {
        format!("{p:.3}%")
    } else {
        format!("{p:.1}%")
    }
}

fn cluster_lines(out: &mut Vec<String>, s: &Snapshot, c: &ClusterStats) {
    let ftt = match &c.admission {
        Some(a) => format!(
            "{} (target {}{})",
            a.host_failures_tolerated,
            a.target,
            if a.meets_target { "" } else { ", NOT MET" }
        ),
        None => "-".into(),
    };
    out.push(format!(
        "CLUSTER  manager up {}  hosts {} ({} up)  VMs {} ({} on)",
        human_duration(s.now.as_secs_f64()),
        c.hosts,
        c.hosts_up,
        c.vms,
        c.vms_running
    ));
    out.push(format!(
        "  protected VMs {}  healthy {}  recovering {}  awaiting capacity {}  failed {}  frozen {}",
        c.protected_vms, c.healthy, c.recovering, c.awaiting_capacity, c.failed, c.frozen
    ));
    out.push(format!(
        "  host failures tolerated {ftt}  MTTR {}  availability {}  recoveries {}  incidents {} ({} open)",
        c.mttr_s.map_or_else(|| "-".into(), human_duration),
        c.availability.map_or_else(|| "-".into(), ratio_pct),
        c.recoveries,
        c.incidents,
        c.open_incidents
    ));
    out.push(format!(
        "  CPU {}  memory {}",
        usage_cpu(c.used, c.capacity),
        usage_mem(c.used, c.capacity)
    ));
    let mut flags = Vec::new();
    if c.manager_isolated {
        flags.push("MANAGER ISOLATED: acting on nothing".to_owned());
    }
    if c.storm {
        flags.push("STORM GUARD: failover held back".to_owned());
    }
    if let Some(why) = &c.disarmed {
        flags.push(format!("DISARMED ({why}): failures reported, not acted on"));
    }
    if !flags.is_empty() {
        out.push(format!("  {}", flags.join("  ")));
    }
    for e in &c.evacuations {
        out.push(format!(
            "  evacuating {} ({}): {}/{} moved, {} in flight, {} could not move, wave {}/{} done",
            e.host, e.reason, e.moved, e.planned, e.in_flight, e.failed, e.waves_done, e.waves
        ));
    }
}

/// The statistics as text, each line at most `width` characters: the cluster (protected VMs,
/// host failures tolerated, MTTR, availability), one row per host (state, VM count, CPU and memory
/// used/capacity, failure domain), one row per VM (health, host, power, uptime, restarts, last
/// incident), then active alarms and actions in flight.
pub fn render_stats(s: &Snapshot, width: usize) -> String {
    let width = width.max(40);
    let mut out: Vec<String> = Vec::new();
    if let Some(ha) = &s.ha {
        out.push(ha.line());
    }
    cluster_lines(&mut out, s, &s.cluster);

    out.push(String::new());
    let rows: Vec<Vec<String>> = s
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.state.clone(),
                h.since
                    .map_or_else(|| "-".into(), |t| human_duration(s.now.since(t).as_secs_f64())),
                h.vms.to_string(),
                usage_cpu(h.used, h.capacity),
                usage_mem(h.used, h.capacity),
                h.failure_domain.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "HOST",
            "STATE",
            "FOR",
            "VMS",
            "CPU used/cap",
            "MEM used/cap",
            "DOMAIN",
        ],
        &rows,
    );

    out.push(String::new());
    let rows: Vec<Vec<String>> = s
        .vms
        .iter()
        .map(|v| {
            let last = v.last_incident.as_ref().map_or_else(
                || "-".to_owned(),
                |i| {
                    let end = i.outcome.as_deref().unwrap_or("open");
                    format!("{} {} -> {end}", i.detected, i.cause)
                },
            );
            vec![
                v.name.clone(),
                v.state.to_string(),
                v.host.as_ref().map_or_else(|| "-".into(), ToString::to_string),
                power(v.power).to_owned(),
                priority(v.priority).to_owned(),
                v.uptime_s.map_or_else(|| "-".into(), human_duration),
                v.restarts.to_string(),
                last,
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "VM",
            "HEALTH",
            "HOST",
            "POWER",
            "PRIORITY",
            "UPTIME",
            "RESTARTS",
            "LAST INCIDENT",
        ],
        &rows,
    );

    out.push(String::new());
    if s.alarms.is_empty() {
        out.push("ALARMS  none".into());
    } else {
        out.push(format!("ALARMS  {} active", s.alarms.len()));
        for a in &s.alarms {
            out.push(format!(
                "  {:<8} {} {} {}: {}{}",
                severity(a.severity),
                a.at,
                crate::snapshot::alarm_kind_name(a.kind),
                subject_path(&a.subject),
                a.message,
                if a.acknowledged.is_some() { " [acked]" } else { "" }
            ));
        }
    }
    if s.in_flight.is_empty() {
        out.push("IN FLIGHT  none".into());
    } else {
        out.push(format!("IN FLIGHT  {}", s.in_flight.len()));
        for a in &s.in_flight {
            let phase = match a.phase {
                crate::snapshot::Phase::Running => "running",
                crate::snapshot::Phase::Queued => "queued",
                crate::snapshot::Phase::Issued => "issued",
            };
            let t = a.elapsed_s.map(human_duration).unwrap_or_default();
            out.push(format!("  {} {} {phase} {t}", a.id, a.action));
        }
    }
    let mut text = String::new();
    for line in out {
        text.push_str(&fit(&line, width));
        text.push('\n');
    }
    text
}

/// How [`watch`] refreshes.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Time between two redraws.
    pub interval: Duration,
    /// Line width (see [`terminal_width`]).
    pub width: usize,
    /// Stop after this many redraws (`None`: until the future is dropped).
    pub iterations: Option<u64>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: Duration::from_secs(2),
            width: terminal_width(),
            iterations: None,
        }
    }
}

/// Clears the terminal and moves the cursor home.
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Redraws `render_stats(fetch())` every `interval`, clearing the screen first, like `top`. A
/// failed fetch shows its error on the screen and the next redraw tries again. Runs until
/// `iterations` redraws were made (or forever: wrap it in `select!` with Ctrl-C). Errors only when
/// `out` cannot be written.
///
/// ```no_run
/// # async fn cli(url: String) -> std::io::Result<()> {
/// let opts = am_api::WatchOptions { interval: std::time::Duration::from_secs(2), ..Default::default() };
/// let mut stdout = std::io::stdout();
/// tokio::select! {
///     r = am_api::watch(&opts, || am_api::fetch_status(&url), &mut stdout) => r?,
///     _ = tokio::signal::ctrl_c() => {}
/// }
/// # Ok(())
/// # }
/// ```
pub async fn watch<F, Fut, W>(opts: &WatchOptions, mut fetch: F, out: &mut W) -> std::io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Snapshot, ApiError>>,
    W: std::io::Write,
{
    let mut ticker = tokio::time::interval(opts.interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        if opts.iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        ticker.tick().await;
        let body = match fetch().await {
            Ok(s) => render_stats(&s, opts.width),
            Err(e) => format!("{}\n", fit(&format!("error: {e}"), opts.width)),
        };
        out.write_all(CLEAR_SCREEN.as_bytes())?;
        out.write_all(body.as_bytes())?;
        writeln!(
            out,
            "{}",
            fit(
                &format!(
                    "(every {}; Ctrl-C to quit)",
                    human_duration(opts.interval.as_secs_f64())
                ),
                opts.width
            )
        )?;
        out.flush()?;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_fitting() {
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(2.5), "2.5s");
        assert_eq!(human_duration(125.0), "2m 05s");
        assert_eq!(human_duration(3_900.0), "1h 05m");
        assert_eq!(human_duration(4.0 * 86_400.0 + 7_200.0), "4d 2h");
        assert_eq!(fit("abcdef", 4), "abc~");
        assert_eq!(fit("abc   ", 10), "abc");
    }
}
