//! The snapshot of a small hand-built cluster, and `am-daemon stats` text made from it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_api::{CLEAR_SCREEN, Snapshot, VmClass, WatchOptions, render_stats, watch};
use am_core::{Observation, Resources, Time};
use common::Cluster;
use std::time::Duration;

#[test]
fn the_snapshot_follows_the_story() {
    let c = Cluster::story();
    let s = c.board.snapshot();
    assert_eq!(s.at, Time::from_secs(40));

    let h1 = s.host(&"h1".into()).unwrap();
    assert_eq!(h1.state, "up");
    assert_eq!(h1.since, Some(Time::ZERO));
    assert_eq!((h1.vms, h1.vms_running), (2, 1));
    assert_eq!(
        h1.used,
        Resources::new(2_000, 4_096),
        "db is off: only web counts"
    );
    assert_eq!(h1.capacity, Resources::new(20_000, 65_536));
    assert_eq!(h1.failure_domain.as_deref(), Some("rack-a"));

    let web = s.vm(&"web".into()).unwrap();
    assert_eq!(
        (web.class, web.host.as_ref().map(|h| h.as_str())),
        (VmClass::Healthy, Some("h1"))
    );
    assert_eq!(web.restarts, 1);
    assert_eq!(web.incidents, 1);
    assert_eq!(web.since, Some(Time::from_secs(20)));
    let db = s.vm(&"db".into()).unwrap();
    assert_eq!(db.class, VmClass::Off);
    assert_eq!(db.uptime_s, None);
    assert_eq!(s.vm(&"batch".into()).unwrap().class, VmClass::Unprotected);
    assert!(!s.vm(&"batch".into()).unwrap().protected);

    let cl = &s.cluster;
    assert_eq!((cl.hosts, cl.hosts_up, cl.vms, cl.vms_running), (2, 2, 4, 2));
    assert_eq!(
        (cl.protected_vms, cl.healthy, cl.recovering, cl.failed),
        (3, 1, 0, 0)
    );
    assert_eq!(cl.host_failures_tolerated, Some(1));
    assert_eq!(cl.recoveries, 1);
    assert_eq!(cl.mttr_s, Some(9.0));
    // 9 s down (11 s -> 20 s) over 3 protected VMs x 40 s; db's user power-off is no downtime.
    let a = cl.availability.unwrap();
    assert!((a - (1.0 - 9.0 / 120.0)).abs() < 1e-9, "{a}");
    assert_eq!(cl.vms_by_state["healthy"], 1);
    assert_eq!(cl.vms_by_state["failed"], 0);
    assert_eq!(s.alarms.len(), 1);
    assert!(s.in_flight.is_empty());
    assert!(!s.recent.is_empty() && s.recent.len() <= 50);

    // The stateless capture, from the whole audit trail, agrees on what it can derive.
    let all = c.board.recent(10_000);
    let direct = Snapshot::capture(c.now, &c.sup, None, &all);
    assert_eq!(
        direct.vm(&"web".into()).unwrap().up_since,
        Some(Time::from_secs(20))
    );
    assert_eq!(direct.cluster.host_failures_tolerated, Some(1));
    assert_eq!(direct.cluster.mttr_s, Some(9.0));
    assert!(direct.executor.is_none());
}

#[test]
fn in_flight_actions_show_with_their_phase() {
    let mut c = Cluster::new();
    c.at(10);
    c.feed(Observation::Liveness {
        subject: am_core::Subject::Vm("web".into()),
        alive: false,
        evidence: "lost".into(),
    });
    c.at(11);
    let s = c.board.snapshot();
    assert_eq!(s.in_flight.len(), 1);
    assert_eq!(s.in_flight[0].op, "reset");
    assert_eq!(s.in_flight[0].vm.as_ref().map(|v| v.as_str()), Some("web"));
    assert_eq!(s.in_flight[0].phase, am_api::Phase::Issued);
    assert_eq!(s.cluster.recovering, 1);
    assert_eq!(s.cluster.open_incidents, 1);
    let text = render_stats(&s, 120);
    assert!(text.contains("IN FLIGHT  1"), "{text}");
    assert!(text.contains("reset web issued"), "{text}");
    assert!(text.contains("recovering(restart)"), "{text}");
}

