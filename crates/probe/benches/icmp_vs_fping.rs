//! 10,000 loopback targets (127.1.x.y) probed once a second by our stack (monitor, driver and ICMP
//! prober on one thread) and by Debian's fping, one after the other in the same run. Each runs as a
//! child process; CPU is the child's user + system time (from our own `/proc/self/stat` children
//! fields after waiting for it) as a share of one core, peak memory its `VmHWM`.
//!
//! `cargo bench -p probe --bench icmp_vs_fping -- [--targets N] [--secs S]`
//! Only loopback addresses are ever probed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_core::{Observation, ProbeResult, ProbeTarget, Prober};
use async_trait::async_trait;
use probe::{IcmpProber, Settings, Timing, TokioClock};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TICK: f64 = 100.0; // CLK_TCK on Linux

fn targets(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("127.1.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

/// (user + system of waited-for children, in seconds) of this process.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 16 and 17 (cutime, cstime) are at 13 and 14 after the command name.
    (f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap()) / TICK
}

fn self_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / TICK
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Counting {
    inner: IcmpProber,
    sent: AtomicU64,
    replies: AtomicU64,
}

#[async_trait]
impl Prober for Counting {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.probe(target, timeout).await;
        if r.is_reply() {
            self.replies.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// The child: our whole stack on a single-threaded runtime for `secs`.
fn run_ours(n: usize, secs: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prober = Arc::new(Counting {
            inner: IcmpProber::new().expect("ICMP"),
            sent: AtomicU64::new(0),
            replies: AtomicU64::new(0),
        });
        let timing = Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            ..Timing::host_default()
        };
        let settings = Settings {
            hosts: timing.clone(),
            guests: timing,
            ..Settings::default()
        };
        let set: BTreeSet<ProbeTarget> = targets(n)
            .into_iter()
            .enumerate()
            .map(|(i, a)| ProbeTarget::Host {
                host: format!("h{i}").into(),
                address: a,
            })
            .collect();
        let (_keep, rx_targets) = tokio::sync::watch::channel(set);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Observation>();
        let driver = tokio::spawn(probe::drive(
            prober.clone(),
            settings,
            rx_targets,
            tx,
            Arc::new(TokioClock::new()),
        ));
        let verdicts = tokio::spawn(async move {
            let (mut alive, mut dead) = (0u64, 0u64);
            while let Some(o) = rx.recv().await {
                match o {
                    Observation::Liveness { alive: true, .. } => alive += 1,
                    Observation::Liveness { alive: false, .. } => dead += 1,
                    _ => {}
                }
            }
            (alive, dead)
        });
        tokio::time::sleep(Duration::from_secs(secs)).await;
        driver.abort();
        let _ = driver.await;
        let (alive, dead) = verdicts.await.unwrap();
        println!(
            "ours sent={} replies={} alive_verdicts={alive} dead_verdicts={dead} self_cpu={:.2} hwm_kib={}",
            prober.sent.load(Ordering::Relaxed),
            prober.replies.load(Ordering::Relaxed),
            self_cpu(),
            vm_hwm_kib(std::process::id()).unwrap_or(0)
        );
    });
}

struct Measured {
    cpu_s: f64,
    wall_s: f64,
    hwm_kib: u64,
    output: String,
}

fn measure(mut cmd: Command) -> Measured {
    let before = children_cpu();
    let start = Instant::now();
    let out_path = std::env::temp_dir().join(format!("am-probe-bench-{}.out", std::process::id()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn");
    let mut hwm = 0;
    loop {
        if let Some(h) = vm_hwm_kib(child.id()) {
            hwm = hwm.max(h);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall_s = start.elapsed().as_secs_f64();
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    Measured {
        cpu_s: children_cpu() - before,
        wall_s,
        hwm_kib: hwm,
        output,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--targets", 10_000) as usize;
    let secs = arg("--secs", 15);
    if std::env::var("AM_PROBE_BENCH_CHILD").is_ok() {
        run_ours(n, secs);
        return;
    }
    let list = std::env::temp_dir().join(format!("am-probe-targets-{}.txt", std::process::id()));
    let mut f = std::fs::File::create(&list).unwrap();
    for t in targets(n) {
        writeln!(f, "{t}").unwrap();
    }
    drop(f);

    let mut ours_cmd = Command::new(std::env::current_exe().unwrap());
    ours_cmd.env("AM_PROBE_BENCH_CHILD", "1").args([
        "--bench",
        "--targets",
        &n.to_string(),
        "--secs",
        &secs.to_string(),
    ]);
    let ours = measure(ours_cmd);

    let mut fping_cmd = Command::new("fping");
    fping_cmd.args([
        "-c",
        &secs.to_string(),
        "-p",
        "1000",
        "-t",
        "500",
        "-i",
        "0.1",
        "-r",
        "0",
        "-q",
        "-f",
    ]);
    fping_cmd.arg(&list);
    let fping = measure(fping_cmd);
    let _ = std::fs::remove_file(&list);
    let fping_rcv: u64 = fping
        .output
        .lines()
        .filter_map(|l| l.split("xmt/rcv/%loss = ").nth(1))
        .filter_map(|s| s.split('/').nth(1)?.parse::<u64>().ok())
        .sum();

    let share = |m: &Measured| 100.0 * m.cpu_s / m.wall_s;
    println!("targets: {n}, one probe each per second, {secs} s");
    println!("ours : {}", ours.output.trim());
    println!(
        "ours : cpu {:.2} s over {:.1} s = {:.1} % of one core, peak RSS {:.1} MiB",
        ours.cpu_s,
        ours.wall_s,
        share(&ours),
        ours.hwm_kib as f64 / 1024.0
    );
    println!(
        "fping: cpu {:.2} s over {:.1} s = {:.1} % of one core, peak RSS {:.1} MiB, {fping_rcv} replies",
        fping.cpu_s,
        fping.wall_s,
        share(&fping),
        fping.hwm_kib as f64 / 1024.0
    );
    println!(
        "ratio: ours/fping CPU = {:.2}, per probe {:.1} us vs {:.1} us",
        ours.cpu_s / fping.cpu_s.max(1e-9),
        1e6 * ours.cpu_s / (n as f64 * secs as f64),
        1e6 * fping.cpu_s / (n as f64 * secs as f64)
    );
}
