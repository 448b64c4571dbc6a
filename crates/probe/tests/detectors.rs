//! The detectors, the schedule and the isolation check, in virtual time.

use am_core::{Observation, ProbeTarget, Subject, Time};
use probe::{Detector, Fate, Health, Monitor, Settings, Timing, VirtualNet};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const RTT: Duration = Duration::from_millis(1);

fn host(id: &str) -> ProbeTarget {
    ProbeTarget::Host {
        host: id.into(),
        address: format!("10.0.0.{}", id.len()),
    }
}

fn gateway() -> ProbeTarget {
    ProbeTarget::Isolation {
        address: "10.0.0.254".into(),
    }
}

fn settings_with(detector: Detector) -> Settings {
    let t = Timing {
        detector,
        ..Timing::host_default()
    };
    Settings {
        hosts: t.clone(),
        guests: t,
        ..Settings::default()
    }
}

fn net(settings: Settings, targets: Vec<ProbeTarget>) -> VirtualNet {
    let mut m = Monitor::new(settings);
    assert!(m.set_targets(Time::ZERO, targets).is_empty());
    VirtualNet::new(m)
}

/// Liveness verdicts on host `id`: (time, alive, evidence).
fn verdicts_on(log: &[(Time, Observation)], id: &str) -> Vec<(Time, bool, String)> {
    log.iter()
        .filter_map(|(t, o)| match o {
            Observation::Liveness {
                subject: Subject::Host(h),
                alive,
                evidence,
            } if h.as_str() == id => Some((*t, *alive, evidence.clone())),
            _ => None,
        })
        .collect()
}

fn deaths(log: &[(Time, Observation)]) -> usize {
    log.iter()
        .filter(|(_, o)| matches!(o, Observation::Liveness { alive: false, .. }))
        .count()
}

/// Longest run of `true` in a loss pattern.
fn longest_run(lost: &[bool]) -> usize {
    lost.iter()
        .fold((0, 0), |(best, cur), &l| {
            if l {
                (best.max(cur + 1), cur + 1)
            } else {
                (best, 0)
            }
        })
        .0
}

