//! The backup cache: a snapshot of each healthy protected VM every `snapshot_every`, spread over
//! the period, at most `max_in_flight` at once; the manager's own snapshots beyond the retention
//! count are removed.

use super::*;

impl Supervisor {
    /// The backup cache: a snapshot of each healthy protected VM every `snapshot_every`, each VM at
    /// its own offset in the period, at most `max_in_flight` at once.
    pub(crate) fn refresh_backups(&mut self, now: Time) {
        let policy = self.cfg.backup.clone();
        if policy.snapshot_every.is_zero() || self.manager_isolated() || self.source == SourceState::Lost {
            return;
        }
        let mut busy = self
            .in_flight
            .values()
            .filter(|f| matches!(f.purpose, Purpose::Backup(_)))
            .count();
        let period = policy.snapshot_every.as_millis().max(1) as u64;
        let mut due: Vec<(Time, VmId)> = Vec::new();
        for (id, rec) in self.vms.iter_mut() {
            if rec.state != VmState::Healthy || rec.failing_since.is_some() {
                continue;
            }
            let Some(vm) = self.inv.vms.get(id) else { continue };
            if !vm.is_protected() || !vm.backup || vm.power != PowerState::PoweredOn {
                continue;
            }
            // Only on a host that is up: a suspect host's snapshot may never finish, and a VM
            // whose host is in trouble has no "good" state to keep.
            let host_up = vm
                .host
                .as_ref()
                .and_then(|h| self.hosts.get(h))
                .is_some_and(|r| r.state == HostState::Up);
            if !host_up {
                continue;
            }
            let next = *rec
                .next_backup_at
                .get_or_insert_with(|| now + std::time::Duration::from_millis(spread(id, period)));
            if now >= next {
                due.push((next, id.clone()));
            }
        }
        due.sort();
        for (_, vm) in due {
            if busy >= policy.max_in_flight {
                break;
            }
            if self.in_flight.values().any(|f| f.action.vm() == Some(&vm)) {
                continue;
            }
            let name = format!("{}{}", policy.prefix, now.as_millis());
            let action = Action::CreateSnapshot { vm: vm.clone(), name };
            self.issue(
                now,
                action,
                Purpose::Backup(vm.clone()),
                1,
                "backup cache refresh".into(),
            );
            busy += 1;
            if let Some(r) = self.vms.get_mut(&vm) {
                r.next_backup_at = Some(now + policy.snapshot_every);
            }
        }
    }

    /// Removes the manager's oldest snapshots of `vm` beyond the retention count.
    pub(crate) fn prune_backups(&mut self, now: Time, vm: &VmId) {
        let policy = &self.cfg.backup;
        let mut ours: Vec<&am_core::Snapshot> = self
            .inv
            .snapshots
            .get(vm)
            .map(|s| s.iter().filter(|s| s.name.starts_with(&policy.prefix)).collect())
            .unwrap_or_default();
        ours.sort_by_key(|s| s.created);
        let excess = ours.len().saturating_sub(policy.keep_snapshots);
        let old: Vec<am_core::SnapshotId> = ours.iter().take(excess).map(|s| s.id.clone()).collect();
        for snapshot in old {
            let action = Action::RemoveSnapshot {
                vm: vm.clone(),
                snapshot,
            };
            self.issue(
                now,
                action,
                Purpose::Backup(vm.clone()),
                1,
                "backup cache retention".into(),
            );
        }
    }
}

/// A VM's offset in the backup period (FNV-1a of its id), so snapshots spread over the period.
pub(crate) fn spread(vm: &VmId, period_ms: u64) -> u64 {
    let hash = vm.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash % period_ms
}
