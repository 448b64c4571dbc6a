//! The greedy runs: each step places one VM on the best feasible host of a strategy (or records
//! why none took it), with what the incremental checks need kept in a [`Trace`]; and the
//! portfolio that makes a plan of the scattering run or of the best of three strategies.

use super::feasible::{Check, Key, Strategy, class_index};
use super::index::{HostIx, Idx, VmIx};
use super::local::{Baseline, Scratch};
use super::spec::Spec;
use super::{Engine, VmRec};
use crate::Unplaced;
use crate::hash::ord;
use am_core::Resources;

/// One decision of a greedy run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Step {
    pub(super) vm: VmIx,
    /// The host chosen, or `None`: the VM is left out for `reason`.
    pub(super) host: Option<HostIx>,
    pub(super) key: Key,
    pub(super) reason: Option<Unplaced>,
}

/// A step that left its VM out: how many usable hosts each constraint ruled out (the reason is
/// derived from these counts), and how many would take the VM in the baseline.
#[derive(Clone, Debug)]
pub(super) struct Miss {
    pub(super) step: usize,
    /// Hosts ruled out by capacity, host rule, anti-affinity, FT partner.
    pub(super) counts: [u32; 4],
    /// Hosts where the VM fits the cluster without this plan's placements.
    pub(super) base_ok: u32,
    /// For each changing host before the change (noted by [`Engine::note_old`]): its class, and
    /// whether it counted in `base_ok`.
    pub(super) old: Vec<(HostIx, Check, bool)>,
}

/// Why a VM is left out, from the counts of its [`Miss`].
pub(super) fn reason_of(counts: &[u32; 4]) -> Unplaced {
    if counts[2] > 0 {
        Unplaced::AntiAffinity
    } else if counts[3] > 0 {
        Unplaced::FaultTolerance
    } else if counts[1] > 0 {
        Unplaced::HostRule
    } else if counts[0] > 0 {
        Unplaced::NoCapacity
    } else {
        Unplaced::NoHost
    }
}

/// A greedy run and what its incremental checks need.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    pub(super) strategy: Strategy,
    pub(super) steps: Vec<Step>,
    pub(super) misses: Vec<Miss>,
    /// Hosts chosen by some step, sorted.
    pub(super) touched: Vec<HostIx>,
    /// The largest (key, host) chosen.
    pub(super) max: Option<(Key, HostIx)>,
    /// The largest (key, host) chosen with no penalty and no fan-in excess.
    pub(super) max_plain: Option<(Key, HostIx)>,
    /// Steps that chose a host with a penalty or over its fan-in, in order.
    pub(super) special: Vec<u32>,
    /// (host, step) of every placement, sorted.
    pub(super) by_host: Vec<(HostIx, u32)>,
}

impl Trace {
    /// Whether another strategy might place more: some VM left out fits the baseline somewhere.
    pub(super) fn improvable(&self) -> bool {
        self.misses.iter().any(|m| m.base_ok > 0)
    }
}

/// The candidate runs of a plan and which one the plan is.
#[derive(Clone, Debug)]
pub(crate) struct Computed {
    pub(super) traces: Vec<Trace>,
    pub(super) chosen: usize,
}

impl Computed {
    /// Whether some run left a VM out.
    pub(crate) fn has_misses(&self) -> bool {
        self.traces.iter().any(|t| !t.misses.is_empty())
    }
}

impl Engine {
    // ----- runs --------------------------------------------------------------------------------

