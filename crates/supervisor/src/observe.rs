//! Observations in: the inventory (whole or a delta), management server events, probe verdicts.
//! Each updates what the supervisor knows; decisions are taken by the state handlers afterwards.

use super::*;

impl Supervisor {
    pub(crate) fn on_inventory(&mut self, now: Time, inv: Inventory) {
        let gone_hosts: Vec<HostId> = self
            .hosts
            .keys()
            .filter(|h| !inv.hosts.contains_key(*h))
            .cloned()
            .collect();
        let gone_vms: Vec<VmId> = self
            .vms
            .keys()
            .filter(|v| !inv.vms.contains_key(*v))
            .cloned()
            .collect();
        // A resync (after vCenter was unreachable) may show VMs that went off meanwhile: the same
        // judgement as a delta would have given.
        let went_off: Vec<VmId> = inv
            .vms
            .values()
            .filter(|v| v.power != PowerState::PoweredOn)
            .filter(|v| {
                self.inv
                    .vms
                    .get(&v.id)
                    .is_some_and(|old| old.power == PowerState::PoweredOn)
            })
            .map(|v| v.id.clone())
            .collect();
        self.replace_inventory(inv);
        self.touch_all();
        self.rebuild_plans(now);
        for h in gone_hosts {
            self.host_gone(now, &h);
        }
        for v in gone_vms {
            self.vm_gone(now, &v);
        }
        // A subject first seen gets a line: at the first inventory, one per host and VM, and a
        // few more (room made once, with an eighth to spare: at 10,000 VMs growing by doubling
        // left some 0.7 MB unused at the daemon's peak).
        let new_subjects = self
            .inv
            .hosts
            .keys()
            .filter(|h| !self.hosts.contains_key(*h))
            .count()
            + self.inv.vms.keys().filter(|v| !self.vms.contains_key(*v)).count();
        self.out.log.reserve(new_subjects + new_subjects / 8 + 64);
        let hosts: Vec<HostId> = self.inv.hosts.keys().cloned().collect();
        for h in hosts {
            self.ensure_host(now, &h);
        }
        let vms: Vec<VmId> = self.inv.vms.keys().cloned().collect();
        for v in vms {
            self.ensure_vm(now, &v);
        }
        for v in went_off {
            self.on_power_off(now, &v);
        }
    }

    pub(crate) fn ensure_host(&mut self, now: Time, host: &HostId) {
        if self
            .hosts
            .get(host)
            .is_some_and(|r| r.state != HostState::Removed)
        {
            return;
        }
        let connected = self
            .inv
            .hosts
            .get(host)
            .is_some_and(|h| h.connection == ConnectionState::Connected);
        let known = self.hosts.contains_key(host);
        let rec = HostRec::new(now, !connected && !known);
        self.hosts.insert(host.clone(), rec);
        let (state, reason) = if connected {
            (HostState::Up, "in the inventory, connected")
        } else {
            (
                HostState::Suspect { since: now },
                "in the inventory, not connected",
            )
        };
        if known {
            self.set_host_state(now, host, state, reason);
            return;
        }
        // First sight: recorded like a transition, from `new`.
        if state == HostState::Up {
            self.capacity_retry_at = now;
        }
        self.first_host_state(now, host, state, reason);
    }

    pub(crate) fn ensure_vm(&mut self, now: Time, vm: &VmId) {
        if self.vms.contains_key(vm) {
            return;
        }
        let Some(v) = self.inv.vms.get(vm) else { return };
        let user_off = self.restored.user_offs.remove(vm);
        let pending = self
            .restored
            .unfinished
            .iter()
            .find(|(_, a)| a.vm() == Some(vm))
            .map(|(id, a)| {
                let target = match a {
                    Action::Failover { to, .. }
                    | Action::MigrateCold { to, .. }
                    | Action::MigrateLive { to, .. } => Some(to.clone()),
                    Action::RestoreClone { host, .. } => Some(host.clone()),
                    _ => None,
                };
                (format!("{id} {a}"), target)
            });
        let moving = self.restored.unfinished.iter().any(|(_, a)| {
            a.vm() == Some(vm) && matches!(a, Action::Failover { .. } | Action::RestoreClone { .. })
        });
        let (state, reason) = if !v.is_protected() {
            (VmState::Unprotected, "not protected".to_owned())
        } else if let (Some(user), false, false) = (&user_off, v.power == PowerState::PoweredOn, moving) {
            (
                VmState::StayOff {
                    by: Some(user.clone()),
                },
                format!("off by {user} before the restart"),
            )
        } else if let Some((action, target)) = pending {
            let until = now + self.cfg.reconcile_window;
            let reason = format!("{action} unfinished before the restart");
            (
                VmState::Reconciling {
                    action,
                    target,
                    until,
                },
                reason,
            )
        } else if v.power == PowerState::PoweredOn {
            (VmState::Healthy, "running when first seen".to_owned())
        } else {
            (
                VmState::StayOff { by: None },
                "off when first seen: left off".to_owned(),
            )
        };
        let restarts: VecDeque<Time> = self.restored.restarts.remove(vm).unwrap_or_default().into();
        self.vms.insert(
            vm.clone(),
            VmRec {
                state: VmState::Unprotected,
                guest_alive: None,
                guest_evidence: String::new(),
                failing_since: None,
                cpu_zero_since: None,
                restarts,
                incident: None,
                failover_tries: 0,
                failover_excluded: BTreeSet::new(),
                judge_after: Time::ZERO,
                failed_from: None,
                next_backup_at: None,
                next_clone_at: None,
                failover_started: None,
                unproven: false,
                reverted_to: None,
            },
        );
        self.first_vm_state(now, vm, state, reason);
    }

