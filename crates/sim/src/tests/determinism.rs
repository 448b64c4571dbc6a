//! Same seed, same script, same driver: same feed, same truth.

use super::*;
use crate::{FaultScript, SimProber};
use am_core::{Action, Hypervisor, ProbeTarget, Prober};

const SCRIPT: &str = "
at 5s probes loss 30%
at 6s api * fail 40% busy
at 10s host h2 crash
at 12s vm vm-001 crash corrupt
at 14s vm vm-002 hang
at 15s host h3 isolate
at 20s vm vm-003 poweroff by alice
at 25s host h3 heal
at 30s api * fail 0% busy
";

/// Drives the simulator like a naive manager would: probe everything, reset what does not
/// answer, fail over VMs of hosts that do not answer. Returns the whole feed and the truth.
async fn run(seed: u64) -> (Vec<String>, Vec<String>) {
    let mut spec = ClusterSpec::generate(5, 30, 1, seed);
    spec.seed = seed;
    let sim = Sim::new(&spec).unwrap();
    let script = sim.run_script(FaultScript::parse(SCRIPT).unwrap());
    let script = tokio::spawn(script);
    let prober: SimProber = sim.prober();
    let (_, mut version) = sim.snapshot().await.unwrap();
    let mut feed = Vec::new();
    for _ in 0..12 {
        let c = sim.changes(&version, Duration::from_secs(5)).await.unwrap();
        version = c.version.clone();
        feed.extend(c.deltas.iter().map(|d| format!("{d:?}")));
        feed.extend(c.events.iter().map(|e| format!("{e:?}")));
        let inv = sim.view();
        for h in inv.hosts.values() {
            let t = ProbeTarget::Host {
                host: h.id.clone(),
                address: h.mgmt_address.clone().unwrap_or_default(),
            };
            let r = prober.probe(&t, Duration::from_millis(500)).await;
            if !r.is_reply() {
                for v in inv.vms_on(&h.id).filter(|v| v.is_protected()) {
                    let to = inv.hosts.keys().find(|o| **o != h.id).unwrap();
                    let r = sim
                        .execute(&Action::Failover {
                            vm: v.id.clone(),
                            to: to.clone(),
                        })
                        .await;
                    feed.push(format!("failover {} -> {to}: {r:?}", v.id));
                }
            }
        }
        for v in inv.vms.values().filter(|v| v.is_protected()) {
            let t = ProbeTarget::Guest {
                vm: v.id.clone(),
                address: v.guest_address.clone().unwrap_or_default(),
                host: v.host.clone(),
            };
            if !prober.probe(&t, Duration::from_millis(500)).await.is_reply() {
                let r = sim.execute(&Action::Reset { vm: v.id.clone() }).await;
                feed.push(format!("reset {}: {r:?}", v.id));
            }
        }
    }
    assert!(script.await.unwrap().is_empty());
    let truth = sim
        .running_by_host()
        .into_iter()
        .map(|(h, vms)| format!("{h}: {vms:?}"))
        .chain(sim.violations().iter().map(|v| v.to_string()))
        .collect();
    (feed, truth)
}

#[tokio::test(start_paused = true)]
async fn same_seed_and_script_give_the_same_run() {
    let a = run(7).await;
    let b = run(7).await;
    assert!(a.0.len() > 50, "a busy run: {}", a.0.len());
    assert_eq!(a, b);
    let c = run(8).await;
    assert_ne!(a.0, c.0, "another seed, another run");
}