    /// Readies `s` for a run of `strategy` on `spec`: the excluded hosts, the candidate hosts
    /// in the strategy's order, and their free room.
    fn begin(&self, s: &mut Scratch, spec: &Spec, strategy: Strategy) {
        let n = self.hosts.len();
        if s.excluded.len() < n {
            s.excluded.resize(n, false);
            s.local_used.resize(n, Resources::ZERO);
            s.local_count.resize(n, 0);
            s.local_anti.resize(n, Vec::new());
            s.local_aff.resize(n, Vec::new());
            s.pos.resize(n, u32::MAX);
            s.rank.resize(n, u32::MAX);
        }
        for &h in &spec.excluded {
            s.excluded[h] = true;
        }
        s.order.clear();
        s.best.clear();
        s.seed = spec.seed;
        let candidate = |s: &Scratch, h: HostIx| self.usable(h) && !s.excluded[h];
        match strategy {
            Strategy::Scatter => {
                for (h, r) in self.hosts.iter_enumerated() {
                    if candidate(s, h) {
                        s.order.push((ord(spec.seed, r.hash), h));
                    }
                }
                // Sorted lazily (see `Engine::ensure_sorted`): a run in a roomy cluster reads
                // only the first few positions.
                s.sorted = 0;
            }
            Strategy::FirstFit => {
                for &h in self.host_ix.values() {
                    if candidate(s, h) {
                        s.order.push((0, h));
                    }
                }
            }
            Strategy::BestFit => {
                let mut rank = 0;
                for &h in self.host_ix.values() {
                    if candidate(s, h) {
                        s.rank[h] = rank;
                        rank += 1;
                        let free = self.base_free(h);
                        s.best
                            .insert((free.mem_mib, ord(spec.seed, self.hosts[h].hash), s.rank[h], h));
                    }
                }
                return;
            }
        }
        s.room.clear();
        s.room.resize(s.order.len(), Resources::ZERO);
        s.full.clear();
        s.full.resize(s.order.len(), false);
        if strategy == Strategy::FirstFit {
            // Already in order (by id).
            s.sorted = 0;
            let len = s.order.len();
            self.settle_positions(s, len);
        }
    }

    /// Makes position `p` of `s.order` (and every one before it) final: the candidates from
    /// `s.sorted` on are sorted a chunk at a time (the smallest keys picked out first), and
    /// each gets its place, room and fan-in state.
    fn ensure_sorted(&self, s: &mut Scratch, p: usize) {
        if p < s.sorted || p >= s.order.len() {
            return;
        }
        let len = s.order.len();
        let end = (p + 1).max(2 * s.sorted).max(32).min(len);
        let cmp = |a: &(u64, HostIx), b: &(u64, HostIx)| {
            a.0.cmp(&b.0)
                .then_with(|| self.hosts[a.1].id.cmp(&self.hosts[b.1].id))
        };
        let rest = &mut s.order[s.sorted..];
        let k = end - s.sorted;
        if k < rest.len() {
            rest.select_nth_unstable_by(k - 1, cmp);
        }
        rest[..k].sort_unstable_by(cmp);
        self.settle_positions(s, end);
    }

    /// Gives the positions from `s.sorted` to `end` their place, room and fan-in state.
    fn settle_positions(&self, s: &mut Scratch, end: usize) {
        for i in s.sorted..end {
            let h = s.order[i].1;
            s.pos[h] = i as u32;
            s.room[i] = self.run_free(s, h);
            s.full[i] = self.policy.fan_in > 0 && s.local_count[h] >= self.policy.fan_in;
        }
        s.sorted = end;
    }

    /// What host `h` has free for failover placements before a run puts anything there.
    fn base_free(&self, h: HostIx) -> Resources {
        let r = &self.hosts[h];
        r.limit.saturating_sub(&r.used)
    }

    /// What host `h` has free in the run's state.
    fn run_free(&self, s: &Scratch, h: HostIx) -> Resources {
        self.base_free(h).saturating_sub(&s.local_used[h])
    }

    /// The position of candidate host `h` in `s.order`, if it has its final one yet.
    fn position(s: &Scratch, h: HostIx) -> Option<usize> {
        let p = *s.pos.get(h)? as usize;
        (p < s.sorted && s.order.get(p).map(|e| e.1) == Some(h)).then_some(p)
    }

