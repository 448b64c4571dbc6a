//! Errors in layers: transport, HTTP, XML, SOAP fault (with the vim fault inside), task failure.

use crate::transport::TransportError;
use crate::value::{MoRef, Value};
use crate::xml::XmlError;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to vCenter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request did not get an HTTP response (connection, TLS, timeout).
    #[error("{method}: {source}")]
    Transport {
        /// The vim25 method being called.
        method: String,
        /// What the transport reported.
        #[source]
        source: TransportError,
    },
    /// An HTTP response that is not a SOAP envelope (e.g. 503 from a proxy).
    #[error("{method}: HTTP {status}: {body_start}")]
    Http {
        /// The vim25 method being called.
        method: String,
        /// HTTP status code.
        status: u16,
        /// The first bytes of the body, for diagnosis.
        body_start: String,
    },
    /// The response was not well-formed XML.
    #[error("{method}: malformed XML: {source}")]
    Xml {
        /// The vim25 method being called.
        method: String,
        /// The decoder's error.
        #[source]
        source: XmlError,
    },
    /// Well-formed XML, but not the shape expected.
    #[error("{method}: unexpected response: {reason}")]
    Decode {
        /// The vim25 method being called.
        method: String,
        /// What did not fit.
        reason: String,
    },
    /// The server answered with a SOAP fault.
    #[error("{method}: {fault}")]
    Fault {
        /// The vim25 method being called.
        method: String,
        /// The SOAP fault, with the vim fault inside when there is one.
        #[source]
        fault: Box<SoapFault>,
    },
    /// A task finished in the `error` state.
    #[error(transparent)]
    Task(Box<TaskError>),
    /// The client was set up wrongly (bad URL, unreadable CA file, missing password, ...).
    #[error("configuration: {0}")]
    Config(String),
    /// Waiting for a task or an update took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// The same error for another caller of a shared call (a merged read): the same variant and
    /// message; a transport error's underlying cause is kept as its text.
    pub(crate) fn for_another(&self) -> Error {
        match self {
            Error::Transport { method, source } => Error::Transport {
                method: method.clone(),
                source: TransportError {
                    kind: source.kind,
                    message: match &source.source {
                        Some(cause) => format!("{}: {cause}", source.message),
                        None => source.message.clone(),
                    },
                    source: None,
                },
            },
            Error::Http {
                method,
                status,
                body_start,
            } => Error::Http {
                method: method.clone(),
                status: *status,
                body_start: body_start.clone(),
            },
            Error::Xml { method, source } => Error::Xml {
                method: method.clone(),
                source: source.clone(),
            },
            Error::Decode { method, reason } => Error::Decode {
                method: method.clone(),
                reason: reason.clone(),
            },
            Error::Fault { method, fault } => Error::Fault {
                method: method.clone(),
                fault: fault.clone(),
            },
            Error::Task(t) => Error::Task(t.clone()),
            Error::Config(m) => Error::Config(m.clone()),
            Error::Timeout(m) => Error::Timeout(m.clone()),
        }
    }

    /// The vim fault, from a SOAP fault or a failed task.
    pub fn vim_fault(&self) -> Option<&VimFault> {
        match self {
            Error::Fault { fault, .. } => fault.vim.as_ref(),
            Error::Task(t) => Some(&t.fault),
            _ => None,
        }
    }

    /// True if the vim fault has this type name (e.g. `"InvalidPowerState"`).
    pub fn is_fault(&self, type_name: &str) -> bool {
        self.vim_fault().is_some_and(|f| f.type_name == type_name)
    }

    /// True when the session is gone (`NotAuthenticated`).
    pub fn is_not_authenticated(&self) -> bool {
        matches!(
            self.vim_fault().map(|f| &f.kind),
            Some(FaultKind::NotAuthenticated)
        )
    }
}

/// A SOAP fault: `faultcode`, `faultstring`, and the vim fault from `detail` when present.
#[derive(Debug, Clone, thiserror::Error)]
#[error("SOAP fault {code}: {}{message}", vim.as_ref().map(|v| format!("{}: ", v.type_name)).unwrap_or_default())]
pub struct SoapFault {
    /// `faultcode`, e.g. `ServerFaultCode`.
    pub code: String,
    /// `faultstring`: the server's message.
    pub message: String,
    /// The vim fault from `detail`, if there is one.
    pub vim: Option<VimFault>,
}

/// A vim fault (`MethodFault` subtype). Unknown types keep their name and raw XML.
#[derive(Debug, Clone, PartialEq)]
pub struct VimFault {
    /// The fault's type name, e.g. `InvalidPowerState`.
    pub type_name: String,
    /// The decoded fields of well-known faults.
    pub kind: FaultKind,
    /// The fault's message (`faultstring` or `localizedMessage`), possibly empty.
    pub message: String,
    /// The fault's XML as sent (SOAP faults) or re-encoded from the decoded value (task faults).
    pub raw_xml: String,
    /// All decoded fields, for callers that need more than [`FaultKind`].
    pub detail: Value,
}

