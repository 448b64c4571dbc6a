//! Host states, one handler per state (`next_host_state_<state>`), as Proxmox's manager has one
//! `next_state_<state>` per service state. Each reads the host's [`Signals`] and changes its state
//! only through `set_host_state`, or issues the host's next action.

use super::*;
use crate::record::summarize;

/// What is known of a host at one moment.
struct Signals {
    /// vCenter does not call it connected.
    conn_bad: bool,
    /// Its management probe says it stopped answering.
    ping_bad: bool,
    /// It has a management probe at all.
    probed: bool,
    /// Neither of the above.
    reachable: bool,
    /// Its storage heartbeat, if it has one.
    heartbeat: Option<Time>,
    /// Its power as read out of band, if it is.
    power: Option<am_core::PowerReading>,
    /// No host action in flight, the interval since the last one has passed, and vCenter answers
    /// (a host action that cannot reach vCenter would never reach the host).
    idle: bool,
}

impl Supervisor {
    pub(crate) fn vm_host_up(&self, vm: &VmId) -> bool {
        self.inv
            .vms
            .get(vm)
            .and_then(|v| v.host.as_ref())
            .and_then(|h| self.hosts.get(h))
            .is_some_and(|r| r.state.is_live())
    }

    pub(crate) fn any_guest_alive(&self, host: &HostId) -> bool {
        self.vms_on(host)
            .any(|vm| self.vms.get(&vm.id).is_some_and(|r| r.guest_alive == Some(true)))
    }

    pub(crate) fn heartbeat_fresh(&self, host: &HostId, now: Time) -> bool {
        self.inv
            .hosts
            .get(host)
            .and_then(|h| h.storage_heartbeat)
            .is_some_and(|hb| now.since(hb) < self.cfg.storage_heartbeat_window)
    }

    /// What is known of a host now; `None` for a host the supervisor or the inventory forgot.
    fn signals(&self, now: Time, host: &HostId) -> Option<Signals> {
        let rec = self.hosts.get(host)?;
        let h = self.inv.hosts.get(host)?;
        let conn_bad = h.connection != ConnectionState::Connected;
        let ping_bad = rec.mgmt_alive == Some(false);
        Some(Signals {
            conn_bad,
            ping_bad,
            probed: rec.mgmt_alive.is_some(),
            reachable: !conn_bad && !ping_bad,
            heartbeat: h.storage_heartbeat,
            power: rec.power,
            idle: rec.action.is_none() && now >= rec.next_action_at && self.held(now).is_none(),
        })
    }

    /// One step of a host's state machine: the handler of its current state.
    pub(crate) fn evaluate_host(&mut self, now: Time, host: &HostId) {
        let Some(sig) = self.signals(now, host) else {
            return;
        };
        let Some(state) = self.hosts.get(host).map(|r| r.state.clone()) else {
            return;
        };
        // Lost by vCenter and powered off, as its out-of-band controller reads it: dead at once,
        // whatever else is (not yet) known; nothing of it can run.
        let live_state = state.is_live()
            || matches!(
                state,
                HostState::Suspect { .. } | HostState::Unreachable { .. } | HostState::Isolated { .. }
            );
        if live_state
            && sig.conn_bad
            && sig.power == Some(am_core::PowerReading::Off)
            && !self.manager_isolated()
        {
            let evidence = self
                .hosts
                .get(host)
                .map(|r| r.power_evidence.clone())
                .unwrap_or_default();
            if !self.hosts.get(host).is_some_and(|r| r.down_when_first_seen) {
                self.unreachable_log.push_back((now, host.clone()));
            }
            self.stop_evacuation(now, host);
            self.host_dead(
                now,
                host,
                format!("not connected, and powered off out of band ({evidence}): two independent signals"),
            );
            return;
        }
        match state {
            HostState::Up => self.next_host_state_up(now, host, &sig),
            HostState::Suspect { since } => self.next_host_state_suspect(now, host, &sig, since),
            HostState::Unreachable {
                since,
                heartbeat_at_loss,
            } => self.next_host_state_unreachable(now, host, &sig, since, heartbeat_at_loss),
            HostState::Isolated { .. } => self.next_host_state_isolated(now, host, &sig),
            HostState::Dead { .. } => self.next_host_state_dead(now, host, &sig),
            HostState::Removed => {}
            // Out of service by the operator's will: a failure signal is judged as for any host
            // (an evacuation under way stops first).
            HostState::Evacuating { .. } | HostState::Drained { .. } | HostState::Maintenance { .. } => {
                if !sig.reachable {
                    self.stop_evacuation(now, host);
                    self.next_host_state_up(now, host, &sig);
                }
            }
        }
    }

