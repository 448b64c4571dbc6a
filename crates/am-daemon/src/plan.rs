//! `am-daemon plan`: the failover plans kept ready for every host and failure domain, and the
//! admission figures, as text; `--fail HOST` shows what the failure of one host would do.

use am_core::{HostId, Inventory, PowerState};
use planner::{Constraints, FailoverPlans, Lookup, PlanError, Policy};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why the plans could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum PlanViewError {
    /// The planner refused the input.
    #[error("planner: {0}")]
    Planner(#[from] PlanError),
    /// `--fail` named a host the inventory does not have.
    #[error("no host `{host}` in the inventory (hosts: {known})")]
    UnknownHost {
        /// The name given.
        host: String,
        /// The hosts there are.
        known: String,
    },
}

/// How an operator reads a host: its name, with its id where they differ.
fn host_label(inv: &Inventory, id: &HostId) -> String {
    match inv.hosts.get(id) {
        Some(h) if h.name != id.as_str() => format!("{} ({id})", h.name),
        _ => id.to_string(),
    }
}

/// How an operator reads a VM: its name, with its id where they differ.
fn vm_label(inv: &Inventory, id: &am_core::VmId) -> String {
    match inv.vms.get(id) {
        Some(v) if v.name != id.as_str() => format!("{} ({id})", v.name),
        _ => id.to_string(),
    }
}

/// The plans and admission figures of `inv` as a text table; `model` says how VM demand and
/// host capacity were counted.
pub fn render(inv: &Inventory, policy: &Policy, model: &str) -> Result<String, PlanViewError> {
    let plans = FailoverPlans::new(inv, &Constraints::default(), policy)?;
    let mut out = String::new();
    let _ = writeln!(out, "capacity model: {model}\n");
    let width = inv
        .hosts
        .keys()
        .map(|h| host_label(inv, h).len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<width$} {:>5} {:>8}  {:<40} left out",
        "host", "VMs", "planned", "targets"
    );
    for (host, plan) in plans.host_plans() {
        let on = inv
            .vms_on(host)
            .filter(|v| v.is_protected() && v.power == PowerState::PoweredOn)
            .count();
        let mut targets: BTreeMap<&HostId, usize> = BTreeMap::new();
        for to in plan.placements.values() {
            *targets.entry(to).or_default() += 1;
        }
        let targets: Vec<String> = targets
            .iter()
            .map(|(h, n)| {
                format!(
                    "{}:{n}",
                    inv.hosts.get(*h).map_or(h.as_str(), |x| x.name.as_str())
                )
            })
            .collect();
        let left: Vec<String> = plan
            .unplaced
            .iter()
            .map(|(v, why)| format!("{} ({why:?})", vm_label(inv, v)))
            .collect();
        let _ = writeln!(
            out,
            "{:<width$} {:>5} {:>8}  {:<40} {}",
            host_label(inv, host),
            on,
            plan.placements.len(),
            targets.join(" "),
            if left.is_empty() {
                "-".to_owned()
            } else {
                left.join(", ")
            }
        );
    }
    let domains: Vec<(&str, &planner::Plan)> = plans.domain_plans().collect();
    if !domains.is_empty() {
        let _ = writeln!(out, "\n{:<12} {:>8}  left out", "domain", "planned");
        for (d, plan) in domains {
            let _ = writeln!(
                out,
                "{:<12} {:>8}  {}",
                d,
                plan.placements.len(),
                plan.unplaced.len()
            );
        }
    }
    let a = plans.admission();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "host failures tolerated  {} (target {}: {})",
        a.host_failures_tolerated,
        a.target,
        if a.meets_target { "met" } else { "NOT met" }
    );
    let _ = writeln!(
        out,
        "slots                    {} used of {} (slot {} MHz / {} MiB)",
        a.used_slots, a.total_slots, a.slot.cpu_mhz, a.slot.mem_mib
    );
    let _ = writeln!(
        out,
        "free capacity            {}% CPU, {}% memory (reservation {})",
        a.free_cpu_pct,
        a.free_mem_pct,
        if a.reservation_holds {
            "holds"
        } else {
            "does NOT hold"
        }
    );
    if !a.hosts_at_risk.is_empty() {
        let hosts: Vec<String> = a.hosts_at_risk.iter().map(|h| host_label(inv, h)).collect();
        let _ = writeln!(out, "hosts at risk            {}", hosts.join(", "));
    }
    Ok(out)
}

/// What the failure of `host` would do: each VM and where it restarts, and what is left out.
pub fn render_failure(inv: &Inventory, policy: &Policy, host: &str) -> Result<String, PlanViewError> {
    // By id or by name.
    let id = inv
        .hosts
        .values()
        .find(|h| h.id.as_str() == host || h.name == host)
        .map_or_else(|| HostId::from(host), |h| h.id.clone());
    if !inv.hosts.contains_key(&id) {
        let known: Vec<String> = inv.hosts.keys().map(|h| host_label(inv, h)).collect();
        return Err(PlanViewError::UnknownHost {
            host: host.to_owned(),
            known: known.join(", "),
        });
    }
    let plans = FailoverPlans::new(inv, &Constraints::default(), policy)?;
    let Lookup::Fresh(plan) = plans.lookup(&id) else {
        return Err(PlanViewError::UnknownHost {
            host: host.to_owned(),
            known: String::new(),
        });
    };
    let mut out = String::new();
    let _ = writeln!(out, "if {} fails:", host_label(inv, &id));
    let mut order: Vec<_> = plan.placements.iter().collect();
    order.sort_by_key(|(vm, _)| std::cmp::Reverse(inv.vms.get(*vm).map(|v| v.priority)));
    for (vm, to) in order {
        let p = inv
            .vms
            .get(vm)
            .map(|v| format!("{:?}", v.priority))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<14} {:<8} -> {}",
            vm_label(inv, vm),
            p,
            host_label(inv, to)
        );
    }
    for (vm, why) in &plan.unplaced {
        let _ = writeln!(out, "  {:<14} LEFT OUT: {why:?}", vm_label(inv, vm));
    }
    if plan.placements.is_empty() && plan.unplaced.is_empty() {
        let _ = writeln!(out, "  (no protected VM runs there)");
    }
    Ok(out)
}

