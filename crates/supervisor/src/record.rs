//! Recording: the audit log, the one transition writer, alarms, issued actions and incidents.
//! Every state change of the supervisor goes through [`Supervisor::record_transition`].

use super::*;

impl Supervisor {
    pub(crate) fn log(&mut self, now: Time, subject: Subject, kind: LogKind) {
        let name = self.subject_name(&subject);
        self.out.log.push(LogEntry {
            at: now,
            subject,
            name,
            kind,
        });
    }

    /// The inventory name of a host or VM, where it differs from its id.
    pub(crate) fn subject_name(&self, subject: &Subject) -> Option<String> {
        match subject {
            Subject::Host(h) => self
                .inv
                .hosts
                .get(h)
                .map(|x| &x.name)
                .filter(|n| *n != h.as_str())
                .cloned(),
            Subject::Vm(v) => self
                .inv
                .vms
                .get(v)
                .map(|x| &x.name)
                .filter(|n| *n != v.as_str())
                .cloned(),
            Subject::Datastore(d) => self
                .inv
                .datastores
                .get(d)
                .map(|x| &x.name)
                .filter(|n| *n != d.as_str())
                .cloned(),
            Subject::Cluster | Subject::Manager => None,
        }
    }

    pub(crate) fn note(&mut self, now: Time, subject: Subject, message: impl Into<String>) {
        self.log(
            now,
            subject,
            LogKind::Note {
                message: message.into(),
            },
        );
    }

    /// The one place a host changes state.
    pub(crate) fn set_host_state(
        &mut self,
        now: Time,
        host: &HostId,
        new: HostState,
        reason: impl Into<String>,
    ) {
        let Some(rec) = self.hosts.get_mut(host) else {
            return;
        };
        let from = rec.state.name().to_owned();
        if new == HostState::Up {
            // Capacity may have appeared: VMs waiting for a host try again now.
            self.capacity_retry_at = now;
        }
        rec.state = new;
        let to = rec.state.name().to_owned();
        self.record_transition(now, Subject::Host(host.clone()), from, to, reason.into());
    }

    /// The one place a VM changes state.
    pub(crate) fn set_vm_state(&mut self, now: Time, vm: &VmId, new: VmState, reason: impl Into<String>) {
        self.touch(vm);
        let Some(rec) = self.vms.get_mut(vm) else { return };
        let from = rec.state.name();
        if new == VmState::Healthy && !matches!(rec.state, VmState::Verifying { .. }) {
            // Back without having answered yet (powered on by someone, host reachable again):
            // old verdicts are stale, and a booting guest gets `recovery_grace` to answer.
            rec.failing_since = None;
            rec.judge_after = now + self.cfg.recovery_grace;
        }
        rec.state = new;
        let to = rec.state.name();
        self.record_transition(now, Subject::Vm(vm.clone()), from, to, reason.into());
    }

    /// A host's first state, when it is first seen (recorded from `new`).
    pub(crate) fn first_host_state(
        &mut self,
        now: Time,
        host: &HostId,
        state: HostState,
        reason: impl Into<String>,
    ) {
        let Some(rec) = self.hosts.get_mut(host) else {
            return;
        };
        rec.state = state;
        let to = rec.state.name().to_owned();
        self.record_transition(now, Subject::Host(host.clone()), "new".into(), to, reason.into());
    }

    /// A VM's first state, when it is first seen (recorded from `new`).
    pub(crate) fn first_vm_state(&mut self, now: Time, vm: &VmId, state: VmState, reason: impl Into<String>) {
        self.touch(vm);
        let Some(rec) = self.vms.get_mut(vm) else { return };
        rec.state = state;
        let to = rec.state.name();
        self.record_transition(now, Subject::Vm(vm.clone()), "new".into(), to, reason.into());
    }

    /// The one place the manager's view of its own network changes.
    pub(crate) fn set_manager_net(&mut self, now: Time, new: ManagerNet, reason: String) {
        let from = self.manager_net.name().to_owned();
        self.manager_net = new;
        self.record_transition(now, Subject::Manager, from, new.name().to_owned(), reason);
    }

    /// The one place the storm guard changes.
    pub(crate) fn set_storm(&mut self, now: Time, new: StormGuard, reason: String) {
        let from = self.storm.name().to_owned();
        self.storm = new;
        self.record_transition(now, Subject::Cluster, from, new.name().to_owned(), reason);
    }

