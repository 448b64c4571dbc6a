//! [`Board`]: the latest [`Snapshot`], shared between the daemon loop (which writes it after each
//! supervisor step) and the HTTP server (which reads it).

use crate::snapshot::{Ack, AlarmView, Extra, Snapshot};
use am_core::{AlarmKind, Command, LogEntry, LogKind, Output, Subject, Time};
use executor::ExecutorStatus;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use supervisor::Supervisor;
use tokio::time::Instant;

/// How the board keeps its history and computes its costly figures.
#[derive(Clone, Debug)]
pub struct BoardOptions {
    /// Audit lines kept for `GET /api/v1/events`.
    pub recent_capacity: usize,
    /// Of those, how many go into each [`Snapshot::recent`].
    pub snapshot_recent: usize,
    /// How VM demand and host capacity are counted, as plans and the status say it.
    pub capacity_model: Option<String>,
    /// How stale the snapshot may grow while steps change no state and raise no alarm, per
    /// [`IDLE_REFRESH_PER`] VMs (at least once): a capture copies every VM's row, so spacing
    /// captures by inventory size keeps what they cost a second the same at any size (1 s at
    /// 2,000 VMs, 5 s at 10,000).
    pub idle_refresh: std::time::Duration,
}

/// The inventory size one [`BoardOptions::idle_refresh`] is for.
pub const IDLE_REFRESH_PER: usize = 2000;

impl Default for BoardOptions {
    fn default() -> Self {
        BoardOptions {
            recent_capacity: 1000,
            snapshot_recent: 50,
            capacity_model: None,
            idle_refresh: std::time::Duration::from_secs(1),
        }
    }
}

/// Why an acknowledgement was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No such alarm is active.
    #[error("no active alarm {kind} on {subject}")]
    NotActive {
        /// The kind asked for.
        kind: String,
        /// The subject asked for.
        subject: String,
    },
}

/// The shared status board. Cheap to clone; every clone is the same board.
///
/// The daemon calls [`Board::observe`] after each supervisor step (from the engine's observer);
/// the server reads [`Board::snapshot`], [`Board::recent`] and [`Board::is_ready`], and records
/// acknowledgements with [`Board::acknowledge`].
#[derive(Clone, Debug)]
pub struct Board {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    opts: BoardOptions,
    /// What readers see.
    view: RwLock<View>,
    /// What only the writer (the daemon loop) needs.
    work: Mutex<Work>,
    /// Where operators' requests go (the daemon loop), once it is set.
    operator: Mutex<Option<tokio::sync::mpsc::UnboundedSender<am_core::OperatorRequest>>>,
    /// Manager HA: who leads the unit, set by the daemon.
    ha: RwLock<Option<crate::HaView>>,
}

#[derive(Debug)]
struct View {
    snapshot: Arc<Snapshot>,
    /// When `snapshot` was captured, to age it when served.
    captured: Instant,
    ready: bool,
    /// Why it is not ready although an inventory was seen (vCenter does not answer).
    unready: Option<String>,
    recent: VecDeque<LogEntry>,
    acks: BTreeMap<(AlarmKind, Subject), Ack>,
}

#[derive(Debug, Default)]
struct Work {
    since: BTreeMap<Subject, Time>,
    /// When the snapshot was last captured (the supervisor's time).
    captured: Option<Time>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Board {
    fn default() -> Self {
        Board::new()
    }
}

impl Board {
    /// An empty board, not ready, with default options.
    pub fn new() -> Self {
        Board::with_options(BoardOptions::default())
    }

    /// An empty board, not ready.
    pub fn with_options(opts: BoardOptions) -> Self {
        Board {
            shared: Arc::new(Shared {
                view: RwLock::new(View {
                    snapshot: Arc::new(Snapshot::default()),
                    captured: Instant::now(),
                    ready: false,
                    unready: None,
                    recent: VecDeque::with_capacity(opts.recent_capacity.min(4096)),
                    acks: BTreeMap::new(),
                }),
                opts,
                work: Mutex::new(Work::default()),
                operator: Mutex::new(None),
                ha: RwLock::new(None),
            }),
        }
    }