/// The inventory a running daemon reports through its API (`/api/v1/status`), enough to plan.
pub fn inventory_of(status: &am_api::Snapshot) -> Inventory {
    use am_core::{ConnectionState, Host, InventoryDelta, Vm};
    let mut inv = Inventory::default();
    for h in &status.hosts {
        let mut host = Host::new(h.id.clone(), h.capacity);
        host.name = h.name.clone();
        host.connection = h.connection.unwrap_or(ConnectionState::Connected);
        host.maintenance = h.maintenance;
        host.failure_domain = h.failure_domain.clone();
        inv.apply(&InventoryDelta::HostUpsert(host));
    }
    for v in &status.vms {
        let mut vm = Vm::new(v.id.clone(), v.demand, "");
        vm.name = v.name.clone();
        vm.host = v.host.clone();
        vm.power = v.power;
        vm.priority = v.priority;
        vm.anti_affinity_group = v.anti_affinity_group.clone();
        vm.backup_of = v.backup_of.clone();
        inv.apply(&InventoryDelta::VmUpsert(vm));
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use am_core::{Host, InventoryDelta, Resources, Vm};

    fn inv() -> Inventory {
        let mut inv = Inventory::default();
        for (h, mem) in [("h1", 20_000), ("h2", 20_000), ("h3", 8_192)] {
            inv.apply(&InventoryDelta::HostUpsert(Host::new(
                h,
                Resources::new(10_000, mem),
            )));
        }
        // web fits on h3 (not on h2, which big fills); big fits nowhere.
        let web = Vm::new("web", Resources::new(1_000, 4_096), "h1");
        let big = Vm::new("big", Resources::new(1_000, 17_000), "h2");
        inv.apply(&InventoryDelta::VmUpsert(web));
        inv.apply(&InventoryDelta::VmUpsert(big));
        inv
    }

    #[test]
    fn the_table_shows_every_host_and_the_admission_figures() {
        let text = render(&inv(), &Policy::default(), "configured memory size").unwrap();
        assert!(
            text.starts_with("capacity model: configured memory size"),
            "{text}"
        );
        assert!(text.contains("h1"), "{text}");
        assert!(text.contains("h3:1"), "h1's VM goes to h3:\n{text}");
        assert!(
            text.contains("big (NoCapacity)"),
            "h2's big VM fits nowhere:\n{text}"
        );
        assert!(text.contains("host failures tolerated  0"), "{text}");
        assert!(text.contains("hosts at risk            h2"), "{text}");
    }

    #[test]
    fn a_running_daemons_status_plans_like_its_inventory() {
        let mut sup = supervisor::Supervisor::new(supervisor::Config::default());
        sup.step(am_core::Time::ZERO, am_core::Observation::Inventory(inv()));
        let status = am_api::Snapshot::capture(am_core::Time::ZERO, &sup, None, &[]);
        let rebuilt = inventory_of(&status);
        let policy = Policy::default();
        assert_eq!(
            render(&rebuilt, &policy, "m").unwrap(),
            render(&inv(), &policy, "m").unwrap()
        );
        assert_eq!(
            render_failure(&rebuilt, &policy, "h1").unwrap(),
            render_failure(&inv(), &policy, "h1").unwrap()
        );
    }

    #[test]
    fn fail_shows_each_vm_and_an_unknown_host_is_named() {
        let text = render_failure(&inv(), &Policy::default(), "h1").unwrap();
        assert!(text.contains("web") && text.contains("-> h3"), "{text}");
        let text = render_failure(&inv(), &Policy::default(), "h2").unwrap();
        assert!(text.contains("big") && text.contains("LEFT OUT"), "{text}");
        let e = render_failure(&inv(), &Policy::default(), "h9")
            .unwrap_err()
            .to_string();
        assert!(e.contains("h9") && e.contains("h1, h2, h3"), "{e}");
    }

    #[test]
    fn hosts_and_vms_are_shown_by_name_with_their_ids_and_found_by_name() {
        let mut inv = inv();
        for (id, name) in [("h1", "esx-a"), ("h2", "esx-b"), ("h3", "esx-c")] {
            let mut h = inv.hosts[&HostId::from(id)].clone();
            h.name = name.into();
            inv.apply(&am_core::InventoryDelta::HostUpsert(h));
        }
        let mut web = inv.vms[&am_core::VmId::from("web")].clone();
        web.name = "web-frontend".into();
        inv.apply(&am_core::InventoryDelta::VmUpsert(web));
        let text = render(&inv, &Policy::default(), "m").unwrap();
        assert!(text.contains("esx-a (h1)") && text.contains("esx-c:1"), "{text}");
        let text = render_failure(&inv, &Policy::default(), "esx-a").unwrap();
        assert!(
            text.contains("if esx-a (h1) fails")
                && text.contains("web-frontend (web)")
                && text.contains("-> esx-c (h3)"),
            "{text}"
        );
    }
}