    /// Issues the host's next action (reconnect, revival, fence, removal): one at a time per host.
    fn issue_host_action(
        &mut self,
        now: Time,
        host: &HostId,
        action: Action,
        purpose: Purpose,
        priority: u8,
        reason: String,
    ) -> ActionId {
        let id = self.issue(now, action, purpose, priority, reason);
        if let Some(r) = self.hosts.get_mut(host) {
            r.action = Some(id);
        }
        id
    }

    /// Up: any failure signal makes it suspect.
    fn next_host_state_up(&mut self, now: Time, host: &HostId, sig: &Signals) {
        if sig.reachable {
            return;
        }
        let why = match (sig.conn_bad, sig.ping_bad) {
            (true, true) => "not connected and management probe lost",
            (true, false) => "not connected in the management server",
            _ => "management probe lost",
        };
        let evidence = self
            .hosts
            .get(host)
            .map(|r| r.mgmt_evidence.clone())
            .unwrap_or_default();
        let reason = if sig.ping_bad {
            format!("{why}: {evidence}")
        } else {
            why.to_owned()
        };
        self.set_host_state(now, host, HostState::Suspect { since: now }, reason);
    }

    /// Suspect: a second, independent signal makes it unreachable; a host that answers its probe
    /// but is not connected gets a reconnect (the agent, not the host, is in trouble).
    fn next_host_state_suspect(&mut self, now: Time, host: &HostId, sig: &Signals, since: Time) {
        if sig.reachable {
            self.set_host_state(now, host, HostState::Up, "signals recovered");
        } else if sig.conn_bad
            && (sig.ping_bad || (!sig.probed && now.since(since) >= self.cfg.single_signal_confirm))
        {
            if self.manager_isolated() {
                return;
            }
            let reason = if sig.probed {
                "two signals: not connected and management probe lost"
            } else {
                "not connected, no management probe to confirm: waited"
            };
            if !self.hosts.get(host).is_some_and(|r| r.down_when_first_seen) {
                self.unreachable_log.push_back((now, host.clone()));
            }
            self.set_host_state(
                now,
                host,
                HostState::Unreachable {
                    since,
                    heartbeat_at_loss: sig.heartbeat,
                },
                reason,
            );
            self.raise(
                now,
                AlarmKind::HostUnreachable,
                Subject::Host(host.clone()),
                Severity::Critical,
                format!("host {} unreachable", self.host_label(host)),
            );
        } else if sig.conn_bad
            && !sig.ping_bad
            && sig.probed
            && sig.idle
            && now.since(since) >= self.cfg.reconnect_after
        {
            self.issue_host_action(
                now,
                host,
                Action::ReconnectHost { host: host.clone() },
                Purpose::HostReconnect(host.clone()),
                200,
                "answers pings but is not connected".into(),
            );
        }
    }

