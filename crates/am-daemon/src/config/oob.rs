//! Out-of-band host control: `[bmc]` (defaults, and `[bmc.hosts."<host name>"]` per host:
//! its BMC's Redfish service) and `[admin_vcenter]` (a vCenter whose VMs are the managed hosts).
//! Hosts are named as the managed vCenter names them.

use super::{ConfigError, SecretSource};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How the manager logs in to a BMC.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BmcAuth {
    /// HTTP basic authentication on every request.
    #[default]
    Basic,
    /// A Redfish session (`SessionService/Sessions`, then `X-Auth-Token`), deleted at stop.
    Session,
}

/// The BMCs: defaults for all, and each host's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BmcConfig {
    /// The user on every BMC that does not name its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its password, for every BMC that does not name its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    /// Basic authentication or a Redfish session.
    pub auth: BmcAuth,
    /// A PEM file of CA certificates to trust (instead of the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Pin the BMC's certificate by its SHA-256 thumbprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Turn TLS verification off (labs only; only when asked for by name).
    pub insecure_skip_tls_verify: bool,
    /// The reset type that revives a host that is on (one that is off gets `On`).
    pub reset_type: String,
    /// One request to a BMC at most this long.
    #[serde(with = "am_core::time::duration_str")]
    pub timeout: Duration,
    /// A fence (or revival) waits at most this long for the BMC to read the host off (on).
    #[serde(with = "am_core::time::duration_str")]
    pub confirm_timeout: Duration,
    /// Every out-of-band controller (BMCs and the admin vCenter) is read this often; a host
    /// vCenter loses is read at once.
    #[serde(with = "am_core::time::duration_str")]
    pub poll_interval: Duration,
    /// Each host's BMC, by the host's name in vCenter.
    pub hosts: BTreeMap<String, BmcHostConfig>,
}

impl Default for BmcConfig {
    fn default() -> Self {
        BmcConfig {
            user: None,
            password: None,
            auth: BmcAuth::Basic,
            ca_file: None,
            thumbprint: None,
            insecure_skip_tls_verify: false,
            reset_type: "ForceRestart".into(),
            timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            hosts: BTreeMap::new(),
        }
    }
}

/// One host's BMC; what it does not say comes from `[bmc]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcHostConfig {
    /// The BMC's base URL, e.g. `https://10.0.0.5` (its Redfish service root is `/redfish/v1`).
    pub url: String,
    /// The system's id under `/redfish/v1/Systems/` (or its path); default: the BMC's only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The user (default: `bmc.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password (default: `bmc.password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    /// Basic or session (default: `bmc.auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BmcAuth>,
    /// CA file (default: `bmc.ca_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Pinned thumbprint (default: `bmc.thumbprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Insecure (default: `bmc.insecure_skip_tls_verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// The revival reset type (default: `bmc.reset_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_type: Option<String>,
}

/// One host's BMC settings with the defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmcResolved {
    /// The host's name.
    pub host: String,
    /// Base URL.
    pub url: String,
    /// System id or path.
    pub system: Option<String>,
    /// User.
    pub user: String,
    /// Password source.
    pub password: SecretSource,
    /// Authentication.
    pub auth: BmcAuth,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Pin.
    pub thumbprint: Option<String>,
    /// Insecure.
    pub insecure_skip_tls_verify: bool,
    /// Revival reset type.
    pub reset_type: String,
}

