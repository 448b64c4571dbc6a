//! The backup cache: a snapshot of each healthy protected VM every `snapshot_every`, and (when
//! `clone_every` is set) a powered-off clone of it on another host, each VM at its own offset in
//! the period; at most `max_in_flight` backup tasks at once and `tasks_per_minute` started a
//! minute (vCenter's budget). The manager's own snapshots and clones beyond the retention counts
//! are removed, before anything new is taken.

use super::*;
use am_core::glob::glob;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// What a VM is due for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Snapshot,
    Clone,
}

impl Supervisor {
    /// Backup tasks still allowed this minute.
    fn backup_budget(&mut self, now: Time) -> usize {
        while self.backup_tasks.front().is_some_and(|t| now.since(*t) >= MINUTE) {
            self.backup_tasks.pop_front();
        }
        (self.cfg.backup.tasks_per_minute as usize).saturating_sub(self.backup_tasks.len())
    }

    fn issue_backup(&mut self, now: Time, vm: &VmId, action: Action, reason: &str) {
        self.issue(now, action, Purpose::Backup(vm.clone()), 1, reason.into());
        self.backup_tasks.push_back(now);
    }

    /// One round of the cache: retention first (it frees space), then what is due, oldest first,
    /// within the budgets.
    pub(crate) fn refresh_backups(&mut self, now: Time) {
        let policy = self.cfg.backup.clone();
        let off = policy.snapshot_every.is_zero() && policy.clone_every.is_zero();
        if off || self.manager_isolated() || self.source == SourceState::Lost || self.disarmed.is_some() {
            return;
        }
        let mut busy = self
            .in_flight
            .values()
            .filter(|f| matches!(f.purpose, Purpose::Backup(_)))
            .count();
        let mut budget = self.backup_budget(now);
        let prune: Vec<VmId> = std::mem::take(&mut self.prune_due).into_iter().collect();
        for vm in prune {
            for action in self.excess_backups(&vm) {
                if busy >= policy.max_in_flight || budget == 0 {
                    self.prune_due.insert(vm.clone());
                    break;
                }
                self.issue_backup(now, &vm, action, "backup cache retention");
                busy += 1;
                budget -= 1;
            }
        }
        // Only as many as can be issued now are kept (and one per action in flight, which may be
        // skipped): a cache far behind its period has thousands due.
        let room = budget.min(policy.max_in_flight.saturating_sub(busy));
        if room == 0 {
            // Nothing could be issued: no walk of every VM to find what is due (the lag is
            // noted by the next step that has room and finds more due than it can take).
            return;
        }
        let (due, oldest, total) = self.backups_due(now, room + self.in_flight.len());
        let mut looked = 0;
        for (_, vm, kind) in due {
            if busy >= policy.max_in_flight || budget == 0 {
                break;
            }
            looked += 1;
            if self.in_flight.values().any(|f| f.action.vm() == Some(&vm)) || self.storage_held(&vm) {
                continue;
            }
            let action = match kind {
                Due::Snapshot => {
                    if let Some(r) = self.vms.get_mut(&vm) {
                        r.next_backup_at = Some(now + policy.snapshot_every);
                    }
                    Action::CreateSnapshot {
                        vm: vm.clone(),
                        name: format!("{}{}", policy.prefix, now.as_millis()),
                    }
                }
                Due::Clone => {
                    if let Some(r) = self.vms.get_mut(&vm) {
                        r.next_clone_at = Some(now + policy.clone_every);
                    }
                    let Some(host) = self.clone_host(&vm) else {
                        continue;
                    };
                    let name = self
                        .inv
                        .vms
                        .get(&vm)
                        .map_or_else(|| vm.to_string(), |v| v.name.clone());
                    Action::Clone {
                        vm: vm.clone(),
                        name: format!("{}{name}-{}", policy.prefix, now.as_millis()),
                        host,
                        datastore: None,
                    }
                }
            };
            let reason = match kind {
                Due::Snapshot => "backup cache refresh",
                Due::Clone => "backup clone refresh (kept on another host)",
            };
            self.issue_backup(now, &vm, action, reason);
            busy += 1;
            budget -= 1;
        }
        let limited = busy >= policy.max_in_flight || budget == 0;
        if limited && looked < total {
            self.note_backup_lag(now, oldest);
        }
    }

