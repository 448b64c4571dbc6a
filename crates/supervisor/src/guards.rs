//! The guards of the manager's self-distrust, as state machines: its own network
//! ([`ManagerNet`]) and the storm guard ([`StormGuard`]), while either holds nothing is failed
//! over; and the inventory source ([`SourceState`]), while it is lost nothing is judged that
//! needs a fresh inventory.

use super::*;

impl Supervisor {
    /// The manager's isolation check changed.
    pub(crate) fn on_manager_isolation(&mut self, now: Time, isolated: bool, evidence: String) {
        let new = if isolated {
            ManagerNet::Isolated
        } else {
            ManagerNet::Connected
        };
        if new == self.manager_net {
            return;
        }
        self.set_manager_net(now, new, evidence.clone());
        if isolated {
            self.raise(
                now,
                AlarmKind::ManagerIsolated,
                Subject::Manager,
                Severity::Critical,
                format!("manager cannot reach its isolation addresses ({evidence}); acting on nothing"),
            );
        } else {
            self.clear(now, AlarmKind::ManagerIsolated, Subject::Manager);
        }
    }

    /// The inventory source stopped answering, or answers again.
    pub(crate) fn on_source_health(&mut self, now: Time, connected: bool, detail: String) {
        let new = if connected {
            SourceState::Connected
        } else {
            SourceState::Lost
        };
        if new == self.source {
            return;
        }
        let from = self.source.name().to_owned();
        self.source = new;
        self.record_transition(
            now,
            Subject::Cluster,
            format!("vcenter {from}"),
            format!("vcenter {}", new.name()),
            detail.clone(),
        );
        if connected {
            self.clear(now, AlarmKind::VcenterUnreachable, Subject::Cluster);
            // The inventory is read again; admission is judged on it then.
            self.admission_check_at = now;
        } else {
            self.raise(
                now,
                AlarmKind::VcenterUnreachable,
                Subject::Cluster,
                Severity::Critical,
                format!(
                    "vCenter does not answer ({detail}): the inventory is stale; nothing is judged from it"
                ),
            );
        }
    }

    /// The storm guard, after the hosts were evaluated.
    pub(crate) fn update_storm(&mut self, now: Time) {
        let window = self.cfg.storm_window;
        while self
            .unreachable_log
            .front()
            .is_some_and(|(t, _)| now.since(*t) > window)
        {
            self.unreachable_log.pop_front();
        }
        let total = self
            .hosts
            .values()
            .filter(|r| r.state != HostState::Removed)
            .count();
        let unreachable = |r: &HostRec| matches!(r.state, HostState::Unreachable { .. });
        let recent: BTreeSet<&HostId> = self
            .unreachable_log
            .iter()
            .filter(|(_, h)| self.hosts.get(h).is_some_and(unreachable))
            .map(|(_, h)| h)
            .collect();
        let count = recent.len();
        let calm = self.storm == StormGuard::Calm;
        if calm && count >= 2 && total >= 3 && (count as f64) > self.cfg.storm_fraction * total as f64 {
            self.set_storm(
                now,
                StormGuard::Storm,
                format!(
                    "{count} of {total} hosts unreachable within {}s",
                    window.as_secs()
                ),
            );
            self.raise(
                now,
                AlarmKind::StormSuspected,
                Subject::Cluster,
                Severity::Critical,
                format!("{count} of {total} hosts unreachable at once: suspecting the manager's network; no failover"),
            );
        } else if !calm {
            // Subsided to what one failure would be: the host left unreachable (if any) is
            // judged like any single failure.
            let left: Vec<String> = self
                .hosts
                .iter()
                .filter(|(_, r)| unreachable(r))
                .map(|(id, _)| self.host_label(id))
                .collect();
            let reason = match left.as_slice() {
                [] => "no host unreachable".to_owned(),
                [one] => format!("only {one} still unreachable: judged as a single failure"),
                _ => return,
            };
            self.storm_ended = now;
            self.set_storm(now, StormGuard::Calm, reason);
            self.clear(now, AlarmKind::StormSuspected, Subject::Cluster);
        }
    }
}