impl BmcConfig {
    /// Each host's settings with `[bmc]`'s defaults filled in (what is still missing is left
    /// empty for `validate` to name).
    pub fn resolved(&self) -> Vec<BmcResolved> {
        self.hosts
            .iter()
            .map(|(host, h)| {
                let (ca_file, thumbprint, insecure) = if h.ca_file.is_some()
                    || h.thumbprint.is_some()
                    || h.insecure_skip_tls_verify.is_some()
                {
                    (
                        h.ca_file.clone(),
                        h.thumbprint.clone(),
                        h.insecure_skip_tls_verify.unwrap_or(false),
                    )
                } else {
                    (
                        self.ca_file.clone(),
                        self.thumbprint.clone(),
                        self.insecure_skip_tls_verify,
                    )
                };
                BmcResolved {
                    host: host.clone(),
                    url: h.url.clone(),
                    system: h.system.clone(),
                    user: h.user.clone().or_else(|| self.user.clone()).unwrap_or_default(),
                    password: h
                        .password
                        .clone()
                        .or_else(|| self.password.clone())
                        .unwrap_or_default(),
                    auth: h.auth.unwrap_or(self.auth),
                    ca_file,
                    thumbprint,
                    insecure_skip_tls_verify: insecure,
                    reset_type: h.reset_type.clone().unwrap_or_else(|| self.reset_type.clone()),
                }
            })
            .collect()
    }
}

/// How the admin vCenter revives a nested host.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminReviveConfig {
    /// Revert the host's VM to its snapshot, then power it on if that left it off.
    #[default]
    Revert,
    /// Reset the VM (power it on if off).
    PowerCycle,
}

/// A vCenter whose VMs are the managed hosts (nested ESXi).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminVcenterConfig {
    /// Its SDK URL.
    pub url: String,
    /// The user.
    pub user: String,
    /// Its password (environment variable or file).
    #[serde(default)]
    pub password: SecretSource,
    /// A PEM file of CA certificates to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Pin its certificate by SHA-256 thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Turn TLS verification off (labs only).
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Managed host name -> the admin VM that is it.
    pub hosts: BTreeMap<String, String>,
    /// The snapshot revival reverts to (default: the VM's current snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// `revert` or `power_cycle`.
    #[serde(default)]
    pub revive: AdminReviveConfig,
    /// One task (revert, power on or off) at most this long.
    #[serde(default = "ten_minutes", with = "am_core::time::duration_str")]
    pub task_timeout: Duration,
}

fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}

/// Revival reset types a BMC may be told to use on a host that is on.
pub const REVIVE_RESETS: [&str; 4] = ["ForceRestart", "GracefulRestart", "PowerCycle", "PushPowerButton"];

fn http_url(u: &str) -> bool {
    u.starts_with("https://") || u.starts_with("http://")
}