    /// Clears what a run on `spec` left in `s`.
    fn end(&self, s: &mut Scratch, spec: &Spec) {
        for &h in &spec.excluded {
            s.excluded[h] = false;
        }
        for &h in &s.touched {
            s.local_used[h] = Resources::ZERO;
            s.local_count[h] = 0;
            s.local_anti[h].clear();
            s.local_aff[h].clear();
        }
        s.touched.clear();
        s.placed.clear();
        s.aff_local.clear();
    }

    /// Puts VM `v` on host `h` in the run's state.
    fn put(&self, s: &mut Scratch, strategy: Strategy, v: VmIx, h: HostIx) {
        let r = &self.vms[v];
        let before = self.run_free(s, h);
        if s.local_count[h] == 0 {
            s.touched.push(h);
        }
        s.local_used[h] += r.demand;
        s.local_count[h] += 1;
        if let Some(g) = r.anti {
            s.local_anti[h].push(g);
        }
        if let Some(g) = r.aff {
            if !s.local_aff[h].contains(&g) {
                s.local_aff[h].push(g);
                s.aff_local.entry(g).or_default().push(h);
            }
        }
        if r.ft.is_some() {
            s.placed.insert(v, h);
        }
        let free = self.run_free(s, h);
        match strategy {
            Strategy::Scatter | Strategy::FirstFit => {
                if let Some(p) = Self::position(s, h) {
                    s.room[p] = free;
                    s.full[p] = strategy == Strategy::Scatter
                        && self.policy.fan_in > 0
                        && s.local_count[h] >= self.policy.fan_in;
                }
            }
            Strategy::BestFit => {
                let (o, rank) = (ord(s.seed, self.hosts[h].hash), s.rank[h]);
                if s.best.remove(&(before.mem_mib, o, rank, h)) {
                    s.best.insert((free.mem_mib, o, rank, h));
                }
            }
        }
    }

    /// The [`Miss`] of step `step`, which found no host for `v`.
    fn miss(&self, s: &Scratch, v: &VmRec, step: usize) -> Miss {
        let mut m = Miss {
            step,
            counts: [0; 4],
            base_ok: 0,
            old: Vec::new(),
        };
        for h in self.hosts.indices() {
            if s.excluded[h] {
                continue;
            }
            let c = self.check(v, h, s);
            if let Some(k) = class_index(c) {
                m.counts[k] += 1;
            }
            // Untouched hosts are in their baseline state, where the VM did not fit either.
            if s.local_count[h] > 0 && self.check(v, h, &Baseline) == Check::Ok {
                m.base_ok += 1;
            }
        }
        m
    }

