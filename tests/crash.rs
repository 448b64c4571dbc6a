//! Crash tests: the daemon is killed at many moments during recoveries and restarted on the same
//! SQLite journal, while the simulated cluster lives on. Whatever the moment:
//! - no VM ever runs twice and no VM a user switched off is powered on (the simulator's truth);
//! - nothing is forgotten: every protected VM runs at the end;
//! - action ids are never reused.
//!
//! "Killed" means kill -9 semantics in-process: every seam of the first daemon (hypervisor,
//! inventory feed, prober) is cut at once, and a call already in flight never completes for it
//! (its effect in the cluster may or may not have happened, as with a real killed process). The
//! first engine is dropped without any shutdown; the second starts from the journal file alone.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use am_core::{
    Action, ActionOutcome, Changes, HvError, Hypervisor, Inventory, InventorySource, ProbeResult,
    ProbeTarget, Prober,
};
use am_daemon::engine::{Backends, Engine, EngineConfig};
use am_daemon::journal::{self, Journal, SqliteJournal};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A seam that stops answering, for good, once killed.
#[derive(Clone)]
struct Kill(watch::Receiver<bool>);

impl Kill {
    async fn guard<T>(&self, call: impl Future<Output = T>) -> T {
        let mut rx = self.0.clone();
        let killed = async move {
            let _ = rx.wait_for(|k| *k).await.is_ok();
        };
        let result = tokio::select! {
            r = call => Some(r),
            () = killed => None,
        };
        let dead = *self.0.borrow();
        match result {
            Some(r) if !dead => r,
            _ => std::future::pending().await,
        }
    }
}

struct Killable<T> {
    inner: T,
    kill: Kill,
}

#[async_trait]
impl<T: Hypervisor> Hypervisor for Killable<T> {
    async fn execute(&self, action: &Action) -> Result<ActionOutcome, HvError> {
        self.kill.guard(self.inner.execute(action)).await
    }
}

#[async_trait]
impl<T: InventorySource> InventorySource for Killable<T> {
    async fn snapshot(&self) -> Result<(Inventory, String), HvError> {
        self.kill.guard(self.inner.snapshot()).await
    }
    async fn changes(&self, since: &str, max_wait: Duration) -> Result<Changes, HvError> {
        self.kill.guard(self.inner.changes(since, max_wait)).await
    }
}

#[async_trait]
impl<T: Prober> Prober for Killable<T> {
    async fn probe(&self, target: &ProbeTarget, timeout: Duration) -> ProbeResult {
        self.kill.guard(self.inner.probe(target, timeout)).await
    }
}

fn engine(sim: &sim::Sim, kill: Kill, journal: Box<dyn Journal>) -> Engine {
    let cfg = EngineConfig {
        supervisor: supervisor::Config {
            manager_user: sim.manager_user(),
            spares: vec!["spare-1".into()],
            ..supervisor::Config::default()
        },
        isolation_addresses: vec!["10.0.0.1".into()],
        ..EngineConfig::default()
    };
    let hv = Killable {
        inner: sim.clone(),
        kill: kill.clone(),
    };
    Engine::start(
        cfg,
        Backends {
            hypervisor: Arc::new(executor::Retrying::new(Arc::new(hv))),
            source: Arc::new(Killable {
                inner: sim.clone(),
                kill: kill.clone(),
            }),
            prober: Arc::new(Killable {
                inner: sim.prober(),
                kill,
            }),
            power: None,
            clock: Arc::new(sim.clock()),
            journal,
            sinks: Vec::new(),
        },
    )
}

const STORY: &str = "
at 20s host h2 crash
at 22s vm vm-001 crash corrupt
at 24s vm vm-006 poweroff by alice
at 26s vm vm-004 poweroff
at 40s host h1 crash permanent
";

/// One round: kill the first daemon at `kill_ms`, restart on the journal, run on.
fn round(seed: u64, kill_ms: u64, dir: &std::path::Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut spec = sim::ClusterSpec::generate(3, 9, 1, seed);
        spec.initial_snapshots = true;
        spec.initial_clones = true;
        spec.storage_heartbeat_period = Duration::from_secs(2);
        for spare in spec.spares.values_mut() {
            spare.mem_mib *= 4;
            spare.cpu_mhz *= 4;
        }
        let sim = sim::Sim::new(&spec).unwrap();
        let path = dir.join(format!("journal-{seed}-{kill_ms}.db"));
        tokio::spawn(sim.run_script(sim::FaultScript::parse(STORY).unwrap()));

        let (kill_tx, kill_rx) = watch::channel(false);
        let mut first = engine(&sim, Kill(kill_rx), Box::new(SqliteJournal::open(&path).unwrap()));
        first
            .run_until(tokio::time::sleep(Duration::from_millis(kill_ms)))
            .await
            .unwrap();
        kill_tx.send(true).unwrap();
        drop(first);

        let store = SqliteJournal::open(&path).map_err(|e| format!("reopen: {e}"))?;
        let recovered = store.recover().map_err(|e| format!("recover: {e}"))?;
        let (_alive_tx, alive_rx) = watch::channel(false);
        let mut second = engine(&sim, Kill(alive_rx), Box::new(store));
        second.restore(journal::restore_of(&recovered)).unwrap();
        second
            .run_until(tokio::time::sleep(Duration::from_secs(240)))
            .await
            .unwrap();

        let violations = sim.violations();
        if !violations.is_empty() {
            return Err(format!("killed at {kill_ms} ms: violations {violations:?}"));
        }
        let down = sim.protected_not_running();
        if !down.is_empty() {
            let story = SqliteJournal::open(&path)
                .and_then(|j| j.recent(80))
                .map(|lines| {
                    lines
                        .iter()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            return Err(format!(
                "killed at {kill_ms} ms: protected VMs forgotten: {down:?}\n{story}"
            ));
        }
        // Ids were never reused: every intent id in the journal is unique.
        let ids = SqliteJournal::open(&path)
            .and_then(|j| j.records(0, usize::MAX))
            .map_err(|e| format!("read journal: {e}"))?
            .into_iter()
            .filter_map(|(_, r)| match r {
                am_core::Record::Intent { id, .. } => Some(id),
                _ => None,
            })
            .collect::<Vec<_>>();
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        if unique.len() != ids.len() {
            return Err(format!("killed at {kill_ms} ms: an action id was reused"));
        }
        Ok(())
    })
}

#[test]
fn killed_at_any_moment_of_a_recovery_the_daemon_restarts_without_running_a_vm_twice_or_forgetting_one() {
    let dir = std::env::temp_dir().join(format!("am-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Kill moments spread over the whole story: before the faults, during detection, during the
    // failovers, the ladder, the user power-off, the second host's death and the spare's addition.
    let moments: Vec<u64> = match std::env::var("AM_CRASH_AT_MS") {
        Ok(v) => v.split(',').filter_map(|m| m.trim().parse().ok()).collect(),
        Err(_) => (0..24).map(|i| 18_000 + i * 1_370).collect(),
    };
    let failures: Vec<String> = moments
        .iter()
        .filter_map(|&ms| round(5, ms, &dir).err())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} kill moments failed:\n{}",
        failures.len(),
        moments.len(),
        failures.join("\n")
    );
}
