//! Alarms posted to vCenter as events (`alarms.vcenter_events`).

use crate::alarm::AlarmSink;

/// Alarms posted to vCenter as events, on the VM or host concerned (so they show in its Monitor
/// tab), in the background; a failure is logged.
pub(crate) struct VcenterEventSink {
    pub(crate) client: am_vsphere::vsphere_soap::Client,
}

impl AlarmSink for VcenterEventSink {
    fn deliver(&mut self, change: &am_core::AlarmChange) {
        let event = posted_event(change);
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.post_event(&event).await {
                tracing::warn!(error = %e, "cannot post the alarm to vCenter as an event");
            }
        });
    }
}

/// The vCenter event for an alarm change.
fn posted_event(change: &am_core::AlarmChange) -> am_vsphere::vsphere_soap::PostedEvent {
    use am_core::{AlarmChange, Severity, Subject};
    use am_vsphere::vsphere_soap::{MoRef, PostedEvent, PostedEventKind};
    let (kind, message, subject) = match change {
        AlarmChange::Raise(a) => {
            let kind = match a.severity {
                Severity::Critical => PostedEventKind::Error,
                Severity::Warning => PostedEventKind::Warning,
                Severity::Info => PostedEventKind::Info,
            };
            (kind, format!("Availability Manager: {}", a.message), &a.subject)
        }
        AlarmChange::Clear { kind, subject, .. } => (
            PostedEventKind::Info,
            format!("Availability Manager: {kind:?} cleared for {subject}"),
            subject,
        ),
    };
    let moref = |kind: &str, id: &str| {
        (
            MoRef {
                kind: kind.into(),
                value: id.into(),
            },
            id.to_owned(),
        )
    };
    let (vm, host) = match subject {
        Subject::Vm(v) => (Some(moref("VirtualMachine", v.as_str())), None),
        Subject::Host(h) => (None, Some(moref("HostSystem", h.as_str()))),
        Subject::Cluster | Subject::Manager | Subject::Datastore(_) => (None, None),
    };
    PostedEvent {
        kind,
        message,
        vm,
        host,
    }
}

#[cfg(test)]
mod event_tests {
    use super::posted_event;
    use am_core::{Alarm, AlarmChange, AlarmKind, Severity, Subject, Time};
    use am_vsphere::vsphere_soap::PostedEventKind;

    #[test]
    fn alarms_become_vcenter_events_on_the_vm_or_host_concerned() {
        let raise = AlarmChange::Raise(Alarm {
            name: None,
            kind: AlarmKind::VmPoweredOff,
            subject: Subject::Vm("vm-42".into()),
            severity: Severity::Warning,
            message: "VM powered off by alice; not failed over".into(),
            at: Time::from_secs(3),
        });
        let e = posted_event(&raise);
        assert_eq!(e.kind, PostedEventKind::Warning);
        assert_eq!(
            e.vm.as_ref().map(|(m, _)| (m.kind.as_str(), m.value.as_str())),
            Some(("VirtualMachine", "vm-42"))
        );
        assert!(e.message.contains("powered off by alice"));
        let clear = AlarmChange::Clear {
            kind: AlarmKind::HostIsolated,
            subject: Subject::Host("host-9".into()),
            at: Time::ZERO,
        };
        let e = posted_event(&clear);
        assert_eq!(e.kind, PostedEventKind::Info);
        assert_eq!(e.host.as_ref().map(|(m, _)| m.value.as_str()), Some("host-9"));
        assert!(e.vm.is_none());
    }
}