    /// The host `strategy` puts `v` on, and its key, if any takes it.
    ///
    /// The candidates are visited in the strategy's order, skipping the hosts without room (read
    /// from the run's compact `room` list, or the best-fit set by free memory) before the full
    /// [`Engine::check`]: a host skipped would fail it on capacity, so the choice is the same.
    fn choose(&self, s: &mut Scratch, strategy: Strategy, seed: u64, v: VmIx) -> Option<(HostIx, Key)> {
        let r = &self.vms[v];
        let d = r.demand;
        let mut best: Option<(Key, HostIx)> = None;
        match strategy {
            Strategy::Scatter if !self.soft(r) => {
                // Hosts under their fan-in first, in order; past it, the fitting host holding
                // the fewest of this plan's VMs by levels of fan_in (so that a large failure or
                // an evacuation still spreads evenly), then in order.
                for p in 0..s.order.len() {
                    self.ensure_sorted(s, p);
                    if s.full[p] || !d.fits_in(&s.room[p]) {
                        continue;
                    }
                    let (o, h) = s.order[p];
                    if self.check(r, h, s) == Check::Ok {
                        return Some((h, Key { pen: 0, a: 0, b: o }));
                    }
                }
                if self.policy.fan_in == 0 {
                    return None;
                }
                let mut best: Option<(HostIx, Key)> = None;
                for p in 0..s.order.len() {
                    self.ensure_sorted(s, p);
                    if !s.full[p] || !d.fits_in(&s.room[p]) {
                        continue;
                    }
                    let (o, h) = s.order[p];
                    let a = u64::from(s.local_count[h].checked_div(self.policy.fan_in).unwrap_or(0));
                    if best.is_some_and(|(_, k)| (k.a, k.b) <= (a, o)) || self.check(r, h, s) != Check::Ok {
                        continue;
                    }
                    best = Some((h, Key { pen: 0, a, b: o }));
                }
                return best;
            }
            Strategy::Scatter => {
                // Hosts that hold the VM's affinity group, one by one; then the others in
                // order, where the penalty is at least `floor`, until a host reaches it.
                let mut floor = 0;
                if let Some(aff) = r.aff {
                    floor = 1;
                    let base = self.aff_holders.get(aff).map_or(&[][..], Vec::as_slice);
                    let local = s.aff_local.get(&aff).map_or(&[][..], Vec::as_slice);
                    for &h in base.iter().chain(local) {
                        if s.excluded[h] || self.check(r, h, s) != Check::Ok {
                            continue;
                        }
                        let k = self.key(strategy, seed, r, h, s);
                        if best.is_none_or(|b| self.less((k, h), b)) {
                            best = Some((k, h));
                        }
                    }
                }
                for p in 0..s.order.len() {
                    self.ensure_sorted(s, p);
                    if !d.fits_in(&s.room[p]) {
                        continue;
                    }
                    let (o, h) = s.order[p];
                    if let Some((b, _)) = best {
                        if (b.pen, b.a) < (floor, 0) || ((b.pen, b.a) == (floor, 0) && b.b < o) {
                            break;
                        }
                    }
                    if self.check(r, h, s) != Check::Ok {
                        continue;
                    }
                    let k = self.key(strategy, seed, r, h, s);
                    if best.is_none_or(|b| self.less((k, h), b)) {
                        best = Some((k, h));
                    }
                }
            }
            Strategy::BestFit if !self.soft(r) => {
                // No penalties: the key is the memory left, then the position, then the id,
                // the order of the set.
                let from = (d.mem_mib, 0, 0, HostIx::from_u32(0));
                for &(_, _, _, h) in s.best.range(from..) {
                    if self.check(r, h, s) == Check::Ok {
                        return Some((h, self.key(strategy, seed, r, h, s)));
                    }
                }
            }
            Strategy::BestFit => {
                for &(_, _, _, h) in &s.best {
                    if self.check(r, h, s) != Check::Ok {
                        continue;
                    }
                    let k = self.key(strategy, seed, r, h, s);
                    if best.is_none_or(|b| self.less((k, h), b)) {
                        best = Some((k, h));
                    }
                }
            }
            Strategy::FirstFit => {
                for p in 0..s.order.len() {
                    if d.fits_in(&s.room[p]) {
                        let h = s.order[p].1;
                        if self.check(r, h, s) == Check::Ok {
                            return Some((h, Key::default()));
                        }
                    }
                }
            }
        }
        best.map(|(k, h)| (h, k))
    }

