//! Nested hosts: an admin vCenter whose VMs are the managed vCenter's hosts (nested ESXi, a lab,
//! a test bed). The host's power is its VM's power state; fencing powers the VM off and reads it
//! back until it is off; revival reverts the VM to its current snapshot (or a named one) and
//! powers it on if the revert left it off, or power-cycles it.
//!
//! A `vsphere_soap` client of its own (URL, user, TLS); it logs in on first use and again after
//! a failed login, so an admin vCenter down at start is no reason for the manager not to start.

use std::collections::BTreeMap;
use std::time::Duration;

use am_core::PowerReading;
use tokio::sync::Mutex;
use vsphere_soap::{Client, Credentials, MoRef, Password, PropertySpec, TlsMode, Value};

use crate::error::{Failure, OobError};

/// How the admin vCenter revives a host's VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminRevive {
    /// Revert to the snapshot (the current one, or `snapshot`), then power on if off.
    #[default]
    Revert,
    /// Reset the VM if it is on, power it on if it is off.
    PowerCycle,
}

/// The admin vCenter.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// Its SDK URL.
    pub url: String,
    /// The user.
    pub user: String,
    /// Its password (never printed).
    pub password: Password,
    /// How its certificate is checked.
    pub tls: TlsMode,
    /// One SOAP call at most this long.
    pub timeout: Duration,
    /// One task (revert, power on, power off) at most this long.
    pub task_timeout: Duration,
    /// A fence waits at most this long for the VM to read off.
    pub confirm_timeout: Duration,
    /// Host name (in the managed vCenter) -> the admin VM's name.
    pub hosts: BTreeMap<String, String>,
    /// The snapshot revival reverts to, by name (`None`: the current one).
    pub snapshot: Option<String>,
    /// Revert or power-cycle.
    pub revive: AdminRevive,
}

impl AdminSettings {
    /// Settings with the defaults: the system's trust store, 30 s per call, 10 min per task,
    /// 60 s to confirm, revival by reverting to the current snapshot.
    pub fn new(url: &str, user: &str, password: Password) -> Self {
        AdminSettings {
            url: url.to_owned(),
            user: user.to_owned(),
            password,
            tls: TlsMode::SystemRoots,
            timeout: Duration::from_secs(30),
            task_timeout: Duration::from_secs(600),
            confirm_timeout: Duration::from_secs(60),
            hosts: BTreeMap::new(),
            snapshot: None,
            revive: AdminRevive::Revert,
        }
    }
}

/// A client of the admin vCenter.
pub struct AdminVcenter {
    s: AdminSettings,
    client: Mutex<Option<Client>>,
    vms: Mutex<BTreeMap<String, MoRef>>,
}

impl std::fmt::Debug for AdminVcenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminVcenter")
            .field("url", &self.s.url)
            .field("user", &self.s.user)
            .field("hosts", &self.s.hosts)
            .finish_non_exhaustive()
    }
}

/// A VM's power state, as vim25 writes it.
fn reading(state: &str) -> Option<PowerReading> {
    match state {
        "poweredOn" => Some(PowerReading::On),
        // A suspended nested host runs nothing.
        "poweredOff" | "suspended" => Some(PowerReading::Off),
        _ => None,
    }
}

impl AdminVcenter {
    /// A client; nothing is sent yet.
    pub fn new(s: AdminSettings) -> AdminVcenter {
        AdminVcenter {
            s,
            client: Mutex::new(None),
            vms: Mutex::new(BTreeMap::new()),
        }
    }