    pub(crate) fn host_gone(&mut self, now: Time, host: &HostId) {
        if self
            .hosts
            .get(host)
            .is_some_and(|r| r.state != HostState::Removed)
        {
            self.set_host_state(now, host, HostState::Removed, "gone from the inventory");
            let inc = self.hosts.get(host).and_then(|r| r.incident);
            self.close_incident(inc, Some(now), Ending::Removed, "removed");
        }
    }

    pub(crate) fn vm_gone(&mut self, now: Time, vm: &VmId) {
        if let Some(rec) = self.vms.remove(vm) {
            self.close_incident(
                rec.incident,
                Some(now),
                Ending::Removed,
                "gone from the inventory",
            );
            self.note(now, Subject::Vm(vm.clone()), "gone from the inventory");
        }
    }

    pub(crate) fn on_delta(&mut self, now: Time, delta: InventoryDelta) {
        if let Some(plans) = self.plans.as_mut() {
            plans.defer(&delta);
        }
        match &delta {
            InventoryDelta::HostUpsert(h) => {
                let id = h.id.clone();
                self.apply_delta(&delta);
                self.ensure_host(now, &id);
            }
            InventoryDelta::HostRemoved(id) => {
                let id = id.clone();
                self.apply_delta(&delta);
                self.host_gone(now, &id);
            }
            InventoryDelta::VmUpsert(vm) => {
                let id = vm.id.clone();
                let was_on = self
                    .inv
                    .vms
                    .get(&id)
                    .map(|old| old.power == PowerState::PoweredOn);
                let now_on = vm.power == PowerState::PoweredOn;
                let cpu_zero = now_on && vm.cpu_usage_mhz == Some(0);
                if let (None, Some(src)) = (was_on, &vm.backup_of) {
                    // A new clone: its source may now have more than the cache keeps.
                    self.prune_due.insert(src.clone());
                }
                self.apply_delta(&delta);
                self.touch(&id);
                self.ensure_vm(now, &id);
                if let Some(rec) = self.vms.get_mut(&id) {
                    match (cpu_zero, rec.cpu_zero_since) {
                        (true, None) => rec.cpu_zero_since = Some(now),
                        (false, Some(_)) => rec.cpu_zero_since = None,
                        _ => {}
                    }
                }
                if was_on == Some(true) && !now_on {
                    self.on_power_off(now, &id);
                }
            }
            InventoryDelta::VmRemoved(id) => {
                let id = id.clone();
                self.apply_delta(&delta);
                self.touch(&id);
                self.vm_gone(now, &id);
            }
            InventoryDelta::DatastoreUpsert(d) => {
                let mounts_changed = self
                    .inv
                    .datastores
                    .get(&d.id)
                    .is_none_or(|old| old.hosts != d.hosts);
                self.apply_delta(&delta);
                if mounts_changed {
                    // Placement rules follow the mounts: the plans are made again.
                    self.rebuild_plans(now);
                }
            }
            InventoryDelta::Snapshots { vm, .. } => {
                self.prune_due.insert(vm.clone());
                self.apply_delta(&delta);
            }
        }
    }

