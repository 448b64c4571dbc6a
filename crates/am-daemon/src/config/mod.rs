//! The daemon's configuration: a TOML file plus `AM_*` environment variables (figment). Nested
//! keys in the environment use `__`: `AM_SUPERVISOR__RESTART_LIMIT=5`,
//! `AM_VCENTER__URL=https://vc/sdk`. Every invalid value is reported with its key and the reason;
//! `am-daemon check-config FILE` prints them all.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod etcd;
mod oob;
mod secret;
mod sections;

pub use etcd::EtcdConfig;
pub use oob::{
    AdminReviveConfig, AdminVcenterConfig, BmcAuth, BmcConfig, BmcHostConfig, BmcResolved, REVIVE_RESETS,
};
pub use secret::{SecretSource, SecretString};
pub use sections::{
    AlarmConfig, ApiConfig, ExecutorSettings, HookConfig, HooksConfig, SpareConfig, VcenterConfig,
};

/// The whole configuration. Every section refuses keys it does not know, nested ones included.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// vCenter connection and scope (required by `run`).
    pub vcenter: Option<VcenterConfig>,
    /// The journal database file.
    pub journal: Option<PathBuf>,
    /// Addresses that prove the manager's own network works (e.g. the gateway).
    pub isolation_addresses: Vec<String>,
    /// HTTP API.
    pub api: ApiConfig,
    /// Alarm delivery.
    pub alarms: AlarmConfig,
    /// How many actions run against vCenter at once.
    pub executor: ExecutorSettings,
    /// What to probe: hosts' management addresses, guests' addresses.
    pub targets: am_vsphere::Targets,
    /// Restart priorities by VM name, folder and resource pool.
    pub priorities: am_vsphere::Priorities,
    /// The vCenter custom attributes read per VM (priority, backup, probe, address).
    pub attributes: am_vsphere::Attributes,
    /// How VMs' demand and hosts' capacity are counted.
    pub capacity: am_vsphere::Capacity,
    /// Spare hosts that may be added when capacity runs out, by name.
    pub spares: std::collections::BTreeMap<String, SpareConfig>,
    /// Out-of-band revival and fencing commands.
    pub hooks: HooksConfig,
    /// Hosts' BMCs (Redfish): power read, fenced and revived out of band.
    pub bmc: BmcConfig,
    /// An admin vCenter whose VMs are the managed hosts (nested ESXi).
    pub admin_vcenter: Option<AdminVcenterConfig>,
    /// Supervisor policies.
    pub supervisor: supervisor::Config,
    /// Probe settings.
    pub probe: probe::Settings,
    /// Manager HA on etcd: leader election per unit, the journal in etcd (`etcd` cargo feature).
    pub etcd: Option<EtcdConfig>,
}

