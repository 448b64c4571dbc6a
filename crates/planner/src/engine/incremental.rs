//! Computed runs brought up to date after hosts change: the first step a change may alter
//! (found by following each changed host through the run), the left-out steps' counts kept
//! current, and the runs replayed from there (see "Why updates are cheap and exact" in
//! [`super`]).

use super::feasible::{Check, Key, Strategy, class_index};
use super::index::HostIx;
use super::local::{Baseline, One, Scratch};
use super::search::{Computed, Miss, Trace, reason_of};
use super::spec::Spec;
use super::{Engine, VmRec};
use crate::Unplaced;

impl Engine {
    /// Before hosts `xs` change: notes their class for every left-out VM of `comp`.
    pub(crate) fn note_old(&self, spec: &Spec, comp: &mut Computed, xs: &[HostIx]) {
        for t in &mut comp.traces {
            if t.misses.is_empty() {
                continue;
            }
            for m in &mut t.misses {
                m.old.clear();
            }
            for &x in xs {
                if spec.excludes(x) || self.hosts.get(x).is_none() {
                    continue;
                }
                let mut one = One::new(x);
                let mut next = 0;
                for (i, st) in t.steps.iter().enumerate() {
                    let r = &self.vms[st.vm];
                    match st.host {
                        None => {
                            if let Some(m) = t.misses.get_mut(next) {
                                next += 1;
                                let class = self.check(r, x, &one);
                                let base = one.count > 0 && self.check(r, x, &Baseline) == Check::Ok;
                                debug_assert_eq!(m.step, i);
                                m.old.push((x, class, base));
                            }
                        }
                        Some(h) if h == x => one.add(r, st.vm),
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// The first step of `trace` (a run of `spec`) that a change of hosts `xs` (none excluded by
    /// `spec`) may alter, or `None`: the run stands as it is. Keeps the counts of the left-out
    /// steps before that step current (their old classes noted by [`Engine::note_old`]).
    ///
    /// Each changed host is followed through the run with what the run put on it so far: a step
    /// stands if the host, in its new state, still does not beat the host the step chose (or,
    /// if it was the chosen one, is still feasible with a key no larger).
    fn first_affected(
        &self,
        spec: &Spec,
        trace: &mut Trace,
        xs: &[HostIx],
        tight: &[HostIx],
    ) -> Option<usize> {
        let strategy = trace.strategy;
        if strategy == Strategy::Scatter && trace.misses.is_empty() {
            return xs
                .iter()
                .filter_map(|&x| self.first_affected_by(spec, trace, x, tight.contains(&x)))
                .min();
        }
        if trace.misses.is_empty() {
            let m = trace.max?;
            let can_matter = xs.iter().any(|&x| {
                trace.touched.binary_search(&x).is_ok()
                    || self.less((self.lower_bound(strategy, spec.seed, x), x), m)
            });
            if !can_matter {
                return None;
            }
        }
        let mut ones: Vec<((Key, HostIx), One)> = xs
            .iter()
            .map(|&x| ((self.lower_bound(strategy, spec.seed, x), x), One::new(x)))
            .collect();
        let found = 'scan: {
            let mut next_miss = 0;
            for (i, st) in trace.steps.iter().enumerate() {
                let v = &self.vms[st.vm];
                match st.host {
                    None => {
                        let Some(m) = trace.misses.get_mut(next_miss) else {
                            break 'scan Some(i);
                        };
                        next_miss += 1;
                        if self.recount(m, v, st.reason, &ones) {
                            break 'scan Some(i);
                        }
                    }
                    Some(host) => {
                        let chosen = (st.key, host);
                        for (lb, one) in &ones {
                            let x = lb.1;
                            if host == x {
                                if self.check(v, x, one) != Check::Ok
                                    || self.key(strategy, spec.seed, v, x, one) > st.key
                                {
                                    break 'scan Some(i);
                                }
                            } else if self.less(*lb, chosen)
                                && self.check(v, x, one) == Check::Ok
                                && self.less((self.key(strategy, spec.seed, v, x, one), x), chosen)
                            {
                                break 'scan Some(i);
                            }
                        }
                        for (_, one) in &mut ones {
                            if one.h == host {
                                one.add(v, st.vm);
                            }
                        }
                    }
                }
            }
            None
        };
        for m in &mut trace.misses {
            m.old.clear();
        }
        found
    }

    /// Brings the counts of left-out step `m` (VM `v`, left out for `reason`) up to date with
    /// the changed hosts `ones` (their old classes noted in `m`). True if the step may now go
    /// otherwise: a changed host takes the VM, one was not noted, or the reason (or whether the
    /// VM fits the baseline anywhere) changed.
    fn recount(
        &self,
        m: &mut Miss,
        v: &VmRec,
        reason: Option<Unplaced>,
        ones: &[((Key, HostIx), One)],
    ) -> bool {
        let was_hopeless = m.base_ok == 0;
        for (lb, one) in ones {
            let x = lb.1;
            let Some(&(_, old, old_base)) = m.old.iter().find(|e| e.0 == x) else {
                return true;
            };
            let new = self.check(v, x, one);
            if new == Check::Ok {
                return true;
            }
            if new != old {
                if let Some(k) = class_index(old) {
                    m.counts[k] -= 1;
                }
                if let Some(k) = class_index(new) {
                    m.counts[k] += 1;
                }
            }
            let new_base = one.count > 0 && self.check(v, x, &Baseline) == Check::Ok;
            if new_base != old_base {
                if new_base {
                    m.base_ok += 1;
                } else {
                    m.base_ok -= 1;
                }
            }
        }
        m.old.clear();
        Some(reason_of(&m.counts)) != reason || was_hopeless != (m.base_ok == 0)
    }

    /// [`Engine::first_affected`] for a scattering run with every VM placed and one changed host:
    /// only the steps `x` can matter to are visited (its own, the penalised ones, and, when its
    /// position in the host order is early enough, the others).
    ///
    /// A host that only got `tight`er cannot beat a host it did not beat before: only its own
    /// steps are visited.
    fn first_affected_by(&self, spec: &Spec, trace: &Trace, x: HostIx, tight: bool) -> Option<usize> {
        let lb = (self.lower_bound(trace.strategy, spec.seed, x), x);
        let start = trace.by_host.partition_point(|e| e.0 < x);
        let mine = trace.by_host[start..]
            .iter()
            .take_while(|e| e.0 == x)
            .map(|e| e.1);
        let all = !tight && trace.max_plain.is_some_and(|m| self.less(lb, m));
        let picked: Vec<u32>;
        let steps: &mut dyn Iterator<Item = u32> = if all {
            &mut (0..trace.steps.len() as u32)
        } else {
            let special = if tight { &[][..] } else { &trace.special[..] };
            let mut v: Vec<u32> = special.iter().copied().chain(mine).collect();
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            v.dedup();
            picked = v;
            &mut picked.iter().copied()
        };
        let mut one = One::new(x);
        for i in steps {
            let st = &trace.steps[i as usize];
            let v = &self.vms[st.vm];
            // Every step of a run without misses chose a host.
            let Some(host) = st.host else {
                continue;
            };
            if host == x {
                if self.check(v, x, &one) != Check::Ok
                    || self.key(trace.strategy, spec.seed, v, x, &one) > st.key
                {
                    return Some(i as usize);
                }
                one.add(v, st.vm);
            } else {
                let chosen = (st.key, host);
                if self.less(lb, chosen)
                    && self.check(v, x, &one) == Check::Ok
                    && self.less((self.key(trace.strategy, spec.seed, v, x, &one), x), chosen)
                {
                    return Some(i as usize);
                }
            }
        }
        None
    }

    /// Which runs of `old` (computed for `spec` before hosts `xs` changed; [`Engine::note_old`]
    /// called before the change; `tight` among them only got tighter) must be replayed for
    /// `new_spec`, which has the same VMs as `spec` in its first `same` positions, and the same
    /// excluded hosts and seed: per run, the first step that may differ. `None` if no run
    /// changed.
    pub(crate) fn affected(
        &self,
        spec: &Spec,
        new_spec: &Spec,
        same: usize,
        old: &mut Computed,
        (xs, tight): (&[HostIx], &[HostIx]),
    ) -> Option<Vec<Option<usize>>> {
        let limit = if same >= spec.vms.len() && same >= new_spec.vms.len() {
            None
        } else {
            Some(same)
        };
        let firsts: Vec<Option<usize>> = old
            .traces
            .iter_mut()
            .map(|t| {
                let f = if xs.is_empty() {
                    None
                } else {
                    self.first_affected(spec, t, xs, tight)
                };
                match (f, limit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .collect();
        if firsts.iter().all(Option::is_none) {
            return None;
        }
        Some(firsts)
    }

    /// What replaying the runs of `firsts` (from [`Engine::affected`]) for `new_spec` costs, in
    /// placement steps: a lower bound (a run that becomes improvable also runs best fit and
    /// first fit whole).
    pub(crate) fn replay_cost(new_spec: &Spec, firsts: &[Option<usize>]) -> usize {
        firsts
            .iter()
            .flatten()
            .map(|&j| new_spec.vms.len().saturating_sub(j))
            .sum()
    }

    /// The runs of `old` replayed from `firsts` (from [`Engine::affected`]) for `new_spec`, and
    /// the first step of the chosen run that may differ; `None` (nothing done) if that would
    /// take more than `left` placement steps, which it is charged.
    pub(crate) fn replay(
        &self,
        s: &mut Scratch,
        spec: &Spec,
        new_spec: &Spec,
        old: &Computed,
        firsts: &[Option<usize>],
        left: &mut usize,
    ) -> Option<(Computed, usize)> {
        let cost = Self::replay_cost(new_spec, firsts);
        if cost > *left {
            return None;
        }
        *left -= cost;
        let redo = |s: &mut Scratch, i: usize| -> Trace {
            let t = &old.traces[i];
            match firsts.get(i).copied().flatten() {
                Some(j) => self.run(s, new_spec, t.strategy, Some((t, j))),
                None => t.clone(),
            }
        };
        let first = redo(s, 0);
        let rest = if old.traces.len() == 3 && first.improvable() {
            Some([redo(s, 1), redo(s, 2)])
        } else {
            None
        };
        if rest.is_none() && first.improvable() {
            // Best fit and first fit run whole.
            let extra = 2 * new_spec.vms.len();
            if extra > *left {
                return None;
            }
            *left -= extra;
        }
        let comp = self.portfolio(s, new_spec, first, rest);
        let from = if comp.chosen == old.chosen && comp.traces.len() == old.traces.len() {
            firsts
                .get(comp.chosen)
                .copied()
                .flatten()
                .unwrap_or(spec.vms.len().min(new_spec.vms.len()))
        } else {
            0
        };
        Some((comp, from))
    }
}
