//! Detection latency (host crash -> declared dead) and a false-verdict soak under 20 % random probe
//! loss, with the default settings, in virtual time (the monitor is the real one; the network is
//! simulated, see `probe::VirtualNet`).
//!
//! `cargo bench -p probe --bench detection -- [--trials N] [--soak-hours H] [--soak-targets N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_core::{Observation, ProbeTarget, Subject, Time};
use probe::{Detector, Fate, Monitor, Settings, Timing, VirtualNet};
use std::time::{Duration, Instant};

fn rand01(seed: u64, a: u64) -> f64 {
    let mut x = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn cluster(hosts: usize) -> Vec<ProbeTarget> {
    let mut t: Vec<ProbeTarget> = (0..hosts)
        .map(|i| ProbeTarget::Host {
            host: format!("h{i}").into(),
            address: format!("10.1.{}.{}", i / 250, i % 250 + 1),
        })
        .collect();
    t.push(ProbeTarget::Isolation {
        address: "10.0.0.254".into(),
    });
    t.push(ProbeTarget::Isolation {
        address: "10.0.0.253".into(),
    });
    t
}

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    false_verdicts: usize,
    missed: usize,
}

/// `trials` crashes of host h0 at a random time after 20-30 s of warm-up, everything losing
/// `loss` of its probes; latency from the crash to h0's dead verdict.
fn latency(settings: &Settings, trials: u64, loss: f64) -> Latency {
    let mut lat = Vec::new();
    let (mut false_verdicts, mut missed) = (0, 0);
    for trial in 0..trials {
        let s = Settings {
            seed: trial,
            ..settings.clone()
        };
        let mut m = Monitor::new(s);
        m.set_targets(Time::ZERO, cluster(8));
        let mut net = VirtualNet::new(m);
        let crash = Time::from_millis(20_000 + (rand01(trial, 0) * 10_000.0) as u64);
        let mut k = 0u64;
        let mut dead_at = None;
        let h0 = ProbeTarget::Host {
            host: "h0".into(),
            address: "10.1.0.1".into(),
        };
        net.run_until(
            crash + Duration::from_secs(10),
            |t, sent| {
                k += 1;
                if (*t == h0 && sent >= crash) || rand01(trial ^ 0xabc, k) < loss {
                    Fate::Lost
                } else {
                    Fate::Reply(Duration::from_micros(300))
                }
            },
            |at, o| match o {
                Observation::Liveness {
                    subject: Subject::Host(h),
                    alive: false,
                    ..
                } => {
                    if h.as_str() == "h0" && at >= crash && dead_at.is_none() {
                        dead_at = Some(at);
                    } else {
                        false_verdicts += 1;
                    }
                }
                Observation::ManagerIsolation { .. } => false_verdicts += 1,
                _ => {}
            },
        );
        match dead_at {
            Some(at) => lat.push(at.since(crash)),
            None => missed += 1,
        }
    }
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Latency {
        p50: pick(0.5),
        p99: pick(0.99),
        max: *lat.last().unwrap(),
        false_verdicts,
        missed,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let trials = arg("--trials", 2_000.0) as u64;
    let soak_hours = arg("--soak-hours", 1.0);
    let soak_targets = arg("--soak-targets", 1_000.0) as usize;

    let defaults = Settings::default();
    let phi = Settings {
        hosts: Timing {
            detector: Detector::default_phi(),
            ..Timing::host_default()
        },
        ..Settings::default()
    };
    println!(
        "defaults: hosts every {:?}, timeout {:?}, {:?}, rise {}; bound {:?}",
        defaults.hosts.interval,
        defaults.hosts.timeout,
        defaults.hosts.detector,
        defaults.hosts.rise,
        defaults.hosts.detection_bound(defaults.jitter)
    );
    for (name, s) in [("k-miss (default)", &defaults), ("phi accrual", &phi)] {
        for loss in [0.0, 0.2] {
            let start = Instant::now();
            let l = latency(s, trials, loss);
            println!(
                "latency {name:17} loss {:>3.0} %: p50 {:.2} s, p99 {:.2} s, max {:.2} s over {trials} crashes; \
                 {} false verdicts, {} missed ({:.1} s)",
                loss * 100.0,
                l.p50.as_secs_f64(),
                l.p99.as_secs_f64(),
                l.max.as_secs_f64(),
                l.false_verdicts,
                l.missed,
                start.elapsed().as_secs_f64()
            );
        }
    }

    // Soak: every target alive, 20 % of all probes lost, for soak_hours of virtual time.
    for (name, s) in [("k-miss (default)", &defaults), ("phi accrual", &phi)] {
        let start = Instant::now();
        let mut m = Monitor::new(s.clone());
        m.set_targets(Time::ZERO, cluster(soak_targets));
        let mut net = VirtualNet::new(m);
        let mut k = 0u64;
        let (mut dead, mut isolated) = (0u64, 0u64);
        let end = Time::from_millis((soak_hours * 3_600_000.0) as u64);
        net.run_until(
            end,
            |_, _| {
                k += 1;
                if rand01(42, k) < 0.2 {
                    Fate::Lost
                } else {
                    Fate::Reply(Duration::from_micros(300))
                }
            },
            |_, o| match o {
                Observation::Liveness { alive: false, .. } => dead += 1,
                Observation::ManagerIsolation { .. } => isolated += 1,
                _ => {}
            },
        );
        let target_hours = soak_targets as f64 * soak_hours;
        println!(
            "soak {name:17}: {soak_targets} hosts + 2 isolation addresses, {soak_hours} h at 20 % loss = \
             {target_hours:.0} target-hours, {} probes: {dead} false dead verdicts, {isolated} isolation \
             verdicts (expected {:.1e}) ({:.1} s, {:.2} us per probe)",
            net.probes_sent(),
            s.hosts.false_verdicts_per_hour(0.2) * target_hours,
            start.elapsed().as_secs_f64(),
            1e6 * start.elapsed().as_secs_f64() / net.probes_sent() as f64
        );
    }
}
