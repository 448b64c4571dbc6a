//! A fake hypervisor for the executor's tests: every call sleeps (virtual time) and records what
//! ran concurrently.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_core::{
    Action, ActionId, ActionOutcome, DatastoreId, HostId, HvError, Hypervisor, Observation, SnapshotId, VmId,
};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the fake saw.
#[derive(Default)]
pub struct Record {
    pub running: usize,
    pub max_running: usize,
    pub per_host: HashMap<String, usize>,
    pub max_per_host: HashMap<String, usize>,
    /// Subjects (VM or host) with a call running.
    pub busy: HashSet<String>,
    /// Subjects that had two calls at once.
    pub overlaps: Vec<String>,
    /// `"<ms> start|end|cancelled <op> <subject>"`, in order.
    pub log: Vec<String>,
    /// Calls started, as `"<op> <subject>"`.
    pub started: Vec<String>,
}

pub struct FakeHv {
    pub t0: Instant,
    pub rec: Mutex<Record>,
    /// Call duration by subject; `default_delay` otherwise.
    pub delays: Mutex<HashMap<String, Duration>>,
    pub default_delay: Duration,
    /// Subjects whose calls fail with this error.
    pub failures: Mutex<HashMap<String, HvError>>,
    /// Subjects whose calls panic.
    pub panics: Mutex<HashSet<String>>,
}

impl FakeHv {
    pub fn new(default_delay: Duration) -> Arc<FakeHv> {
        Arc::new(FakeHv {
            t0: Instant::now(),
            rec: Mutex::default(),
            delays: Mutex::default(),
            default_delay,
            failures: Mutex::default(),
            panics: Mutex::default(),
        })
    }

    pub fn delay(&self, subject: &str, d: Duration) {
        self.delays.lock().unwrap().insert(subject.to_owned(), d);
    }

    pub fn fail(&self, subject: &str, e: HvError) {
        self.failures.lock().unwrap().insert(subject.to_owned(), e);
    }

    pub fn log(&self) -> Vec<String> {
        self.rec.lock().unwrap().log.clone()
    }

    pub fn started(&self) -> Vec<String> {
        self.rec.lock().unwrap().started.clone()
    }

    fn ms(&self) -> u128 {
        self.t0.elapsed().as_millis()
    }

    async fn work(&self, op: &str, subject: &str, host: Option<&HostId>) -> Result<(), HvError> {
        let what = format!("{op} {subject}");
        {
            let mut r = self.rec.lock().unwrap();
            r.running += 1;
            r.max_running = r.max_running.max(r.running);
            if let Some(h) = host {
                let n = r.per_host.entry(h.0.clone()).or_default();
                *n += 1;
                let n = *n;
                let m = r.max_per_host.entry(h.0.clone()).or_default();
                *m = (*m).max(n);
            }
            if !r.busy.insert(subject.to_owned()) {
                r.overlaps.push(subject.to_owned());
            }
            let line = format!("{} start {what}", self.ms());
            r.log.push(line);
            r.started.push(what.clone());
        }
        // Records the end whether the call completes or is dropped (cancelled at a deadline).
        let guard = EndGuard {
            hv: self,
            what: what.clone(),
            subject: subject.to_owned(),
            host: host.map(|h| h.0.clone()),
            completed: false,
        };
        if self.panics.lock().unwrap().contains(subject) {
            panic!("fake backend panics on {subject}");
        }
        let d = self
            .delays
            .lock()
            .unwrap()
            .get(subject)
            .copied()
            .unwrap_or(self.default_delay);
        tokio::time::sleep(d).await;
        let mut guard = guard;
        guard.completed = true;
        drop(guard);
        match self.failures.lock().unwrap().get(subject) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

struct EndGuard<'a> {
    hv: &'a FakeHv,
    what: String,
    subject: String,
    host: Option<String>,
    completed: bool,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let mut r = self.hv.rec.lock().unwrap_or_else(|e| e.into_inner());
        r.running -= 1;
        if let Some(h) = &self.host {
            *r.per_host.get_mut(h).unwrap() -= 1;
        }
        r.busy.remove(&self.subject);
        let how = if self.completed { "end" } else { "cancelled" };
        let line = format!("{} {how} {}", self.hv.ms(), self.what);
        r.log.push(line);
    }
}

