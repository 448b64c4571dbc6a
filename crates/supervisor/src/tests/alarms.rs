//! Standing alarms say what is true: FailoverAtRisk while the cluster is below its admission
//! target or has no host up at all, SparePoolEmpty no longer than something waits.

use super::*;

fn one_vm_per_host(hosts: &[(&str, u64)]) -> Inventory {
    let mut inv = Inventory::default();
    for (h, room) in hosts {
        let mut host = Host::new(*h, Resources::new(*room, *room));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
        let vm = Vm::new(format!("vm-{h}").as_str(), Resources::new(1_000, 1_000), *h);
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    inv
}

fn alarm_text(s: &Story, kind: AlarmKind) -> Option<String> {
    s.sup.alarms().find(|a| a.kind == kind).map(|a| a.message.clone())
}

#[test]
fn failover_at_risk_is_raised_below_the_host_failures_target() {
    let inv = one_vm_per_host(&[("h1", 10_000), ("h2", 10_000), ("h3", 10_000)]);
    let mut s = Story::new(Config::default(), inv.clone());
    s.at(1.0);
    assert!(
        !s.alarmed(AlarmKind::FailoverAtRisk),
        "two failures tolerated, target 1"
    );
    let mut cfg = Config::default();
    cfg.placement.host_failures_to_tolerate = 3;
    let mut s = Story::new(cfg, inv);
    s.at(1.0);
    let text = alarm_text(&s, AlarmKind::FailoverAtRisk).unwrap_or_default();
    assert!(text.contains("below its target of 3"), "{text}");
}

#[test]
fn failover_at_risk_stays_raised_when_no_host_is_up() {
    let inv = one_vm_per_host(&[("h1", 10_000), ("h2", 1_500)]);
    let mut s = Story::new(Config::default(), inv);
    s.at(1.0);
    assert!(s.alarmed(AlarmKind::FailoverAtRisk), "h2 cannot take h1's VM");
    for h in ["h1", "h2"] {
        s.at(2.0)
            .mgmt(h, false)
            .connection(h, ConnectionState::NotResponding);
    }
    s.at(3.0).at(40.0);
    let text = alarm_text(&s, AlarmKind::FailoverAtRisk).unwrap_or_default();
    assert!(text.contains("no host is up"), "still raised, stronger: {text}");
}

#[test]
fn spare_pool_empty_clears_once_nothing_waits() {
    // h2 has no room for h1's VM, and there is no spare.
    let inv = one_vm_per_host(&[("h1", 10_000), ("h2", 1_500)]);
    let mut s = Story::new(Config::default(), inv);
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    assert_eq!(s.state("vm-h1"), VmState::AwaitingCapacity);
    assert!(s.alarmed(AlarmKind::SparePoolEmpty));
    // h1 comes back: its VM stays there, nothing waits any more.
    s.at(30.0)
        .heartbeat("h1", 30.0)
        .connection("h1", ConnectionState::Connected)
        .mgmt("h1", true);
    s.at(31.0);
    assert_eq!(s.state("vm-h1"), VmState::Healthy);
    assert!(!s.alarmed(AlarmKind::CapacityInsufficient));
    assert!(!s.alarmed(AlarmKind::SparePoolEmpty));
}
