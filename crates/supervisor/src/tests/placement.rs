//! Placement's last resort: with no spare left, the failover headroom is relaxed (as
//! anti-affinity is) rather than keeping protected VMs down.

use super::*;

fn half_full(cfg: Config) -> Story {
    let mut inv = Inventory::default();
    for h in ["h1", "h2"] {
        let mut host = Host::new(h, Resources::new(10_000, 10_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
        let vm = Vm::new(format!("vm-{h}").as_str(), Resources::new(4_000, 4_000), h);
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    Story::new(cfg, inv)
}

#[test]
fn the_headroom_is_relaxed_only_when_no_spare_can_help() {
    let mut cfg = Config::default();
    cfg.placement.headroom_pct = 40;
    // With a spare, the spare is added: the headroom holds.
    let mut s = half_full(Config {
        spares: vec!["spare-1".into()],
        ..cfg.clone()
    });
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let names: Vec<&str> = s.take_actions().iter().map(|(_, a)| a.name()).collect();
    assert!(
        names.contains(&"add_host") && !names.contains(&"failover"),
        "{names:?}"
    );
    // Without one, the VM runs on h2 beyond the headroom, with the reason.
    let mut s = half_full(cfg);
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let actions: Vec<Action> = s.take_actions().into_iter().map(|(_, a)| a).collect();
    assert!(
        actions.contains(&Action::Failover {
            vm: "vm-h1".into(),
            to: "h2".into()
        }),
        "{actions:?}"
    );
    assert!(s.log.iter().any(|e| {
        e.to_string()
            .contains("headroom (placement.headroom_pct = 40) relaxed")
    }));
}

#[test]
fn a_vm_kept_out_by_its_anti_affinity_group_is_not_alarmed_as_a_capacity_shortage() {
    let mut inv = Inventory::default();
    for h in ["h1", "h2"] {
        let mut host = Host::new(h, Resources::new(10_000, 10_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
        let mut vm = Vm::new(format!("web-{h}").as_str(), Resources::new(1_000, 1_000), h);
        vm.anti_affinity_group = Some("web".into());
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    let mut s = Story::new(
        Config {
            spares: vec!["spare-1".into()],
            ..Config::default()
        },
        inv,
    );
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let text = s
        .sup
        .alarms()
        .find(|a| a.kind == AlarmKind::CapacityInsufficient)
        .map(|a| a.message.clone())
        .unwrap_or_default();
    assert!(text.contains("kept out by their anti-affinity group"), "{text}");
    assert!(!text.contains("fit on no live host"), "{text}");
}

#[test]
fn a_split_affinity_group_is_said_in_the_failover_reason() {
    let mut inv = Inventory::default();
    for h in ["h1", "h2", "h3"] {
        let mut host = Host::new(h, Resources::new(10_000, 10_000));
        host.mgmt_address = Some(format!("10.0.0.{h}"));
        host.storage_heartbeat = Some(Time::ZERO);
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    for (id, h, size) in [
        ("app-1", "h1", 4_000),
        ("app-2", "h1", 4_000),
        ("fill-2", "h2", 5_000),
        ("fill-3", "h3", 5_000),
    ] {
        let mut vm = Vm::new(id, Resources::new(size, size), h);
        if id.starts_with("app") {
            vm.affinity_group = Some("app".into());
        }
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    let mut s = Story::new(Config::default(), inv);
    crash_host(&mut s, "h1", 1.0);
    s.at(8.0);
    let reasons = failover_reasons(&s);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("affinity group app split")),
        "{reasons:?}"
    );
}
