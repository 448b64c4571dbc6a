//! Synthetic clusters for benchmarks, tests and demonstrations: deterministic for a seed.

use crate::constraints::{Constraints, FtPair, HostRule, RuleKind};
use am_core::{Host, HostId, Inventory, InventoryDelta, Resources, RestartPriority, Vm, VmId};
use std::collections::BTreeSet;

/// A small deterministic pseudo-random generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::hash::mix(self.0.wrapping_sub(0x9e37_79b9_7f4a_7c15))
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// The shape of a synthetic cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Number of hosts.
    pub hosts: usize,
    /// Number of VMs.
    pub vms: usize,
    /// Hosts per failure domain (rack); 0 for no domains.
    pub hosts_per_domain: usize,
    /// Target memory use of the hosts, in percent.
    pub fill_pct: u64,
    /// Percent of VMs in an anti-affinity group (groups of 2 to 4 on distinct hosts).
    pub anti_affinity_pct: u64,
    /// Percent of VMs in an affinity group (pairs on one host).
    pub affinity_pct: u64,
    /// Percent of VMs in a fault-tolerant pair.
    pub ft_pct: u64,
    /// Percent of VMs under a host rule (must or should run on the group of their host).
    pub rule_pct: u64,
    /// VM demands (memory and CPU) in percent of [`demand`]'s: 100 for its sizes. The default
    /// 50,000 VMs fill about half of the default 1,000 hosts' memory; about 180 fills 88 %.
    pub vm_size_pct: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            hosts: 1_000,
            vms: 50_000,
            hosts_per_domain: 20,
            fill_pct: 70,
            anti_affinity_pct: 5,
            affinity_pct: 4,
            ft_pct: 1,
            rule_pct: 2,
            vm_size_pct: 100,
        }
    }
}

/// Host `i`'s id.
pub fn host_id(i: usize) -> HostId {
    HostId::new(format!("host-{i:05}"))
}

/// VM `i`'s id.
pub fn vm_id(i: usize) -> VmId {
    VmId::new(format!("vm-{i:06}"))
}

const PRIORITIES: [RestartPriority; 6] = [
    RestartPriority::Disabled,
    RestartPriority::Lowest,
    RestartPriority::Low,
    RestartPriority::Medium,
    RestartPriority::High,
    RestartPriority::Highest,
];

/// A random VM demand: memory from 1 to 32 GiB (small ones more likely), CPU to match.
pub fn demand(rng: &mut Rng) -> Resources {
    let mem = 1_024 << rng.below(6).min(rng.below(6));
    Resources::new(250 + rng.below(8) * 250, mem)
}