    /// Runs `strategy` on `spec`, keeping the first `keep` steps of `prefix` (a run of the same
    /// spec whose first choices are known to stand).
    pub(super) fn run(
        &self,
        s: &mut Scratch,
        spec: &Spec,
        strategy: Strategy,
        prefix: Option<(&Trace, usize)>,
    ) -> Trace {
        self.begin(s, spec, strategy);
        let mut steps = Vec::with_capacity(spec.vms.len());
        let mut misses = Vec::new();
        if let Some((t, keep)) = prefix {
            for step in &t.steps[..keep] {
                if let Some(h) = step.host {
                    self.put(s, strategy, step.vm, h);
                }
                steps.push(*step);
            }
            for m in t.misses.iter().filter(|m| m.step < keep) {
                let mut m = m.clone();
                m.old.clear();
                misses.push(m);
            }
        }
        for &v in &spec.vms[steps.len().min(spec.vms.len())..] {
            let step = match self.choose(s, strategy, spec.seed, v) {
                Some((h, key)) => {
                    self.put(s, strategy, v, h);
                    Step {
                        vm: v,
                        host: Some(h),
                        key,
                        reason: None,
                    }
                }
                None => {
                    let m = self.miss(s, &self.vms[v], steps.len());
                    let reason = reason_of(&m.counts);
                    misses.push(m);
                    Step {
                        vm: v,
                        host: None,
                        key: Key::default(),
                        reason: Some(reason),
                    }
                }
            };
            steps.push(step);
        }
        self.end(s, spec);
        let mut touched: Vec<HostIx> = steps.iter().filter_map(|s| s.host).collect();
        touched.sort_unstable();
        touched.dedup();
        let mut max: Option<(Key, HostIx)> = None;
        let mut max_plain: Option<(Key, HostIx)> = None;
        let mut special = Vec::new();
        let mut by_host = Vec::with_capacity(steps.len());
        for (i, st) in steps.iter().enumerate() {
            let Some(h) = st.host else {
                continue;
            };
            if max.is_none_or(|m| self.less(m, (st.key, h))) {
                max = Some((st.key, h));
            }
            if st.key.pen == 0 && st.key.a == 0 {
                if max_plain.is_none_or(|m| self.less(m, (st.key, h))) {
                    max_plain = Some((st.key, h));
                }
            } else {
                special.push(i as u32);
            }
            by_host.push((h, i as u32));
        }
        by_host.sort_unstable();
        Trace {
            strategy,
            steps,
            misses,
            touched,
            max,
            max_plain,
            special,
            by_host,
        }
    }

    // ----- portfolio ---------------------------------------------------------------------------

    /// How good a run is: VMs placed, then placed by priority, highest first.
    fn score(&self, t: &Trace) -> (usize, [usize; 6]) {
        let mut by_prio = [0usize; 6];
        let mut total = 0;
        for st in t.steps.iter().filter(|s| s.host.is_some()) {
            total += 1;
            let p = self.vms[st.vm].priority as usize;
            by_prio[5 - p.min(5)] += 1;
        }
        (total, by_prio)
    }

    /// The best of `traces` (the first of equals).
    fn select(&self, traces: &[Trace]) -> usize {
        let mut best = 0;
        for i in 1..traces.len() {
            if self.score(&traces[i]) > self.score(&traces[best]) {
                best = i;
            }
        }
        best
    }

    /// The plan of `first` (a scattering run of `spec`), or of the best of it and the other
    /// strategies' runs (`rest`, or run now) when it could be improved.
    pub(super) fn portfolio(
        &self,
        s: &mut Scratch,
        spec: &Spec,
        first: Trace,
        rest: Option<[Trace; 2]>,
    ) -> Computed {
        if !first.improvable() {
            return Computed {
                traces: vec![first],
                chosen: 0,
            };
        }
        let [bf, ff] = match rest {
            Some(r) => r,
            None => [
                self.run(s, spec, Strategy::BestFit, None),
                self.run(s, spec, Strategy::FirstFit, None),
            ],
        };
        let traces = vec![first, bf, ff];
        Computed {
            chosen: self.select(&traces),
            traces,
        }
    }

    /// The plan for `spec`: the scattering run, or, when it leaves out a VM that fits the
    /// cluster somewhere, the best of it, best-fit and first-fit (most VMs placed, then most of
    /// the highest priority, ...).
    pub(crate) fn compute(&self, s: &mut Scratch, spec: &Spec) -> Computed {
        let first = self.run(s, spec, Strategy::Scatter, None);
        self.portfolio(s, spec, first, None)
    }
}
