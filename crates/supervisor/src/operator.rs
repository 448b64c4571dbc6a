//! What an operator asks for: evacuations and maintenance mode (carried out in `evacuate.rs`),
//! a host predicted to fail (by the `predicted_failure` policy: evacuated, or an alarm), and the
//! cluster-wide disarm switch.
//!
//! Disarmed, the manager watches and reports as ever, but issues no automatic action: no
//! restart, failover, revival, fence, removal, spare, re-registration or backup. A VM whose
//! ladder would take a step waits in `deferred(step)`, a dead host's VMs wait for placement, and
//! everything is judged as it stands once re-armed. Operator requests (evacuations, maintenance)
//! still run. The switch is the `Disarmed` alarm: journaled like every alarm, it survives a
//! restart of the daemon.

use super::*;

impl Supervisor {
    /// An operator's request.
    pub(crate) fn on_operator(&mut self, now: Time, req: OperatorRequest) {
        let Some(named) = req.host().cloned() else {
            match req {
                OperatorRequest::Disarm { reason } => self.disarm(now, reason),
                OperatorRequest::Arm => self.arm(now),
                // A datastore's: storage.rs.
                _ => self.on_storage_request(now, req),
            }
            return;
        };
        // A host by its id, or by its name (an alert's label, an operator's typing).
        let host = if self.hosts.contains_key(&named) {
            named
        } else {
            match self.inv.hosts.values().find(|h| h.name == named.as_str()) {
                Some(h) => h.id.clone(),
                None => named,
            }
        };
        let subject = Subject::Host(host.clone());
        let Some(state) = self.host_state(&host).cloned() else {
            self.note(now, subject, format!("operator: {req}: refused, no such host"));
            return;
        };
        let by = match &req {
            OperatorRequest::Degraded { source, .. } | OperatorRequest::DegradedClear { source, .. }
                if source == "vcenter" =>
            {
                "vCenter"
            }
            _ => "operator",
        };
        self.note(now, subject.clone(), format!("{by}: {req}"));
        match req {
            OperatorRequest::Evacuate {
                reason,
                enter_maintenance,
                ..
            } => {
                if state != HostState::Up {
                    self.note(
                        now,
                        subject,
                        format!("evacuation refused: the host is {state}, not up"),
                    );
                    return;
                }
                self.start_evacuation(now, &host, reason, enter_maintenance);
            }
            OperatorRequest::MaintenanceEnter { .. } => {
                let running = self.running_on(&host);
                if !matches!(state, HostState::Up | HostState::Drained { .. }) || running > 0 {
                    self.note(
                        now,
                        subject,
                        format!("maintenance refused: the host is {state} and runs {running} VMs (evacuate it first)"),
                    );
                    return;
                }
                self.enter_maintenance(now, &host);
            }
            OperatorRequest::MaintenanceExit { return_vms, .. } => match state {
                HostState::Drained { .. } => {
                    self.set_host_state(now, &host, HostState::Up, "taken back by the operator");
                    if return_vms {
                        self.start_return(now, &host);
                    }
                }
                HostState::Maintenance { .. } => {
                    if return_vms {
                        self.returning.insert(host.clone());
                    }
                    self.issue(
                        now,
                        Action::ExitMaintenance { host: host.clone() },
                        Purpose::Maintenance(host.clone(), false),
                        0,
                        "operator: maintenance exit".into(),
                    );
                }
                other => self.note(
                    now,
                    subject,
                    format!("maintenance exit refused: the host is {other}"),
                ),
            },
            OperatorRequest::Degraded { reason, source, .. } => {
                self.on_degraded(now, &host, &state, reason, source)
            }
            OperatorRequest::DegradedClear { source, .. } => {
                if self
                    .alarms
                    .contains_key(&(AlarmKind::HostDegraded, subject.clone()))
                {
                    self.clear(now, AlarmKind::HostDegraded, subject.clone());
                    self.note(
                        now,
                        subject,
                        format!(
                            "no longer predicted to fail ({source}); VMs already moved stay where they are"
                        ),
                    );
                }
            }
            OperatorRequest::Disarm { .. }
            | OperatorRequest::Arm
            | OperatorRequest::EvacuateDatastore { .. } => {}
        }
    }