    /// The one transition writer: every state change (a host's, a VM's, a guard's, and a
    /// subject's first sight, `from` "new") is recorded here with its reason, and nowhere else.
    pub(crate) fn record_transition(
        &mut self,
        now: Time,
        subject: Subject,
        from: String,
        to: String,
        reason: String,
    ) {
        self.log(now, subject, LogKind::Transition { from, to, reason });
    }

    pub(crate) fn raise(
        &mut self,
        now: Time,
        kind: AlarmKind,
        subject: Subject,
        severity: Severity,
        message: String,
    ) {
        let key = (kind, subject.clone());
        if self.alarms.get(&key).is_some_and(|a| a.message == message) {
            return;
        }
        let alarm = Alarm {
            kind,
            name: self.subject_name(&subject),
            subject: subject.clone(),
            severity,
            message: message.clone(),
            at: now,
        };
        self.alarms.insert(key, alarm.clone());
        self.log(now, subject, LogKind::AlarmRaised { alarm: kind, message });
        self.out.commands.push(Command::Alarm(AlarmChange::Raise(alarm)));
    }

    pub(crate) fn clear(&mut self, now: Time, kind: AlarmKind, subject: Subject) {
        if self.alarms.remove(&(kind, subject.clone())).is_some() {
            self.log(now, subject.clone(), LogKind::AlarmCleared { alarm: kind });
            self.out.commands.push(Command::Alarm(AlarmChange::Clear {
                kind,
                subject,
                at: now,
            }));
        }
    }

    pub(crate) fn issue(
        &mut self,
        now: Time,
        action: Action,
        purpose: Purpose,
        priority: u8,
        reason: String,
    ) -> ActionId {
        let id = ActionId(self.next_id);
        self.next_id += 1;
        let subject = purpose.subject();
        self.log(
            now,
            subject,
            LogKind::Issued {
                id,
                action: action.clone(),
            },
        );
        self.out.commands.push(Command::Execute {
            id,
            action: action.clone(),
            priority,
            reason,
        });
        self.in_flight.insert(id, InFlight { action, purpose });
        id
    }

    pub(crate) fn open_incident(&mut self, now: Time, subject: Subject, cause: impl Into<String>) -> usize {
        self.incidents.push(Incident {
            subject,
            cause: cause.into(),
            detected: now,
            resolved: None,
            steps: Vec::new(),
            outcome: None,
            ending: None,
        });
        self.incidents.len() - 1
    }

    /// Ends an incident; one that already ended keeps its first outcome.
    pub(crate) fn close_incident(
        &mut self,
        idx: Option<usize>,
        now: Option<Time>,
        ending: Ending,
        outcome: impl Into<String>,
    ) {
        if let Some(inc) = idx.and_then(|i| self.incidents.get_mut(i)) {
            if inc.outcome.is_none() {
                inc.resolved = now;
                inc.outcome = Some(outcome.into());
                inc.ending = Some(ending);
            }
        }
    }

    /// Opens an incident for a VM; an open one it replaces ends as superseded.
    pub(crate) fn open_vm_incident(&mut self, now: Time, vm: &VmId, cause: String) -> usize {
        let inc = self.open_incident(now, Subject::Vm(vm.clone()), cause.clone());
        let old = self.vms.get_mut(vm).and_then(|r| r.incident.replace(inc));
        self.close_incident(old, None, Ending::Superseded, format!("superseded: {cause}"));
        inc
    }

    /// How an operator reads a host: its name, with its id where they differ (`esx-1 (host-34)`).
    pub(crate) fn host_label(&self, host: &HostId) -> String {
        match self.inv.hosts.get(host) {
            Some(h) if h.name != host.as_str() => format!("{} ({host})", h.name),
            _ => host.to_string(),
        }
    }

    /// How an operator reads a VM: its name, with its id where they differ.
    pub(crate) fn vm_label(&self, vm: &VmId) -> String {
        match self.inv.vms.get(vm) {
            Some(v) if v.name != vm.as_str() => format!("{} ({vm})", v.name),
            _ => vm.to_string(),
        }
    }
}

/// A list of names for an alarm text: all of them when few, else the first ones and how many
/// (`a, b, c and 46 more`).
pub(crate) fn summarize(names: &[String]) -> String {
    const SHOWN: usize = 5;
    if names.len() <= SHOWN + 1 {
        return names.join(", ");
    }
    format!("{} and {} more", names[..SHOWN].join(", "), names.len() - SHOWN)
}