/// Top-level keys that are plain values (the others are sections, reached with `__`).
const TOP_LEVEL_KEYS: [&str; 2] = ["journal", "isolation_addresses"];

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed, or a value has the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A value parses but makes no sense.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, dotted (e.g. `supervisor.storm_fraction`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Several problems.
    #[error("{} problems:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl DaemonConfig {
    /// Loads `file` (if given) and `AM_*` environment variables over the defaults, then checks
    /// every value.
    pub fn load(file: Option<&Path>) -> Result<DaemonConfig, ConfigError> {
        let text = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Parse(if path.exists() {
                    format!("cannot read config file {}: {e}", path.display())
                } else {
                    format!("config file {} does not exist", path.display())
                })
            })?),
            None => None,
        };
        let mut figment = Figment::from(Serialized::defaults(defaults_under(text.as_deref())));
        if let Some(path) = file {
            figment = figment.merge(Toml::file(path));
        }
        // Only variables that name a config key: nested ones (`AM_SUPERVISOR__RESTART_LIMIT`) or a
        // top-level key. Others under the prefix (`AM_VCENTER_PASSWORD`, a secret a
        // `password = { env = ... }` points at) are not config.
        figment = figment.merge(Env::prefixed("AM_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            k.contains("__") || k.contains('.') || TOP_LEVEL_KEYS.contains(&k.as_str())
        }));
        let cfg: DaemonConfig = figment.extract().map_err(|e| ConfigError::Parse(describe(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads from TOML text (tests, `check-config` on stdin).
    pub fn from_toml(text: &str) -> Result<DaemonConfig, ConfigError> {
        let cfg: DaemonConfig = Figment::from(Serialized::defaults(defaults_under(Some(text))))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(describe(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every problem with values that parse, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad: Vec<ConfigError> = self
            .supervisor
            .validate()
            .into_iter()
            .map(|b| ConfigError::Invalid {
                key: format!("supervisor.{}", b.key),
                reason: b.reason,
            })
            .collect();
        if let Err(e) = self.probe.validate() {
            bad.push(ConfigError::Invalid {
                key: "probe".into(),
                reason: e.to_string(),
            });
        }
        if let Some(e) = &self.etcd {
            e.validate(self.journal.is_some(), &mut bad);
        }
        if let Some(vc) = &self.vcenter {
            if !(vc.url.starts_with("https://") || vc.url.starts_with("http://")) {
                bad.push(ConfigError::Invalid {
                    key: "vcenter.url".into(),
                    reason: format!(
                        "`{}` is not an http(s) URL (e.g. https://vcenter.example/sdk)",
                        vc.url
                    ),
                });
            }
            if vc.user.trim().is_empty() {
                bad.push(ConfigError::Invalid {
                    key: "vcenter.user".into(),
                    reason: "must not be empty".into(),
                });
            }
            if let Some(t) = &vc.thumbprint {
                let hex: String = t.chars().filter(|c| *c != ':').collect();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    bad.push(ConfigError::Invalid {
                        key: "vcenter.thumbprint".into(),
                        reason: "must be a SHA-256 fingerprint: 64 hex digits, colons allowed".into(),
                    });
                }
            }
            if vc.insecure_skip_tls_verify && (vc.thumbprint.is_some() || vc.ca_file.is_some()) {
                bad.push(ConfigError::Invalid {
                    key: "vcenter.insecure_skip_tls_verify".into(),
                    reason: "contradicts ca_file/thumbprint: choose one".into(),
                });
            }
        }
        for (i, a) in self.isolation_addresses.iter().enumerate() {
            if probe::parse_probe_addr(a, None).is_err() {
                bad.push(ConfigError::Invalid {
                    key: format!("isolation_addresses[{i}]"),
                    reason: format!("`{a}` is not an IP address (or tcp:IP:PORT)"),
                });
            }
        }
        self.validate_vsphere(&mut bad);
        oob::validate(&self.bmc, self.admin_vcenter.as_ref(), &mut bad);
        for (key, n) in [
            ("executor.max_in_flight", self.executor.max_in_flight),
            ("executor.per_host", self.executor.per_host),
        ] {
            if n == 0 {
                bad.push(ConfigError::Invalid {
                    key: key.into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        if let Some(url) = &self.alarms.webhook_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bad.push(ConfigError::Invalid {
                    key: "alarms.webhook_url".into(),
                    reason: format!("`{url}` is not an http(s) URL"),
                });
            }
        }
        match bad.len() {
            0 => Ok(()),
            1 => Err(bad.remove(0)),
            _ => Err(ConfigError::Many(bad)),
        }
    }
}

impl DaemonConfig {
    /// The adapter's sections: scope, targets, priorities, capacity, spares, hooks.
    fn validate_vsphere(&self, bad: &mut Vec<ConfigError>) {
        let mut check = |ok: bool, key: String, reason: String| {
            if !ok {
                bad.push(ConfigError::Invalid { key, reason });
            }
        };
        if let Some(vc) = &self.vcenter {
            for (i, c) in vc.clusters.iter().enumerate() {
                check(
                    !c.trim().is_empty(),
                    format!("vcenter.clusters[{i}]"),
                    "must name a cluster".into(),
                );
            }
            check(
                vc.max_response_mib >= 1,
                "vcenter.max_response_mib".into(),
                "must be at least 1".into(),
            );
            check(
                !vc.health_interval.is_zero() && !vc.health_timeout.is_zero(),
                "vcenter.health_interval".into(),
                "health_interval and health_timeout must be longer than 0s".into(),
            );
            check(
                vc.call_timeout >= vc.health_timeout,
                "vcenter.call_timeout".into(),
                "must be at least health_timeout".into(),
            );
            check(
                vc.update_wait_timeout >= vc.call_timeout,
                "vcenter.update_wait_timeout".into(),
                "must be at least call_timeout".into(),
            );
        }
        for (host, a) in &self.targets.hosts.addresses {
            check(
                probe::parse_probe_addr(a, None).is_ok(),
                format!("targets.hosts.addresses.{host}"),
                format!("`{a}` is not an IP address (or tcp:IP:PORT)"),
            );
        }
        for (i, r) in self.priorities.rules.iter().enumerate() {
            check(
                r.vms.is_some() || r.folder.is_some() || r.pool.is_some(),
                format!("priorities.rules[{i}]"),
                "needs at least one of vms, folder or pool".into(),
            );
        }
        let ratio = self.capacity.memory_overcommit;
        check(
            ratio.is_finite() && (1.0..=10.0).contains(&ratio),
            "capacity.memory_overcommit".into(),
            format!("{ratio} is not between 1.0 (no overcommit) and 10.0"),
        );
        for (name, spare) in &self.spares {
            check(
                !spare.address.trim().is_empty(),
                format!("spares.{name}.address"),
                "must not be empty".into(),
            );
            check(
                !spare.user.trim().is_empty(),
                format!("spares.{name}.user"),
                "must not be empty".into(),
            );
            check(
                spare.password.env.is_some() != spare.password.file.is_some(),
                format!("spares.{name}.password"),
                "give either env = \"VAR\" or file = \"/path\"".into(),
            );
        }
        for (key, hook) in [
            ("hooks.revive", &self.hooks.revive),
            ("hooks.fence", &self.hooks.fence),
        ] {
            if let Some(h) = hook {
                check(
                    h.command.first().is_some_and(|c| !c.trim().is_empty()),
                    format!("{key}.command"),
                    "must name a program".into(),
                );
                check(
                    !h.timeout.is_zero(),
                    format!("{key}.timeout"),
                    "must be longer than 0s".into(),
                );
            }
        }
        if !self.spares.is_empty() {
            for (i, s) in self.supervisor.spares.iter().enumerate() {
                check(
                    self.spares.contains_key(s),
                    format!("supervisor.spares[{i}]"),
                    format!("`{s}` is not a spare of the [spares] section"),
                );
            }
        }
    }

    /// For each secret the configuration names: where it comes from and whether it can be read
    /// (never its value).
    pub fn secret_checks(&self) -> Vec<String> {
        let mut sources: Vec<(String, &SecretSource)> = Vec::new();
        if let Some(vc) = &self.vcenter {
            sources.push(("vcenter.password".into(), &vc.password));
        }
        if let Some(t) = &self.api.token {
            sources.push(("api.token".into(), t));
        }
        if let Some(s) = self.etcd.as_ref().and_then(|e| e.secrets()) {
            sources.push(s);
        }
        for (name, s) in &self.spares {
            sources.push((format!("spares.{name}.password"), &s.password));
        }
        sources.extend(oob::secret_sources(&self.bmc, self.admin_vcenter.as_ref()));
        sources
            .into_iter()
            .map(|(key, src)| {
                let from = match (&src.env, &src.file) {
                    (Some(v), _) => format!("environment variable {v}"),
                    (None, Some(f)) => format!("file {}", f.display()),
                    (None, None) => "nowhere".into(),
                };
                match src.read(&key) {
                    Ok(_) => format!("{key}: from {from}: readable"),
                    Err(e) => format!("{key}: from {from}: NOT READABLE: {e}"),
                }
            })
            .collect()
    }

    /// The settings in effect, as TOML: the file and the environment over the defaults. Secrets
    /// show as where they come from (`env`/`file`), never as values.
    pub fn effective(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self)
            .map_err(|e| ConfigError::Parse(format!("cannot print the settings: {e}")))
    }
}

/// The defaults the file is merged over. A detector table the file gives replaces the default
/// one as a whole (its keys depend on its `kind`), so the default's is left out.
fn defaults_under(text: Option<&str>) -> toml::Value {
    let mut defaults =
        toml::Value::try_from(DaemonConfig::default()).unwrap_or(toml::Value::Table(toml::Table::new()));
    let user: Option<toml::Value> = text.and_then(|t| toml::from_str(t).ok());
    for kind in ["hosts", "guests"] {
        let given = user
            .as_ref()
            .and_then(|u| u.get("probe"))
            .and_then(|p| p.get(kind))
            .is_some_and(|t| t.get("detector").is_some());
        if given
            && let Some(t) = defaults
                .get_mut("probe")
                .and_then(|p| p.get_mut(kind))
                .and_then(toml::Value::as_table_mut)
        {
            t.remove("detector");
        }
    }
    defaults
}

/// figment's error with the key path it failed on.
fn describe(e: &figment::Error) -> String {
    e.clone()
        .into_iter()
        .map(|err| {
            let key = err.path.join(".");
            let source = err
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            match (key.is_empty(), source.is_empty()) {
                (false, false) => format!("{key}: {} (from {source})", err.kind),
                (false, true) => format!("{key}: {}", err.kind),
                _ => err.kind.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's own error
    fn the_environment_overrides_the_file_and_secret_variables_are_not_config() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("am.toml", "[supervisor]\nrestart_limit = 3\nhang_after = \"20s\"")?;
            jail.set_env("AM_SUPERVISOR__HANG_AFTER", "7s");
            jail.set_env("AM_JOURNAL", "/tmp/journal.db");
            jail.set_env("AM_VCENTER_PASSWORD", "not-config");
            let cfg = DaemonConfig::load(Some(Path::new("am.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.supervisor.hang_after, std::time::Duration::from_secs(7));
            assert_eq!(cfg.supervisor.restart_limit, 3);
            assert_eq!(cfg.journal, Some(PathBuf::from("/tmp/journal.db")));
            jail.set_env("AM_SUPERVISOR__RESTART_LIMIT", "0");
            let e = DaemonConfig::load(Some(Path::new("am.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("supervisor.restart_limit"), "{e}");
            let e = DaemonConfig::load(Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("missing.toml") && e.contains("does not exist"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../../docs/am.example.toml");
        let cfg = DaemonConfig::from_toml(text).unwrap();
        assert_eq!(cfg.vcenter.unwrap().user, "svc-am@vsphere.local");
    }

    /// The example with every optional section filled in: spares, hooks, a priority rule, an
    /// explicit host address, a token, a webhook.
    fn everything() -> String {
        let example = include_str!("../../../../docs/am.example.toml");
        example.replace("[spares]\n", "[spares.spare-1]\naddress = \"esx-9\"\nuser = \"root\"\npassword = { env = \"P\" }\n")
            .replace("[hooks]\n", "[hooks]\nrevive = { command = [\"/bin/true\"], timeout = \"5s\" }\nfence = { command = [\"/bin/true\"] }\n")
            .replace("rules = []\n", "rules = [{ vms = \"db-*\", priority = \"high\" }]\n")
            .replace("[targets.hosts.addresses]", "[targets.hosts.addresses]\n\"esx-1\" = \"10.0.0.1\"")
            .replace("[api]\n", "[api]\ntoken = { file = \"/etc/am/token\" }\n")
            .replace("[alarms]\n", "[alarms]\nwebhook_url = \"https://alerts.example/am\"\n")
            .replace("[bmc.hosts]\n", "[bmc.hosts.\"esx-1\"]\nurl = \"https://10.0.0.1\"\nuser = \"root\"\npassword = { env = \"B\" }\n")
            + "\n[admin_vcenter]\nurl = \"https://admin/sdk\"\nuser = \"root\"\npassword = { env = \"A\" }\nhosts = { \"esx-2\" = \"nested-esx-2\" }\n"
    }

    /// Every table of `v` (dotted paths; array elements as `key[i]`), except maps whose keys are
    /// names (hosts by name, spares by name).
    fn tables(v: &toml::Value, path: &str, out: &mut Vec<String>) {
        const MAPS: [&str; 4] = [
            "targets.hosts.addresses",
            "spares",
            "bmc.hosts",
            "admin_vcenter.hosts",
        ];
        match v {
            toml::Value::Table(t) => {
                if !MAPS.contains(&path) {
                    out.push(path.to_owned());
                }
                for (k, child) in t {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    tables(child, &p, out);
                }
            }
            toml::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    tables(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    /// The table at `path` inside `v`.
    fn table_at<'a>(v: &'a mut toml::Value, path: &str) -> &'a mut toml::Table {
        let mut cur = v;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let (key, index) = match part.split_once('[') {
                Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            cur = cur.get_mut(key).unwrap();
            if let Some(i) = index {
                cur = cur.get_mut(i).unwrap();
            }
        }
        cur.as_table_mut().unwrap()
    }

    #[test]
    fn every_section_refuses_an_unknown_key_nested_ones_included() {
        let text = everything();
        DaemonConfig::from_toml(&text).unwrap();
        let full: toml::Value = toml::from_str(&text).unwrap();
        let mut paths = Vec::new();
        tables(&full, "", &mut paths);
        for expected in [
            "",
            "vcenter",
            "vcenter.password",
            "targets.hosts",
            "targets.guests",
            "priorities.rules[0]",
            "attributes",
            "capacity",
            "spares.spare-1",
            "spares.spare-1.password",
            "hooks",
            "hooks.revive",
            "supervisor",
            "supervisor.restart_order",
            "supervisor.placement",
            "supervisor.placement.host_reserve",
            "supervisor.backup",
            "probe",
            "probe.hosts",
            "probe.hosts.detector",
            "probe.guests.detector",
            "api",
            "api.token",
            "alarms",
            "bmc",
            "bmc.hosts.esx-1",
            "bmc.hosts.esx-1.password",
            "admin_vcenter",
            "admin_vcenter.password",
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} is covered: {paths:?}"
            );
        }
        for path in &paths {
            let mut v = full.clone();
            table_at(&mut v, path).insert("zz_typo".into(), toml::Value::Integer(1));
            let e = DaemonConfig::from_toml(&toml::to_string(&v).unwrap())
                .err()
                .unwrap_or_else(|| panic!("an unknown key in [{path}] is accepted"))
                .to_string();
            assert!(e.contains("zz_typo"), "[{path}]: the error names the key: {e}");
        }
    }

    /// Every key the daemon has (its settings in effect, secrets aside) is written, with its
    /// default, in the example: the example documents them all.
    #[test]
    fn the_example_documents_every_key() {
        let text = include_str!("../../../../docs/am.example.toml");
        let example: toml::Value = toml::from_str(text).unwrap();
        let effective: toml::Value = toml::from_str(
            &DaemonConfig::from_toml(&everything())
                .unwrap()
                .effective()
                .unwrap(),
        )
        .unwrap();
        fn leaves(v: &toml::Value, path: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, child) in t {
                    leaves(
                        child,
                        &if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        },
                        out,
                    );
                }
            } else {
                out.push(path.to_owned());
            }
        }
        let mut keys = Vec::new();
        leaves(&effective, "", &mut keys);
        let optional = [
            "spares.",
            "hooks.",
            "api.token",
            "alarms.webhook_url",
            "targets.hosts.addresses.",
            "vcenter.password.",
            "bmc.hosts.",
            "admin_vcenter.",
        ];
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !optional.iter().any(|o| k.starts_with(o)))
            .filter(|k| {
                let mut cur = Some(&example);
                for part in k.split('.') {
                    cur = cur.and_then(|c| c.get(part));
                }
                cur.is_none()
            })
            .collect();
        assert!(missing.is_empty(), "keys the example does not show: {missing:?}");
        assert_eq!(
            DaemonConfig::from_toml(text).unwrap().supervisor,
            supervisor::Config {
                manager_user: "am-manager".into(),
                ..supervisor::Config::default()
            },
            "the example's supervisor values are the defaults"
        );
    }

    #[test]
    fn the_new_keys_values_that_make_no_sense_are_each_named() {
        let text = r#"
            [vcenter]
            url = "https://vc/sdk"
            user = "am"
            clusters = [" "]
            max_response_mib = 0
            call_timeout = "1s"
            health_timeout = "3s"
            update_wait_timeout = "0s"
            [targets.hosts.addresses]
            "esx-1" = "not-an-ip"
            [[priorities.rules]]
            priority = "high"
            [capacity]
            memory_overcommit = 0.5
            [spares.spare-1]
            address = ""
            user = "root"
            password = {}
            [hooks]
            revive = { command = [] }
            fence = { command = ["/bin/true"], timeout = "0s" }
            [supervisor]
            spares = ["nope"]
            lock_recheck = "0s"
            [supervisor.backup]
            tasks_per_minute = 0
            keep_clones = 0
            clone_every = "10s"
        "#;
        let e = DaemonConfig::from_toml(text).unwrap_err().to_string();
        for key in [
            "vcenter.clusters[0]",
            "vcenter.max_response_mib",
            "vcenter.call_timeout",
            "vcenter.update_wait_timeout",
            "targets.hosts.addresses.esx-1",
            "priorities.rules[0]",
            "capacity.memory_overcommit",
            "spares.spare-1.address",
            "spares.spare-1.password",
            "hooks.revive.command",
            "hooks.fence.timeout",
            "supervisor.spares[0]",
            "supervisor.lock_recheck",
            "supervisor.backup.tasks_per_minute",
            "supervisor.backup.keep_clones",
            "supervisor.backup.clone_every",
        ] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let cfg = DaemonConfig::from_toml("").unwrap();
        assert_eq!(cfg, DaemonConfig::default());
        assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:8480");
    }

    #[test]
    fn a_wrong_type_names_its_key() {
        let e = DaemonConfig::from_toml("[supervisor]\nrestart_limit = \"many\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("supervisor.restart_limit"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_its_key_and_the_units() {
        let e = DaemonConfig::from_toml("[supervisor]\nrecovery_grace = \"3 weeks\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("supervisor.recovery_grace") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let e = DaemonConfig::from_toml("[vcenter]\nurl = \"https://vc/sdk\"\nuser = \"am\"\npasword = {}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pasword"), "{e}");
    }

    #[test]
    fn values_that_make_no_sense_are_each_named() {
        let text = r#"
            isolation_addresses = ["gateway"]
            [supervisor]
            storm_fraction = 2.0
            [vcenter]
            url = "vc.example"
            user = ""
            thumbprint = "abc"
        "#;
        let e = DaemonConfig::from_toml(text).unwrap_err().to_string();
        for key in [
            "supervisor.storm_fraction",
            "vcenter.url",
            "vcenter.user",
            "vcenter.thumbprint",
            "isolation_addresses[0]",
        ] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
    }

    #[test]
    fn insecure_is_never_the_default_and_contradictions_are_refused() {
        let ok = DaemonConfig::from_toml("[vcenter]\nurl = \"https://vc/sdk\"\nuser = \"am\"").unwrap();
        assert!(!ok.vcenter.unwrap().insecure_skip_tls_verify);
        let thumb = "ab".repeat(32);
        let text = format!(
            "[vcenter]\nurl = \"https://vc/sdk\"\nuser = \"am\"\nthumbprint = \"{thumb}\"\ninsecure_skip_tls_verify = true"
        );
        let e = DaemonConfig::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("vcenter.insecure_skip_tls_verify"), "{e}");
    }

    #[test]
    fn secrets_come_from_env_or_file_and_never_print() {
        let dir = std::env::temp_dir().join(format!("am-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let s = SecretSource {
            env: None,
            file: Some(dir.clone()),
        }
        .read("vcenter.password")
        .unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "SecretString(***)");
        let _ = std::fs::remove_file(&dir);
        let e = SecretSource {
            env: Some("AM_TEST_NO_SUCH_VAR_X".into()),
            file: None,
        }
        .read("vcenter.password");
        assert!(e.unwrap_err().to_string().contains("vcenter.password"));
        let e = SecretSource::default().read("api.token").unwrap_err().to_string();
        assert!(e.contains("api.token") && e.contains("missing"), "{e}");
    }
}