    /// The hosts it controls.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.s.hosts.keys().map(String::as_str)
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.s.url
    }

    fn err(&self, op: &'static str, host: &str, failure: Failure) -> OobError {
        OobError::Admin {
            op,
            host: host.to_owned(),
            url: self.s.url.clone(),
            vm: self.s.hosts.get(host).cloned().unwrap_or_default(),
            failure: Box::new(failure),
        }
    }

    /// Logs in now (at start: a failure is only a warning, the next call tries again).
    pub async fn connect(&self) -> Result<(), OobError> {
        self.client("connect", "").await.map(drop)
    }

    /// Logs out.
    pub async fn stop(&self) {
        if let Some(c) = self.client.lock().await.take()
            && let Err(e) = c.logout().await
        {
            tracing::debug!(url = %self.s.url, error = %e, "admin vCenter logout failed");
        }
    }

    async fn client(&self, op: &'static str, host: &str) -> Result<Client, OobError> {
        let mut c = self.client.lock().await;
        if let Some(c) = c.as_ref() {
            return Ok(c.clone());
        }
        let client = Client::builder(&self.s.url)
            .tls(self.s.tls.clone())
            .credentials(Credentials::new(self.s.user.clone(), self.s.password.clone()))
            .timeout(self.s.timeout)
            .connect_timeout(self.s.timeout.min(Duration::from_secs(10)))
            .connect()
            .await
            .map_err(|e| self.err(op, host, soap_failure(&e, self.s.timeout)))?;
        tracing::info!(url = %self.s.url, user = %self.s.user, "connected to the admin vCenter");
        *c = Some(client.clone());
        Ok(client)
    }

    /// The host's VM, found by name (and remembered).
    async fn vm(&self, op: &'static str, host: &str, client: &Client) -> Result<MoRef, OobError> {
        let Some(name) = self.s.hosts.get(host) else {
            return Err(OobError::NotConfigured {
                host: host.to_owned(),
            });
        };
        if let Some(m) = self.vms.lock().await.get(host) {
            return Ok(m.clone());
        }
        let all = client
            .retrieve_inventory(vec![PropertySpec::new("VirtualMachine", &["name"])])
            .await
            .map_err(|e| self.err(op, host, soap_failure(&e, self.s.timeout)))?;
        let found: Vec<&MoRef> = all
            .iter()
            .filter(|o| o.get_str("name") == Some(name.as_str()))
            .map(|o| &o.obj)
            .collect();
        match found.as_slice() {
            [one] => {
                self.vms.lock().await.insert(host.to_owned(), (*one).clone());
                Ok((*one).clone())
            }
            [] => Err(self.err(
                op,
                host,
                Failure::Config(format!("the admin vCenter has no VM named {name:?}")),
            )),
            many => Err(self.err(
                op,
                host,
                Failure::Config(format!("the admin vCenter has {} VMs named {name:?}", many.len())),
            )),
        }
    }

    /// Runs `f` on the host's VM; a VM the admin vCenter no longer knows by its id (re-registered)
    /// is looked up again once, and a lost session logs in again once.
    async fn with_vm<T, F, Fut>(&self, op: &'static str, host: &str, f: F) -> Result<T, OobError>
    where
        F: Fn(Client, MoRef) -> Fut,
        Fut: std::future::Future<Output = Result<T, vsphere_soap::Error>>,
    {
        let mut retried = false;
        loop {
            let client = self.client(op, host).await?;
            let vm = self.vm(op, host, &client).await?;
            match f(client, vm).await {
                Ok(v) => return Ok(v),
                Err(e) if !retried && e.is_fault("ManagedObjectNotFound") => {
                    self.vms.lock().await.remove(host);
                    retried = true;
                }
                Err(e) if !retried && is_session_lost(&e) => {
                    *self.client.lock().await = None;
                    retried = true;
                }
                Err(e) => return Err(self.err(op, host, soap_failure(&e, self.s.task_timeout))),
            }
        }
    }

    /// The host's power: its VM's `runtime.powerState`.
    pub async fn power_state(&self, host: &str) -> Result<PowerReading, OobError> {
        let state = self.vm_state("power_state", host).await?;
        reading(&state).ok_or_else(|| {
            self.err(
                "power_state",
                host,
                Failure::Malformed(format!("unknown power state {state:?}")),
            )
        })
    }

    async fn vm_state(&self, op: &'static str, host: &str) -> Result<String, OobError> {
        self.with_vm(op, host, |c, vm| async move {
            let o = c.retrieve_object(&vm, &["runtime.powerState"]).await?;
            Ok(o.get_str("runtime.powerState").unwrap_or_default().to_owned())
        })
        .await
    }

    /// Fences the host: powers its VM off (unless it is off), then reads it back until it is off.
    pub async fn fence(&self, host: &str) -> Result<(), OobError> {
        let op = "fence";
        let state = self.vm_state(op, host).await?;
        if reading(&state) != Some(PowerReading::Off) {
            let t = self.s.task_timeout;
            tracing::info!(host, url = %self.s.url, "admin vCenter: PowerOffVM_Task");
            self.with_vm(op, host, |c, vm| async move {
                let task = c.power_off_vm(&vm).await?;
                c.wait_for_task(&task, t).await.map(drop)
            })
            .await
            .or_else(already)?;
        }
        self.confirm(op, host, PowerReading::Off).await
    }

    /// Revives the host: reverts its VM to the snapshot and powers it on if the revert left it
    /// off (`revive = "revert"`), or resets it / powers it on (`"power_cycle"`); then reads it
    /// back until it is on.
    pub async fn revive(&self, host: &str) -> Result<(), OobError> {
        let op = "revive";
        let t = self.s.task_timeout;
        match self.s.revive {
            AdminRevive::Revert => {
                let snapshot = self.s.snapshot.clone();
                tracing::info!(host, url = %self.s.url, snapshot = snapshot.as_deref().unwrap_or("(current)"), "admin vCenter: revert to snapshot");
                self.with_vm(op, host, |c, vm| {
                    let snapshot = snapshot.clone();
                    async move {
                        let task = match &snapshot {
                            None => c.revert_to_current_snapshot(&vm, None, None).await?,
                            Some(name) => {
                                let tree = c.retrieve_object(&vm, &["snapshot"]).await?;
                                let Some(snap) = tree.get("snapshot").and_then(|v| find_snapshot(v, name))
                                else {
                                    return Err(vsphere_soap::Error::Config(format!(
                                        "the VM has no snapshot named {name:?}"
                                    )));
                                };
                                c.revert_to_snapshot(&snap, None, None).await?
                            }
                        };
                        c.wait_for_task(&task, t).await.map(drop)
                    }
                })
                .await?;
                let state = self.vm_state(op, host).await?;
                if reading(&state) != Some(PowerReading::On) {
                    self.power_on(op, host).await?;
                }
            }
            AdminRevive::PowerCycle => {
                let state = self.vm_state(op, host).await?;
                if reading(&state) == Some(PowerReading::On) {
                    tracing::info!(host, url = %self.s.url, "admin vCenter: ResetVM_Task");
                    self.with_vm(op, host, |c, vm| async move {
                        let task = c.reset_vm(&vm).await?;
                        c.wait_for_task(&task, t).await.map(drop)
                    })
                    .await?;
                } else {
                    self.power_on(op, host).await?;
                }
            }
        }
        self.confirm(op, host, PowerReading::On).await
    }

    async fn power_on(&self, op: &'static str, host: &str) -> Result<(), OobError> {
        let t = self.s.task_timeout;
        tracing::info!(host, url = %self.s.url, "admin vCenter: PowerOnVM_Task");
        self.with_vm(op, host, |c, vm| async move {
            let task = c.power_on_vm(&vm, None).await?;
            c.wait_for_task(&task, t).await.map(drop)
        })
        .await
        .or_else(already)
    }

    async fn confirm(&self, op: &'static str, host: &str, want: PowerReading) -> Result<(), OobError> {
        let deadline = tokio::time::Instant::now() + self.s.confirm_timeout;
        loop {
            let last = match self.vm_state(op, host).await {
                Ok(s) if reading(&s) == Some(want) => return Ok(()),
                Ok(s) => s,
                Err(e) => format!(
                    "unreadable ({})",
                    e.failure().map(ToString::to_string).unwrap_or_default()
                ),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(self.err(
                    op,
                    host,
                    Failure::NotConfirmed {
                        want: if want == PowerReading::Off {
                            "poweredOff"
                        } else {
                            "poweredOn"
                        },
                        last,
                        after: self.s.confirm_timeout,
                    },
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// An `InvalidPowerState` fault when the VM is already as asked is no error.
fn already(e: OobError) -> Result<(), OobError> {
    match e.failure() {
        Some(Failure::Vcenter(m)) if m.contains("InvalidPowerState") => Ok(()),
        _ => Err(e),
    }
}

fn is_session_lost(e: &vsphere_soap::Error) -> bool {
    e.is_not_authenticated()
}

/// The snapshot named `name` in a `VirtualMachineSnapshotInfo` (depth first).
fn find_snapshot(info: &Value, name: &str) -> Option<MoRef> {
    fn walk(nodes: &[&Value], name: &str) -> Option<MoRef> {
        for n in nodes {
            for item in n.items() {
                if item.field("name").and_then(Value::as_str) == Some(name)
                    && let Some(m) = item.field("snapshot").and_then(Value::as_moref)
                {
                    return Some(m.clone());
                }
                let children: Vec<&Value> = item
                    .as_data()
                    .map(|d| d.get_all("childSnapshotList").collect())
                    .unwrap_or_default();
                if let Some(m) = walk(&children, name) {
                    return Some(m);
                }
            }
        }
        None
    }
    let roots: Vec<&Value> = info
        .as_data()
        .map(|d| d.get_all("rootSnapshotList").collect())
        .unwrap_or_default();
    walk(&roots, name)
}

/// What kind of failure a SOAP client error is.
fn soap_failure(e: &vsphere_soap::Error, waited: Duration) -> Failure {
    use vsphere_soap::{Error, TransportErrorKind};
    match e {
        Error::Transport { source, .. } => match source.kind {
            TransportErrorKind::Tls => Failure::Tls(e.to_string()),
            TransportErrorKind::Timeout => Failure::Timeout { after: waited },
            TransportErrorKind::Connect => Failure::Connect(e.to_string()),
            TransportErrorKind::TooLarge => Failure::Malformed(e.to_string()),
            _ => Failure::Connect(e.to_string()),
        },
        Error::Http {
            status, body_start, ..
        } => Failure::Http {
            status: *status,
            message: body_start.clone(),
        },
        Error::Xml { .. } | Error::Decode { .. } => Failure::Malformed(e.to_string()),
        Error::Timeout(_) => Failure::Timeout { after: waited },
        Error::Config(m)
            if ["TLS", "CA file", "trust store", "thumbprint", "certificate"]
                .iter()
                .any(|w| m.contains(w)) =>
        {
            Failure::Tls(e.to_string())
        }
        Error::Config(m) => Failure::Config(m.clone()),
        _ => Failure::Vcenter(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_power_states_are_host_power() {
        assert_eq!(reading("poweredOn"), Some(PowerReading::On));
        assert_eq!(reading("poweredOff"), Some(PowerReading::Off));
        assert_eq!(reading("suspended"), Some(PowerReading::Off));
        assert_eq!(reading(""), None);
    }

    #[test]
    fn named_snapshots_are_found_in_the_tree() {
        let xml = br#"<val xmlns:xsi="x" xsi:type="VirtualMachineSnapshotInfo"><rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-1</snapshot><name>base</name><childSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-2</snapshot><name>clean</name></childSnapshotList></rootSnapshotList></val>"#;
        let v = vsphere_soap::xml::parse(xml).unwrap().root;
        assert_eq!(
            find_snapshot(&v, "clean").map(|m| m.value),
            Some("snapshot-2".into())
        );
        assert_eq!(
            find_snapshot(&v, "base").map(|m| m.value),
            Some("snapshot-1".into())
        );
        assert_eq!(find_snapshot(&v, "nope"), None);
    }

    #[test]
    fn debug_hides_the_password() {
        let a = AdminVcenter::new(AdminSettings::new(
            "https://admin/sdk",
            "root",
            Password::new("hunter2"),
        ));
        let d = format!("{a:?}");
        assert!(d.contains("admin/sdk") && !d.contains("hunter2"), "{d}");
    }
}
