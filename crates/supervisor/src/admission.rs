//! Standing readiness alarms: admission control from the precomputed plans (an alarm while the
//! failure of some host would leave a protected VM with no place), and hosts whose death could
//! only be confirmed by their VMs' file locks (no second failure signal).

use super::*;
use crate::record::summarize;

impl Supervisor {
    /// Admission control from the precomputed plans: an alarm while the failure of some host would
    /// leave a protected VM with no place, while no host is up at all, while the cluster
    /// tolerates fewer host failures than `host_failures_to_tolerate`, or while the free share is
    /// below `reserved_cpu_pct` / `reserved_mem_pct`.
    pub(crate) fn check_admission(&mut self, now: Time) {
        self.admission_check_at = now + std::time::Duration::from_secs(30);
        if self.source == SourceState::Lost {
            // A stale view would raise (or clear) it for hosts as they were.
            return;
        }
        self.check_signals(now);
        let Some(plans) = self.plans.as_ref().filter(|p| p.is_fresh()) else {
            return;
        };
        let admission = plans.admission();
        self.admission = Some(admission.clone());
        let at_risk: Vec<String> = admission
            .hosts_at_risk
            .iter()
            .filter(|h| self.hosts.get(*h).is_some_and(|r| r.state == HostState::Up))
            .map(|h| self.host_label(h))
            .collect();
        let any_up = self.hosts.values().any(|r| r.state == HostState::Up);
        let policy = &self.cfg.placement;
        let message = if !at_risk.is_empty() {
            Some(format!(
                "the failure of {} would leave protected VMs with no place (host failures tolerated: {})",
                summarize(&at_risk),
                admission.host_failures_tolerated
            ))
        } else if !any_up && !self.hosts.is_empty() {
            // Every host is in trouble: the most at risk the cluster can be, not "all clear".
            Some(
                "no host is up: protected VMs have no place to fail over to (host failures tolerated: 0)"
                    .to_owned(),
            )
        } else if admission.hosts_at_risk.is_empty() && !admission.meets_target {
            // (With hosts at risk that are not up, the count is low for a host already lost.)
            Some(format!(
                "the cluster tolerates {} host failure(s), below its target of {} (host_failures_to_tolerate)",
                admission.host_failures_tolerated, admission.target
            ))
        } else if !admission.reservation_holds {
            Some(format!(
                "free capacity (CPU {}%, memory {}%) is below the share reserved for failover (CPU {}%, memory {}%)",
                admission.free_cpu_pct,
                admission.free_mem_pct,
                policy.reserved_cpu_pct,
                policy.reserved_mem_pct
            ))
        } else {
            None
        };
        match message {
            None => self.clear(now, AlarmKind::FailoverAtRisk, Subject::Cluster),
            Some(message) => self.raise(
                now,
                AlarmKind::FailoverAtRisk,
                Subject::Cluster,
                Severity::Warning,
                message,
            ),
        }
    }

    /// `FailoverDegraded` while some hosts have no failure signal but vCenter's connection state:
    /// for them "dead" can only be confirmed by the VMs' file locks at failover (or, with
    /// `single_signal = "wait"`, is never declared).
    pub(crate) fn check_signals(&mut self, now: Time) {
        let live: Vec<&HostId> = self
            .hosts
            .iter()
            .filter(|(_, r)| r.state != HostState::Removed)
            .map(|(id, _)| id)
            .collect();
        // The hosts with a running VM whose guest is probed, in one pass over the VMs.
        let probed: BTreeSet<&HostId> = self
            .inv
            .vms
            .values()
            .filter(|v| crate::host::probed_guest(v))
            .filter_map(|v| v.host.as_ref())
            .collect();
        let single: Vec<String> = live
            .iter()
            .filter(|h| self.signals_of(h, probed.contains(*h)).is_empty())
            .map(|h| self.host_label(h))
            .collect();
        if single.is_empty() {
            self.clear(now, AlarmKind::FailoverDegraded, Subject::Cluster);
            return;
        }
        let what = match self.cfg.single_signal {
            SingleSignal::CheckLocks => "a failure is confirmed only by the VMs' file locks at failover",
            SingleSignal::Wait => "they are never declared dead (single_signal = wait)",
        };
        let names = summarize(&single);
        self.raise(
            now,
            AlarmKind::FailoverDegraded,
            Subject::Cluster,
            Severity::Warning,
            format!(
                "{} of {} hosts have no failure signal but vCenter's connection state ({names}): {what}; configure management or guest probes, or a BMC",
                single.len(),
                live.len()
            ),
        );
    }
}
