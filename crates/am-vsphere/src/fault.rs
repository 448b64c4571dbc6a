//! vsphere-soap errors to [`HvError`].
//!
//! | vCenter says | `HvError` |
//! |---|---|
//! | no HTTP answer (refused, reset, TLS) | `Unreachable` (the transport timing out: `Timeout`) |
//! | HTTP 502/503/504 without a SOAP envelope | `Unreachable` |
//! | `InvalidPowerState`, `InvalidState` and its subtypes, `HostNotConnected`, `AlreadyExists` | `InvalidState` |
//! | `ManagedObjectNotFound` | `NotFound` |
//! | `InsufficientResourcesFault` and every `Insufficient*` subtype, `NotEnoughLicenses` | `InsufficientResources` |
//! | `TaskInProgress`, `ConcurrentAccess`, `ResourceInUse` | `Busy` |
//! | `NotSupported`, `NotImplemented`, `MethodNotFound` | `NotSupported` |
//! | `Timedout`, a task not finished in time | `Timeout` |
//! | `FileLocked`, or a fault saying a file is locked ("Failed to lock the file") | `Locked` |
//! | anything else (also from a failed task) | `Api { fault: <type name>, retryable }` |
//!
//! `Api` faults are retryable when they are transient by nature (`HostCommunication`,
//! `HostNotReachable`, `NoHost`, `RequestCanceled`, `SystemError`, `NotAuthenticated`, HTTP 5xx);
//! `NoPermission`, `InvalidLogin`, `InvalidArgument`, `DuplicateName`, file and configuration
//! faults are not.

use am_core::HvError;
use vsphere_soap::{Error, FaultKind, TransportErrorKind};

/// What a call was about, to name it in errors.
#[derive(Clone, Debug)]
pub(crate) struct Subject<'a> {
    /// The operation (`power_on`, `failover`, ...).
    pub op: &'static str,
    /// `vm`, `host`, `snapshot`, `datastore`, `spare`.
    pub kind: &'static str,
    /// The object's id as the manager knows it.
    pub id: &'a str,
    /// The target host, for capacity faults.
    pub host: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub(crate) fn new(op: &'static str, kind: &'static str, id: &'a str) -> Self {
        Subject {
            op,
            kind,
            id,
            host: None,
        }
    }

    pub(crate) fn on_host(mut self, host: &'a str) -> Self {
        self.host = Some(host);
        self
    }
}

/// The kind of object a vim25 type name is, in `HvError::NotFound` terms.
fn kind_of(type_name: &str) -> &'static str {
    match type_name {
        "VirtualMachine" => "vm",
        "HostSystem" => "host",
        "VirtualMachineSnapshot" => "snapshot",
        "Datastore" => "datastore",
        "Task" => "task",
        _ => "object",
    }
}

const TRANSIENT: &[&str] = &[
    "HostCommunication",
    "HostNotReachable",
    "NoHost",
    "RequestCanceled",
    "SystemError",
    "NotAuthenticated",
    "RestrictedVersion",
];

/// Maps `e`, raised while doing `s.op` on `s`.
pub(crate) fn hv_error(e: &Error, s: &Subject<'_>) -> HvError {
    match e {
        Error::Transport { source, .. } => match source.kind {
            TransportErrorKind::Timeout => HvError::Timeout { op: s.op.to_owned() },
            _ => HvError::Unreachable {
                target: "vCenter".into(),
                detail: e.to_string(),
            },
        },
        Error::Http {
            status: 502..=504, ..
        } => HvError::Unreachable {
            target: "vCenter".into(),
            detail: e.to_string(),
        },
        Error::Http { status, .. } => HvError::Api {
            fault: format!("HTTP {status}"),
            message: e.to_string(),
            retryable: *status >= 500,
        },
        Error::Timeout(_) => HvError::Timeout { op: s.op.to_owned() },
        Error::Fault { .. } | Error::Task(_) => match e.vim_fault() {
            Some(f) => vim_fault(f, e, s),
            None => HvError::Api {
                fault: "SoapFault".into(),
                message: e.to_string(),
                retryable: false,
            },
        },
        other => HvError::Api {
            fault: match other {
                Error::Xml { .. } | Error::Decode { .. } => "MalformedResponse".into(),
                Error::Config(_) => "Configuration".into(),
                _ => "Error".into(),
            },
            message: other.to_string(),
            retryable: false,
        },
    }
}