/// A cluster of `p`'s shape. Hosts have 256 to 768 GiB and 64 to 192 GHz; VMs are spread until
/// the hosts reach `fill_pct` of their memory; every rule holds in the cluster as generated.
pub fn cluster(p: &Params, seed: u64) -> (Inventory, Constraints) {
    let mut rng = Rng::new(seed);
    let mut inv = Inventory::default();
    let mut cons = Constraints::default();
    let mut caps = Vec::with_capacity(p.hosts);
    for i in 0..p.hosts {
        let size = 1 + rng.below(3);
        let mut h = Host::new(host_id(i), Resources::new(64_000 * size, 262_144 * size));
        if let Some(rack) = i.checked_div(p.hosts_per_domain) {
            h.failure_domain = Some(format!("rack-{rack:03}"));
        }
        caps.push(h.capacity);
        inv.apply(&InventoryDelta::HostUpsert(h));
    }
    // Host groups, for the rules: every `groups`-th host, so that each spans the racks.
    let groups = p.hosts.div_ceil(p.hosts_per_domain.max(10)).max(1);
    if p.hosts > 0 && p.rule_pct > 0 {
        for g in 0..groups {
            let members: BTreeSet<HostId> = (g..p.hosts).step_by(groups).map(host_id).collect();
            cons.host_groups.insert(format!("group-{g:03}"), members);
        }
    }
    let mut used = vec![Resources::ZERO; p.hosts];
    let mut i = 0;
    let mut anti = 0;
    let mut aff = 0;
    while i < p.vms && p.hosts > 0 {
        let kind = rng.below(100);
        let count = if kind < p.anti_affinity_pct {
            2 + rng.below(3) as usize
        } else if kind < p.anti_affinity_pct + p.affinity_pct + p.ft_pct {
            2
        } else {
            1
        };
        let count = count.min(p.vms - i);
        let mut hosts_used: Vec<usize> = Vec::new();
        let start = rng.below(p.hosts as u64) as usize;
        for k in 0..count {
            let d = demand(&mut rng);
            let d = Resources::new(d.cpu_mhz * p.vm_size_pct / 100, d.mem_mib * p.vm_size_pct / 100);
            let same_host = kind >= p.anti_affinity_pct && kind < p.anti_affinity_pct + p.affinity_pct;
            // Find a host with room (memory under the fill target), distinct for groups
            // that need it.
            let mut h = if same_host && k > 0 {
                hosts_used[0]
            } else {
                (start + k * 7) % p.hosts
            };
            let mut tries = 0;
            while tries < p.hosts
                && ((used[h].mem_mib + d.mem_mib) * 100 > caps[h].mem_mib * p.fill_pct
                    || (used[h].cpu_mhz + d.cpu_mhz) > caps[h].cpu_mhz
                    || (!(same_host && k > 0) && hosts_used.contains(&h)))
            {
                h = (h + 1) % p.hosts;
                tries += 1;
            }
            used[h] += d;
            hosts_used.push(h);
            let mut vm = Vm::new(vm_id(i + k), d, host_id(h));
            vm.priority = PRIORITIES[rng.below(6) as usize];
            if rng.chance(10) {
                vm.power = am_core::PowerState::PoweredOff;
            }
            if kind < p.anti_affinity_pct && count > 1 {
                vm.anti_affinity_group = Some(format!("anti-{anti}"));
            } else if same_host && count > 1 {
                vm.affinity_group = Some(format!("aff-{aff}"));
            }
            if k == 0 && count == 1 && rng.below(100) < p.rule_pct * 2 && !cons.host_groups.is_empty() {
                let kind = if rng.chance(50) {
                    RuleKind::MustRunOn
                } else {
                    RuleKind::ShouldRunOn
                };
                cons.host_rules.push(HostRule {
                    name: format!("rule-{}", i + k),
                    vms: BTreeSet::from([vm.id.clone()]),
                    host_group: format!("group-{:03}", h % groups),
                    kind,
                });
            }
            inv.apply(&InventoryDelta::VmUpsert(vm));
        }
        let ft_kind = kind >= p.anti_affinity_pct + p.affinity_pct
            && kind < p.anti_affinity_pct + p.affinity_pct + p.ft_pct;
        if ft_kind && count == 2 {
            cons.ft_pairs.push(FtPair {
                primary: vm_id(i),
                secondary: vm_id(i + 1),
            });
        }
        if kind < p.anti_affinity_pct {
            anti += 1;
        } else if kind < p.anti_affinity_pct + p.affinity_pct {
            aff += 1;
        }
        i += count;
    }
    (inv, cons)
}

