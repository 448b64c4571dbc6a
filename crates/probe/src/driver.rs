//! The thin async loop around [`Monitor`]: sends the due probes through a [`Prober`], feeds the
//! results back, and forwards the verdicts. It sleeps with `tokio::time` only, so under a paused
//! tokio clock (the simulator) it runs in virtual time.

use crate::monitor::Monitor;
use crate::settings::Settings;
use am_core::{Clock, Observation, ProbeResult, ProbeTarget, Prober, Time};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Probes `targets` (following every change of the set) with `prober` until `observations` is
/// closed, sending each verdict change as an [`Observation`].
///
/// Probes run concurrently (a probe may outlast the interval); a prober that does not honour its
/// timeout is cut off at twice the timeout plus 100 ms and counted as lost. If the targets' sender
/// is dropped, the last set is probed on.
pub async fn drive(
    prober: Arc<dyn Prober>,
    settings: Settings,
    mut targets: watch::Receiver<BTreeSet<ProbeTarget>>,
    observations: mpsc::UnboundedSender<Observation>,
    clock: Arc<dyn Clock>,
) {
    let mut monitor = Monitor::new(settings);
    let initial = targets.borrow_and_update().clone();
    if !send(&observations, monitor.set_targets(clock.now(), initial)) {
        return;
    }
    let mut inflight: JoinSet<(ProbeTarget, Time, ProbeResult)> = JoinSet::new();
    let mut watching = true;
    loop {
        let now = clock.now();
        for target in monitor.due(now) {
            let prober = prober.clone();
            let timeout = monitor.timing(&target).timeout;
            let guard = timeout * 2 + Duration::from_millis(100);
            inflight.spawn(async move {
                let result = match tokio::time::timeout(guard, prober.probe(&target, timeout)).await {
                    Ok(r) => r,
                    Err(_) => ProbeResult::NoReply,
                };
                (target, now, result)
            });
        }
        let wait = monitor.next_due().map(|at| at.since(clock.now()));
        tokio::select! {
            biased;
            _ = observations.closed() => return,
            changed = targets.changed(), if watching => {
                if changed.is_ok() {
                    let set = targets.borrow_and_update().clone();
                    tracing::debug!(targets = set.len(), "probe targets changed");
                    if !send(&observations, monitor.set_targets(clock.now(), set)) {
                        return;
                    }
                } else {
                    watching = false;
                }
            }
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                let now = clock.now();
                // Take every result that is ready in one go (fewer wake-ups and timers).
                let mut next = Some(done);
                while let Some(done) = next {
                    if let Ok((target, sent, result)) = done {
                        let verdicts = monitor.record_probe(sent, now, &target, &result);
                        if !send(&observations, verdicts) {
                            return;
                        }
                    }
                    next = inflight.try_join_next();
                }
            }
            _ = sleep(wait) => {}
        }
    }
}

/// A [`Clock`] on tokio's clock: milliseconds since it was made. Under a paused runtime it follows
/// virtual time.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts counting now.
    pub fn new() -> TokioClock {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

async fn sleep(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn send(tx: &mpsc::UnboundedSender<Observation>, observations: Vec<Observation>) -> bool {
    for o in observations {
        tracing::debug!(observation = ?o, "probe verdict");
        if tx.send(o).is_err() {
            return false;
        }
    }
    true
}
