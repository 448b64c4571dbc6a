//! Tests of the simulator. They run on paused tokio time: every duration is virtual.

mod changes;
mod determinism;
mod docs;
mod faults;
mod invariants;
mod ops;
mod script;

use crate::{ClusterSpec, HostSpec, Sim, VmSpec};
use am_core::{Changes, EventKind, HostId, InventorySource, RestartPriority, Time, VmId};
use std::time::Duration;

pub(crate) fn vm(id: &str) -> VmId {
    VmId::from(id)
}

pub(crate) fn host(id: &str) -> HostId {
    HostId::from(id)
}

/// Three hosts of 10 GHz / 32 GiB; `web` and `db` on h1, `app` on h2, `big` and the disabled,
/// powered-off `batch` on h3 (h3 has 2 GHz free); spare `s1`; initial snapshots and clones.
pub(crate) fn small_spec() -> ClusterSpec {
    let h = |id: &str, n: u8| HostSpec {
        mgmt_address: Some(format!("10.0.0.{n}")),
        failure_domain: Some(format!("rack-{n}")),
        ..HostSpec::new(id, 10_000, 32_768)
    };
    let v = |id: &str, on: &str, cpu, mem, prio, n: u8| VmSpec {
        priority: prio,
        guest_address: Some(format!("10.1.0.{n}")),
        ..VmSpec::new(id, on, cpu, mem)
    };
    let mut batch = v("batch", "h3", 1_000, 2_048, RestartPriority::Disabled, 4);
    batch.power = crate::SpecPower::Off;
    let mut spec = ClusterSpec::new(
        vec![h("h1", 1), h("h2", 2), h("h3", 3)],
        vec![
            v("web", "h1", 2_000, 4_096, RestartPriority::High, 1),
            v("db", "h1", 4_000, 8_192, RestartPriority::Highest, 2),
            v("app", "h2", 2_000, 4_096, RestartPriority::Medium, 3),
            batch,
            v("big", "h3", 8_000, 16_384, RestartPriority::Low, 5),
        ],
    );
    spec.spares.insert("s1".into(), HostSpec::new("", 10_000, 32_768));
    spec.initial_snapshots = true;
    spec.initial_clones = true;
    spec.seed = 1;
    spec
}

pub(crate) fn new_sim() -> Sim {
    Sim::new(&small_spec()).unwrap()
}

/// Everything after `since`, without waiting.
pub(crate) async fn drain(sim: &Sim, since: &str) -> Changes {
    sim.changes(since, Duration::ZERO).await.unwrap()
}

pub(crate) fn event_kinds(c: &Changes) -> Vec<EventKind> {
    c.events.iter().map(|e| e.kind.clone()).collect()
}

pub(crate) async fn sleep_s(s: u64) {
    tokio::time::sleep(Duration::from_secs(s)).await;
}

pub(crate) fn secs(s: u64) -> Time {
    Time::from_secs(s)
}
