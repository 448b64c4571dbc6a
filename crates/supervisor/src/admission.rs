//! Admission control from the precomputed plans: an alarm while the failure of some host would
//! leave a protected VM with no place.

use super::*;

impl Supervisor {
    /// Admission control from the precomputed plans: an alarm while the failure of some host would
    /// leave a protected VM with no place.
    pub(crate) fn check_admission(&mut self, now: Time) {
        self.admission_check_at = now + std::time::Duration::from_secs(30);
        let Some(plans) = self.plans.as_ref().filter(|p| p.is_fresh()) else {
            return;
        };
        let admission = plans.admission();
        let at_risk: Vec<String> = admission
            .hosts_at_risk
            .iter()
            .filter(|h| self.hosts.get(*h).is_some_and(|r| r.state == HostState::Up))
            .map(|h| h.to_string())
            .collect();
        if at_risk.is_empty() {
            self.clear(now, AlarmKind::FailoverAtRisk, Subject::Cluster);
        } else {
            self.raise(
                now,
                AlarmKind::FailoverAtRisk,
                Subject::Cluster,
                Severity::Warning,
                format!(
                    "the failure of {} would leave protected VMs with no place (host failures tolerated: {})",
                    at_risk.join(", "),
                    admission.host_failures_tolerated
                ),
            );
        }
    }
}