#[async_trait]
impl Hypervisor for FakeHv {
    async fn power_on(&self, vm: &VmId) -> Result<(), HvError> {
        self.work("power_on", vm.as_str(), None).await
    }
    async fn power_off(&self, vm: &VmId) -> Result<(), HvError> {
        self.work("power_off", vm.as_str(), None).await
    }
    async fn reset(&self, vm: &VmId) -> Result<(), HvError> {
        self.work("reset", vm.as_str(), None).await
    }
    async fn migrate(&self, vm: &VmId, to: &HostId, _live: bool) -> Result<(), HvError> {
        self.work("migrate", vm.as_str(), Some(to)).await
    }
    async fn revert_snapshot(&self, vm: &VmId, _s: Option<SnapshotId>) -> Result<(), HvError> {
        self.work("revert_snapshot", vm.as_str(), None).await
    }
    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotId, HvError> {
        self.work("create_snapshot", vm.as_str(), None).await?;
        Ok(SnapshotId::new(format!("{vm}/{name}")))
    }
    async fn remove_snapshot(&self, vm: &VmId, _s: &SnapshotId) -> Result<(), HvError> {
        self.work("remove_snapshot", vm.as_str(), None).await
    }
    async fn clone_vm(
        &self,
        vm: &VmId,
        name: &str,
        host: &HostId,
        _ds: Option<DatastoreId>,
    ) -> Result<VmId, HvError> {
        self.work("clone_vm", vm.as_str(), Some(host)).await?;
        Ok(VmId::from(name))
    }
    async fn restore_clone(&self, vm: &VmId, _backup: &VmId, host: &HostId) -> Result<(), HvError> {
        self.work("restore_clone", vm.as_str(), Some(host)).await
    }
    async fn register_vm(&self, vm: &VmId, host: &HostId) -> Result<(), HvError> {
        self.work("register_vm", vm.as_str(), Some(host)).await
    }
    async fn unregister_vm(&self, vm: &VmId) -> Result<(), HvError> {
        self.work("unregister_vm", vm.as_str(), None).await
    }
    async fn failover(&self, vm: &VmId, to: &HostId) -> Result<(), HvError> {
        self.work("failover", vm.as_str(), Some(to)).await
    }
    async fn reconnect_host(&self, host: &HostId) -> Result<(), HvError> {
        self.work("reconnect_host", host.as_str(), Some(host)).await
    }
    async fn revive_host(&self, host: &HostId) -> Result<(), HvError> {
        self.work("revive_host", host.as_str(), Some(host)).await
    }
    async fn fence_host(&self, host: &HostId) -> Result<(), HvError> {
        self.work("fence_host", host.as_str(), Some(host)).await
    }
    async fn remove_host(&self, host: &HostId) -> Result<(), HvError> {
        self.work("remove_host", host.as_str(), Some(host)).await
    }
    async fn add_host(&self, spare: &str) -> Result<HostId, HvError> {
        self.work("add_host", spare, None).await?;
        Ok(HostId::from(spare))
    }
    async fn enter_maintenance(&self, host: &HostId) -> Result<(), HvError> {
        self.work("enter_maintenance", host.as_str(), Some(host)).await
    }
    async fn exit_maintenance(&self, host: &HostId) -> Result<(), HvError> {
        self.work("exit_maintenance", host.as_str(), Some(host)).await
    }
}

pub fn power_on(vm: &str) -> Action {
    Action::PowerOn { vm: vm.into() }
}

pub fn power_off(vm: &str) -> Action {
    Action::PowerOff { vm: vm.into() }
}

pub fn reset(vm: &str) -> Action {
    Action::Reset { vm: vm.into() }
}

pub fn failover(vm: &str, to: &str) -> Action {
    Action::Failover {
        vm: vm.into(),
        to: to.into(),
    }
}

/// Receives `n` outcomes, in arrival order.
pub async fn outcomes(
    rx: &mut mpsc::UnboundedReceiver<Observation>,
    n: usize,
) -> Vec<(ActionId, Result<ActionOutcome, HvError>)> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv().await {
            Some(Observation::ActionDone { id, result }) => out.push((id, result)),
            Some(other) => panic!("unexpected observation {other:?}"),
            None => panic!("channel closed after {} outcomes", out.len()),
        }
    }
    out
}

/// Virtual milliseconds since `t0`.
pub fn ms_since(t0: Instant) -> u128 {
    t0.elapsed().as_millis()
}