    /// Where [`Board::request`] sends operators' requests (the daemon loop's channel).
    pub fn set_operator(&self, tx: tokio::sync::mpsc::UnboundedSender<am_core::OperatorRequest>) {
        *lock(&self.shared.operator) = Some(tx);
    }

    /// Hands an operator's request (evacuate, maintenance) to the daemon loop; `false` when no
    /// loop listens. Its outcome shows in the audit log and the status.
    pub fn request(&self, req: am_core::OperatorRequest) -> bool {
        lock(&self.shared.operator)
            .as_ref()
            .is_some_and(|tx| tx.send(req).is_ok())
    }

    /// Records one supervisor step: keeps its audit lines, notes state changes, and captures a new
    /// snapshot (after a step that changed no state and raised no alarm, only once the last one is
    /// `idle_refresh` old). Call it from the engine's observer with the executor's status. The board becomes
    /// ready once the supervisor has an inventory with a host or a VM in it.
    pub fn observe(&self, now: Time, out: &Output, sup: &Supervisor, exec: Option<&ExecutorStatus>) {
        let opts = &self.shared.opts;
        let mut work = lock(&self.shared.work);
        for e in &out.log {
            if let LogKind::Transition { .. } = e.kind {
                work.since.insert(e.subject.clone(), e.at);
            }
        }
        // Forget subjects that left (VM churn must not grow the map without bound).
        let inv = sup.inventory();
        if work.since.len() > 2 * (inv.hosts.len() + inv.vms.len()) + 64 {
            work.since.retain(|s, _| match s {
                Subject::Host(h) => inv.hosts.contains_key(h),
                Subject::Vm(v) => inv.vms.contains_key(v),
                Subject::Datastore(d) => inv.datastores.contains_key(d),
                Subject::Cluster | Subject::Manager => true,
            });
        }
        let recent: Vec<LogEntry> = {
            let mut view = write(&self.shared.view);
            for e in &out.log {
                if view.recent.len() >= opts.recent_capacity.max(1) {
                    view.recent.pop_front();
                }
                view.recent.push_back(e.clone());
            }
            let skip = view.recent.len().saturating_sub(opts.snapshot_recent);
            view.recent.iter().skip(skip).cloned().collect()
        };
        // No state changed and no alarm: the actions issued or finished (the backup cache's, at
        // a steady rate) show in the next capture, at most `idle_refresh` (scaled by the
        // inventory's size) later.
        let idle = !out
            .log
            .iter()
            .any(|e| matches!(e.kind, LogKind::Transition { .. }))
            && !out.commands.iter().any(|c| matches!(c, Command::Alarm(_)));
        #[allow(clippy::cast_precision_loss)]
        let spacing = opts
            .idle_refresh
            .mul_f64((inv.vms.len() as f64 / IDLE_REFRESH_PER as f64).max(1.0));
        if idle && work.captured.is_some_and(|at| now.since(at) < spacing) {
            return;
        }
        work.captured = Some(now);
        let extra = Extra {
            since: Some(&work.since),
        };
        let snapshot = Snapshot::capture_with(now, sup, exec, &recent, &extra);
        let ready = !inv.hosts.is_empty() || !inv.vms.is_empty();
        drop(work);
        self.publish_inner(snapshot, ready);
        write(&self.shared.view).unready =
            (!sup.source_connected()).then(|| "vCenter does not answer: the inventory is stale".to_owned());
    }

    /// Replaces the snapshot with one captured elsewhere (acknowledgements are kept).
    pub fn publish(&self, snapshot: Snapshot) {
        self.publish_inner(snapshot, false);
    }

    fn publish_inner(&self, mut snapshot: Snapshot, ready: bool) {
        let mut view = write(&self.shared.view);
        // Acknowledgements last only as long as their alarm.
        let active: std::collections::BTreeSet<(AlarmKind, Subject)> = snapshot
            .alarms
            .iter()
            .map(|a| (a.kind, a.subject.clone()))
            .collect();
        view.acks.retain(|k, _| active.contains(k));
        for a in &mut snapshot.alarms {
            a.acknowledged = view.acks.get(&(a.kind, a.subject.clone())).cloned();
        }
        view.snapshot = Arc::new(snapshot);
        view.captured = Instant::now();
        view.ready |= ready;
    }