/// Cheap deterministic randomness for fates (splitmix64).
fn rand01(seed: u64, a: u64, b: u64) -> f64 {
    let mut x = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs host `h` through `pattern` (true = lost), one entry per probe, then lets it answer.
fn run_pattern(settings: Settings, pattern: &[bool]) -> Vec<(Time, Observation)> {
    let mut n = net(settings, vec![gateway(), host("h")]);
    let mut i = 0usize;
    let mut log = Vec::new();
    let end = Time::from_millis(100 * (pattern.len() as u64 + 40));
    n.run_until(
        end,
        |t, _| {
            if *t == gateway() {
                return Fate::Reply(RTT);
            }
            let lost = pattern.get(i).copied().unwrap_or(false);
            i += 1;
            if lost { Fate::Lost } else { Fate::Reply(RTT) }
        },
        |t, o| log.push((t, o)),
    );
    log
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A "dead" verdict only ever follows at least k lost probes in a row, and a loss pattern
    /// without k in a row gives none.
    #[test]
    fn no_verdict_before_k_misses(k in 1u32..12, tail in prop::collection::vec(any::<bool>(), 1..300)) {
        let s = settings_with(Detector::ConsecutiveMisses { misses: k });
        // A second of answers first, so that the isolation address has answered too.
        let pattern: Vec<bool> = std::iter::repeat_n(false, 10).chain(tail).collect();
        let log = run_pattern(s, &pattern);
        let dead = verdicts_on(&log, "h").iter().filter(|v| !v.1).count();
        if longest_run(&pattern) < k as usize {
            prop_assert_eq!(dead, 0, "pattern {:?}", pattern);
        } else if longest_run(&pattern) >= k as usize + 4 {
            // A later probe that answers before the k-th loss is judged (the timeout is three
            // intervals) proves the target alive; with 4 more losses none can.
            prop_assert!(dead >= 1);
        }
        for (t, alive, evidence) in verdicts_on(&log, "h") {
            if !alive {
                let sent_before = (t.as_millis() / 100 + 1) as usize;
                let upto = &pattern[..sent_before.min(pattern.len())];
                prop_assert!(longest_run(upto) >= k as usize, "verdict at {} ({}) on {:?}", t, evidence, upto);
            }
        }
    }

    /// From a crash at any time, after any loss, the verdict comes within the bound.
    #[test]
    fn detection_bound_holds(crash_ms in 0u64..20_000, loss in 0.0f64..0.5, seed in any::<u64>()) {
        let s = Settings { seed, ..Settings::default() };
        let bound = s.hosts.detection_bound(s.jitter);
        let crash = Time::from_millis(crash_ms);
        let mut n = net(s, vec![gateway(), host("h")]);
        let mut log = Vec::new();
        let mut k = 0u64;
        n.run_until(crash + bound + Duration::from_secs(1), |t, sent| {
            k += 1;
            if *t == gateway() { Fate::Reply(RTT) }
            else if sent >= crash || rand01(seed, k, 1) < loss { Fate::Lost }
            else { Fate::Reply(RTT) }
        }, |t, o| log.push((t, o)));
        let v = verdicts_on(&log, "h");
        let dead = v.iter().find(|v| !v.1);
        prop_assert!(dead.is_some(), "no verdict: {:?}", v);
        if let Some((t, _, evidence)) = dead {
            prop_assert!(*t <= crash + bound, "declared at {} after a crash at {} (bound {:?}): {}", t, crash, bound, evidence);
        }
    }

    /// Independent loss whose runs stay below k never gives a verdict, whatever the rate.
    #[test]
    fn loss_below_the_threshold_gives_no_false_verdict(seed in any::<u64>(), loss in 0.0f64..0.6) {
        let k = 6u32;
        let s = settings_with(Detector::ConsecutiveMisses { misses: k });
        let mut pattern = Vec::new();
        let mut run = 0;
        for i in 0..2_000u64 {
            let lost = rand01(seed, i, 2) < loss && run + 1 < k;
            run = if lost { run + 1 } else { 0 };
            pattern.push(lost);
        }
        let log = run_pattern(s, &pattern);
        prop_assert_eq!(deaths(&log), 0);
    }

    /// Phi accrual: never before `min_misses`, always within its bound, and no verdict for runs of
    /// loss that its threshold tolerates.
    #[test]
    fn phi_accrual_properties(crash_ms in 2_000u64..20_000, seed in any::<u64>(), run_cap in 1u32..12) {
        let s = settings_with(Detector::default_phi());
        let bound = s.hosts.detection_bound(s.jitter);
        // Loss in runs of at most run_cap (12 lost probes = 1.2 s + timeout < the ~1.7 s phi needs).
        let crash = Time::from_millis(crash_ms);
        let mut n = net(s, vec![gateway(), host("h")]);
        let mut log = Vec::new();
        let (mut k, mut run) = (0u64, 0u32);
        n.run_until(crash + bound + Duration::from_secs(1), |t, sent| {
            k += 1;
            if *t == gateway() { return Fate::Reply(RTT) }
            if sent >= crash { return Fate::Lost }
            let lost = rand01(seed, k, 3) < 0.3 && run < run_cap;
            run = if lost { run + 1 } else { 0 };
            if lost { Fate::Lost } else { Fate::Reply(RTT) }
        }, |t, o| log.push((t, o)));
        let v = verdicts_on(&log, "h");
        let dead: Vec<_> = v.iter().filter(|v| !v.1).collect();
        prop_assert_eq!(dead.len(), 1, "{:?}", v);
        prop_assert!(dead[0].0 >= crash, "false verdict before the crash: {:?}", dead[0]);
        prop_assert!(dead[0].0 <= crash + bound, "{:?} > bound {:?}", dead[0], bound);
    }

    /// After a "dead" verdict, replies that never come `rise` in a row do not flap it.
    #[test]
    fn stray_replies_do_not_flap(seed in any::<u64>()) {
        let s = Settings::default();
        let mut n = net(s, vec![gateway(), host("h")]);
        let mut log = Vec::new();
        let (mut k, mut run) = (0u64, 0u32);
        n.run_until(Time::from_secs(30), |t, sent| {
            k += 1;
            if *t == gateway() { return Fate::Reply(RTT) }
            if sent < Time::from_secs(5) { return Fate::Reply(RTT) }
            // After 5 s: mostly lost, occasional replies, never 3 in a row.
            let reply = rand01(seed, k, 4) < 0.3 && run < 2;
            run = if reply { run + 1 } else { 0 };
            if reply { Fate::Reply(RTT) } else { Fate::Lost }
        }, |t, o| log.push((t, o)));
        let v = verdicts_on(&log, "h");
        prop_assert!(v.len() <= 2, "{:?}", v);
        prop_assert!(v[0].1, "first alive");
    }
}

#[test]
fn soak_with_20_percent_loss_gives_no_false_verdict() {
    // 200 hosts plus 2 isolation addresses for 30 virtual minutes: 100 target-hours, 3.6 M probes.
    let mut targets: Vec<ProbeTarget> = (0..200)
        .map(|i| ProbeTarget::Host {
            host: format!("h{i}").into(),
            address: format!("10.1.{}.{}", i / 250, i % 250 + 1),
        })
        .collect();
    targets.push(gateway());
    targets.push(ProbeTarget::Isolation {
        address: "10.0.0.253".into(),
    });
    let mut n = net(Settings::default(), targets);
    let mut k = 0u64;
    let mut log = Vec::new();
    n.run_until(
        Time::from_secs(1_800),
        |_, _| {
            k += 1;
            if rand01(7, k, 5) < 0.2 {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    assert!(n.probes_sent() > 3_500_000, "{}", n.probes_sent());
    assert_eq!(
        deaths(&log),
        0,
        "{:?}",
        log.iter()
            .find(|(_, o)| matches!(o, Observation::Liveness { alive: false, .. }))
    );
    assert!(
        !log.iter()
            .any(|(_, o)| matches!(o, Observation::ManagerIsolation { .. }))
    );
    assert_eq!(log.len(), 200, "one alive verdict per host, then nothing");
}

#[test]
fn evidence_says_which_probes_failed_and_when() {
    let mut n = net(Settings::default(), vec![gateway(), host("h")]);
    let mut log = Vec::new();
    n.run_until(
        Time::from_secs(10),
        |t, sent| {
            if *t != gateway() && sent >= Time::from_secs(5) {
                Fate::Error("connection refused".into())
            } else {
                Fate::Reply(Duration::from_micros(400))
            }
        },
        |t, o| log.push((t, o)),
    );
    let v = verdicts_on(&log, "h");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].1);
    assert!(v[0].2.starts_with("10.0.0.1: "), "{}", v[0].2);
    assert!(
        v[0].2.contains(" probes answered in a row since 0.0"),
        "{}",
        v[0].2
    );
    let (at, alive, ev) = &v[1];
    assert!(!alive);
    // Errors count at once: the 20th, sent about 1.9 s after the first, makes the verdict.
    assert!(
        *at >= Time::from_millis(6_800) && *at < Time::from_millis(7_100),
        "{at}"
    );
    assert!(ev.starts_with("10.0.0.1: 20 of 20 probes lost since 5.0"), "{ev}");
    assert!(ev.contains("rtt 0.4ms"), "{ev}");
    assert!(ev.contains("last error: connection refused"), "{ev}");
    assert!(
        ev.contains("manager not isolated: isolation address 10.0.0.254 answered the probe sent "),
        "{ev}"
    );
}

/// The manager's own link goes down: it declares itself isolated and nobody dead; when the link
/// comes back, isolation ends and still nobody was declared dead.
#[test]
fn a_cut_manager_declares_itself_isolated_not_the_hosts_dead() {
    let targets = vec![gateway(), host("a"), host("bb"), host("ccc")];
    let mut n = net(Settings::default(), targets);
    let mut log = Vec::new();
    let cut = (Time::from_secs(10), Time::from_secs(40));
    let mut k = 0u64;
    n.run_until(
        Time::from_secs(60),
        |_, sent| {
            k += 1;
            // 20 % loss everywhere, and nothing at all during the cut.
            if (sent >= cut.0 && sent < cut.1) || rand01(11, k, 6) < 0.2 {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    assert_eq!(deaths(&log), 0, "{log:?}");
    let iso: Vec<_> = log
        .iter()
        .filter_map(|(t, o)| match o {
            Observation::ManagerIsolation { isolated, evidence } => Some((*t, *isolated, evidence.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(iso.len(), 2, "{iso:?}");
    assert!(iso[0].1 && iso[0].0 < cut.0 + Duration::from_secs(3), "{iso:?}");
    assert!(
        iso[0].2.starts_with("all isolation addresses lost: 10.0.0.254 ("),
        "{}",
        iso[0].2
    );
    assert!(iso[0].2.contains(" of 3 hosts unreachable"), "{}", iso[0].2);
    assert!(!iso[1].1 && iso[1].0 > cut.1, "{iso:?}");
}

/// A host that starts losing probes just before the manager is cut off must not be declared dead on
/// the strength of a gateway reply from before the cut.
#[test]
fn a_reply_from_before_the_cut_is_no_proof() {
    let targets = vec![gateway(), host("a"), host("bb"), host("ccc")];
    let mut n = net(Settings::default(), targets);
    let mut log = Vec::new();
    let cut = Time::from_secs(10);
    n.run_until(
        Time::from_secs(30),
        |t, sent| {
            let early = *t == host("a") && sent >= cut - Duration::from_millis(450);
            if sent >= cut || early {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    assert_eq!(deaths(&log), 0, "{log:?}");
    assert!(n.monitor.is_isolated());
}

#[test]
fn a_dead_gateway_alone_is_not_isolation() {
    let targets = vec![gateway(), host("a"), host("bb"), host("ccc")];
    let mut n = net(Settings::default(), targets);
    let mut log = Vec::new();
    n.run_until(
        Time::from_secs(20),
        |t, sent| {
            if *t == gateway() && sent >= Time::from_secs(5) || *t == host("a") && sent >= Time::from_secs(8)
            {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    assert!(!n.monitor.is_isolated());
    let v = verdicts_on(&log, "a");
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(!v[1].1);
    assert!(
        v[1].2.contains(
            "manager not isolated: more than half of the 2 other hosts answered probes sent between"
        ),
        "{}",
        v[1].2
    );
}

#[test]
fn without_isolation_addresses_other_hosts_are_the_proof() {
    let mut n = net(Settings::default(), vec![host("a"), host("bb"), host("ccc")]);
    let mut log = Vec::new();
    n.run_until(
        Time::from_secs(20),
        |t, sent| {
            if *t == host("a") && sent >= Time::from_secs(8) {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    assert_eq!(verdicts_on(&log, "a").last().map(|v| v.1), Some(false));
    // Now everything goes: with no isolation address, that is isolation, and no verdict.
    n.run_until(Time::from_secs(40), |_, _| Fate::Lost, |t, o| log.push((t, o)));
    assert!(n.monitor.is_isolated());
    assert_eq!(deaths(&log), 1);
}

#[test]
fn a_single_host_without_isolation_addresses_is_judged_alone() {
    let mut n = net(Settings::default(), vec![host("a")]);
    let mut log = Vec::new();
    n.run_until(
        Time::from_secs(10),
        |_, sent| {
            if sent >= Time::from_secs(5) {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    let v = verdicts_on(&log, "a");
    assert!(
        v[1].2
            .ends_with("no isolation address or other host to check against"),
        "{}",
        v[1].2
    );
}

#[test]
fn verdicts_are_edge_triggered_and_recovery_needs_rise_replies() {
    let mut n = net(Settings::default(), vec![gateway(), host("h")]);
    let mut log = Vec::new();
    n.run_until(
        Time::from_secs(20),
        |t, sent| {
            let down = sent >= Time::from_secs(5) && sent < Time::from_secs(12);
            if *t == host("h") && down {
                Fate::Lost
            } else {
                Fate::Reply(RTT)
            }
        },
        |t, o| log.push((t, o)),
    );
    let v = verdicts_on(&log, "h");
    assert_eq!(
        v.iter().map(|v| v.1).collect::<Vec<_>>(),
        [true, false, true],
        "{v:?}"
    );
    let back = v[2].0;
    // Three answers in a row (from 12.0 s), settled once no earlier probe can still be lost.
    assert!(
        back >= Time::from_millis(12_300) && back < Time::from_millis(12_700),
        "{back}"
    );
    assert_eq!(
        n.monitor.status(&host("h")).map(|s| s.health),
        Some(Health::Alive)
    );
}

#[test]
fn the_schedule_spreads_probes_evenly_and_keeps_the_rhythm() {
    let s = Settings {
        hosts: Timing {
            interval: Duration::from_secs(1),
            ..Timing::host_default()
        },
        ..Settings::default()
    };
    let mut m = Monitor::new(s);
    let targets: Vec<ProbeTarget> = (0..10_000)
        .map(|i| ProbeTarget::Host {
            host: format!("h{i}").into(),
            address: format!("127.1.{}.{}", i / 250, i % 250 + 1),
        })
        .collect();
    m.set_targets(Time::ZERO, targets.clone());
    let mut per_10ms = vec![0u32; 300];
    let mut last: HashMap<ProbeTarget, Time> = HashMap::new();
    for ms in 0..3_000u64 {
        let now = Time::from_millis(ms);
        for t in m.due(now) {
            per_10ms[(ms / 10) as usize] += 1;
            if let Some(prev) = last.insert(t.clone(), now) {
                let gap = now.since(prev);
                assert!(
                    gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1100),
                    "{gap:?}"
                );
            }
        }
    }
    assert_eq!(last.len(), 10_000, "every target probed");
    // 100 probes per 10 ms on average; a random phase per target keeps every bucket near it.
    let (min, max) = (per_10ms.iter().min().unwrap(), per_10ms.iter().max().unwrap());
    assert!(*min >= 50 && *max <= 160, "min {min} max {max}");
    // Deterministic for a seed.
    let mut m2 = Monitor::new(Settings {
        hosts: Timing {
            interval: Duration::from_secs(1),
            ..Timing::host_default()
        },
        ..Settings::default()
    });
    m2.set_targets(Time::ZERO, targets);
    let mut m3 = m2.due(Time::from_millis(500));
    m3.sort();
    let mut again = Monitor::new(m2.settings().clone());
    again.set_targets(Time::ZERO, m2_targets());
    fn m2_targets() -> Vec<ProbeTarget> {
        (0..10_000)
            .map(|i| ProbeTarget::Host {
                host: format!("h{i}").into(),
                address: format!("127.1.{}.{}", i / 250, i % 250 + 1),
            })
            .collect()
    }
    let mut m4 = again.due(Time::from_millis(500));
    m4.sort();
    assert_eq!(m3, m4);
}

#[test]
fn a_late_caller_gets_each_target_once_not_a_burst() {
    let mut m = Monitor::new(Settings::default());
    m.set_targets(Time::ZERO, vec![host("a"), host("bb")]);
    assert_eq!(m.due(Time::from_secs(60)).len(), 2);
    assert!(m.due(Time::from_secs(60)).is_empty());
    let next = m.next_due().unwrap();
    assert!(
        next > Time::from_secs(60) && next <= Time::from_millis(60_110),
        "{next}"
    );
}

#[test]
fn targets_follow_the_inventory() {
    let mut m = Monitor::new(Settings::default());
    m.set_targets(Time::ZERO, vec![gateway(), host("a"), host("bb")]);
    assert_eq!(m.len(), 3);
    m.set_targets(Time::from_secs(1), vec![gateway(), host("bb"), host("ccc")]);
    assert_eq!(m.len(), 3);
    assert!(m.status(&host("a")).is_none());
    // A result for a forgotten target is ignored.
    assert!(
        m.record(Time::from_secs(2), &host("a"), &am_core::ProbeResult::NoReply)
            .is_empty()
    );
    let mut seen = Vec::new();
    for ms in 1_000..3_000 {
        seen.extend(m.due(Time::from_millis(ms)));
    }
    assert!(!seen.contains(&host("a")));
    assert!(seen.contains(&host("ccc")));
}