    /// The `keep` snapshots and clones due longest, oldest first, with the time each was due;
    /// the oldest due time and how many are due in all.
    fn backups_due(&mut self, now: Time, keep: usize) -> (Vec<(Time, VmId, Due)>, Option<Time>, usize) {
        let policy = &self.cfg.backup;
        let snap_period = policy.snapshot_every.as_millis() as u64;
        let clone_period = policy.clone_every.as_millis() as u64;
        let mut due: std::collections::BinaryHeap<(Time, VmId, Due)> = std::collections::BinaryHeap::new();
        let (mut oldest, mut total): (Option<Time>, usize) = (None, 0);
        let mut offer = |at: Time, id: &VmId, kind: Due| {
            total += 1;
            oldest = Some(oldest.map_or(at, |o: Time| o.min(at)));
            if due.len() < keep {
                due.push((at, id.clone(), kind));
            } else if due
                .peek()
                .is_some_and(|top| (at, id, kind) < (top.0, &top.1, top.2))
            {
                due.pop();
                due.push((at, id.clone(), kind));
            }
        };
        // One walk of both id-ordered maps, no lookups and no copies but of what is due: this
        // runs after every observation.
        let hosts = &self.hosts;
        let host_up = |vm: &Vm| {
            vm.host
                .as_ref()
                .and_then(|h| hosts.get(h))
                .is_some_and(|r| r.state.is_live())
        };
        for (id, rec, vm) in crate::with_inventory(self.vms.iter_mut(), &self.inv.vms) {
            let Some(vm) = vm else { continue };
            if rec.state != VmState::Healthy || rec.failing_since.is_some() {
                continue;
            }
            if !backed_up(policy, vm) || vm.power != PowerState::PoweredOn {
                continue;
            }
            // Only on a host that is up: a suspect host's snapshot may never finish, and a VM
            // whose host is in trouble has no "good" state to keep.
            if !host_up(vm) {
                continue;
            }
            if snap_period > 0 {
                let next = *rec
                    .next_backup_at
                    .get_or_insert_with(|| now + Duration::from_millis(spread(id.as_str(), snap_period)));
                if now >= next {
                    offer(next, id, Due::Snapshot);
                }
            }
            if clone_period > 0 {
                let next = *rec.next_clone_at.get_or_insert_with(|| {
                    now + Duration::from_millis(spread(&format!("{id}/clone"), clone_period))
                });
                if now >= next {
                    offer(next, id, Due::Clone);
                }
            }
        }
        (due.into_sorted_vec(), oldest, total)
    }

    /// Says once a period when the budget keeps the cache behind its period (called only when the
    /// budget left something due undone: a VM that was not eligible for a while, e.g. on an
    /// isolated host, is late for that reason, not the budget's).
    fn note_backup_lag(&mut self, now: Time, oldest_due: Option<Time>) {
        let period = self.cfg.backup.snapshot_every.max(self.cfg.backup.clone_every);
        let Some(oldest) = oldest_due else { return };
        let behind = now.since(oldest);
        if behind < period || self.backup_lag_noted.is_some_and(|t| now.since(t) < period) {
            return;
        }
        self.backup_lag_noted = Some(now);
        let budget = self.cfg.backup.tasks_per_minute;
        self.note(
            now,
            Subject::Cluster,
            format!(
                "backup cache {}s behind its period: tasks_per_minute = {budget} (or max_in_flight) cannot keep up with this many VMs",
                behind.as_secs()
            ),
        );
    }

    /// The host a new clone of `vm` goes to: up, not its own, not in maintenance, mounting its
    /// datastore; the one holding fewest clones.
    fn clone_host(&self, vm: &VmId) -> Option<HostId> {
        let v = self.inv.vms.get(vm)?;
        let mounts = |h: &HostId| {
            v.datastore
                .as_ref()
                .and_then(|ds| self.inv.datastores.get(ds))
                .is_none_or(|d| d.hosts.contains(h))
        };
        let clones_on = |h: &HostId| {
            self.inv
                .vms
                .values()
                .filter(|c| c.backup_of.is_some() && c.host.as_ref() == Some(h))
                .count()
        };
        self.inv
            .hosts
            .values()
            .filter(|h| Some(&h.id) != v.host.as_ref() && !h.maintenance)
            .filter(|h| self.hosts.get(&h.id).is_some_and(|r| r.state == HostState::Up))
            .filter(|h| mounts(&h.id))
            .min_by_key(|h| (clones_on(&h.id), h.id.clone()))
            .map(|h| h.id.clone())
    }

    /// The removals that bring `vm`'s snapshots and clones (the manager's own: named with the
    /// prefix) back to the retention counts, oldest first; none already under way.
    fn excess_backups(&self, vm: &VmId) -> Vec<Action> {
        let policy = &self.cfg.backup;
        let mut snaps: Vec<&am_core::Snapshot> = self
            .inv
            .snapshots
            .get(vm)
            .map(|s| s.iter().filter(|s| s.name.starts_with(&policy.prefix)).collect())
            .unwrap_or_default();
        snaps.sort_by_key(|s| s.created);
        let excess = snaps.len().saturating_sub(policy.keep_snapshots);
        let mut out: Vec<Action> = snaps
            .iter()
            .take(excess)
            .map(|s| Action::RemoveSnapshot {
                vm: vm.clone(),
                snapshot: s.id.clone(),
            })
            .collect();
        let mut clones: Vec<&Vm> = self
            .inv
            .vms
            .values()
            .filter(|c| c.backup_of.as_ref() == Some(vm) && c.name.starts_with(&policy.prefix))
            .filter(|c| c.power != PowerState::PoweredOn)
            .collect();
        clones.sort_by(|a, b| Inventory::clone_age(a, b));
        let excess = clones.len().saturating_sub(policy.keep_clones);
        out.extend(
            clones
                .iter()
                .take(excess)
                .map(|c| Action::DeleteBackup { vm: c.id.clone() }),
        );
        out.retain(|a| !self.in_flight.values().any(|f| f.action == *a));
        out
    }
}

/// An offset in a period of `period_ms` (FNV-1a of `key`), so backups spread over the period.
/// Whether the cache looks after `vm`: protected, not a clone itself, not opted out by its
/// attribute, and named by the policy's patterns.
fn backed_up(p: &BackupPolicy, vm: &Vm) -> bool {
    vm.is_protected()
        && vm.backup
        && p.vms.iter().any(|g| glob(g, &vm.name))
        && !p.exclude_vms.iter().any(|g| glob(g, &vm.name))
}

pub(crate) fn spread(key: &str, period_ms: u64) -> u64 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash % period_ms.max(1)
}
