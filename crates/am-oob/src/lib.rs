//! Out-of-band host control: each host's power read, fenced and revived through something other
//! than the vCenter that manages it, so the manager has a signal independent of vCenter and of
//! the networks it probes.
//!
//! Two kinds of controller:
//! - [`redfish`]: the host's BMC (iDRAC, iLO, XCC, OpenBMC, sushy-tools in tests) through DMTF
//!   Redfish;
//! - [`admin`]: an admin vCenter whose VMs are the managed hosts (nested ESXi).
//!
//! [`OutOfBand`] holds the controller of every configured host: it is am-core's [`PowerSource`]
//! (the engine polls it) and the dispatcher of `ReviveHost`/`FenceHost` for those hosts. A fence
//! succeeds only once the controller reads the host off; the caller restarts nothing on a failed
//! one.
//!
//! Only `vsphere-soap` knows XML: the admin vCenter is reached through its client.

pub mod admin;
mod error;
pub mod redfish;

use std::collections::BTreeMap;
use std::sync::Arc;

use am_core::{HvError, PowerReading, PowerSource};
use async_trait::async_trait;

pub use admin::{AdminRevive, AdminSettings, AdminVcenter};
pub use error::{Failure, OobError};
pub use redfish::{Auth, Bmc, RedfishSettings};

/// What controls one host.
#[derive(Clone, Debug)]
enum Controller {
    /// Its BMC.
    Redfish(Arc<Bmc>),
    /// Its VM in the admin vCenter.
    Admin(Arc<AdminVcenter>),
}

/// Every configured host's out-of-band controller, by the host's name in vCenter.
#[derive(Clone, Debug, Default)]
pub struct OutOfBand {
    hosts: BTreeMap<String, Controller>,
    admins: Vec<Arc<AdminVcenter>>,
}

impl OutOfBand {
    /// No host yet.
    pub fn new() -> Self {
        OutOfBand::default()
    }

    /// The host `bmc` controls is controlled by it (replacing anything set before).
    pub fn add_bmc(&mut self, bmc: Bmc) {
        self.hosts
            .insert(bmc.host().to_owned(), Controller::Redfish(Arc::new(bmc)));
    }

    /// Every host the admin vCenter maps to a VM is controlled by it; a host that also has a
    /// BMC keeps its BMC.
    pub fn add_admin(&mut self, admin: AdminVcenter) {
        let admin = Arc::new(admin);
        for h in admin.hosts() {
            self.hosts
                .entry(h.to_owned())
                .or_insert_with(|| Controller::Admin(admin.clone()));
        }
        self.admins.push(admin);
    }

    /// Whether any host is configured.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether `host` (by name) has a controller.
    pub fn covers(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// Each host with what controls it (`BMC https://...` or `admin vCenter https://... VM x`).
    pub fn describe(&self) -> Vec<(String, String)> {
        self.hosts
            .iter()
            .map(|(h, c)| {
                let what = match c {
                    Controller::Redfish(b) => format!("BMC {}", b.url()),
                    Controller::Admin(a) => format!("admin vCenter {}", a.url()),
                };
                (h.clone(), what)
            })
            .collect()
    }

    fn controller(&self, host: &str) -> Result<&Controller, OobError> {
        self.hosts.get(host).ok_or_else(|| OobError::NotConfigured {
            host: host.to_owned(),
        })
    }

    /// The host's power.
    pub async fn power_state(&self, host: &str) -> Result<PowerReading, OobError> {
        match self.controller(host)? {
            Controller::Redfish(b) => b.power_state().await,
            Controller::Admin(a) => a.power_state(host).await,
        }
    }

    /// Fences the host: Ok only once its controller reads it off.
    pub async fn fence(&self, host: &str) -> Result<(), OobError> {
        tracing::info!(host, "fencing out of band");
        let r = match self.controller(host)? {
            Controller::Redfish(b) => b.fence().await,
            Controller::Admin(a) => a.fence(host).await,
        };
        match &r {
            Ok(()) => tracing::info!(host, "fenced: its controller reads it off"),
            Err(e) => tracing::warn!(host, error = %e, "fence failed"),
        }
        r
    }

    /// Revives the host: Ok once its controller reads it on (whether its hypervisor answers is
    /// for vCenter to show).
    pub async fn revive(&self, host: &str) -> Result<(), OobError> {
        tracing::info!(host, "reviving out of band");
        let r = match self.controller(host)? {
            Controller::Redfish(b) => b.revive().await,
            Controller::Admin(a) => a.revive(host).await,
        };
        if let Err(e) = &r {
            tracing::warn!(host, error = %e, "revival failed");
        }
        r
    }

    /// Logs in to the admin vCenters now; a failure is a warning (each call tries again).
    pub async fn connect(&self) {
        for a in &self.admins {
            if let Err(e) = a.connect().await {
                tracing::warn!(error = %e, "the admin vCenter does not answer yet; its hosts' power is unknown until it does");
            }
        }
    }

    /// Ends the Redfish sessions and logs out of the admin vCenters.
    pub async fn stop(&self) {
        for c in self.hosts.values() {
            if let Controller::Redfish(b) = c {
                b.stop().await;
            }
        }
        for a in &self.admins {
            a.stop().await;
        }
    }
}

#[async_trait]
impl PowerSource for OutOfBand {
    fn hosts(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    async fn power(&self, host: &str) -> Result<PowerReading, HvError> {
        self.power_state(host).await.map_err(HvError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsphere_soap::Password;

    #[tokio::test]
    async fn hosts_without_a_controller_are_named() {
        let mut oob = OutOfBand::new();
        assert!(oob.is_empty());
        oob.add_bmc(
            Bmc::new(RedfishSettings::new(
                "esx-1",
                "http://127.0.0.1:9",
                "root",
                Password::new("x"),
            ))
            .unwrap(),
        );
        let mut admin = AdminSettings::new("https://admin.invalid/sdk", "root", Password::new("y"));
        admin.hosts.insert("esx-1".into(), "vm-esx-1".into());
        admin.hosts.insert("esx-2".into(), "vm-esx-2".into());
        oob.add_admin(AdminVcenter::new(admin));
        assert!(oob.covers("esx-1") && oob.covers("esx-2") && !oob.covers("esx-3"));
        assert_eq!(PowerSource::hosts(&oob), vec!["esx-1", "esx-2"]);
        let d = oob.describe();
        assert!(
            d[0].1.starts_with("BMC ") && d[1].1.starts_with("admin vCenter "),
            "{d:?}"
        );
        let e = oob.fence("esx-3").await.unwrap_err();
        assert_eq!(e, OobError::NotConfigured { host: "esx-3".into() });
        assert!(matches!(
            oob.power("esx-3").await,
            Err(HvError::NotSupported { .. })
        ));
    }
}
