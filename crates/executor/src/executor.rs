//! The running executor: a shared scheduler state, one tokio task per running action.

use crate::config::ExecutorConfig;
use crate::scheduler::Scheduler;
use am_core::{Action, ActionId, ActionOutcome, HvError, Hypervisor, Observation};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// An action handed to the executor and not started yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The id its outcome is reported with.
    pub id: ActionId,
    /// What to do.
    pub action: Action,
    /// Larger runs first.
    pub priority: u8,
}

/// A queued action, for the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedAction {
    /// The submission.
    pub submission: Submission,
    /// How long it has waited so far.
    pub waiting: Duration,
}

/// A running action, for the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningAction {
    /// The submission.
    pub submission: Submission,
    /// How long it has run so far.
    pub running: Duration,
    /// Its deadline, counted from its start.
    pub timeout: Duration,
}

/// Counters of one operation (one [`Action::name`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Actions started.
    pub started: u64,
    /// Actions that succeeded.
    pub succeeded: u64,
    /// Actions that failed (timeouts included).
    pub failed: u64,
    /// Of the failures, those that hit the executor's deadline.
    pub timed_out: u64,
    /// Total run time of finished actions.
    pub total_time: Duration,
    /// Longest run time of a finished action.
    pub max_time: Duration,
}

impl OpStats {
    /// Actions finished (succeeded or failed).
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Mean run time of finished actions (zero when none finished).
    pub fn mean_time(&self) -> Duration {
        match u32::try_from(self.finished()) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_time / n,
            Err(_) => Duration::from_secs_f64(self.total_time.as_secs_f64() / self.finished() as f64),
        }
    }

    fn record(&mut self, ok: bool, timed_out: bool, took: Duration) {
        if ok {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        if timed_out {
            self.timed_out += 1;
        }
        self.total_time += took;
        self.max_time = self.max_time.max(took);
    }
}

/// Everything the status page shows, taken at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorStatus {
    /// Running actions, oldest first.
    pub running: Vec<RunningAction>,
    /// Queued actions in dispatch order (priority, then submission; an action waits longer if its
    /// VM or host is busy).
    pub queued: Vec<QueuedAction>,
    /// Counters per operation, by [`Action::name`].
    pub stats: BTreeMap<&'static str, OpStats>,
    /// Whether [`ExecutorHandle::shutdown`] was called.
    pub shutting_down: bool,
}

/// The executor: [`Executor::new`] starts one and returns its handle and the outcome channel.
pub struct Executor;

impl Executor {
    /// Starts an executor running actions through `hv`. Every submitted action's outcome arrives on
    /// the returned receiver as [`Observation::ActionDone`] (except those [`ExecutorHandle::shutdown`]
    /// hands back unstarted). The receiver closes when every handle is dropped and no action runs.
    ///
    /// To retry failed calls, pass a [`Retrying`](crate::Retrying) hypervisor.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the executor spawns its actions on the current one).
    #[expect(
        clippy::new_ret_no_self,
        reason = "`Executor` only names the constructor; what runs is reached through the handle"
    )]
    pub fn new(
        hv: Arc<dyn Hypervisor>,
        cfg: ExecutorConfig,
    ) -> (ExecutorHandle, mpsc::UnboundedReceiver<Observation>) {
        let (results, rx) = mpsc::unbounded_channel();
        let (load, _) = watch::channel(Load::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                sched: Scheduler::new(cfg.max_in_flight, cfg.per_host),
                running: HashMap::new(),
                stats: BTreeMap::new(),
                closed: false,
            }),
            hv,
            cfg,
            results,
            load,
            runtime: tokio::runtime::Handle::current(),
        });
        (ExecutorHandle { shared }, rx)
    }
}

/// Submits actions to a running executor and reads its status. Cheap to clone.
#[derive(Clone)]
pub struct ExecutorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ExecutorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = *self.shared.load.borrow();
        f.debug_struct("ExecutorHandle")
            .field("running", &load.running)
            .field("queued", &load.queued)
            .finish()
    }
}

/// Queue and running counts, published on every change.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Load {
    running: usize,
    queued: usize,
}

struct Shared {
    state: Mutex<State>,
    hv: Arc<dyn Hypervisor>,
    cfg: ExecutorConfig,
    results: mpsc::UnboundedSender<Observation>,
    load: watch::Sender<Load>,
    runtime: tokio::runtime::Handle,
}

struct State {
    sched: Scheduler<Pending>,
    running: HashMap<u64, Started>,
    stats: BTreeMap<&'static str, OpStats>,
    closed: bool,
}

struct Pending {
    submission: Submission,
    since: Instant,
}

#[derive(Clone)]
struct Started {
    submission: Submission,
    at: Instant,
    timeout: Duration,
    /// Notified by [`ExecutorHandle::cancel`].
    cancel: Arc<tokio::sync::Notify>,
}

/// How a call ended.
enum Ended {
    /// With this result (the flag: the deadline was hit).
    Result(Result<ActionOutcome, HvError>, bool),
    /// Cancelled: no outcome is reported.
    Cancelled,
}

