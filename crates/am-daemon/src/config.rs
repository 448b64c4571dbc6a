//! The daemon's configuration: a TOML file plus `AM_*` environment variables (figment). Nested
//! keys in the environment use `__`: `AM_SUPERVISOR__RESTART_LIMIT=5`,
//! `AM_VCENTER__URL=https://vc/sdk`. Every invalid value is reported with its key and the reason;
//! `am-daemon check-config FILE` prints them all.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A secret read from the environment or a file; never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// Where a secret comes from: an environment variable or a file (never the config file itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of an environment variable holding it.
    pub env: Option<String>,
    /// A file holding it (trailing newline ignored).
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// Reads the secret; `key` names the setting in errors.
    pub fn read(&self, key: &str) -> Result<SecretString, ConfigError> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var)
                .map(SecretString)
                .map_err(|_| ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: format!("environment variable {var} is not set"),
                }),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| SecretString(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: format!("cannot read {}: {e}", path.display()),
                }),
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: "give either env or file, not both".into(),
            }),
            (None, None) => Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason: "missing: give env = \"VAR\" or file = \"/path\"".into(),
            }),
        }
    }
}

/// How to reach vCenter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcenterConfig {
    /// The SDK URL, e.g. `https://vcenter.example/sdk`.
    pub url: String,
    /// The user the manager logs in as (its power operations carry this name in events).
    pub user: String,
    /// Its password.
    #[serde(default)]
    pub password: SecretSource,
    /// A PEM file of CA certificates to trust (instead of the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Pin the server certificate by its SHA-256 thumbprint (hex, colons allowed).
    #[serde(default)]
    pub thumbprint: Option<String>,
    /// Turn TLS verification off. Only when asked for by name; never the default.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

/// Where the HTTP API listens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address (loopback by default).
    pub listen: SocketAddr,
    /// The token required for requests that change state.
    pub token: Option<SecretSource>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            token: None,
        }
    }
}

/// Alarm delivery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// A webhook receiving every alarm change as JSON.
    pub webhook_url: Option<String>,
    /// Send the Alertmanager-compatible payload instead of ours.
    pub alertmanager: bool,
    /// Also post alarms to vCenter as events.
    pub vcenter_events: bool,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// vCenter connection (required by `run`).
    pub vcenter: Option<VcenterConfig>,
    /// The journal database file.
    pub journal: Option<PathBuf>,
    /// Addresses that prove the manager's own network works (e.g. the gateway).
    pub isolation_addresses: Vec<String>,
    /// HTTP API.
    pub api: ApiConfig,
    /// Alarm delivery.
    pub alarms: AlarmConfig,
    /// Supervisor policies.
    pub supervisor: supervisor::Config,
    /// Probe settings.
    pub probe: probe::Settings,
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
        let mut figment = Figment::from(Serialized::defaults(DaemonConfig::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
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
        let cfg: DaemonConfig = Figment::from(Serialized::defaults(DaemonConfig::default()))
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
        let text = include_str!("../../../docs/am.example.toml");
        let cfg = DaemonConfig::from_toml(text).unwrap();
        assert_eq!(cfg.vcenter.unwrap().user, "svc-am@vsphere.local");
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