    /// Unreachable: alive (storage heartbeat advancing, guests answering) is isolated; silent once
    /// the guests' verdicts are in is dead.
    fn next_host_state_unreachable(
        &mut self,
        now: Time,
        host: &HostId,
        sig: &Signals,
        since: Time,
        heartbeat_at_loss: Option<Time>,
    ) {
        if sig.reachable {
            self.set_host_state(now, host, HostState::Up, "signals recovered");
            self.clear(now, AlarmKind::HostUnreachable, Subject::Host(host.clone()));
            return;
        }
        if self.manager_isolated() {
            return;
        }
        let hb = sig.heartbeat;
        let heartbeat_advanced = matches!((hb, heartbeat_at_loss), (Some(now_hb), Some(then)) if now_hb > then)
            || (hb.is_some() && heartbeat_at_loss.is_none());
        // Guests still "alive" right after the loss only means their detectors have not
        // noticed yet; they count once the host has been unreachable long enough.
        // After a storm, silence counts from its end: the host left over is judged like a
        // failure that happened then, not killed the moment the others come back.
        let guests_judged = now.since(since.max(self.storm_ended)) >= self.cfg.guest_evidence_after;
        let guests_alive = guests_judged && self.any_guest_alive(host);
        if heartbeat_advanced || guests_alive {
            let why = if heartbeat_advanced {
                "still writing its storage heartbeat"
            } else {
                "its guests still answer"
            };
            self.host_isolated(now, host, format!("unreachable but alive: {why}"));
        } else if sig.power == Some(am_core::PowerReading::On) && hb.is_none() && guests_judged {
            // No storage heartbeat to prove it stopped (as on vCenter): a powered host may only
            // hang or be cut off.
            let evidence = self
                .hosts
                .get(host)
                .map(|r| r.power_evidence.clone())
                .unwrap_or_default();
            self.host_isolated(
                now,
                host,
                format!("unreachable and silent, but powered on out of band ({evidence}): hung or cut off, not dead beyond doubt"),
            );
        } else if !self.heartbeat_fresh(host, now) && guests_judged {
            if self.storm == StormGuard::Storm {
                return;
            }
            let signals = self.second_signals(host);
            if signals.is_empty() && self.cfg.single_signal == SingleSignal::Wait {
                let name = self.host_label(host);
                self.raise(
                    now,
                    AlarmKind::HostUnreachable,
                    Subject::Host(host.clone()),
                    Severity::Critical,
                    format!(
                        "host {name} unreachable; no second signal to tell dead from cut off: not failed over (single_signal = wait)"
                    ),
                );
                return;
            }
            let why = match (hb.is_some(), signals.is_empty()) {
                (true, _) => "storage heartbeat stopped".to_owned(),
                (false, false) => format!("no sign of life ({} silent)", signals.join(", ")),
                (false, true) => {
                    "no second signal to confirm: failing over behind the VMs' file locks (single_signal = check_locks)"
                        .to_owned()
                }
            };
            if signals.is_empty() && hb.is_none() {
                if self.cfg.capabilities.fence
                    && self.cfg.isolation_response == IsolationResponse::PowerOffAndRestart
                {
                    // One signal, a fence at hand and a policy that allows it: fenced first,
                    // then its VMs restart. Otherwise the VMs' file locks decide (a failover
                    // behind a lock cannot start a VM that still runs).
                    if let Some(r) = self.hosts.get_mut(host) {
                        r.fence_first = true;
                    }
                    self.host_isolated(
                        now,
                        host,
                        "unreachable and silent on one signal: fenced before any of its VMs restarts elsewhere".into(),
                    );
                    return;
                }
                if let Some(r) = self.hosts.get_mut(host) {
                    r.unconfirmed = true;
                }
            }
            self.host_dead(now, host, format!("unreachable and silent: {why}"));
        }
    }