    /// A host predicted to fail: an alarm, and by the policy an evacuation into maintenance.
    fn on_degraded(&mut self, now: Time, host: &HostId, state: &HostState, reason: String, source: String) {
        let subject = Subject::Host(host.clone());
        if self
            .alarms
            .contains_key(&(AlarmKind::HostDegraded, subject.clone()))
        {
            return; // Said already (an alert repeats until it resolves).
        }
        let name = self.host_label(host);
        let evacuate = self.cfg.predicted_failure == PredictedFailure::Evacuate;
        let then = match (evacuate, state) {
            (false, _) => "waiting for the operator (`am-daemon evacuate`)".to_owned(),
            (true, _) if self.disarmed.is_some() => "recovery is disarmed: not evacuated".to_owned(),
            (true, HostState::Up) => "evacuating it into maintenance mode".to_owned(),
            (true, other) => format!("not evacuated: the host is {other}"),
        };
        self.raise(
            now,
            AlarmKind::HostDegraded,
            subject,
            Severity::Warning,
            format!("host {name} predicted to fail: {reason} (from {source}); {then}"),
        );
        if evacuate && self.disarmed.is_none() && *state == HostState::Up {
            self.start_evacuation(now, host, format!("predicted failure: {reason}"), true);
        }
    }

    fn disarm(&mut self, now: Time, reason: String) {
        if self.disarmed.is_some() {
            self.note(
                now,
                Subject::Cluster,
                format!("operator: disarm ({reason}): already disarmed"),
            );
            return;
        }
        self.note(now, Subject::Cluster, format!("operator: disarm ({reason})"));
        self.raise(
            now,
            AlarmKind::Disarmed,
            Subject::Cluster,
            Severity::Warning,
            format!("automatic recovery disarmed: {reason}; failures are reported, not acted on, until `am-daemon arm`"),
        );
        self.disarmed = Some(reason);
    }

    fn arm(&mut self, now: Time) {
        if self.disarmed.take().is_none() {
            self.note(now, Subject::Cluster, "operator: arm: already armed");
            return;
        }
        self.note(
            now,
            Subject::Cluster,
            "operator: arm: automatic recovery resumes, from the cluster as it stands",
        );
        self.clear(now, AlarmKind::Disarmed, Subject::Cluster);
    }

    /// Whether automatic actions wait now, and why: vCenter does not answer (they could not
    /// reach it), or an operator disarmed recovery.
    pub(crate) fn held(&self, now: Time) -> Option<&'static str> {
        if self.vcenter_down(now) {
            Some("vCenter does not answer")
        } else if self.disarmed.is_some() {
            Some("recovery is disarmed")
        } else {
            None
        }
    }

    /// vCenter's own health alarm on a host (its overall status red while connected) is a
    /// predicted failure like an alert: raised when it appears, withdrawn when it goes.
    pub(crate) fn follow_health(&mut self, now: Time, host: &HostId) {
        let alarm = self.inv.hosts.get(host).and_then(|h| h.health_alarm.clone());
        match (alarm, self.vcenter_degraded.contains(host)) {
            (Some(reason), false) => {
                self.vcenter_degraded.insert(host.clone());
                self.on_operator(
                    now,
                    OperatorRequest::Degraded {
                        host: host.clone(),
                        reason,
                        source: "vcenter".into(),
                    },
                );
            }
            (None, true) => {
                self.vcenter_degraded.remove(host);
                self.on_operator(
                    now,
                    OperatorRequest::DegradedClear {
                        host: host.clone(),
                        source: "vcenter".into(),
                    },
                );
            }
            _ => {}
        }
    }

    /// Whether recovery is disarmed, and why.
    pub fn disarmed(&self) -> Option<&str> {
        self.disarmed.as_deref()
    }
}
