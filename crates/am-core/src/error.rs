//! The error every hypervisor backend returns.

use serde::{Deserialize, Serialize};

/// The target an [`HvError::Unreachable`] names when the management server itself (vCenter) could
/// not be reached (compared without case: `vCenter` too).
pub const MANAGEMENT_SERVER: &str = "vcenter";

/// Why a hypervisor call failed. [`HvError::is_retryable`] says whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HvError {
    /// The object does not exist (any more).
    #[error("{kind} {id} not found")]
    NotFound {
        /// What kind of object (`vm`, `host`, `snapshot`, ...).
        kind: String,
        /// Its id.
        id: String,
    },
    /// The object is in a state that does not allow the operation (e.g. powering on a running VM).
    #[error("{id} is in the wrong state: {detail}")]
    InvalidState {
        /// The object's id.
        id: String,
        /// What is wrong.
        detail: String,
    },
    /// Not enough CPU or memory on the target.
    #[error("insufficient resources on {host}: {detail}")]
    InsufficientResources {
        /// The target host.
        host: String,
        /// What is short.
        detail: String,
    },
    /// The target (host, vCenter) could not be reached.
    #[error("{target} unreachable: {detail}")]
    Unreachable {
        /// What could not be reached.
        target: String,
        /// Transport detail.
        detail: String,
    },
    /// The call did not finish in time.
    #[error("{op} timed out")]
    Timeout {
        /// The operation.
        op: String,
    },
    /// Another operation holds the object; try later.
    #[error("{id} is busy: {detail}")]
    Busy {
        /// The object's id.
        id: String,
        /// Detail.
        detail: String,
    },
    /// The backend does not support this operation.
    #[error("{op} is not supported by this backend")]
    NotSupported {
        /// The operation.
        op: String,
    },
    /// The VM's files are locked by a host that still runs it: proof that it lives where it was
    /// (vCenter's `FileLocked`, "Failed to lock the file"). Nothing was left half done.
    #[error("{id}'s files are locked ({file}): it still runs on another host")]
    Locked {
        /// The VM.
        id: String,
        /// The locked file.
        file: String,
    },
    /// Any other fault reported by the API, with its type name.
    #[error("{fault}: {message}")]
    Api {
        /// Fault type name (e.g. vim25's `InvalidPowerState`).
        fault: String,
        /// Message.
        message: String,
        /// Whether a retry can help.
        retryable: bool,
    },
}

impl HvError {
    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            HvError::Unreachable { .. } | HvError::Timeout { .. } | HvError::Busy { .. } => true,
            HvError::Api { retryable, .. } => *retryable,
            HvError::NotFound { .. }
            | HvError::InvalidState { .. }
            | HvError::InsufficientResources { .. }
            | HvError::Locked { .. }
            | HvError::NotSupported { .. } => false,
        }
    }

    /// The management server itself (vCenter) could not be reached: an [`HvError::Unreachable`]
    /// whose target is [`MANAGEMENT_SERVER`].
    pub fn vcenter_unreachable(detail: impl Into<String>) -> Self {
        HvError::Unreachable {
            target: MANAGEMENT_SERVER.to_owned(),
            detail: detail.into(),
        }
    }

    /// Whether the call failed because the management server itself (vCenter) could not be
    /// reached, as opposed to the host or VM it was for: the call never got to that object, so the
    /// failure says nothing about it (it is not counted against it, and is tried again once vCenter
    /// answers).
    pub fn is_vcenter_unreachable(&self) -> bool {
        matches!(self, HvError::Unreachable { target, .. } if target.eq_ignore_ascii_case(MANAGEMENT_SERVER))
    }

    /// Shorthand for a [`HvError::NotFound`].
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        HvError::NotFound {
            kind: kind.to_owned(),
            id: id.to_string(),
        }
    }

    /// Shorthand for a [`HvError::InvalidState`].
    pub fn invalid_state(id: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        HvError::InvalidState {
            id: id.to_string(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_are_retryable_and_logic_errors_are_not() {
        assert!(HvError::Timeout { op: "reset".into() }.is_retryable());
        assert!(
            HvError::Unreachable {
                target: "vc".into(),
                detail: "refused".into()
            }
            .is_retryable()
        );
        assert!(!HvError::not_found("vm", "vm-1").is_retryable());
        assert!(!HvError::invalid_state("vm-1", "already on").is_retryable());
        let api = |retryable| HvError::Api {
            fault: "X".into(),
            message: "m".into(),
            retryable,
        };
        assert!(api(true).is_retryable());
        assert!(!api(false).is_retryable());
        assert_eq!(HvError::not_found("vm", "vm-1").to_string(), "vm vm-1 not found");
    }

    #[test]
    fn only_an_unreachable_vcenter_is_vcenter_unreachable() {
        assert!(HvError::vcenter_unreachable("refused").is_vcenter_unreachable());
        let named = |target: &str| HvError::Unreachable {
            target: target.into(),
            detail: "d".into(),
        };
        assert!(named("vCenter").is_vcenter_unreachable());
        assert!(
            !named("h2").is_vcenter_unreachable(),
            "a host that does not respond is about the host"
        );
        assert!(!named("BMC of h2").is_vcenter_unreachable());
        assert!(!HvError::Timeout { op: "reset".into() }.is_vcenter_unreachable());
    }
}