    /// Marks the daemon ready (the first inventory was seen) even if it is empty.
    pub fn mark_ready(&self) {
        write(&self.shared.view).ready = true;
    }

    /// Whether the first inventory was seen and vCenter answers.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Ready, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        let view = read(&self.shared.view);
        match (&view.unready, view.ready) {
            (Some(why), _) => Err(why.clone()),
            (None, false) => Err("no inventory seen yet".into()),
            (None, true) => Ok(()),
        }
    }

    /// Sets what the status shows of the unit's leadership (manager HA).
    pub fn set_ha(&self, ha: Option<crate::HaView>) {
        *write(&self.shared.ha) = ha;
    }

    /// The latest snapshot without its host and VM rows, `now` advanced as by
    /// [`Board::snapshot`]: what `/metrics` reads (a scrape copied every row: at 10,000 VMs some
    /// 10 MB per scrape, freed at once).
    pub fn summary(&self) -> Snapshot {
        let (snap, captured) = self.latest();
        let summary = Snapshot {
            at: snap.at,
            now: snap.at,
            hosts: Vec::new(),
            vms: Vec::new(),
            cluster: snap.cluster.clone(),
            alarms: snap.alarms.clone(),
            in_flight: snap.in_flight.clone(),
            executor: snap.executor.clone(),
            recent: Vec::new(),
            capacity_model: None,
            ha: None,
        };
        self.served(summary, captured)
    }

    /// The latest snapshot, its `now` advanced by the time since it was captured.
    pub fn snapshot(&self) -> Snapshot {
        let (snap, captured) = self.latest();
        self.served(Arc::unwrap_or_clone(snap), captured)
    }

    /// The latest snapshot and when it was captured.
    fn latest(&self) -> (Arc<Snapshot>, Instant) {
        let view = read(&self.shared.view);
        (view.snapshot.clone(), view.captured)
    }

    /// `snap` as served: with the capacity model and the leadership, `now` advanced by the time
    /// since `captured`.
    fn served(&self, mut snap: Snapshot, captured: Instant) -> Snapshot {
        snap.capacity_model.clone_from(&self.shared.opts.capacity_model);
        snap.ha = read(&self.shared.ha).clone();
        let now = snap.at + captured.elapsed();
        snap.advance_to(now);
        snap
    }

    /// The active alarms with their acknowledgements.
    pub fn alarms(&self) -> Vec<AlarmView> {
        read(&self.shared.view).snapshot.alarms.clone()
    }

    /// The latest `limit` audit lines, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<LogEntry> {
        let view = read(&self.shared.view);
        let skip = view.recent.len().saturating_sub(limit);
        view.recent.iter().skip(skip).cloned().collect()
    }

    /// How many audit lines the board keeps.
    pub fn recent_capacity(&self) -> usize {
        self.shared.opts.recent_capacity
    }

    /// Acknowledges an active alarm. The acknowledgement shows in the snapshot and the alarm list
    /// until the alarm clears.
    pub fn acknowledge(
        &self,
        kind: AlarmKind,
        subject: &Subject,
        by: Option<String>,
    ) -> Result<AlarmView, AckError> {
        let mut view = write(&self.shared.view);
        let now = view.snapshot.at + view.captured.elapsed();
        let mut snap = (*view.snapshot).clone();
        let Some(alarm) = snap
            .alarms
            .iter_mut()
            .find(|a| a.kind == kind && &a.subject == subject)
        else {
            return Err(AckError::NotActive {
                kind: crate::snapshot::alarm_kind_name(kind),
                subject: crate::snapshot::subject_path(subject),
            });
        };
        let ack = alarm.acknowledged.clone().unwrap_or(Ack { at: now, by });
        alarm.acknowledged = Some(ack.clone());
        let result = alarm.clone();
        view.acks.insert((kind, subject.clone()), ack);
        view.snapshot = Arc::new(snap);
        Ok(result)
    }
}