    /// The host's failure signals besides the management server's connection state: what can
    /// tell a dead host from one only cut off from vCenter.
    pub(crate) fn second_signals(&self, host: &HostId) -> Vec<&'static str> {
        let guests = self.vms_on(host).any(probed_guest);
        self.signals_of(host, guests)
    }

    /// [`Self::second_signals`], told whether guests on it are probed.
    pub(crate) fn signals_of(&self, host: &HostId, guests_probed: bool) -> Vec<&'static str> {
        let mut found = Vec::new();
        let Some(h) = self.inv.hosts.get(host) else {
            return found;
        };
        if h.mgmt_address.is_some() {
            found.push("management probe");
        }
        if h.storage_heartbeat.is_some() {
            found.push("storage heartbeat");
        }
        if self.hosts.get(host).is_some_and(|r| r.power_read) {
            found.push("out-of-band power");
        }
        if guests_probed {
            found.push("guest probes");
        }
        found
    }

    /// Isolated: its VMs may still run. Back when reachable; dead when its heartbeat stops; in
    /// the meantime the isolation response (reconnect, or fence and restart elsewhere).
    fn next_host_state_isolated(&mut self, now: Time, host: &HostId, sig: &Signals) {
        if sig.reachable {
            self.host_back(now, host, "isolation ended");
            return;
        }
        if !self.heartbeat_fresh(host, now)
            && !self.any_guest_alive(host)
            && sig.heartbeat.is_some()
            && !self.manager_isolated()
        {
            self.host_dead(
                now,
                host,
                "isolated host stopped writing its storage heartbeat".into(),
            );
            return;
        }
        if sig.heartbeat.is_none() && self.guests_went_silent(host, sig) && !self.manager_isolated() {
            self.host_dead(
                now,
                host,
                "isolated on its guests alone, and every guest went silent: no sign of life left (not connected, no management probe answering, no heartbeat)".into(),
            );
            return;
        }
        if self.lock_recheck_due(now, host, sig) {
            return;
        }
        if !sig.idle {
            return;
        }
        let fence_first = self.hosts.get(host).is_some_and(|r| r.fence_first);
        let response = if fence_first {
            IsolationResponse::PowerOffAndRestart
        } else {
            self.cfg.isolation_response
        };
        let (action, purpose, reason) = match response {
            IsolationResponse::PowerOffAndRestart => (
                Action::FenceHost { host: host.clone() },
                Purpose::HostFence(host.clone()),
                "isolation response: fence, then restart its VMs elsewhere",
            ),
            IsolationResponse::LeaveRunning => (
                Action::ReconnectHost { host: host.clone() },
                Purpose::HostReconnect(host.clone()),
                "isolation response: leave running; try to reconnect",
            ),
        };
        self.issue_host_action(now, host, action, purpose, 200, reason.into());
    }

    /// Whether an isolated host with no storage heartbeat, known alive by its guests, lost that
    /// sign of life: each of its probed guests now has a verdict and none answers, nothing else
    /// shows it alive (no management probe answering, no locked files, not read powered on out of
    /// band), and vCenter still does not call it connected. The same two signals as when it was
    /// first judged.
    fn guests_went_silent(&self, host: &HostId, sig: &Signals) -> bool {
        let Some(rec) = self.hosts.get(host) else {
            return false;
        };
        let probed: Vec<Option<bool>> = self
            .vms_on(host)
            .filter(|v| v.guest_address.is_some() && v.power == PowerState::PoweredOn)
            .map(|v| self.vms.get(&v.id).and_then(|r| r.guest_alive))
            .collect();
        sig.conn_bad
            && (sig.ping_bad || !sig.probed)
            && sig.power != Some(am_core::PowerReading::On)
            && rec.locked_vms.is_empty()
            && !rec.fence_first
            && !probed.is_empty()
            && probed.iter().all(|a| *a == Some(false))
    }

    /// An isolated host whose only sign of life is its VMs' file locks (no heartbeat, no probe:
    /// nothing else would tell that it died since) has one VM's locks looked at every
    /// `lock_recheck`. Whether it issued that look.
    fn lock_recheck_due(&mut self, now: Time, host: &HostId, sig: &Signals) -> bool {
        let Some(rec) = self.hosts.get(host) else {
            return false;
        };
        if rec.action.is_some()
            || now < rec.lock_check_at
            || sig.heartbeat.is_some()
            || self.cfg.single_signal != SingleSignal::CheckLocks
            || !self.second_signals(host).is_empty()
            || self.vcenter_down(now)
        {
            return false;
        }
        let frozen = |id: &VmId| matches!(self.vm_state(id), Some(VmState::Frozen { host: h }) if h == host);
        let Some(vm) = rec
            .locked_vms
            .iter()
            .find(|id| frozen(id))
            .cloned()
            .or_else(|| self.vms_on(host).map(|v| v.id.clone()).find(|id| frozen(id)))
        else {
            return false;
        };
        let next = now + self.cfg.lock_recheck;
        if let Some(r) = self.hosts.get_mut(host) {
            r.lock_check_at = next;
        }
        let name = self.vm_label(&vm);
        self.issue_host_action(
            now,
            host,
            Action::CheckLocks { vm: vm.clone() },
            Purpose::HostLockCheck(host.clone(), vm),
            200,
            format!("isolated on its VMs' file locks alone: is {name}'s lock still held?"),
        );
        true
    }

    /// Dead: its VMs were failed over. Reconnect and out-of-band revival (where the backend can)
    /// alternate `revive_attempts` times; then the removal rules decide (see [`Removal`]).
    fn next_host_state_dead(&mut self, now: Time, host: &HostId, sig: &Signals) {
        if sig.reachable {
            self.host_back(now, host, "answers again after revival");
            return;
        }
        if sig.probed && !sig.ping_bad {
            // Its management address answers: alive, only not managed.
            if let Some(r) = self.hosts.get_mut(host) {
                r.life_seen = true;
            }
        }
        if !sig.idle {
            return;
        }
        let done = self.hosts.get(host).map(|r| r.revive_actions).unwrap_or(0);
        let per_attempt = if self.cfg.capabilities.revive { 2 } else { 1 };
        if done < per_attempt * self.cfg.revive_attempts {
            let attempt = done / per_attempt + 1;
            let (action, purpose, reason) = if done % per_attempt == 0 {
                (
                    Action::ReconnectHost { host: host.clone() },
                    Purpose::HostReconnect(host.clone()),
                    format!("revival attempt {attempt}: reconnect"),
                )
            } else {
                (
                    Action::ReviveHost { host: host.clone() },
                    Purpose::HostRevive(host.clone()),
                    format!("revival attempt {attempt}: out-of-band revival"),
                )
            };
            self.host_step(now, host, action, purpose, reason);
            if let Some(r) = self.hosts.get_mut(host) {
                r.revive_actions += 1;
            }
            return;
        }
        self.consider_removal(now, host);
    }

    /// Issues a dead host's next action and counts it as a step of its incident.
    fn host_step(&mut self, now: Time, host: &HostId, action: Action, purpose: Purpose, reason: String) {
        let step = action.name();
        self.issue_host_action(now, host, action, purpose, 100, reason);
        let inc = self.hosts.get(host).and_then(|r| r.incident);
        if let Some(i) = inc.and_then(|i| self.incidents.get_mut(i)) {
            i.steps.push(step.to_owned());
        }
    }

    /// Revival failed: remove the host if the rules allow it now, fence it first where they ask
    /// for it; else say (once) why it stays.
    fn consider_removal(&mut self, now: Time, host: &HostId) {
        let Some(rec) = self.hosts.get(host) else { return };
        if rec.removal_settled {
            return;
        }
        let fenced = rec.fenced;
        // What stays off there and could not be re-registered when it died (no live host then,
        // or vCenter down) is tried again before the removal rules are looked at.
        self.rehome_stay_off(now, host);
        if let Some(why) = self.removal_blocker(host) {
            self.note_removal(now, host, why);
            return;
        }
        let attempts = self.cfg.revive_attempts;
        match self.cfg.removal {
            Removal::Never => self.settle_removal(now, host, "left in the inventory (removal = never)"),
            Removal::AfterFence if !fenced && !self.cfg.capabilities.fence => self.settle_removal(
                now,
                host,
                "not removed: no fence is configured to make sure nothing of it runs (removal = after_fence)",
            ),
            Removal::AfterFence if !fenced => self.host_step(
                now,
                host,
                Action::FenceHost { host: host.clone() },
                Purpose::HostFence(host.clone()),
                format!("{attempts} revival attempts failed: fence it before removal"),
            ),
            Removal::AfterFence | Removal::AfterRevival => {
                if let Some(r) = self.hosts.get_mut(host) {
                    r.removal_settled = true;
                }
                let why = if fenced {
                    format!("{attempts} revival attempts failed; fenced")
                } else {
                    format!("{attempts} revival attempts failed")
                };
                self.host_step(
                    now,
                    host,
                    Action::RemoveHost { host: host.clone() },
                    Purpose::HostRemove(host.clone()),
                    why,
                );
            }
        }
    }

    /// Why a dead host may not be removed now, if it may not.
    fn removal_blocker(&self, host: &HostId) -> Option<String> {
        let rec = self.hosts.get(host)?;
        if rec.life_seen {
            return Some("a sign of life was seen since it became unreachable".into());
        }
        let waiting: Vec<String> =
            self.vms
                .iter()
                .filter(|(id, r)| {
                    let from_here = r.failed_from.as_ref() == Some(host)
                        && matches!(
                            r.state,
                            VmState::AwaitingCapacity
                                | VmState::Recovering {
                                    step: Step::Failover,
                                    ..
                                }
                                | VmState::Reconciling { .. }
                        );
                    // Anything still registered there would be dropped from the inventory with it;
                    // the manager's own clones only matter when the cache makes no new ones.
                    let keep_clones = self.cfg.backup.clone_every.is_zero();
                    let still_here = self.inv.vms.get(*id).is_some_and(|v| {
                        v.host.as_ref() == Some(host) && (v.backup_of.is_none() || keep_clones)
                    });
                    from_here || still_here
                })
                .map(|(id, _)| self.vm_label(id))
                .collect();
        (!waiting.is_empty()).then(|| {
            format!(
                "VMs from it are not placed elsewhere yet ({})",
                summarize(&waiting)
            )
        })
    }

    /// Notes why a host stays, once per reason.
    fn note_removal(&mut self, now: Time, host: &HostId, why: String) {
        let Some(r) = self.hosts.get_mut(host) else { return };
        if r.removal_note.as_deref() == Some(why.as_str()) {
            return;
        }
        r.removal_note = Some(why.clone());
        self.note(now, Subject::Host(host.clone()), format!("not removed: {why}"));
    }

    /// Ends the removal question for a host that stays.
    fn settle_removal(&mut self, now: Time, host: &HostId, why: &str) {
        if let Some(r) = self.hosts.get_mut(host) {
            r.removal_settled = true;
        }
        self.note(now, Subject::Host(host.clone()), why.to_owned());
    }

    /// The isolation alarm, naming the VMs found running there (by their locked files).
    pub(crate) fn raise_isolated(&mut self, now: Time, host: &HostId, reason: &str) {
        let name = self.host_label(host);
        let running: Vec<String> = self
            .hosts
            .get(host)
            .map(|r| r.locked_vms.iter().map(|v| self.vm_label(v)).collect())
            .unwrap_or_default();
        let found = if running.is_empty() {
            String::new()
        } else {
            format!("; found running there: {}", summarize(&running))
        };
        self.raise(
            now,
            AlarmKind::HostIsolated,
            Subject::Host(host.clone()),
            Severity::Critical,
            format!("host {name} isolated ({reason}); its VMs may still run and are not restarted elsewhere{found}"),
        );
    }

    /// Unreachable but alive: its VMs stay where they may still run. VMs waiting to be failed
    /// over from it stop waiting.
    pub(crate) fn host_isolated(&mut self, now: Time, host: &HostId, reason: String) {
        self.set_host_state(now, host, HostState::Isolated { since: now }, reason.clone());
        let existing = self.hosts.get(host).and_then(|r| r.incident);
        let inc = match existing {
            Some(i) => i,
            None => self.open_incident(now, Subject::Host(host.clone()), "isolated"),
        };
        let recheck = now + self.cfg.lock_recheck;
        if let Some(r) = self.hosts.get_mut(host) {
            r.incident = Some(inc);
            r.life_seen = true;
            r.lock_check_at = recheck;
            r.unconfirmed = false;
            r.canary = None;
        }
        self.clear(now, AlarmKind::HostUnreachable, Subject::Host(host.clone()));
        self.raise_isolated(now, host, &reason);
        let on_host: Vec<VmId> = self.vms_on(host).map(|v| v.id.clone()).collect();
        for vm in on_host {
            if matches!(
                self.vm_state(&vm),
                Some(
                    VmState::Healthy
                        | VmState::Verifying { .. }
                        | VmState::Deferred { .. }
                        | VmState::Failed
                        | VmState::OffUnexplained { .. }
                )
            ) {
                self.set_vm_state(
                    now,
                    &vm,
                    VmState::Frozen { host: host.clone() },
                    "host isolated: may still run here",
                );
            }
        }
        let waiting: Vec<VmId> = self
            .vms
            .iter()
            .filter(|(_, r)| r.failed_from.as_ref() == Some(host) && r.state == VmState::AwaitingCapacity)
            .map(|(id, _)| id.clone())
            .collect();
        for vm in waiting {
            let inc = self.vms.get_mut(&vm).and_then(|r| r.incident.take());
            self.close_incident(
                inc,
                Some(now),
                Ending::StillRuns,
                "host isolated: not failed over",
            );
            self.set_vm_state(
                now,
                &vm,
                VmState::Frozen { host: host.clone() },
                "host isolated: may still run there; not failed over",
            );
        }
    }

    pub(crate) fn host_back(&mut self, now: Time, host: &HostId, reason: &str) {
        self.set_host_state(now, host, HostState::Up, reason);
        if let Some(r) = self.hosts.get_mut(host) {
            r.recovered();
        }
        let inc = self.hosts.get_mut(host).and_then(|r| r.incident.take());
        self.close_incident(inc, Some(now), Ending::HostBack, reason);
        self.clear(now, AlarmKind::HostUnreachable, Subject::Host(host.clone()));
        self.clear(now, AlarmKind::HostIsolated, Subject::Host(host.clone()));
        self.clear(now, AlarmKind::FenceFailed, Subject::Host(host.clone()));
        let frozen: Vec<VmId> = self
            .vms
            .iter()
            .filter(|(_, r)| matches!(&r.state, VmState::Frozen { host: h } if h == host))
            .map(|(id, _)| id.clone())
            .collect();
        for vm in frozen {
            self.set_vm_state(now, &vm, VmState::Healthy, format!("host {host} reachable again"));
        }
        self.keep_waiting_vms_on(now, host);
    }

    /// VMs still waiting to be restarted away from `host`, which is up again, are where they
    /// were: judged again from what the host now reports (a user may power one off there;
    /// nothing may restart it elsewhere behind that).
    pub(crate) fn keep_waiting_vms_on(&mut self, now: Time, host: &HostId) {
        let waiting: Vec<VmId> = self
            .vms
            .iter()
            .filter(|(id, r)| {
                r.failed_from.as_ref() == Some(host)
                    && r.state == VmState::AwaitingCapacity
                    && self
                        .inv
                        .vms
                        .get(*id)
                        .is_some_and(|v| v.host.as_ref() == Some(host))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for vm in waiting {
            let inc = self.vms.get_mut(&vm).and_then(|r| {
                r.failed_from = None;
                r.incident.take()
            });
            self.close_incident(
                inc,
                Some(now),
                Ending::HostBack,
                format!("host {host} back: not moved"),
            );
            self.set_vm_state(
                now,
                &vm,
                VmState::Healthy,
                format!("host {host} reachable again: stays there"),
            );
        }
    }

    pub(crate) fn host_dead(&mut self, now: Time, host: &HostId, reason: String) {
        self.set_host_state(now, host, HostState::Dead { since: now }, reason);
        let existing = self.hosts.get(host).and_then(|r| r.incident);
        let inc = match existing {
            Some(i) => i,
            None => self.open_incident(now, Subject::Host(host.clone()), "dead"),
        };
        if let Some(r) = self.hosts.get_mut(host) {
            r.incident = Some(inc);
            r.next_action_at = now;
        }
        self.clear(now, AlarmKind::HostIsolated, Subject::Host(host.clone()));
        let name = self.host_label(host);
        self.raise(
            now,
            AlarmKind::HostUnreachable,
            Subject::Host(host.clone()),
            Severity::Critical,
            match &self.disarmed {
                None => format!("host {name} dead; restarting its VMs on other hosts"),
                Some(_) => {
                    format!("host {name} dead; recovery is disarmed: its VMs wait until `am-daemon arm`")
                }
            },
        );
        self.fail_over_host(now, host);
    }
}

/// A running VM whose guest is probed: a sign of its host's life, or of its death.
pub(crate) fn probed_guest(v: &Vm) -> bool {
    v.guest_address.is_some() && v.power == PowerState::PoweredOn
}
