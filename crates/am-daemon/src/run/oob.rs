//! Out-of-band control in `run`: the controllers of `[bmc]` and `[admin_vcenter]` (passwords read,
//! TLS as configured), and the hypervisor that sends `ReviveHost`/`FenceHost` of a host they
//! cover to them, and of any other host to the adapter (its hooks).

use std::sync::Arc;

use am_core::{Action, ActionOutcome, HvError, Hypervisor};
use am_oob::{AdminRevive, AdminSettings, AdminVcenter, Auth, Bmc, OutOfBand, RedfishSettings};
use am_vsphere::VsphereBackend;
use am_vsphere::vsphere_soap::{Password, Thumbprint, TlsMode};
use async_trait::async_trait;

use crate::config::{AdminReviveConfig, BmcAuth, ConfigError, DaemonConfig};

/// The TLS mode of an out-of-band controller's settings; `key` names them in errors.
fn tls(
    key: &str,
    insecure: bool,
    thumbprint: Option<&String>,
    ca_file: Option<&std::path::PathBuf>,
) -> Result<TlsMode, ConfigError> {
    if insecure {
        tracing::warn!(key, "TLS verification is off (insecure_skip_tls_verify)");
        return Ok(TlsMode::InsecureSkipVerify);
    }
    if let Some(t) = thumbprint {
        let pin: Thumbprint = t.parse().map_err(|e| ConfigError::Invalid {
            key: format!("{key}.thumbprint"),
            reason: format!("{e}"),
        })?;
        return Ok(TlsMode::Thumbprint(pin));
    }
    Ok(ca_file.map_or(TlsMode::SystemRoots, |ca| TlsMode::CaFile(ca.clone())))
}

/// The out-of-band controllers the configuration names (`None`: none), passwords read. An
/// unreadable password or a BMC setting that cannot work (a CA file that cannot be read) stops
/// `run` with the key.
pub fn out_of_band(cfg: &DaemonConfig) -> Result<Option<OutOfBand>, ConfigError> {
    let mut oob = OutOfBand::new();
    for b in cfg.bmc.resolved() {
        let key = format!("bmc.hosts.{}", b.host);
        let password = b.password.read(&format!("{key}.password"))?;
        let mut s = RedfishSettings::new(&b.host, &b.url, &b.user, Password::new(password.expose()));
        s.system = b.system.clone();
        s.auth = match b.auth {
            BmcAuth::Basic => Auth::Basic,
            BmcAuth::Session => Auth::Session,
        };
        s.tls = tls(
            &key,
            b.insecure_skip_tls_verify,
            b.thumbprint.as_ref(),
            b.ca_file.as_ref(),
        )?;
        s.timeout = cfg.bmc.timeout;
        s.confirm_timeout = cfg.bmc.confirm_timeout;
        s.revive_reset = b.reset_type.clone();
        let bmc = Bmc::new(s).map_err(|e| ConfigError::Invalid {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        oob.add_bmc(bmc);
    }
    if let Some(a) = &cfg.admin_vcenter {
        let password = a.password.read("admin_vcenter.password")?;
        let mut s = AdminSettings::new(&a.url, &a.user, Password::new(password.expose()));
        s.tls = tls(
            "admin_vcenter",
            a.insecure_skip_tls_verify,
            a.thumbprint.as_ref(),
            a.ca_file.as_ref(),
        )?;
        s.hosts = a.hosts.clone();
        s.snapshot = a.snapshot.clone();
        s.revive = match a.revive {
            AdminReviveConfig::Revert => AdminRevive::Revert,
            AdminReviveConfig::PowerCycle => AdminRevive::PowerCycle,
        };
        s.task_timeout = a.task_timeout;
        s.confirm_timeout = cfg.bmc.confirm_timeout;
        oob.add_admin(AdminVcenter::new(s));
    }
    if oob.is_empty() {
        return Ok(None);
    }
    for (host, what) in oob.describe() {
        tracing::info!(%host, controller = %what, "out-of-band control");
    }
    Ok(Some(oob))
}

/// The adapter, with the revival and fencing of hosts the out-of-band controllers cover sent to
/// them (everything else, other hosts' revival and fencing included, goes to the adapter).
pub struct OutOfBandHypervisor {
    backend: VsphereBackend,
    oob: Arc<OutOfBand>,
}

impl OutOfBandHypervisor {
    /// The adapter with out-of-band control.
    pub fn new(backend: VsphereBackend, oob: Arc<OutOfBand>) -> Self {
        OutOfBandHypervisor { backend, oob }
    }
}

#[async_trait]
impl Hypervisor for OutOfBandHypervisor {
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
        let (host, fence) = match action {
            Action::FenceHost { host } => (host, true),
            Action::ReviveHost { host } => (host, false),
            _ => return self.backend.execute(action).await,
        };
        let name = self.backend.host_name(host).await;
        if !self.oob.covers(&name) {
            return self.backend.execute(action).await;
        }
        let r = if fence {
            self.oob.fence(&name).await
        } else {
            self.oob.revive(&name).await
        };
        self.backend.refresh_host(host);
        r.map(|()| ActionOutcome::Done).map_err(HvError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sections_become_controllers_and_secrets_are_read() {
        let dir = std::env::temp_dir().join(format!("am-oob-pw-{}", std::process::id()));
        std::fs::write(&dir, "calvin\n").unwrap();
        let text = format!(
            r#"
            [bmc]
            user = "root"
            password = {{ file = "{}" }}
            [bmc.hosts."esx-1"]
            url = "https://10.0.0.1"
            [admin_vcenter]
            url = "https://admin/sdk"
            user = "root"
            password = {{ file = "{}" }}
            hosts = {{ "esx-2" = "nested-2" }}
            "#,
            dir.display(),
            dir.display()
        );
        let cfg = DaemonConfig::from_toml(&text).unwrap();
        let oob = out_of_band(&cfg).unwrap().unwrap();
        assert!(oob.covers("esx-1") && oob.covers("esx-2") && !oob.covers("esx-3"));
        assert!(format!("{oob:?}").contains("esx-1") && !format!("{oob:?}").contains("calvin"));
        let _ = std::fs::remove_file(&dir);
        assert!(out_of_band(&DaemonConfig::default()).unwrap().is_none());
        let e = out_of_band(&cfg).unwrap_err().to_string();
        assert!(e.contains("bmc.hosts.esx-1.password"), "{e}");
        let cfg = DaemonConfig::from_toml(
            "[bmc.hosts.\"esx-1\"]\nurl = \"https://b\"\nuser = \"r\"\npassword = { env = \"PATH\" }\nca_file = \"/nonexistent/ca.pem\"",
        )
        .unwrap();
        let e = out_of_band(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("bmc.hosts.esx-1") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
