//! `[etcd]`: manager HA (issue 13). Several daemons with the same `unit` elect one leader on
//! etcd; only it acts; the journal is in etcd instead of the `journal` file. Parsed in every
//! build; `run` needs the `etcd` cargo feature to use it (and says so when it is missing).

use super::{ConfigError, SecretSource};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How to reach etcd and which unit of work to lead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://10.0.0.1:2379`; every member of the cluster).
    pub endpoints: Vec<String>,
    /// Every key the manager writes starts with this.
    pub prefix: String,
    /// The unit of work (one vCenter scope): daemons with the same unit share it, one leading.
    pub unit: String,
    /// Sharding: the units this daemon shares with the others, each a cluster of `[vcenter]` by
    /// name (one engine per unit it leads; `unit` is then unused). Empty: the one `unit`.
    pub units: Vec<String>,
    /// This daemon's name in the leader key (default: the host name).
    pub name: Option<String>,
    /// The lease's time to live: how long a dead leader holds the unit (whole seconds, >= 2).
    #[serde(with = "am_core::time::duration_str")]
    pub lease_ttl: Duration,
    /// At least this much of the lease must be left to start an action (`0s`, the default: a
    /// third of `lease_ttl`; less than two thirds of it, what a renewal every third leaves).
    #[serde(with = "am_core::time::duration_str")]
    pub action_margin: Duration,
    /// How often a standby looks whether the leader key is gone.
    #[serde(with = "am_core::time::duration_str")]
    pub poll_interval: Duration,
    /// How long connecting may take.
    #[serde(with = "am_core::time::duration_str")]
    pub connect_timeout: Duration,
    /// How long one request may take (shorter than `lease_ttl`).
    #[serde(with = "am_core::time::duration_str")]
    pub request_timeout: Duration,
    /// The etcd user, when etcd has authentication on.
    pub user: Option<String>,
    /// Its password (from the environment or a file, never the configuration).
    pub password: Option<SecretSource>,
    /// TLS (`https://` endpoints): the CA of the members' certificates (PEM).
    pub ca_file: Option<std::path::PathBuf>,
    /// This daemon's client certificate, when the members ask for one (PEM).
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/am".into(),
            unit: "default".into(),
            units: Vec::new(),
            name: None,
            lease_ttl: Duration::from_secs(5),
            action_margin: Duration::ZERO,
            poll_interval: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl EtcdConfig {
    /// The margin an action needs (see `action_margin`).
    pub fn margin(&self) -> Duration {
        if self.action_margin.is_zero() {
            self.lease_ttl / 3
        } else {
            self.action_margin
        }
    }

    /// This daemon's name: `name`, else the host name, else `am-<pid>`.
    pub fn member_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("am-{}", std::process::id()))
        })
    }

    /// Every problem, each naming its key.
    pub(super) fn validate(&self, journal_file: bool, bad: &mut Vec<ConfigError>) {
        let mut check = |ok: bool, key: &str, reason: String| {
            if !ok {
                bad.push(ConfigError::Invalid {
                    key: format!("etcd.{key}"),
                    reason,
                });
            }
        };
        check(
            !self.endpoints.is_empty(),
            "endpoints",
            "name at least one member".into(),
        );
        for e in &self.endpoints {
            check(
                e.starts_with("http://") || e.starts_with("https://"),
                "endpoints",
                format!("`{e}` is not an http:// or https:// URL"),
            );
            check(
                e.starts_with("https://") == self.ca_file.is_some(),
                "ca_file",
                format!("`{e}`: https:// endpoints need ca_file, http:// ones take none"),
            );
        }
        check(
            self.cert_file.is_some() == self.key_file.is_some(),
            "cert_file",
            "give cert_file and key_file together".into(),
        );
        check(self.prefix.starts_with('/'), "prefix", "must start with /".into());
        check(
            !self.unit.is_empty() && !self.unit.contains('/'),
            "unit",
            "must be non-empty, without /".into(),
        );
        for u in &self.units {
            check(
                !u.is_empty() && !u.contains('/'),
                "units",
                format!("`{u}` must be a cluster name, non-empty, without /"),
            );
        }
        check(
            self.lease_ttl >= Duration::from_secs(2) && self.lease_ttl.subsec_nanos() == 0,
            "lease_ttl",
            "must be whole seconds, at least 2s".into(),
        );
        check(
            self.margin() < self.lease_ttl * 2 / 3 && !self.margin().is_zero(),
            "action_margin",
            "must be longer than 0s and shorter than two thirds of lease_ttl".into(),
        );
        check(
            self.request_timeout < self.lease_ttl,
            "request_timeout",
            "must be shorter than lease_ttl".into(),
        );
        check(
            self.user.is_some() == self.password.is_some(),
            "user",
            "give user and password together".into(),
        );
        check(
            !journal_file,
            "endpoints",
            "with [etcd] the journal is in etcd: remove the top-level `journal` file".into(),
        );
    }

    /// The secret it names, for `check-config`.
    pub(super) fn secrets(&self) -> Option<(String, &SecretSource)> {
        self.password.as_ref().map(|p| ("etcd.password".to_owned(), p))
    }
}

/// The section as a user writes it.
#[cfg(test)]
mod tests {
    use super::super::DaemonConfig;

    #[test]
    fn the_section_parses_refuses_unknown_keys_and_checks_values() {
        let cfg = DaemonConfig::from_toml(
            "[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\nunit = \"vc1\"\nname = \"am-a\"\nlease_ttl = \"5s\"\n",
        )
        .unwrap();
        let e = cfg.etcd.unwrap();
        assert_eq!((e.unit.as_str(), e.lease_ttl.as_secs()), ("vc1", 5));
        assert_eq!(e.margin().as_millis(), 1666, "a third of the TTL by default");
        let err = DaemonConfig::from_toml("[etcd]\nendpoint = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("endpoint"), "{err}");
        let err = DaemonConfig::from_toml(
            "journal = \"/var/lib/am/j.db\"\n[etcd]\nlease_ttl = \"1s\"\nuser = \"am\"\n",
        )
        .unwrap_err()
        .to_string();
        for want in ["etcd.lease_ttl", "etcd.user", "journal"] {
            assert!(err.contains(want), "{want} in {err}");
        }
        let err = DaemonConfig::from_toml("[etcd]\nunits = [\"c0\", \"a/b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcd.units") && err.contains("a/b"), "{err}");
        let err = DaemonConfig::from_toml(
            "[etcd]\nendpoints = [\"https://10.0.0.1:2379\"]\ncert_file = \"/c.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("etcd.ca_file") && err.contains("etcd.cert_file"),
            "{err}"
        );
        let tls = DaemonConfig::from_toml(
            "[etcd]\nendpoints = [\"https://10.0.0.1:2379\"]\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
        );
        assert!(tls.is_ok(), "{tls:?}");
        let ok = DaemonConfig::from_toml("[etcd]\nunits = [\"c0\", \"c1\"]\n").unwrap();
        assert_eq!(ok.etcd.unwrap().units.len(), 2);
    }
}
