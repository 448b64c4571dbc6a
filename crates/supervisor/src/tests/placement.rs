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
