//! What a run put on the hosts so far, beyond their baseline in the cluster: the [`Local`] views
//! the feasibility checks read. A full run keeps it in a [`Scratch`]; an incremental check
//! follows one host through a run with [`One`]; [`Baseline`] is the cluster alone.

use super::VmRec;
use super::index::{AffIx, AntiIx, HostIx, IxVec, VmIx};
use am_core::Resources;
use std::collections::{BTreeSet, HashMap};

/// What a run knows beyond the baseline: nothing, a [`Scratch`], or [`One`] host's share.
pub(super) trait Local {
    fn used(&self, h: HostIx) -> Resources;
    fn has_anti(&self, h: HostIx, g: AntiIx) -> bool;
    fn has_aff(&self, h: HostIx, g: AffIx) -> bool;
    fn placed_on(&self, vm: VmIx) -> Option<HostIx>;
    fn count(&self, h: HostIx) -> u32;
}

/// The cluster as it is, before the run places anything.
pub(super) struct Baseline;

impl Local for Baseline {
    fn used(&self, _: HostIx) -> Resources {
        Resources::ZERO
    }
    fn has_anti(&self, _: HostIx, _: AntiIx) -> bool {
        false
    }
    fn has_aff(&self, _: HostIx, _: AffIx) -> bool {
        false
    }
    fn placed_on(&self, _: VmIx) -> Option<HostIx> {
        None
    }
    fn count(&self, _: HostIx) -> u32 {
        0
    }
}

/// Per-run state, kept between runs to reuse its allocations.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    pub(super) excluded: IxVec<HostIx, bool>,
    pub(super) local_used: IxVec<HostIx, Resources>,
    pub(super) local_count: IxVec<HostIx, u32>,
    pub(super) local_anti: IxVec<HostIx, Vec<AntiIx>>,
    pub(super) local_aff: IxVec<HostIx, Vec<AffIx>>,
    /// Hosts this run put a VM on.
    pub(super) touched: Vec<HostIx>,
    /// Where this run put the VMs that have a fault-tolerant partner.
    pub(super) placed: HashMap<VmIx, HostIx>,
    /// Affinity group -> hosts this run put a VM of it on.
    pub(super) aff_local: HashMap<AffIx, Vec<HostIx>>,
    /// The scattering host order: (position key, host), sorted.
    pub(super) order: Vec<(u64, HostIx)>,
    /// How many positions of `order`, from the first, are final (sorted, with their room and
    /// fan-in state); the rest are in no order yet.
    pub(super) sorted: usize,
    /// Each host's position in `order` (among the final ones).
    pub(super) pos: IxVec<HostIx, u32>,
    /// Free room of each position of `order` in the run's state (scatter, first fit).
    pub(super) room: Vec<Resources>,
    /// Scatter: whether each position of `order` holds its fan-in of the run's VMs.
    pub(super) full: Vec<bool>,
    /// Best fit: (free memory, position key, rank by id, host) of every candidate host.
    pub(super) best: BTreeSet<(u64, u64, u32, HostIx)>,
    /// The seed of the run's host order.
    pub(super) seed: u64,
    /// Best fit: each candidate host's rank by id.
    pub(super) rank: IxVec<HostIx, u32>,
}

impl Local for Scratch {
    fn used(&self, h: HostIx) -> Resources {
        self.local_used[h]
    }
    fn has_anti(&self, h: HostIx, g: AntiIx) -> bool {
        self.local_anti[h].contains(&g)
    }
    fn has_aff(&self, h: HostIx, g: AffIx) -> bool {
        self.local_aff[h].contains(&g)
    }
    fn placed_on(&self, vm: VmIx) -> Option<HostIx> {
        if self.placed.is_empty() {
            None
        } else {
            self.placed.get(&vm).copied()
        }
    }
    fn count(&self, h: HostIx) -> u32 {
        self.local_count[h]
    }
}

/// One host's share of a run, followed step by step: what the run put on it so far.
#[derive(Clone, Debug)]
pub(super) struct One {
    pub(super) h: HostIx,
    used: Resources,
    pub(super) count: u32,
    anti: Vec<AntiIx>,
    aff: Vec<AffIx>,
    vms: Vec<VmIx>,
}

impl One {
    pub(super) fn new(h: HostIx) -> One {
        One {
            h,
            used: Resources::ZERO,
            count: 0,
            anti: Vec::new(),
            aff: Vec::new(),
            vms: Vec::new(),
        }
    }

    /// The run put VM `v` (record `r`) on this host.
    pub(super) fn add(&mut self, r: &VmRec, v: VmIx) {
        self.used += r.demand;
        self.count += 1;
        if let Some(g) = r.anti {
            self.anti.push(g);
        }
        if let Some(g) = r.aff {
            self.aff.push(g);
        }
        self.vms.push(v);
    }
}

impl Local for One {
    fn used(&self, h: HostIx) -> Resources {
        if h == self.h { self.used } else { Resources::ZERO }
    }
    fn has_anti(&self, h: HostIx, g: AntiIx) -> bool {
        h == self.h && self.anti.contains(&g)
    }
    fn has_aff(&self, h: HostIx, g: AffIx) -> bool {
        h == self.h && self.aff.contains(&g)
    }
    fn placed_on(&self, vm: VmIx) -> Option<HostIx> {
        self.vms.contains(&vm).then_some(self.h)
    }
    fn count(&self, h: HostIx) -> u32 {
        if h == self.h { self.count } else { 0 }
    }
}