fn vim_fault(f: &vsphere_soap::VimFault, e: &Error, s: &Subject<'_>) -> HvError {
    let detail = if f.message.is_empty() {
        f.type_name.clone()
    } else {
        format!("{}: {}", f.type_name, f.message)
    };
    let ty = f.type_name.as_str();
    if is_lock(f) {
        let file = f
            .detail
            .field("file")
            .and_then(vsphere_soap::Value::as_str)
            .map_or_else(|| detail.clone(), str::to_owned);
        return HvError::Locked {
            id: s.id.to_owned(),
            file,
        };
    }
    match &f.kind {
        FaultKind::InvalidPowerState { .. } | FaultKind::InvalidState | FaultKind::HostNotConnected => {
            HvError::InvalidState {
                id: s.id.to_owned(),
                detail,
            }
        }
        FaultKind::ManagedObjectNotFound { obj } => match obj {
            Some(o) if kind_of(&o.kind) != s.kind => HvError::not_found(kind_of(&o.kind), &o.value),
            _ => HvError::not_found(s.kind, s.id),
        },
        FaultKind::TaskInProgress { .. } => HvError::Busy {
            id: s.id.to_owned(),
            detail,
        },
        FaultKind::NotSupported | FaultKind::MethodNotFound { .. } => HvError::NotSupported {
            op: format!("{} ({detail})", s.op),
        },
        FaultKind::Timedout => HvError::Timeout { op: s.op.to_owned() },
        FaultKind::NoPermission { privilege_id, .. } => HvError::Api {
            fault: f.type_name.clone(),
            message: match privilege_id {
                Some(p) => format!("{detail} (missing privilege {p})"),
                None => detail,
            },
            retryable: false,
        },
        _ if ty.starts_with("Insufficient") || ty == "NotEnoughLicenses" => HvError::InsufficientResources {
            host: s.host.unwrap_or(s.id).to_owned(),
            detail,
        },
        _ if ty.starts_with("Invalid") && ty.ends_with("State") => HvError::InvalidState {
            id: s.id.to_owned(),
            detail,
        },
        _ if matches!(ty, "AlreadyExists" | "VmAlreadyExistsInDatacenter") => HvError::InvalidState {
            id: s.id.to_owned(),
            detail,
        },
        _ if matches!(ty, "ConcurrentAccess" | "ResourceInUse") => HvError::Busy {
            id: s.id.to_owned(),
            detail,
        },
        _ => HvError::Api {
            fault: f.type_name.clone(),
            message: match e {
                Error::Task(t) => format!("{} ({}): {}", t.description_id, t.task, f.message),
                _ => f.message.clone(),
            },
            retryable: TRANSIENT.contains(&ty),
        },
    }
}