fn thumbprint_ok(t: &str) -> bool {
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

fn one_source(s: &SecretSource) -> bool {
    s.env.is_some() != s.file.is_some()
}

/// Every problem of `[bmc]` and `[admin_vcenter]`, each naming its key.
pub(super) fn validate(bmc: &BmcConfig, admin: Option<&AdminVcenterConfig>, bad: &mut Vec<ConfigError>) {
    let mut check = |ok: bool, key: String, reason: String| {
        if !ok {
            bad.push(ConfigError::Invalid { key, reason });
        }
    };
    for (key, d) in [
        ("bmc.timeout", bmc.timeout),
        ("bmc.confirm_timeout", bmc.confirm_timeout),
        ("bmc.poll_interval", bmc.poll_interval),
    ] {
        check(!d.is_zero(), key.into(), "must be longer than 0s".into());
    }
    check(
        REVIVE_RESETS.contains(&bmc.reset_type.as_str()),
        "bmc.reset_type".into(),
        format!("`{}` is not one of {}", bmc.reset_type, REVIVE_RESETS.join(", ")),
    );
    if let Some(t) = &bmc.thumbprint {
        check(
            thumbprint_ok(t),
            "bmc.thumbprint".into(),
            "must be a SHA-256 fingerprint: 64 hex digits, colons allowed".into(),
        );
    }
    if let Some(p) = &bmc.password {
        check(
            one_source(p),
            "bmc.password".into(),
            "give either env = \"VAR\" or file = \"/path\"".into(),
        );
    }
    check(
        !(bmc.insecure_skip_tls_verify && (bmc.ca_file.is_some() || bmc.thumbprint.is_some())),
        "bmc.insecure_skip_tls_verify".into(),
        "contradicts ca_file/thumbprint: choose one".into(),
    );
    for (name, h) in &bmc.hosts {
        let key = |k: &str| format!("bmc.hosts.{name}.{k}");
        check(
            http_url(&h.url),
            key("url"),
            format!("`{}` is not an http(s) URL (e.g. https://10.0.0.5)", h.url),
        );
        check(
            h.user
                .as_deref()
                .or(bmc.user.as_deref())
                .is_some_and(|u| !u.trim().is_empty()),
            key("user"),
            "missing: give user here or in [bmc]".into(),
        );
        match h.password.as_ref().or(bmc.password.as_ref()) {
            None => check(
                false,
                key("password"),
                "missing: give password = { env = \"VAR\" } or { file = \"/path\" } here or in [bmc]".into(),
            ),
            Some(p) => check(
                one_source(p),
                key("password"),
                "give either env = \"VAR\" or file = \"/path\"".into(),
            ),
        }
        if let Some(t) = &h.thumbprint {
            check(
                thumbprint_ok(t),
                key("thumbprint"),
                "must be a SHA-256 fingerprint: 64 hex digits, colons allowed".into(),
            );
        }
        check(
            !(h.insecure_skip_tls_verify == Some(true) && (h.ca_file.is_some() || h.thumbprint.is_some())),
            key("insecure_skip_tls_verify"),
            "contradicts ca_file/thumbprint: choose one".into(),
        );
        if let Some(r) = &h.reset_type {
            check(
                REVIVE_RESETS.contains(&r.as_str()),
                key("reset_type"),
                format!("`{r}` is not one of {}", REVIVE_RESETS.join(", ")),
            );
        }
        if let Some(s) = &h.system {
            check(!s.trim().is_empty(), key("system"), "must not be empty".into());
        }
    }
    let Some(a) = admin else {
        return;
    };
    check(
        http_url(&a.url),
        "admin_vcenter.url".into(),
        format!(
            "`{}` is not an http(s) URL (e.g. https://admin-vc.example/sdk)",
            a.url
        ),
    );
    check(
        !a.user.trim().is_empty(),
        "admin_vcenter.user".into(),
        "must not be empty".into(),
    );
    check(
        one_source(&a.password),
        "admin_vcenter.password".into(),
        "give either env = \"VAR\" or file = \"/path\"".into(),
    );
    if let Some(t) = &a.thumbprint {
        check(
            thumbprint_ok(t),
            "admin_vcenter.thumbprint".into(),
            "must be a SHA-256 fingerprint: 64 hex digits, colons allowed".into(),
        );
    }
    check(
        !(a.insecure_skip_tls_verify && (a.ca_file.is_some() || a.thumbprint.is_some())),
        "admin_vcenter.insecure_skip_tls_verify".into(),
        "contradicts ca_file/thumbprint: choose one".into(),
    );
    check(
        !a.hosts.is_empty(),
        "admin_vcenter.hosts".into(),
        "names no host: give { \"<host>\" = \"<admin VM>\" }".into(),
    );
    for (host, vm) in &a.hosts {
        check(
            !vm.trim().is_empty(),
            format!("admin_vcenter.hosts.{host}"),
            "must name the admin VM".into(),
        );
        check(
            !bmc.hosts.contains_key(host),
            format!("admin_vcenter.hosts.{host}"),
            format!("the host also has a BMC ([bmc.hosts.\"{host}\"]): give it one controller"),
        );
    }
    if let Some(s) = &a.snapshot {
        check(
            !s.trim().is_empty(),
            "admin_vcenter.snapshot".into(),
            "must not be empty".into(),
        );
    }
    check(
        !a.task_timeout.is_zero(),
        "admin_vcenter.task_timeout".into(),
        "must be longer than 0s".into(),
    );
}

/// The secrets these sections name, by key.
pub(super) fn secret_sources<'a>(
    bmc: &'a BmcConfig,
    admin: Option<&'a AdminVcenterConfig>,
) -> Vec<(String, &'a SecretSource)> {
    let mut out: Vec<(String, &SecretSource)> = Vec::new();
    if let Some(p) = &bmc.password {
        out.push(("bmc.password".into(), p));
    }
    for (name, h) in &bmc.hosts {
        if let Some(p) = &h.password {
            out.push((format!("bmc.hosts.{name}.password"), p));
        }
    }
    if let Some(a) = admin {
        out.push(("admin_vcenter.password".into(), &a.password));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::DaemonConfig;
    use super::*;

    #[test]
    fn host_settings_fall_back_to_the_defaults() {
        let text = r#"
            [bmc]
            user = "root"
            password = { env = "AM_BMC_PASSWORD" }
            ca_file = "/etc/am/bmc-ca.pem"
            [bmc.hosts."esx-1"]
            url = "https://10.0.0.1"
            [bmc.hosts."esx-2"]
            url = "https://10.0.0.2"
            user = "admin"
            password = { file = "/etc/am/esx-2.password" }
            thumbprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
            auth = "session"
            reset_type = "PowerCycle"
            system = "System.Embedded.1"
        "#;
        let cfg = DaemonConfig::from_toml(text).unwrap();
        let r = cfg.bmc.resolved();
        assert_eq!(r[0].user, "root");
        assert_eq!(r[0].ca_file, Some(PathBuf::from("/etc/am/bmc-ca.pem")));
        assert_eq!(r[0].reset_type, "ForceRestart");
        assert_eq!(r[0].auth, BmcAuth::Basic);
        assert_eq!(r[1].user, "admin");
        assert_eq!(r[1].ca_file, None, "its own pin replaces the default CA");
        assert!(r[1].thumbprint.is_some());
        assert_eq!(r[1].auth, BmcAuth::Session);
        assert_eq!(r[1].reset_type, "PowerCycle");
        assert_eq!(r[1].system.as_deref(), Some("System.Embedded.1"));
        let keys: Vec<String> = cfg.secret_checks();
        assert!(
            keys.iter()
                .any(|k| k.starts_with("bmc.password: from environment variable AM_BMC_PASSWORD")),
            "{keys:?}"
        );
        assert!(
            keys.iter()
                .any(|k| k.starts_with("bmc.hosts.esx-2.password: from file")),
            "{keys:?}"
        );
    }

    #[test]
    fn bad_out_of_band_settings_are_each_named() {
        let text = r#"
            [bmc]
            reset_type = "Reboot"
            timeout = "0s"
            [bmc.hosts."esx-1"]
            url = "10.0.0.1"
            thumbprint = "abc"
            [bmc.hosts."esx-2"]
            url = "https://10.0.0.2"
            user = "root"
            password = { env = "A", file = "/b" }
            reset_type = "On"
            [admin_vcenter]
            url = "admin-vc"
            user = ""
            hosts = { "esx-2" = "nested-2", "esx-3" = "" }
            task_timeout = "0s"
        "#;
        let e = DaemonConfig::from_toml(text).unwrap_err().to_string();
        for key in [
            "bmc.reset_type",
            "bmc.timeout",
            "bmc.hosts.esx-1.url",
            "bmc.hosts.esx-1.user",
            "bmc.hosts.esx-1.password",
            "bmc.hosts.esx-1.thumbprint",
            "bmc.hosts.esx-2.password",
            "bmc.hosts.esx-2.reset_type",
            "admin_vcenter.url",
            "admin_vcenter.user",
            "admin_vcenter.password",
            "admin_vcenter.hosts.esx-2",
            "admin_vcenter.hosts.esx-3",
            "admin_vcenter.task_timeout",
        ] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
        let e =
            DaemonConfig::from_toml("[bmc.hosts.\"esx-1\"]\nurl = \"https://b\"\nuser = \"r\"\npasword = {}")
                .unwrap_err()
                .to_string();
        assert!(e.contains("pasword"), "{e}");
        let e = DaemonConfig::from_toml(
            "[admin_vcenter]\nurl = \"https://a/sdk\"\nuser = \"r\"\nhosts = {}\nrevive = \"reboot\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("admin_vcenter.revive") && e.contains("reboot"), "{e}");
    }
}
