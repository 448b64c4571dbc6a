//! Why an out-of-band call failed: every error names the controller (the host, the BMC's or the
//! admin vCenter's URL) and the reason.

use std::time::Duration;

use am_core::HvError;

/// What went wrong talking to one controller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The controller answered with an HTTP error; `message` is its Redfish error message (or the
    /// start of the body when it sent none).
    #[error("HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        /// The status code.
        status: u16,
        /// What the controller said.
        message: String,
    },
    /// No answer in time.
    #[error("no answer within {}", secs(*after))]
    Timeout {
        /// How long was waited.
        after: Duration,
    },
    /// The TLS handshake or the certificate check failed.
    #[error("TLS failed: {0} (check ca_file or thumbprint)")]
    Tls(String),
    /// No connection (wrong address, the controller down, a firewall).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The answer is not the JSON expected.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The answer was larger than the limit; it was not read further.
    #[error("answer larger than {limit} bytes: refused")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The power change was accepted but never showed within the time allowed.
    #[error("asked for {want}, but its power state was still {last} after {}", secs(*after))]
    NotConfirmed {
        /// The power state waited for (`Off`, `On`).
        want: &'static str,
        /// The last state read (or why it could not be read).
        last: String,
        /// How long was waited.
        after: Duration,
    },
    /// The settings cannot work (a bad URL, a CA file that cannot be read, no single system).
    #[error("{0}")]
    Config(String),
    /// The admin vCenter refused or failed the call (its fault or task error).
    #[error("{0}")]
    Vcenter(String),
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// An out-of-band call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OobError {
    /// The host has no out-of-band controller.
    #[error("no BMC and no admin vCenter VM is configured for host {host}")]
    NotConfigured {
        /// The host's name.
        host: String,
    },
    /// A BMC's Redfish service failed.
    #[error("{op} of {host} through its BMC at {url}: {failure}")]
    Redfish {
        /// What was asked (`power_state`, `fence`, `revive`).
        op: &'static str,
        /// The host's name.
        host: String,
        /// The BMC's URL.
        url: String,
        /// Why.
        failure: Box<Failure>,
    },
    /// The admin vCenter failed.
    #[error("{op} of {host} through the admin vCenter at {url} (VM {vm}): {failure}")]
    Admin {
        /// What was asked.
        op: &'static str,
        /// The host's name.
        host: String,
        /// The admin vCenter's SDK URL.
        url: String,
        /// The admin VM that is the host.
        vm: String,
        /// Why.
        failure: Box<Failure>,
    },
}

impl OobError {
    /// The reason, whichever controller failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            OobError::NotConfigured { .. } => None,
            OobError::Redfish { failure, .. } | OobError::Admin { failure, .. } => Some(failure.as_ref()),
        }
    }

    /// Whether trying again may help: no answer, or a server error; not a refusal, a TLS or
    /// configuration problem, or a change that did not take.
    pub fn is_retryable(&self) -> bool {
        match self.failure() {
            Some(Failure::Timeout { .. } | Failure::Connect(_)) => true,
            Some(Failure::Http { status, .. }) => *status >= 500 || *status == 429 || *status == 409,
            _ => false,
        }
    }

    /// The name of the fault as the audit trail shows it.
    pub fn fault(&self) -> &'static str {
        match (self, self.failure()) {
            (OobError::NotConfigured { .. }, _) => "NoOutOfBand",
            (
                _,
                Some(Failure::Http {
                    status: 401 | 403, ..
                }),
            ) => "OobAuthRefused",
            (_, Some(Failure::Http { .. })) => "OobRefused",
            (_, Some(Failure::Timeout { .. })) => "OobTimeout",
            (_, Some(Failure::Tls(_))) => "OobTls",
            (_, Some(Failure::Connect(_))) => "OobUnreachable",
            (_, Some(Failure::Malformed(_) | Failure::TooLarge { .. })) => "OobMalformed",
            (_, Some(Failure::NotConfirmed { .. })) => "OobNotConfirmed",
            (_, Some(Failure::Config(_))) => "OobConfig",
            (_, Some(Failure::Vcenter(_))) => "OobVcenterFault",
            (_, None) => "OutOfBand",
        }
    }
}

impl From<OobError> for HvError {
    fn from(e: OobError) -> HvError {
        match &e {
            OobError::NotConfigured { .. } => HvError::NotSupported { op: e.to_string() },
            _ => HvError::Api {
                fault: e.fault().to_owned(),
                retryable: e.is_retryable(),
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_host_the_url_and_the_reason() {
        let e = OobError::Redfish {
            op: "fence",
            host: "esx-1".into(),
            url: "https://bmc-1".into(),
            failure: Box::new(Failure::Http {
                status: 401,
                message: "bad credentials".into(),
            }),
        };
        assert_eq!(
            e.to_string(),
            "fence of esx-1 through its BMC at https://bmc-1: HTTP 401: bad credentials"
        );
        assert!(!e.is_retryable());
        let hv = HvError::from(e);
        assert!(
            matches!(&hv, HvError::Api { fault, retryable: false, message } if fault == "OobAuthRefused" && message.contains("esx-1")),
            "{hv:?}"
        );
        let t = OobError::Admin {
            op: "revive",
            host: "esx-2".into(),
            url: "https://admin/sdk".into(),
            vm: "nested-2".into(),
            failure: Box::new(Failure::Timeout {
                after: Duration::from_millis(1500),
            }),
        };
        assert!(
            t.to_string().contains("VM nested-2") && t.to_string().contains("1500ms"),
            "{t}"
        );
        assert!(t.is_retryable());
        assert!(matches!(
            HvError::from(OobError::NotConfigured { host: "h".into() }),
            HvError::NotSupported { .. }
        ));
    }
}