/// A random change to `inv`: a VM added, removed, resized, moved or powered off or on, or
/// (rarely) a host failed, put in maintenance, restored, added or removed.
pub fn random_delta(inv: &Inventory, rng: &mut Rng, next_id: &mut usize) -> InventoryDelta {
    let hosts: Vec<&Host> = inv.hosts.values().collect();
    let pick_host = |rng: &mut Rng| hosts[rng.below(hosts.len() as u64) as usize].id.clone();
    let vms = inv.vms.len() as u64;
    let pick_vm = |rng: &mut Rng| inv.vms.values().nth(rng.below(vms) as usize).cloned();
    let roll = rng.below(100);
    match roll {
        _ if hosts.is_empty() || roll >= 95 => {
            *next_id += 1;
            let mut h = Host::new(
                HostId::new(format!("new-host-{next_id}")),
                Resources::new(64_000, 262_144),
            );
            if let Some(d) = hosts.first().and_then(|h| h.failure_domain.clone()) {
                h.failure_domain = Some(d);
            }
            InventoryDelta::HostUpsert(h)
        }
        0..=19 => {
            *next_id += 1;
            let mut vm = Vm::new(
                VmId::new(format!("new-vm-{next_id}")),
                demand(rng),
                pick_host(rng),
            );
            vm.priority = PRIORITIES[rng.below(6) as usize];
            InventoryDelta::VmUpsert(vm)
        }
        20..=79 => match pick_vm(rng) {
            Some(mut vm) => {
                match roll % 4 {
                    0 => vm.demand = demand(rng),
                    1 => vm.host = Some(pick_host(rng)),
                    2 => {
                        vm.power = if vm.power == am_core::PowerState::PoweredOn {
                            am_core::PowerState::PoweredOff
                        } else {
                            am_core::PowerState::PoweredOn
                        }
                    }
                    _ => vm.priority = PRIORITIES[rng.below(6) as usize],
                }
                InventoryDelta::VmUpsert(vm)
            }
            None => InventoryDelta::HostRemoved(pick_host(rng)),
        },
        80..=89 => match pick_vm(rng) {
            Some(vm) => InventoryDelta::VmRemoved(vm.id),
            None => InventoryDelta::HostRemoved(pick_host(rng)),
        },
        _ => {
            let mut h = hosts[rng.below(hosts.len() as u64) as usize].clone();
            match roll % 4 {
                0 => h.connection = am_core::ConnectionState::NotResponding,
                1 => h.maintenance = !h.maintenance,
                2 => h.connection = am_core::ConnectionState::Connected,
                _ => return InventoryDelta::HostRemoved(h.id),
            }
            InventoryDelta::HostUpsert(h)
        }
    }
}

/// A change to one VM of `inv` (resize, move, add, remove, by `n % 4`), and the change that
/// undoes it: the unit of the incremental-update benchmarks.
pub fn vm_change(inv: &Inventory, rng: &mut Rng, n: usize) -> (InventoryDelta, InventoryDelta) {
    let vms: Vec<&Vm> = inv.vms.values().collect();
    let vm = vms[rng.below(vms.len() as u64) as usize].clone();
    let hosts: Vec<_> = inv.hosts.keys().collect();
    match n % 4 {
        0 => {
            let mut v = vm.clone();
            v.demand = demand(rng);
            (InventoryDelta::VmUpsert(v), InventoryDelta::VmUpsert(vm))
        }
        1 => {
            let mut v = vm.clone();
            v.host = Some(hosts[rng.below(hosts.len() as u64) as usize].clone());
            (InventoryDelta::VmUpsert(v), InventoryDelta::VmUpsert(vm))
        }
        2 => {
            let mut v = vm.clone();
            v.id = format!("bench-new-{n}").into();
            v.anti_affinity_group = None;
            v.affinity_group = None;
            (
                InventoryDelta::VmUpsert(v.clone()),
                InventoryDelta::VmRemoved(v.id),
            )
        }
        _ => (
            InventoryDelta::VmRemoved(vm.id.clone()),
            InventoryDelta::VmUpsert(vm),
        ),
    }
}

/// Plans and the inventory they are made for, side by side (the plans keep no copy of it):
/// every delta goes to both, so a test or a benchmark can make the plans anew from the same
/// inventory and compare. Derefs to the plans.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// The inventory every delta given so far made.
    pub inv: Inventory,
    /// The plans.
    pub plans: crate::FailoverPlans,
}

impl Tracked {
    /// Plans for `inv`, with a copy of it.
    pub fn new(inv: &Inventory, constraints: &Constraints, policy: &crate::Policy) -> crate::Result<Tracked> {
        Ok(Tracked {
            inv: inv.clone(),
            plans: crate::FailoverPlans::new(inv, constraints, policy)?,
        })
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// [`crate::FailoverPlans::apply`], and the inventory changes.
    pub fn apply(&mut self, delta: &InventoryDelta) -> crate::Updated {
        self.inv.apply(delta);
        self.plans.apply(delta)
    }

    /// [`crate::FailoverPlans::defer`], and the inventory changes.
    pub fn defer(&mut self, delta: &InventoryDelta) {
        self.inv.apply(delta);
        self.plans.defer(delta);
    }
}

impl std::ops::Deref for Tracked {
    type Target = crate::FailoverPlans;
    fn deref(&self) -> &crate::FailoverPlans {
        &self.plans
    }
}

impl std::ops::DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut crate::FailoverPlans {
        &mut self.plans
    }
}
