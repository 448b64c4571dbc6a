//! Whether a host takes a VM (the first constraint it breaks, if any), the soft-rule penalty, and
//! the key a strategy ranks feasible hosts by.

use super::index::HostIx;
use super::local::Local;
use super::{Engine, VmRec, has};
use crate::hash::ord;
use std::cmp::Ordering;

/// A host's key in one step. Smaller is better; equal keys go to the smaller host id.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    /// Soft rules broken.
    pub(super) pen: u32,
    /// Scatter: whether the host is at its fan-in; best-fit: memory left after.
    pub(super) a: u64,
    /// Position in the plan's host order.
    pub(super) b: u64,
}

/// How a plan picks among feasible hosts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Strategy {
    Scatter,
    BestFit,
    FirstFit,
}

/// The first constraint a host breaks for a VM.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Check {
    Ok,
    Unusable,
    Capacity,
    Rule,
    Anti,
    Ft,
}

/// Where a broken constraint counts in [`super::search::Miss::counts`].
pub(super) fn class_index(c: Check) -> Option<usize> {
    match c {
        Check::Capacity => Some(0),
        Check::Rule => Some(1),
        Check::Anti => Some(2),
        Check::Ft => Some(3),
        Check::Ok | Check::Unusable => None,
    }
}

impl Engine {
    /// Whether host `h` is up and takes VMs.
    pub(super) fn usable(&self, h: HostIx) -> bool {
        let r = &self.hosts[h];
        r.present && r.accepts
    }

    /// Whether `h` (in its baseline plus `local`) takes `v`, or the first constraint it breaks.
    pub(super) fn check<L: Local>(&self, v: &VmRec, h: HostIx, local: &L) -> Check {
        let host = &self.hosts[h];
        if !(host.present && host.accepts) {
            return Check::Unusable;
        }
        let free = host
            .limit
            .saturating_sub(&host.used)
            .saturating_sub(&local.used(h));
        if !v.demand.fits_in(&free) {
            return Check::Capacity;
        }
        if let Some(rules) = v.rules {
            let rs = &self.rule_sets[rules];
            if rs.must_in.iter().any(|g| host.groups.binary_search(g).is_err())
                || rs.must_not.iter().any(|g| host.groups.binary_search(g).is_ok())
            {
                return Check::Rule;
            }
        }
        if let Some(anti) = v.anti {
            if has(&host.anti, anti) || local.has_anti(h, anti) {
                return Check::Anti;
            }
        }
        if let Some(ft) = v.ft {
            let p = &self.vms[ft];
            if (p.present && p.host == Some(h)) || local.placed_on(ft) == Some(h) {
                return Check::Ft;
            }
        }
        Check::Ok
    }

    /// Soft rules `v` breaks on `h`.
    fn penalty<L: Local>(&self, v: &VmRec, h: HostIx, local: &L) -> u32 {
        let host = &self.hosts[h];
        let mut pen = 0;
        if let Some(rules) = v.rules {
            let rs = &self.rule_sets[rules];
            pen += rs
                .should_in
                .iter()
                .filter(|g| host.groups.binary_search(g).is_err())
                .count() as u32;
            pen += rs
                .should_not
                .iter()
                .filter(|g| host.groups.binary_search(g).is_ok())
                .count() as u32;
        }
        if let Some(aff) = v.aff {
            if !(has(&host.aff, aff) || local.has_aff(h, aff)) {
                pen += 1;
            }
        }
        pen
    }

    /// Whether `v` has soft rules (then hosts can differ in penalty).
    pub(super) fn soft(&self, v: &VmRec) -> bool {
        v.aff.is_some() || v.rules.is_some_and(|r| self.rule_sets[r].soft())
    }

    /// The key of feasible host `h` for `v`.
    pub(super) fn key<L: Local>(
        &self,
        strategy: Strategy,
        seed: u64,
        v: &VmRec,
        h: HostIx,
        local: &L,
    ) -> Key {
        let host = &self.hosts[h];
        match strategy {
            Strategy::Scatter => Key {
                pen: self.penalty(v, h, local),
                // The level of fan_in the host is at (0 below it): fewer first.
                a: u64::from(local.count(h).checked_div(self.policy.fan_in).unwrap_or(0)),
                b: ord(seed, host.hash),
            },
            Strategy::BestFit => {
                let free = host
                    .limit
                    .saturating_sub(&host.used)
                    .saturating_sub(&local.used(h));
                Key {
                    pen: self.penalty(v, h, local),
                    a: free.mem_mib.saturating_sub(v.demand.mem_mib),
                    b: ord(seed, host.hash),
                }
            }
            Strategy::FirstFit => Key::default(),
        }
    }

    /// A key no host can beat in `strategy` for `h`, whatever its state.
    pub(super) fn lower_bound(&self, strategy: Strategy, seed: u64, h: HostIx) -> Key {
        match strategy {
            Strategy::Scatter | Strategy::BestFit => Key {
                pen: 0,
                a: 0,
                b: ord(seed, self.hosts[h].hash),
            },
            Strategy::FirstFit => Key::default(),
        }
    }

    /// Whether `a` beats `b`: a smaller key, or the same key and a smaller host id.
    pub(super) fn less(&self, a: (Key, HostIx), b: (Key, HostIx)) -> bool {
        match a.0.cmp(&b.0) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.hosts[a.1].id < self.hosts[b.1].id,
        }
    }
}
