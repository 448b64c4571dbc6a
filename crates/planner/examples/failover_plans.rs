//! Using the planner outside `am`: build a cluster, keep failover plans ready, react to changes,
//! look a plan up when a host dies, check admission control, and plan a maintenance evacuation.
//!
//! `cargo run -p planner --example failover_plans`

use am_core::{Host, Inventory, InventoryDelta, Resources, RestartPriority, Vm};
use planner::{Constraints, FtPair, HostRule, Lookup, PlanError, Policy, RuleKind, plan_host_failure_with};
use std::collections::BTreeSet;

fn main() -> Result<(), PlanError> {
    // Six hosts in two racks.
    let mut inv = Inventory::default();
    for i in 1..=6 {
        let mut h = Host::new(format!("esx{i}").as_str(), Resources::new(32_000, 131_072));
        h.failure_domain = Some(format!("rack-{}", (i - 1) / 3 + 1));
        inv.apply(&InventoryDelta::HostUpsert(h));
    }
    // Twenty VMs; two databases that must stay apart; an FT pair.
    for i in 0..20 {
        let mut vm = Vm::new(
            format!("app-{i:02}").as_str(),
            Resources::new(2_000, 8_192 + 1_024 * (i % 4)),
            format!("esx{}", i % 6 + 1).as_str(),
        );
        vm.priority = if i < 4 {
            RestartPriority::High
        } else {
            RestartPriority::Medium
        };
        if i < 2 {
            vm.anti_affinity_group = Some("db".into());
        }
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    // Rules the inventory does not carry: app-05 must run in rack 2, app-06/app-07 are an FT pair.
    let mut cons = Constraints::default();
    cons.host_groups.insert(
        "rack-2-hosts".into(),
        ["esx4", "esx5", "esx6"].into_iter().map(Into::into).collect(),
    );
    cons.host_rules.push(HostRule {
        name: "app-05-in-rack-2".into(),
        vms: BTreeSet::from(["app-05".into()]),
        host_group: "rack-2-hosts".into(),
        kind: RuleKind::MustRunOn,
    });
    cons.ft_pairs.push(FtPair {
        primary: "app-06".into(),
        secondary: "app-07".into(),
    });
    let policy = Policy {
        headroom_pct: 10,
        reserved_cpu_pct: 20,
        reserved_mem_pct: 20,
        ..Policy::default()
    };

    // Plans for every host and rack, kept ready.
    let mut plans = planner::synth::Tracked::new(&inv, &cons, &policy)?;
    let adm = plans.admission();
    println!(
        "tolerates {} host failure(s) (target {}), {}% CPU / {}% memory free, reservation holds: {}",
        adm.host_failures_tolerated, adm.target, adm.free_cpu_pct, adm.free_mem_pct, adm.reservation_holds
    );

    // The cluster changes: a new VM, and a host goes into maintenance.
    let up = plans.apply(&InventoryDelta::VmUpsert(Vm::new(
        "batch",
        Resources::new(4_000, 16_384),
        "esx2",
    )));
    println!("after a new VM: {up:?}");
    let mut esx3 = plans.inventory().hosts["esx3"].clone();
    esx3.maintenance = true;
    plans.apply(&InventoryDelta::HostUpsert(esx3));

    // esx1 dies: the plan is a lookup. If it were stale, compute one afresh.
    let dead = "esx1".into();
    let plan = match plans.lookup(&dead) {
        Lookup::Fresh(plan) => plan.clone(),
        Lookup::Stale(_) | Lookup::Unknown => {
            plan_host_failure_with(plans.inventory(), &cons, &dead, &policy)?
        }
    };
    for (vm, to) in &plan.placements {
        println!("restart {vm} on {to}");
    }
    for (vm, why) in &plan.unplaced {
        println!("cannot restart {vm}: {why:?}");
    }
    if let Some(rack) = plans.plan_for_domain("rack-1") {
        println!(
            "if rack-1 fails: {} restarts, {} left out",
            rack.placements.len(),
            rack.unplaced.len()
        );
    }

    // The supervisor restarts them and reports esx1 down; the plans follow.
    let mut esx1 = plans.inventory().hosts["esx1"].clone();
    esx1.connection = am_core::ConnectionState::NotResponding;
    plans.apply(&InventoryDelta::HostUpsert(esx1));

    // esx2 goes into maintenance: two migrations at a time per host.
    let ev = plans.evacuation(&BTreeSet::from(["esx2".into()]), 2);
    for (i, wave) in ev.waves.iter().enumerate() {
        let moves: Vec<String> = wave
            .migrations
            .iter()
            .map(|m| format!("{}->{}", m.vm, m.to))
            .collect();
        println!("wave {}: {}", i + 1, moves.join(", "));
    }
    Ok(())
}
