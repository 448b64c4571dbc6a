//! Evacuation: emptying hosts by live migration, in waves.

use crate::constraints::{Constraints, Result};
use crate::engine::{Engine, Scratch};
use crate::{Policy, Unplaced};
use am_core::{HostId, Inventory, VmId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One live migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The VM.
    pub vm: VmId,
    /// The host it leaves.
    pub from: HostId,
    /// The host it goes to.
    pub to: HostId,
}

/// Migrations that may run at the same time: at most the per-host limit leave any host, and at
/// most the per-host limit enter any host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// The migrations, most important VM first.
    pub migrations: Vec<Migration>,
}

/// How to empty hosts: waves to run one after the other, and the VMs that have nowhere to go.
///
/// Targets are chosen once for all waves, on the cluster without the evacuated hosts, so every
/// wave only adds load that the final placement already accounts for: capacity holds after
/// every wave. Higher-priority VMs move in earlier waves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evacuation {
    /// Waves, in order.
    pub waves: Vec<Wave>,
    /// Powered-on VMs that cannot move anywhere, with the reason.
    pub unplaced: BTreeMap<VmId, Unplaced>,
}

impl Evacuation {
    /// Number of migrations in all waves.
    pub fn migrations(&self) -> usize {
        self.waves.iter().map(|w| w.migrations.len()).sum()
    }
}

/// Waves of live migrations that empty `host` (maintenance mode, or a predicted failure), at most
/// `per_host_limit` (at least 1) entering or leaving one host per wave. All powered-on VMs move,
/// protected or not; powered-off ones stay registered where they are.
pub fn evacuation_plan(inv: &Inventory, host: &HostId, per_host_limit: u32, policy: &Policy) -> Evacuation {
    let engine = Engine::build(inv, &Constraints::default(), policy, |_| false);
    plan(
        &engine,
        &mut Scratch::default(),
        &BTreeSet::from([host.clone()]),
        per_host_limit,
    )
}

/// [`evacuation_plan`] for several hosts at once (a rack going down for maintenance), with
/// [`Constraints`].
pub fn evacuation_plan_with(
    inv: &Inventory,
    constraints: &Constraints,
    hosts: &BTreeSet<HostId>,
    per_host_limit: u32,
    policy: &Policy,
) -> Result<Evacuation> {
    constraints.validate()?;
    let engine = Engine::build(inv, constraints, policy, |_| false);
    Ok(plan(&engine, &mut Scratch::default(), hosts, per_host_limit))
}

/// Migrations per host in one wave.
type PerHost<'a> = HashMap<&'a HostId, u32>;

pub(crate) fn plan(
    engine: &Engine,
    scratch: &mut Scratch,
    hosts: &BTreeSet<HostId>,
    per_host_limit: u32,
) -> Evacuation {
    let limit = per_host_limit.max(1);
    let vms = engine.running_on(hosts);
    let spec = engine.custom_spec("evacuate", &vms, hosts);
    let placed = engine.to_plan(&engine.compute(scratch, &spec));
    let mut out = Evacuation {
        waves: Vec::new(),
        unplaced: placed.unplaced,
    };
    // Per wave: migrations leaving and entering each host.
    let mut counts: Vec<(PerHost, PerHost)> = Vec::new();
    for &v in &spec.vms {
        let vm = engine.vm_id(v);
        let (Some(to), Some(h)) = (placed.placements.get(vm), engine.vm_host(v)) else {
            continue;
        };
        let from = engine.host_id(h);
        let wave = counts
            .iter()
            .position(|(o, i)| {
                o.get(from).copied().unwrap_or(0) < limit && i.get(to).copied().unwrap_or(0) < limit
            })
            .unwrap_or_else(|| {
                counts.push((HashMap::new(), HashMap::new()));
                out.waves.push(Wave::default());
                counts.len() - 1
            });
        *counts[wave].0.entry(from).or_insert(0) += 1;
        *counts[wave].1.entry(to).or_insert(0) += 1;
        out.waves[wave].migrations.push(Migration {
            vm: vm.clone(),
            from: from.clone(),
            to: to.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use am_core::{Host, InventoryDelta, Resources, RestartPriority, Vm};

    #[test]
    fn waves_respect_the_per_host_limit_and_go_by_priority() {
        let mut inv = Inventory::default();
        for h in ["h1", "h2", "h3"] {
            inv.apply(&InventoryDelta::HostUpsert(Host::new(
                h,
                Resources::new(100_000, 100_000),
            )));
        }
        for i in 0..7 {
            let mut vm = Vm::new(format!("v{i}").as_str(), Resources::new(100, 1_000), "h1");
            vm.priority = if i == 6 {
                RestartPriority::Highest
            } else {
                RestartPriority::Low
            };
            inv.apply(&InventoryDelta::VmUpsert(vm));
        }
        let ev = evacuation_plan(&inv, &"h1".into(), 2, &Policy::default());
        assert_eq!(ev.migrations(), 7);
        assert!(ev.unplaced.is_empty());
        assert_eq!(ev.waves.len(), 4);
        assert_eq!(ev.waves[0].migrations[0].vm, VmId::from("v6"));
        for w in &ev.waves {
            assert!(w.migrations.len() <= 2);
            assert!(
                w.migrations
                    .iter()
                    .all(|m| m.from.as_str() == "h1" && m.to.as_str() != "h1")
            );
        }
    }
}