    pub(crate) fn on_power_off(&mut self, now: Time, vm: &VmId) {
        let Some(rec) = self.vms.get(vm) else { return };
        match rec.state {
            VmState::Healthy | VmState::Verifying { .. } | VmState::Deferred { .. } | VmState::Failed => {}
            // Our own action (a migration, a revert) or a VM nobody protects: not news.
            _ => return,
        }
        match self.early_power_offs.remove(vm) {
            Some(Some(user)) => self.user_powered_off(now, vm, user),
            Some(None) => self.begin_ladder(now, vm, "powered off with no user (crash)".into()),
            None => self.set_vm_state(
                now,
                vm,
                VmState::OffUnexplained { since: now },
                "powered off; waiting for the event that says who did it",
            ),
        }
    }

    pub(crate) fn user_powered_off(&mut self, now: Time, vm: &VmId, user: String) {
        let inc = self.open_vm_incident(now, vm, format!("powered off by {user}"));
        self.set_vm_state(
            now,
            vm,
            VmState::StayOff {
                by: Some(user.clone()),
            },
            format!("powered off by user {user}: no failover"),
        );
        self.close_incident(
            Some(inc),
            Some(now),
            Ending::LeftOff,
            format!("left off (user {user})"),
        );
        self.raise(
            now,
            AlarmKind::VmPoweredOff,
            Subject::Vm(vm.clone()),
            Severity::Warning,
            format!("VM powered off by {user}; not failed over"),
        );
    }

    pub(crate) fn on_event(&mut self, now: Time, event: ClusterEvent) {
        match event.kind {
            EventKind::VmPoweredOff { vm, user } => {
                if user.as_deref() == Some(self.cfg.manager_user.as_str()) {
                    return;
                }
                let Some(rec) = self.vms.get(&vm) else { return };
                let is_off = self
                    .inv
                    .vms
                    .get(&vm)
                    .is_some_and(|v| v.power != PowerState::PoweredOn);
                match (&rec.state, user) {
                    (VmState::OffUnexplained { .. }, Some(u)) => self.user_powered_off(now, &vm, u),
                    (VmState::OffUnexplained { .. }, None) => {
                        self.begin_ladder(now, &vm, "powered off with no user (crash)".into())
                    }
                    (
                        VmState::Healthy
                        | VmState::Verifying { .. }
                        | VmState::Deferred { .. }
                        | VmState::Failed,
                        user,
                    ) if !is_off => {
                        self.early_power_offs.insert(vm, user);
                    }
                    // Off already, and not yet judged (the state change came without the event,
                    // e.g. from a resync): the event decides now.
                    (
                        VmState::Healthy
                        | VmState::Verifying { .. }
                        | VmState::Deferred { .. }
                        | VmState::Failed,
                        Some(u),
                    ) => self.user_powered_off(now, &vm, u),
                    (
                        VmState::Healthy
                        | VmState::Verifying { .. }
                        | VmState::Deferred { .. }
                        | VmState::Failed,
                        None,
                    ) => self.begin_ladder(now, &vm, "powered off with no user (crash)".into()),
                    _ => {}
                }
            }
            EventKind::VmPoweredOn { .. } | EventKind::Other { .. } => {}
            EventKind::HostConnectionLost { host } => {
                self.note(now, Subject::Host(host), "management server lost the connection");
            }
        }
    }

    pub(crate) fn on_liveness(&mut self, subject: Subject, alive: bool, evidence: String) {
        match subject {
            Subject::Host(h) => {
                if let Some(rec) = self.hosts.get_mut(&h) {
                    rec.mgmt_alive = Some(alive);
                    rec.mgmt_evidence = evidence;
                }
            }
            Subject::Vm(v) => {
                if let Some(rec) = self.vms.get_mut(&v) {
                    rec.guest_alive = Some(alive);
                    rec.guest_evidence = evidence;
                }
                self.touch(&v);
            }
            Subject::Cluster | Subject::Manager | Subject::Datastore(_) => {}
        }
    }

    /// Makes every failover plan again, with the placement rules of the inventory now.
    pub(crate) fn rebuild_plans(&mut self, now: Time) {
        let constraints = crate::failover::datastore_constraints(&self.inv, self.inv.vms.keys());
        self.plans = match planner::FailoverPlans::new(&self.inv, &constraints, &self.cfg.placement) {
            Ok(plans) => Some(plans),
            Err(e) => {
                self.note(now, Subject::Cluster, format!("no precomputed plans: {e}"));
                None
            }
        };
    }

    /// An out-of-band controller's reading of a host's power.
    pub(crate) fn on_host_power(
        &mut self,
        host: &HostId,
        power: Option<am_core::PowerReading>,
        evidence: String,
    ) {
        if let Some(r) = self.hosts.get_mut(host) {
            r.power_read = true;
            r.power = power;
            r.power_evidence = evidence;
        }
    }
}