#[test]
fn render_stats_has_the_expected_rows() {
    let c = Cluster::story();
    let s = c.board.snapshot();
    let text = render_stats(&s, 160);
    println!("{text}");
    let line = |start: &str| -> &str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{text}"))
    };
    let cluster = text.lines().take(4).collect::<Vec<_>>().join("\n");
    for want in [
        "hosts 2 (2 up)",
        "protected VMs 3",
        "healthy 1",
        "host failures tolerated 1 (target 1)",
        "MTTR 9s",
        "availability 92.5%",
        "recoveries 1",
    ] {
        assert!(cluster.contains(want), "{want:?} in\n{cluster}");
    }
    let header = line("HOST ");
    for col in ["STATE", "VMS", "CPU used/cap", "MEM used/cap", "DOMAIN"] {
        assert!(header.contains(col), "{header}");
    }
    let h1: Vec<&str> = line("h1 ").split_whitespace().collect();
    assert_eq!(&h1[..2], ["h1", "up"]);
    let h1 = line("h1 ");
    assert!(h1.contains("2.0/20.0 GHz 10%"), "{h1}");
    assert!(h1.contains("4.0/64.0 GiB 6%"), "{h1}");
    assert!(h1.ends_with("rack-a"), "{h1}");

    let vm_header = line("VM ");
    for col in ["HEALTH", "HOST", "UPTIME", "RESTARTS", "LAST INCIDENT"] {
        assert!(vm_header.contains(col), "{vm_header}");
    }
    let web = line("web ");
    let cells: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["web", "healthy", "h1", "on", "high", "20s"],
        "{web}"
    );
    assert_eq!(cells[6], "1", "one restart: {web}");
    assert!(web.contains("recovered by restart"), "{web}");
    let db = line("db ");
    assert!(db.contains("off(by alice)"), "{db}");
    assert!(db.contains("left off (user alice)"), "{db}");
    assert!(line("batch ").contains("unprotected"));
    assert!(line("ALARMS").contains("1 active"));
    assert!(text.contains("vm_powered_off vm:db"), "{text}");
    assert!(text.contains("IN FLIGHT  none"));

    // Narrow terminals: every line fits.
    let narrow = render_stats(&s, 50);
    assert!(narrow.lines().all(|l| l.chars().count() <= 50), "{narrow}");
    assert!(narrow.lines().any(|l| l.starts_with("web ")));
}

#[tokio::test]
async fn watch_redraws_and_shows_fetch_errors() {
    let c = Cluster::story();
    let board = c.board.clone();
    let mut calls = 0;
    let opts = WatchOptions {
        interval: Duration::from_millis(100),
        width: 100,
        iterations: Some(3),
    };
    let mut out: Vec<u8> = Vec::new();
    watch(
        &opts,
        || {
            calls += 1;
            let n = calls;
            let board = board.clone();
            async move {
                if n == 2 {
                    Err(am_api::ApiError::Timeout {
                        url: "http://127.0.0.1:1/api/v1/status".into(),
                        secs: 10,
                    })
                } else {
                    Ok(board.snapshot())
                }
            }
        },
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches(CLEAR_SCREEN).count(), 3);
    assert_eq!(text.matches("\nweb ").count(), 2);
    assert!(text.contains("error: no answer from http://127.0.0.1:1/api/v1/status within 10s"));
    assert!(text.contains("Ctrl-C to quit"));
}

/// What a capture costs on a large cluster (run by hand: `cargo test -p am-api --test stats --
/// --ignored --nocapture`).
#[test]
#[ignore = "timing, by hand"]
fn capture_cost_on_a_large_cluster() {
    use am_core::{LogEntry, Output};
    use planner::synth::{Params, cluster};
    for (hosts, vms) in [(20, 2_000), (100, 5_000)] {
        let p = Params {
            hosts,
            vms,
            hosts_per_domain: 10,
            ..Params::default()
        };
        let (inv, _) = cluster(&p, 7);
        let mut sup = supervisor::Supervisor::new(supervisor::Config::default());
        let out = sup.step(Time::ZERO, Observation::Inventory(inv));
        let board = am_api::Board::new();
        let t = std::time::Instant::now();
        board.observe(Time::ZERO, &out, &sup, None);
        let first = t.elapsed();
        let t = std::time::Instant::now();
        for i in 1..=10u64 {
            board.observe(Time::from_secs(i), &Output::default(), &sup, None);
        }
        let later = t.elapsed() / 10;
        let t = std::time::Instant::now();
        let recent: Vec<LogEntry> = Vec::new();
        let _ = Snapshot::capture(Time::ZERO, &sup, None, &recent);
        let stateless = t.elapsed();
        let t = std::time::Instant::now();
        let s = board.snapshot();
        let json = serde_json::to_vec(&s).unwrap();
        let text = render_stats(&s, 120);
        let metrics = am_api::render_prometheus(&s);
        let serve = t.elapsed();
        println!(
            "{hosts} hosts {vms} VMs: first observe {first:?} (admission), later {later:?}, stateless capture {stateless:?}, \
             snapshot+json+stats+metrics {serve:?} ({} KiB JSON, {} lines, {} metric lines)",
            json.len() / 1024,
            text.lines().count(),
            metrics.lines().count()
        );
    }
}
