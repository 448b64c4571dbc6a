//! What the etcd side needs to know: where etcd is, who we are, and the unit we lead.

use crate::error::{EtcdError, Result};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A password, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// TLS to etcd (`https://` endpoints): the CA that signed the members' certificates, and this
/// daemon's client certificate when the members ask for one (`--client-cert-auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// PEM file of the CA (or CAs) to trust.
    pub ca_file: PathBuf,
    /// PEM file of the client certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM file of its private key.
    pub key_file: Option<PathBuf>,
    /// The name to check the members' certificates against (default: each endpoint's host).
    pub domain: Option<String>,
}

/// How to reach etcd and what to lead there.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Client URLs of the etcd members (`http://10.0.0.1:2379`, ...).
    pub endpoints: Vec<String>,
    /// Every key this program writes starts with this (`/am`).
    pub prefix: String,
    /// The unit of work this daemon leads (one vCenter scope); its keys are under
    /// `<prefix>/<unit>/`.
    pub unit: String,
    /// This daemon's name, written in the leader key (`status` shows it).
    pub name: String,
    /// The lease's time to live: how long a dead leader keeps the unit (whole seconds, at least
    /// 2; etcd rounds shorter ones up).
    pub lease_ttl: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// User and password, when etcd has authentication on.
    pub user: Option<(String, Password)>,
    /// TLS, for `https://` endpoints.
    pub tls: Option<Tls>,
}

impl Settings {
    /// Settings for `endpoints`, unit `unit`, member `name`, with a 5 s lease under `/am`.
    pub fn new(endpoints: Vec<String>, unit: impl Into<String>, name: impl Into<String>) -> Self {
        Settings {
            endpoints,
            prefix: "/am".into(),
            unit: unit.into(),
            name: name.into(),
            lease_ttl: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            user: None,
            tls: None,
        }
    }

    /// Every problem, or nothing.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        if self.endpoints.is_empty() {
            bad.push("no endpoint".to_owned());
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bad.push(format!("endpoint {e:?} is not an http:// or https:// URL"));
            }
            if e.starts_with("https://") != self.tls.is_some() {
                bad.push(format!(
                    "endpoint {e:?}: https:// endpoints need TLS settings (a CA file), http:// ones none"
                ));
            }
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            bad.push("a client certificate needs its key, and a key its certificate".to_owned());
        }
        if !self.prefix.starts_with('/') {
            bad.push(format!("prefix {:?} must start with /", self.prefix));
        }
        for (what, v) in [("unit", &self.unit), ("name", &self.name)] {
            if v.is_empty() || v.contains('/') {
                bad.push(format!("{what} {v:?} must be non-empty and without /"));
            }
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl.subsec_nanos() != 0 {
            bad.push(format!(
                "lease_ttl {:?} must be whole seconds, at least 2 s",
                self.lease_ttl
            ));
        }
        if self.request_timeout >= self.lease_ttl {
            bad.push(format!(
                "request_timeout {:?} must be shorter than lease_ttl {:?}",
                self.request_timeout, self.lease_ttl
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(EtcdError::Settings(bad.join("; ")))
        }
    }

    /// The endpoints, comma-separated (for errors).
    pub(crate) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }
}