/// A job the scheduler let through, to be spawned once the lock is released.
struct Job {
    seq: u64,
    started: Started,
    waited: Duration,
}

impl ExecutorHandle {
    /// Queues `action`. It starts when the bounds allow and after every earlier action on the same
    /// VM (or host, for host operations) finished; its outcome comes back as
    /// [`Observation::ActionDone`] with `id`.
    ///
    /// After [`shutdown`](Self::shutdown) the action is not run: it is reported at once as failed
    /// with an `HvError::Api` fault `ExecutorShutdown`.
    pub fn submit(&self, id: ActionId, action: Action, priority: u8) {
        let submission = Submission { id, action, priority };
        let jobs = {
            let mut st = self.shared.lock();
            if st.closed {
                drop(st);
                tracing::warn!(id = %id, op = submission.action.name(), "executor shut down: action not run");
                let _ = self.shared.results.send(Observation::ActionDone {
                    id,
                    result: Err(HvError::Api {
                        fault: "ExecutorShutdown".to_owned(),
                        message: format!("{} not run: the executor is shutting down", submission.action),
                        retryable: false,
                    }),
                });
                return;
            }
            tracing::debug!(id = %id, action = %submission.action, priority, "queued");
            st.sched.push(
                priority,
                &submission.action.clone(),
                Pending {
                    submission,
                    since: Instant::now(),
                },
            );
            self.shared.dispatch(&mut st)
        };
        self.shared.spawn_all(jobs);
    }

    /// Gives up action `id`: removed if still queued, its call dropped if running (what the
    /// server already started goes on). No outcome is reported for it; its VM's next action may
    /// start at once. Unknown or finished ids are ignored.
    pub fn cancel(&self, id: ActionId) {
        let jobs = {
            let mut st = self.shared.lock();
            if let Some((_, started)) = st.running.iter().find(|(_, s)| s.submission.id == id) {
                tracing::info!(id = %id, op = started.submission.action.name(), "cancelling");
                // notify_one stores a permit: a call that has not reached its select yet still sees it.
                started.cancel.notify_one();
                return;
            }
            if st.sched.remove_queued(|p| p.submission.id == id).is_none() {
                return;
            }
            tracing::info!(id = %id, "cancelled before it started");
            self.shared.dispatch(&mut st)
        };
        self.shared.spawn_all(jobs);
    }

    /// Running actions, oldest first.
    pub fn in_flight(&self) -> Vec<RunningAction> {
        self.status().running
    }

    /// Queued actions, in dispatch order.
    pub fn queued(&self) -> Vec<QueuedAction> {
        self.status().queued
    }

    /// How many actions run and how many wait, without copying them.
    pub fn load(&self) -> (usize, usize) {
        let l = *self.shared.load.borrow();
        (l.running, l.queued)
    }

