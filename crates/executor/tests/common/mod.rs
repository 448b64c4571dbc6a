//! A fake hypervisor for the executor's tests: every call sleeps (virtual time) and records what
//! ran concurrently.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_core::{Action, ActionId, ActionOutcome, HostId, HvError, Hypervisor, Observation, SnapshotId, VmId};
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
                let n = r.per_host.entry(h.as_str().to_owned()).or_default();
                *n += 1;
                let n = *n;
                let m = r.max_per_host.entry(h.as_str().to_owned()).or_default();
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
            host: host.map(|h| h.as_str().to_owned()),
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
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
        // The subject is the VM, else the host (the spare for an addition); moves count on
        // their target host.
        let subject = match (action.vm(), action.host(), action) {
            (Some(vm), _, _) => vm.to_string(),
            (None, Some(h), _) => h.to_string(),
            (None, None, Action::AddHost { spare }) => spare.clone(),
            _ => String::new(),
        };
        let host = match action {
            Action::PowerOn { .. }
            | Action::PowerOff { .. }
            | Action::Reset { .. }
            | Action::RevertSnapshot { .. }
            | Action::CreateSnapshot { .. }
            | Action::RemoveSnapshot { .. }
            | Action::Unregister { .. }
            | Action::AddHost { .. } => None,
            other => other.host(),
        };
        self.work(action.name(), &subject, host).await?;
        Ok(match action {
            Action::CreateSnapshot { vm, name } => {
                ActionOutcome::SnapshotCreated(SnapshotId::new(format!("{vm}/{name}")))
            }
            Action::Clone { name, .. } => ActionOutcome::VmCreated(VmId::from(name.as_str())),
            Action::AddHost { spare } => ActionOutcome::HostAdded(HostId::from(spare.as_str())),
            _ => ActionOutcome::Done,
        })
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
