//! A [`Monitor`] driven in virtual time against a function that decides each probe's fate: for
//! property tests, the detection-latency benchmark and soak runs (hours of probing in seconds).

use crate::monitor::Monitor;
use am_core::{Observation, ProbeResult, ProbeTarget, Time};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// What becomes of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Answered after this round-trip time (if it is not shorter than the timeout).
    Reply(Duration),
    /// Lost: judged when its timeout expires.
    Lost,
    /// Failed at once with this error (e.g. "connection refused").
    Error(String),
}

/// Probes sent and results delivered in virtual time, in the order a real driver would see them.
#[derive(Debug)]
pub struct VirtualNet {
    /// The monitor under test (add targets with [`Monitor::set_targets`]).
    pub monitor: Monitor,
    now: Time,
    seq: u64,
    inflight: BinaryHeap<Reverse<(Time, u64)>>,
    results: std::collections::HashMap<u64, (ProbeTarget, Time, ProbeResult)>,
    sent: u64,
}

impl VirtualNet {
    /// Starts at time zero.
    pub fn new(monitor: Monitor) -> VirtualNet {
        VirtualNet {
            monitor,
            now: Time::ZERO,
            seq: 0,
            inflight: BinaryHeap::new(),
            results: std::collections::HashMap::new(),
            sent: 0,
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Probes sent so far.
    pub fn probes_sent(&self) -> u64 {
        self.sent
    }

    /// Runs until `until`: sends every due probe, asks `fate(target, sent)` what becomes of it,
    /// feeds the results back at the right times, and hands each verdict to `on(now, verdict)`.
    pub fn run_until(
        &mut self,
        until: Time,
        mut fate: impl FnMut(&ProbeTarget, Time) -> Fate,
        mut on: impl FnMut(Time, Observation),
    ) {
        loop {
            let next_probe = self.monitor.next_due();
            let next_result = self.inflight.peek().map(|Reverse((at, _))| *at);
            let next = match (next_probe, next_result) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => until,
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            // Results first: a result due at the same moment as a probe was already underway.
            while let Some(&Reverse((at, id))) = self.inflight.peek() {
                if at > self.now {
                    break;
                }
                self.inflight.pop();
                if let Some((target, sent, result)) = self.results.remove(&id) {
                    for o in self.monitor.record_probe(sent, at, &target, &result) {
                        on(at, o);
                    }
                }
            }
            for target in self.monitor.due(self.now) {
                self.sent += 1;
                let timeout = self.monitor.timing(&target).timeout;
                let (at, result) = match fate(&target, self.now) {
                    Fate::Reply(rtt) if rtt < timeout => (self.now + rtt, ProbeResult::Reply { rtt }),
                    Fate::Reply(_) | Fate::Lost => (self.now + timeout, ProbeResult::NoReply),
                    Fate::Error(e) => (self.now, ProbeResult::Error(e)),
                };
                self.seq += 1;
                self.results.insert(self.seq, (target, self.now, result));
                self.inflight.push(Reverse((at, self.seq)));
            }
            if next_probe.is_none() && self.inflight.is_empty() {
                self.now = until;
                return;
            }
        }
    }
}