impl std::fmt::Display for VimFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.type_name)
        } else {
            write!(f, "{}: {}", self.type_name, self.message)
        }
    }
}

/// The vim faults this client knows by name. Anything else is [`FaultKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// The session is not (or no longer) authenticated.
    NotAuthenticated,
    /// Wrong user name or password.
    InvalidLogin,
    /// The user lacks a privilege on an object.
    NoPermission {
        /// The object.
        object: Option<MoRef>,
        /// The privilege, e.g. `VirtualMachine.Interact.PowerOn`.
        privilege_id: Option<String>,
    },
    /// The VM is not in the power state the operation needs.
    InvalidPowerState {
        /// The state the operation wanted.
        requested_state: Option<String>,
        /// The state the VM is in.
        existing_state: Option<String>,
    },
    /// The object is in a state that forbids the operation (`InvalidState` and subtypes not listed here).
    InvalidState,
    /// The host is not connected.
    HostNotConnected,
    /// Another task is running on the object.
    TaskInProgress {
        /// The running task.
        task: Option<MoRef>,
    },
    /// The object does not exist (any more).
    ManagedObjectNotFound {
        /// The object.
        obj: Option<MoRef>,
    },
    /// The server does not implement the method.
    MethodNotFound {
        /// The method name.
        method: Option<String>,
    },
    /// An argument was invalid.
    InvalidArgument {
        /// The offending property path.
        invalid_property: Option<String>,
    },
    /// The request was malformed.
    InvalidRequest,
    /// The operation is not supported (`NotSupported`, `NotImplemented`).
    NotSupported,
    /// The request was cancelled (e.g. `CancelWaitForUpdates`).
    RequestCanceled,
    /// A name is already in use.
    DuplicateName,
    /// A property collector version was not recognised.
    InvalidCollectorVersion,
    /// The operation timed out on the server.
    Timedout,
    /// Any other fault: see [`VimFault::type_name`] and [`VimFault::raw_xml`].
    Other,
}

impl VimFault {
    /// Build from a decoded fault value and its type name.
    pub fn from_value(type_name: &str, detail: Value, message: String, raw_xml: String) -> Self {
        let s = |k: &str| detail.field(k).and_then(Value::as_str).map(str::to_string);
        let r = |k: &str| detail.field(k).and_then(Value::as_moref).cloned();
        let kind = match type_name {
            "NotAuthenticated" => FaultKind::NotAuthenticated,
            "InvalidLogin" => FaultKind::InvalidLogin,
            "NoPermission" => FaultKind::NoPermission {
                object: r("object"),
                privilege_id: s("privilegeId"),
            },
            "InvalidPowerState" => FaultKind::InvalidPowerState {
                requested_state: s("requestedState"),
                existing_state: s("existingState"),
            },
            "InvalidState" | "InvalidHostState" | "InvalidHostConnectionState" | "InvalidDatastoreState" => {
                FaultKind::InvalidState
            }
            "HostNotConnected" => FaultKind::HostNotConnected,
            "TaskInProgress" => FaultKind::TaskInProgress { task: r("task") },
            "ManagedObjectNotFound" => FaultKind::ManagedObjectNotFound { obj: r("obj") },
            "MethodNotFound" => FaultKind::MethodNotFound { method: s("method") },
            "InvalidArgument" => FaultKind::InvalidArgument {
                invalid_property: s("invalidProperty"),
            },
            "InvalidRequest" => FaultKind::InvalidRequest,
            "NotSupported" | "NotImplemented" => FaultKind::NotSupported,
            "RequestCanceled" => FaultKind::RequestCanceled,
            "DuplicateName" => FaultKind::DuplicateName,
            "InvalidCollectorVersion" => FaultKind::InvalidCollectorVersion,
            "Timedout" => FaultKind::Timedout,
            _ => FaultKind::Other,
        };
        VimFault {
            type_name: type_name.to_string(),
            kind,
            message,
            raw_xml,
            detail,
        }
    }

    /// Decode a `LocalizedMethodFault` (`{fault, localizedMessage}`), as found in `TaskInfo.error`.
    pub fn from_localized(v: &Value) -> Self {
        let message = v
            .field("localizedMessage")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let fault = v.field("fault").cloned().unwrap_or(Value::Text(String::new()));
        let type_name = fault.type_name().unwrap_or("MethodFault").to_string();
        let mut w = crate::xml::XmlWriter::new();
        w.value("fault", &fault);
        Self::from_value(&type_name, fault, message, w.into_string())
    }
}

/// A task that ended in the `error` state.
#[derive(Debug, Clone, thiserror::Error)]
#[error("task {task} ({description_id}) failed: {fault}")]
pub struct TaskError {
    /// The task.
    pub task: MoRef,
    /// What the task was doing, e.g. `VirtualMachine.powerOn`.
    pub description_id: String,
    /// The entity the task ran on.
    pub entity: Option<MoRef>,
    /// The fault the task reported.
    pub fault: VimFault,
}