/// Whether a fault says a VM's file is locked by another host: `FileLocked`, or (as ESXi often
/// words it) a configuration fault whose message says the file could not be locked.
fn is_lock(f: &vsphere_soap::VimFault) -> bool {
    let m = f.message.to_ascii_lowercase();
    f.type_name == "FileLocked"
        || (matches!(
            f.type_name.as_str(),
            "GenericVmConfigFault" | "FileFault" | "CannotAccessFile" | "SystemError"
        ) && (m.contains("lock the file") || m.contains("is locked") || m.contains("file in use")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsphere_soap::{MoRef, SoapFault, TaskError, TransportError, Value, VimFault};

    fn soap(ty: &str, detail: Value) -> Error {
        Error::Fault {
            method: "M".into(),
            fault: Box::new(SoapFault {
                code: "ServerFaultCode".into(),
                message: "msg".into(),
                vim: Some(VimFault::from_value(ty, detail, "msg".into(), String::new())),
            }),
        }
    }

    fn task(ty: &str) -> Error {
        Error::Task(Box::new(TaskError {
            task: MoRef::new("Task", "task-9"),
            description_id: "VirtualMachine.powerOn".into(),
            entity: None,
            fault: VimFault::from_value(ty, Value::Text(String::new()), "why".into(), String::new()),
        }))
    }

    fn s() -> Subject<'static> {
        Subject::new("failover", "vm", "vm-1").on_host("host-2")
    }

    #[test]
    fn well_known_faults_map_to_their_variants() {
        let e = hv_error(&soap("InvalidPowerState", Value::Text(String::new())), &s());
        assert!(
            matches!(e, HvError::InvalidState { ref id, .. } if id == "vm-1"),
            "{e:?}"
        );
        let e = hv_error(&task("InvalidHostConnectionState"), &s());
        assert!(matches!(e, HvError::InvalidState { .. }), "{e:?}");
        let e = hv_error(&task("InsufficientMemoryResourcesFault"), &s());
        assert!(
            matches!(e, HvError::InsufficientResources { ref host, .. } if host == "host-2"),
            "{e:?}"
        );
        let e = hv_error(&task("InsufficientResourcesFault"), &s());
        assert!(matches!(e, HvError::InsufficientResources { .. }), "{e:?}");
        let e = hv_error(&task("TaskInProgress"), &s());
        assert!(matches!(e, HvError::Busy { .. }) && e.is_retryable(), "{e:?}");
        let e = hv_error(&task("Timedout"), &s());
        assert_eq!(
            e,
            HvError::Timeout {
                op: "failover".into()
            }
        );
        let e = hv_error(&soap("NotSupported", Value::Text(String::new())), &s());
        assert!(matches!(e, HvError::NotSupported { .. }), "{e:?}");
    }

    #[test]
    fn a_locked_file_is_proof_of_life() {
        let detail = Value::Data(vsphere_soap::DataObject {
            type_name: Some("FileLocked".into()),
            fields: vec![("file".into(), Value::Text("[nfs] web/web.vmx".into()))],
        });
        let e = hv_error(&soap("FileLocked", detail), &s());
        assert_eq!(
            e,
            HvError::Locked {
                id: "vm-1".into(),
                file: "[nfs] web/web.vmx".into()
            }
        );
        assert!(!e.is_retryable());
        let esx = Error::Task(Box::new(TaskError {
            task: MoRef::new("Task", "task-9"),
            description_id: "VirtualMachine.powerOn".into(),
            entity: None,
            fault: VimFault::from_value(
                "GenericVmConfigFault",
                Value::Text(String::new()),
                "Failed to lock the file".into(),
                String::new(),
            ),
        }));
        assert!(matches!(hv_error(&esx, &s()), HvError::Locked { .. }));
    }

    #[test]
    fn not_found_names_the_missing_object() {
        let obj = |kind: &str, v: &str| {
            Value::Data(vsphere_soap::DataObject {
                type_name: Some("ManagedObjectNotFound".into()),
                fields: vec![("obj".into(), Value::MoRef(MoRef::new(kind, v)))],
            })
        };
        let e = hv_error(
            &soap("ManagedObjectNotFound", obj("VirtualMachine", "vm-57")),
            &s(),
        );
        assert_eq!(e, HvError::not_found("vm", "vm-1"), "the VM by its id");
        let e = hv_error(&soap("ManagedObjectNotFound", obj("HostSystem", "host-2")), &s());
        assert_eq!(e, HvError::not_found("host", "host-2"));
    }

    #[test]
    fn other_faults_keep_their_type_name() {
        let e = hv_error(&task("CannotDeleteFile"), &s());
        match e {
            HvError::Api {
                fault,
                message,
                retryable,
            } => {
                assert_eq!(fault, "CannotDeleteFile");
                assert!(
                    message.contains("VirtualMachine.powerOn") && message.contains("why"),
                    "{message}"
                );
                assert!(!retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(hv_error(&task("HostCommunication"), &s()).is_retryable());
        let e = hv_error(&soap("NoPermission", Value::Text(String::new())), &s());
        assert!(matches!(e, HvError::Api { ref fault, retryable: false, .. } if fault == "NoPermission"));
    }

    #[test]
    fn transport_errors_are_unreachable_or_timeouts() {
        let t = |kind| Error::Transport {
            method: "PowerOnVM_Task".into(),
            source: TransportError::new(kind, "boom"),
        };
        let e = hv_error(&t(TransportErrorKind::Connect), &s());
        assert!(
            matches!(e, HvError::Unreachable { .. }) && e.is_retryable(),
            "{e:?}"
        );
        let e = hv_error(&t(TransportErrorKind::Timeout), &s());
        assert_eq!(
            e,
            HvError::Timeout {
                op: "failover".into()
            }
        );
        let e = hv_error(
            &Error::Http {
                method: "M".into(),
                status: 503,
                body_start: String::new(),
            },
            &s(),
        );
        assert!(matches!(e, HvError::Unreachable { .. }));
        let e = hv_error(&Error::Timeout("task".into()), &s());
        assert_eq!(
            e,
            HvError::Timeout {
                op: "failover".into()
            }
        );
    }
}
