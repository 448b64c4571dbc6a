//! The async driver under tokio's paused clock, against a simulated prober.

use am_core::{Observation, ProbeResult, ProbeTarget, Prober, Subject};
use async_trait::async_trait;
use probe::{Settings, TokioClock};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Answers in 1 ms, except for crashed hosts and 20 % of probes (chosen by a counter-based hash).
struct SimProber {
    crash: Instant,
    crashed: &'static str,
    count: AtomicU64,
}

#[async_trait]
impl Prober for SimProber {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let lost = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % 5 == 0;
        let dead = matches!(target, ProbeTarget::Host { host, .. } if host.as_str() == self.crashed)
            && Instant::now() >= self.crash;
        if dead || lost {
            tokio::time::sleep(timeout).await;
            ProbeResult::NoReply
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ProbeResult::Reply {
                rtt: Duration::from_millis(1),
            }
        }
    }
}

fn host(id: &str, n: u8) -> ProbeTarget {
    ProbeTarget::Host {
        host: id.into(),
        address: format!("10.0.0.{n}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_declared_within_the_bound_in_virtual_time() {
    let settings = Settings::default();
    let bound = settings.hosts.detection_bound(settings.jitter);
    let start = Instant::now();
    let wall = std::time::Instant::now();
    let crash = start + Duration::from_secs(60);
    let targets: BTreeSet<ProbeTarget> = [
        ProbeTarget::Isolation {
            address: "10.0.0.254".into(),
        },
        host("h1", 1),
        host("h2", 2),
        host("h3", 3),
    ]
    .into();
    let (targets_tx, targets_rx) = watch::channel(targets.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prober = Arc::new(SimProber {
        crash,
        crashed: "h1",
        count: AtomicU64::new(0),
    });
    let driver = tokio::spawn(probe::drive(
        prober,
        settings,
        targets_rx,
        tx,
        Arc::new(TokioClock::new()),
    ));
    let mut seen = Vec::new();
    let dead_at = loop {
        let o = rx.recv().await.expect("driver runs");
        if let Observation::Liveness {
            subject: Subject::Host(h),
            alive: false,
            evidence,
        } = &o
        {
            assert_eq!(h.as_str(), "h1", "{evidence}");
            break Instant::now();
        }
        seen.push(o);
    };
    assert_eq!(seen.len(), 3, "three hosts alive first, nothing else: {seen:?}");
    assert!(dead_at >= crash, "false verdict before the crash");
    let latency = dead_at - crash;
    assert!(
        latency <= bound + Duration::from_millis(20),
        "{latency:?} > {bound:?}"
    );
    // The inventory changes: h3 goes, h4 comes.
    let mut next = targets;
    next.remove(&host("h3", 3));
    next.insert(host("h4", 4));
    targets_tx.send(next).unwrap();
    let o = rx.recv().await.unwrap();
    assert!(
        matches!(&o, Observation::Liveness { subject: Subject::Host(h), alive: true, .. } if h.as_str() == "h4"),
        "{o:?}"
    );
    // Ten quiet minutes at 20 % loss: no verdict at all.
    let quiet = tokio::time::timeout(Duration::from_secs(600), rx.recv()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "virtual time: 11 minutes simulated in {:?}",
        wall.elapsed()
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("driver stops when its observations are no longer read")
        .unwrap();
}