    /// Counters per operation.
    pub fn stats(&self) -> BTreeMap<&'static str, OpStats> {
        self.shared.lock().stats.clone()
    }

    /// Running and queued actions and counters, taken together.
    pub fn status(&self) -> ExecutorStatus {
        let now = Instant::now();
        let st = self.shared.lock();
        let mut running: Vec<_> = st.running.iter().collect();
        running.sort_by_key(|(seq, _)| **seq);
        ExecutorStatus {
            running: running
                .into_iter()
                .map(|(_, s)| RunningAction {
                    submission: s.submission.clone(),
                    running: now.saturating_duration_since(s.at),
                    timeout: s.timeout,
                })
                .collect(),
            queued: st
                .sched
                .queued()
                .map(|p| QueuedAction {
                    submission: p.submission.clone(),
                    waiting: now.saturating_duration_since(p.since),
                })
                .collect(),
            stats: st.stats.clone(),
            shutting_down: st.closed,
        }
    }

    /// Waits until nothing is queued or running. Actions submitted meanwhile are waited for too.
    pub async fn idle(&self) {
        let mut rx = self.shared.load.subscribe();
        // The sender lives in `self.shared`, so this only ends when the condition holds.
        let _ = rx.wait_for(|l| l.running == 0 && l.queued == 0).await;
    }

    /// Stops taking work: later [`submit`](Self::submit)s are refused, the queued actions are
    /// removed and returned (in dispatch order, not started, with no `ActionDone`: journal them
    /// so the next run can decide again), and this waits for the running actions to finish (their
    /// outcomes are sent as usual).
    ///
    /// Running actions are bounded by their deadlines, so this ends at the latest when the
    /// longest of those expires.
    pub async fn shutdown(&self) -> Vec<Submission> {
        let unstarted: Vec<Submission> = {
            let mut st = self.shared.lock();
            st.closed = true;
            let queued = st.sched.drain_queue();
            self.shared.publish(&st);
            queued.into_iter().map(|p| p.submission).collect()
        };
        tracing::info!(unstarted = unstarted.len(), "executor shutting down");
        let mut rx = self.shared.load.subscribe();
        let _ = rx.wait_for(|l| l.running == 0).await;
        unstarted
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, st: &State) {
        let load = Load {
            running: st.sched.running_len(),
            queued: st.sched.queued_len(),
        };
        self.load.send_if_modified(|l| std::mem::replace(l, load) != load);
    }

    /// Takes every job that may start now and marks it running.
    fn dispatch(&self, st: &mut State) -> Vec<Job> {
        let mut jobs = Vec::new();
        if !st.closed {
            let now = Instant::now();
            while let Some((seq, pending)) = st.sched.pop_ready() {
                let timeout = self.cfg.timeout_for(&pending.submission.action);
                let started = Started {
                    submission: pending.submission,
                    at: now,
                    timeout,
                    cancel: Arc::new(tokio::sync::Notify::new()),
                };
                st.stats
                    .entry(started.submission.action.name())
                    .or_default()
                    .started += 1;
                st.running.insert(seq, started.clone());
                jobs.push(Job {
                    seq,
                    started,
                    waited: now.saturating_duration_since(pending.since),
                });
            }
        }
        self.publish(st);
        jobs
    }

    fn spawn_all(self: &Arc<Self>, jobs: Vec<Job>) {
        for job in jobs {
            let shared = Arc::clone(self);
            self.runtime.spawn(shared.run(job));
        }
    }

    async fn run(self: Arc<Self>, job: Job) {
        let s = &job.started.submission;
        let span = tracing::info_span!(
            "action",
            id = %s.id,
            op = s.action.name(),
            vm = s.action.vm().map(|v| v.as_str()),
            host = s.action.host().map(|h| h.as_str()),
            priority = s.priority,
        );
        async move {
            let s = &job.started.submission;
            tracing::info!(
                action = %s.action,
                waited_ms = millis(job.waited),
                timeout_s = job.started.timeout.as_secs(),
                "action started"
            );
            let ended = self
                .call(&s.action, job.started.timeout, &job.started.cancel)
                .await;
            let took = job.started.at.elapsed();
            let (result, deadline_hit) = match ended {
                Ended::Result(result, hit) => (result, hit),
                Ended::Cancelled => {
                    tracing::info!(took_ms = millis(took), "action cancelled");
                    self.finish_cancelled(&job);
                    return;
                }
            };
            match &result {
                Ok(outcome) => tracing::info!(took_ms = millis(took), ?outcome, "action succeeded"),
                Err(e) => tracing::warn!(took_ms = millis(took), error = %e, "action failed"),
            }
            self.finish(job, result, deadline_hit, took);
        }
        .instrument(span)
        .await
    }

    /// Runs the hypervisor call in its own task, so that a panicking backend is reported as a
    /// failure instead of wedging the VM's slot, and cancels it at the deadline (then the flag is
    /// true).
    async fn call(&self, action: &Action, limit: Duration, cancel: &tokio::sync::Notify) -> Ended {
        let hv = Arc::clone(&self.hv);
        let a = action.clone();
        let mut task = tokio::spawn(async move { hv.execute(&a).await }.in_current_span());
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, &mut task) => r,
            () = cancel.notified() => {
                task.abort();
                let _ = task.await;
                return Ended::Cancelled;
            }
        };
        let (result, hit) = match outcome {
            Ok(Ok(result)) => (result, false),
            Ok(Err(join)) => (
                Err(HvError::Api {
                    fault: "ExecutorPanic".to_owned(),
                    message: if join.is_panic() {
                        format!("the hypervisor call for {} panicked", action.name())
                    } else {
                        format!("the hypervisor call for {} was cancelled", action.name())
                    },
                    retryable: false,
                }),
                false,
            ),
            Err(_elapsed) => {
                // Make sure the call is gone before the VM's next action may start.
                task.abort();
                let _ = task.await;
                let err = HvError::Timeout {
                    op: action.name().to_owned(),
                };
                (Err(err), true)
            }
        };
        Ended::Result(result, hit)
    }

    /// A cancelled action's slot and locks are free again; nothing is reported.
    fn finish_cancelled(self: &Arc<Self>, job: &Job) {
        let jobs = {
            let mut st = self.lock();
            st.running.remove(&job.seq);
            st.sched.finish(job.seq);
            self.dispatch(&mut st)
        };
        self.spawn_all(jobs);
    }

    fn finish(
        self: &Arc<Self>,
        job: Job,
        result: Result<ActionOutcome, HvError>,
        deadline_hit: bool,
        took: Duration,
    ) {
        let jobs = {
            let mut st = self.lock();
            let s = &job.started.submission;
            st.stats
                .entry(s.action.name())
                .or_default()
                .record(result.is_ok(), deadline_hit, took);
            st.running.remove(&job.seq);
            st.sched.finish(job.seq);
            // Sent under the lock: the outcome is on the channel before the VM's next action starts.
            let _ = self.results.send(Observation::ActionDone { id: s.id, result });
            self.dispatch(&mut st)
        };
        self.spawn_all(jobs);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
