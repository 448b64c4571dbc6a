//! Admission control: how much failure the cluster can absorb.

use crate::engine::Engine;
use am_core::{HostId, Resources};
use serde::{Deserialize, Serialize};

/// How much failure the cluster can absorb, as vSphere HA's admission control reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Host failures the cluster tolerates ("host failures cluster tolerates"). 0 when the plan of
    /// some single host leaves a VM out. Otherwise at least 1 (every single failure has a complete
    /// plan, with every rule), and more when the slot count says so: after losing the hosts with
    /// the most slots one by one, the remaining slots still hold every powered-on VM. Like
    /// vSphere's, that count is conservative for capacity and ignores placement rules.
    pub host_failures_tolerated: u32,
    /// The policy's [`crate::Policy::host_failures_to_tolerate`].
    pub target: u32,
    /// `host_failures_tolerated >= target`.
    pub meets_target: bool,
    /// Hosts whose failure plan leaves a VM out.
    pub hosts_at_risk: Vec<HostId>,
    /// Failure domains whose failure plan leaves a VM out.
    pub domains_at_risk: Vec<String>,
    /// The slot: the largest CPU and the largest memory demand of a powered-on VM.
    pub slot: Resources,
    /// Slots of the usable hosts (each host: its failover capacity divided by the slot).
    pub total_slots: u64,
    /// Slots in use: one per powered-on VM.
    pub used_slots: u64,
    /// Share of the usable hosts' CPU (after the per-host reserve) that is free, in percent.
    pub free_cpu_pct: u8,
    /// Share of the usable hosts' memory (after the per-host reserve) that is free, in percent.
    pub free_mem_pct: u8,
    /// Whether the free shares are at least the policy's reserved percentages.
    pub reservation_holds: bool,
}

fn pct(free: u64, total: u64) -> u8 {
    if total == 0 {
        0
    } else {
        (u128::from(free) * 100 / u128::from(total)).min(100) as u8
    }
}

pub(crate) fn compute(
    engine: &Engine,
    hosts_at_risk: Vec<HostId>,
    domains_at_risk: Vec<String>,
) -> Admission {
    let policy = engine.policy();
    let caps = engine.usable_capacities();
    let mut slot = Resources::new(1, 1);
    let mut used = Resources::ZERO;
    let mut used_slots = 0u64;
    for d in engine.running_demands() {
        slot.cpu_mhz = slot.cpu_mhz.max(d.cpu_mhz);
        slot.mem_mib = slot.mem_mib.max(d.mem_mib);
        used += d;
        used_slots += 1;
    }
    let mut slots: Vec<u64> = caps
        .iter()
        .map(|(_, limit)| (limit.cpu_mhz / slot.cpu_mhz).min(limit.mem_mib / slot.mem_mib))
        .collect();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    let total_slots: u64 = slots.iter().sum();
    let mut left = total_slots;
    let mut by_slots = 0u32;
    for s in &slots {
        if left - s >= used_slots {
            left -= s;
            by_slots += 1;
        } else {
            break;
        }
    }
    let host_failures_tolerated = if !hosts_at_risk.is_empty() || caps.is_empty() {
        0
    } else {
        by_slots.max(1)
    };
    let total = caps.iter().fold(Resources::ZERO, |acc, (c, _)| acc + *c);
    let free = total.saturating_sub(&used);
    let free_cpu_pct = pct(free.cpu_mhz, total.cpu_mhz);
    let free_mem_pct = pct(free.mem_mib, total.mem_mib);
    Admission {
        host_failures_tolerated,
        target: policy.host_failures_to_tolerate,
        meets_target: host_failures_tolerated >= policy.host_failures_to_tolerate,
        hosts_at_risk,
        domains_at_risk,
        slot,
        total_slots,
        used_slots,
        free_cpu_pct,
        free_mem_pct,
        reservation_holds: free_cpu_pct >= policy.reserved_cpu_pct.min(100)
            && free_mem_pct >= policy.reserved_mem_pct.min(100),
    }
}
