//! The sans-I/O core: which targets to probe when, what their results mean, and the manager's own
//! isolation check. It reads no clock and sends no packet: the caller passes `now`, sends the probes
//! [`Monitor::due`] hands out, and feeds the results back to [`Monitor::record_probe`].

use crate::detector::Track;
use crate::settings::{Settings, Timing};
use am_core::{Observation, ProbeResult, ProbeTarget, Subject, Time};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

/// The verdict on one target, as last reported.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not enough results yet for either verdict.
    Unknown,
    /// Declared alive (it answered `rise` probes in a row).
    Alive,
    /// Declared dead (the detector said so and the manager had proof it could reach the network).
    Dead,
}

/// What the monitor knows about one target (for reports and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// The verdict as last reported.
    pub health: Health,
    /// Whether the detector says "dead" right now (a dead verdict may still wait for proof that the
    /// manager itself is not isolated).
    pub failing: bool,
    /// Lost probes in a row.
    pub misses: u32,
    /// Answered probes in a row.
    pub replies: u32,
    /// When the newest answered probe was sent.
    pub last_reply_sent: Option<Time>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    Guest,
    Isolation,
}

fn kind(t: &ProbeTarget) -> Kind {
    match t {
        ProbeTarget::Host { .. } => Kind::Host,
        ProbeTarget::Guest { .. } => Kind::Guest,
        ProbeTarget::Isolation { .. } => Kind::Isolation,
    }
}

#[derive(Debug)]
struct Entry {
    target: ProbeTarget,
    kind: Kind,
    /// Seeded hash of the target: its phase in the interval and its jitter.
    hash: u64,
    /// When it was added (its schedule counts from here).
    anchor: Time,
    /// The number of the next probe slot.
    slot: u64,
    generation: u32,
    track: Track,
    health: Health,
    failing: bool,
}

impl Entry {
    fn reachable(&self) -> bool {
        self.track.has_replied() && !self.failing
    }
}

/// Per-target failure detectors, the probe schedule, and the isolation check.
///
/// - [`set_targets`](Monitor::set_targets) follows the inventory;
/// - [`due`](Monitor::due) says which targets to probe now (each once per interval, spread over the
///   interval by a seeded hash and jittered, so that 10,000 targets make an even stream);
/// - [`record_probe`](Monitor::record_probe) takes a result and returns the observations whose
///   verdict changed (edge-triggered), each with its evidence.
///
/// A host or guest is declared dead only when its detector says so **and** the manager has fresh
/// proof that it can reach the network itself (an isolation address, or most other hosts, answered
/// recently). When all isolation addresses are lost and most hosts are unreachable too, the monitor
/// reports [`Observation::ManagerIsolation`] and declares nothing dead.
#[derive(Debug)]
pub struct Monitor {
    settings: Settings,
    index: HashMap<ProbeTarget, u32>,
    entries: Vec<Option<Entry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    schedule: BinaryHeap<Reverse<(Time, u32, u32)>>,
    isolation: Vec<u32>,
    hosts: Vec<u32>,
    isolated: bool,
}

impl Monitor {
    /// A monitor with no targets. Out-of-range settings are clamped (see [`Settings::validate`]).
    pub fn new(settings: Settings) -> Monitor {
        Monitor {
            settings: settings.sanitized(),
            index: HashMap::new(),
            entries: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            schedule: BinaryHeap::new(),
            isolation: Vec::new(),
            hosts: Vec::new(),
            isolated: false,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The timing for one target.
    pub fn timing(&self, target: &ProbeTarget) -> &Timing {
        self.timing_of(kind(target))
    }

    fn timing_of(&self, k: Kind) -> &Timing {
        match k {
            Kind::Host | Kind::Isolation => &self.settings.hosts,
            Kind::Guest => &self.settings.guests,
        }
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether the manager currently declares itself isolated.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// The state of one target.
    pub fn status(&self, target: &ProbeTarget) -> Option<TargetStatus> {
        let e = self.entry(*self.index.get(target)?)?;
        Some(TargetStatus {
            health: e.health,
            failing: e.failing,
            misses: e.track.misses,
            replies: e.track.replies,
            last_reply_sent: e.track.last_reply_sent,
        })
    }

    fn entry(&self, idx: u32) -> Option<&Entry> {
        self.entries.get(idx as usize).and_then(Option::as_ref)
    }

    /// Replaces the set of targets: new ones are scheduled from `now`, missing ones are forgotten
    /// (with their state). Returns the isolation verdict if removing hosts changed it.
    pub fn set_targets(
        &mut self,
        now: Time,
        targets: impl IntoIterator<Item = ProbeTarget>,
    ) -> Vec<Observation> {
        // In the caller's order, and the gone ones in slot order: the same inputs give the
        // same schedule in every run (a replayed scenario logs the same lines).
        let mut wanted: HashSet<ProbeTarget> = HashSet::new();
        let mut order: Vec<ProbeTarget> = Vec::new();
        for t in targets {
            if wanted.insert(t.clone()) {
                order.push(t);
            }
        }
        let gone: Vec<ProbeTarget> = self
            .entries
            .iter()
            .flatten()
            .map(|e| &e.target)
            .filter(|t| !wanted.contains(*t))
            .cloned()
            .collect();
        for t in gone {
            self.remove(&t);
        }
        for t in order {
            if !self.index.contains_key(&t) {
                self.insert(now, t);
            }
        }
        self.rebuild_roles();
        let mut out = Vec::new();
        self.update_isolation(&mut out);
        out
    }

    fn insert(&mut self, now: Time, target: ProbeTarget) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let generation = self.generations[idx as usize].wrapping_add(1);
        self.generations[idx as usize] = generation;
        let k = kind(&target);
        let entry = Entry {
            hash: target_hash(&target, self.settings.seed),
            target: target.clone(),
            kind: k,
            anchor: now,
            slot: 0,
            generation,
            track: Track::new(),
            health: Health::Unknown,
            failing: false,
        };
        let first = self.slot_time(k, entry.hash, now, 0);
        self.entries[idx as usize] = Some(entry);
        self.index.insert(target, idx);
        self.schedule.push(Reverse((first, idx, generation)));
    }

    fn remove(&mut self, target: &ProbeTarget) {
        if let Some(idx) = self.index.remove(target) {
            self.entries[idx as usize] = None;
            self.free.push(idx);
        }
    }

    fn rebuild_roles(&mut self) {
        self.isolation.clear();
        self.hosts.clear();
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(e) = e {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                match e.kind {
                    Kind::Isolation => self.isolation.push(i),
                    Kind::Host => self.hosts.push(i),
                    Kind::Guest => {}
                }
            }
        }
    }

    /// When probe number `slot` of a target is due: its phase in the interval (from the seeded
    /// hash), plus the slot's jitter, never before it was added.
    fn slot_time(&self, k: Kind, hash: u64, anchor: Time, slot: u64) -> Time {
        let interval = self.timing_of(k).interval.as_millis().max(1) as u64;
        let phase = hash % interval;
        let span = (interval as f64 * self.settings.jitter) as u64;
        let jitter = if span == 0 || slot == 0 {
            0i64
        } else {
            let r = splitmix64(hash ^ slot.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            (r % (2 * span + 1)) as i64 - span as i64
        };
        let base = anchor.as_millis() + phase + slot.saturating_mul(interval);
        Time::from_millis(base.saturating_add_signed(jitter).max(anchor.as_millis()))
    }

    /// The targets to probe now (each at most once per call). Call it again at
    /// [`next_due`](Monitor::next_due). If the caller fell behind, missed slots are skipped rather
    /// than sent in a burst.
    pub fn due(&mut self, now: Time) -> Vec<ProbeTarget> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, idx, generation))) = self.schedule.peek() {
            if at > now {
                break;
            }
            self.schedule.pop();
            let Some(e) = self.entries.get(idx as usize).and_then(Option::as_ref) else {
                continue;
            };
            if e.generation != generation {
                continue;
            }
            out.push(e.target.clone());
            let (k, hash, anchor) = (e.kind, e.hash, e.anchor);
            let interval = self.timing_of(k).interval.as_millis().max(1) as u64;
            let mut slot = e.slot + 1;
            let mut next = self.slot_time(k, hash, anchor, slot);
            if next <= now {
                let base = anchor.as_millis() + hash % interval;
                slot = (now.as_millis().saturating_sub(base) / interval + 1).max(slot);
                next = self.slot_time(k, hash, anchor, slot);
                while next <= now {
                    slot += 1;
                    next = self.slot_time(k, hash, anchor, slot);
                }
            }
            if let Some(Some(e)) = self.entries.get_mut(idx as usize) {
                e.slot = slot;
            }
            self.schedule.push(Reverse((next, idx, generation)));
        }
        out
    }

    /// When the next probe is due (`None` without targets).
    pub fn next_due(&mut self) -> Option<Time> {
        while let Some(&Reverse((at, idx, generation))) = self.schedule.peek() {
            match self.entry(idx) {
                Some(e) if e.generation == generation => return Some(at),
                _ => {
                    self.schedule.pop();
                }
            }
        }
        None
    }

    /// Records a result when the send time is not known: it is inferred (a reply was sent `rtt`
    /// ago, a timeout `timeout` ago, an error just now). Prefer [`record_probe`](Monitor::record_probe).
    pub fn record(&mut self, now: Time, target: &ProbeTarget, result: &ProbeResult) -> Vec<Observation> {
        let sent = match result {
            ProbeResult::Reply { rtt } => now - *rtt,
            ProbeResult::NoReply => now - self.timing(target).timeout,
            ProbeResult::Error(_) => now,
        };
        self.record_probe(sent, now, target, result)
    }

    /// Records the result, at `now`, of the probe of `target` sent at `sent`. Returns the
    /// observations whose verdict changed: a [`Observation::Liveness`] for a host or guest, a
    /// [`Observation::ManagerIsolation`] for the manager itself (isolation first when it starts,
    /// last when it ends). Results for targets no longer monitored are ignored.
    pub fn record_probe(
        &mut self,
        sent: Time,
        now: Time,
        target: &ProbeTarget,
        result: &ProbeResult,
    ) -> Vec<Observation> {
        let mut out = Vec::new();
        let Some(&idx) = self.index.get(target) else {
            return out;
        };
        let timing = self.timing_of(kind(target)).clone();
        let Some(Some(e)) = self.entries.get_mut(idx as usize) else {
            return out;
        };
        match result {
            ProbeResult::Reply { rtt } => e.track.on_reply(sent, now, *rtt),
            ProbeResult::NoReply => e.track.on_miss(sent, now, None),
            ProbeResult::Error(why) => e.track.on_miss(sent, now, Some(why)),
        }
        let (reachable_before, failing_before) = (e.reachable(), e.failing);
        let health_before = e.health;
        e.failing = e.track.failing(now, &timing);
        let role_changed =
            e.kind != Kind::Guest && (reachable_before != e.reachable() || failing_before != e.failing);
        self.judge(idx, now, &timing, &mut out);
        let health_changed = self.entry(idx).is_some_and(|e| e.health != health_before);
        if role_changed || (health_changed && kind(target) == Kind::Isolation) {
            self.update_isolation(&mut out);
        }
        out
    }

    /// Applies the detector's opinion of one target to its verdict.
    fn judge(&mut self, idx: u32, now: Time, timing: &Timing, out: &mut Vec<Observation>) {
        let Some(e) = self.entry(idx) else { return };
        let (k, health, failing) = (e.kind, e.health, e.failing);
        let risen = health != Health::Alive && !failing && e.track.risen(now, timing);
        let next = match health {
            Health::Dead if !failing && risen => Health::Alive,
            Health::Unknown if !failing && risen => Health::Alive,
            Health::Alive | Health::Unknown if failing => Health::Dead,
            _ => return,
        };
        let evidence = if next == Health::Dead {
            let proof = if k == Kind::Isolation {
                String::new()
            } else {
                match self.connectivity_proof(idx) {
                    Some(p) => p,
                    // The manager may be the one cut off: hold the verdict until it has proof.
                    None => return,
                }
            };
            let mut s = format!("{}: {}", e.target.address(), e.track.dead_evidence(now, timing));
            if !proof.is_empty() {
                let _ = write!(s, "; manager not isolated: {proof}");
            }
            s
        } else {
            format!("{}: {}", e.target.address(), e.track.alive_evidence())
        };
        let subject = match &e.target {
            ProbeTarget::Host { host, .. } => Some(Subject::Host(host.clone())),
            ProbeTarget::Guest { vm, .. } => Some(Subject::Vm(vm.clone())),
            ProbeTarget::Isolation { .. } => None,
        };
        if let Some(Some(e)) = self.entries.get_mut(idx as usize) {
            e.health = next;
        }
        if let Some(subject) = subject {
            out.push(Observation::Liveness {
                subject,
                alive: next == Health::Alive,
                evidence,
            });
        }
    }

    /// Proof that the manager could reach the network while target `idx` was failing: an isolation
    /// address, or most other hosts, answered a probe sent in the `isolation_proof_window` before
    /// the target's latest lost probe (so the target was lost after the manager was seen connected).
    /// None while the manager is isolated.
    fn connectivity_proof(&self, idx: u32) -> Option<String> {
        if self.isolated {
            return None;
        }
        let e = self.entry(idx)?;
        let last_miss = e.track.last_miss_sent?;
        let since = last_miss - self.settings.isolation_proof_window;
        for &i in &self.isolation {
            if let Some(iso) = self.entry(i)
                && let Some(r) = iso.track.replied_between(since, last_miss)
            {
                return Some(format!(
                    "isolation address {} answered the probe sent {r}",
                    iso.target.address()
                ));
            }
        }
        // A guest's own host failing with it proves nothing about the manager's network.
        let own_host = match &e.target {
            ProbeTarget::Guest { host: Some(h), .. } => Some(h),
            _ => None,
        };
        let counted = |h: u32| {
            h != idx
                && !self.entry(h).is_some_and(
                    |x| matches!(&x.target, ProbeTarget::Host { host, .. } if Some(host) == own_host),
                )
        };
        let others = self.hosts.iter().filter(|&&h| counted(h)).count();
        if others == 0 {
            return self
                .isolation
                .is_empty()
                .then(|| "no isolation address or other host to check against".to_owned());
        }
        let mut answered = 0;
        for h in self
            .hosts
            .iter()
            .filter(|&&h| counted(h))
            .filter_map(|&h| self.entry(h))
        {
            if h.track.replied_between(since, last_miss).is_some() {
                answered += 1;
                if 2 * answered > others {
                    return Some(format!(
                        "more than half of the {others} other hosts answered probes sent between {since} and {last_miss}"
                    ));
                }
            }
        }
        None
    }

    /// Re-evaluates the manager's isolation and reports a change.
    fn update_isolation(&mut self, out: &mut Vec<Observation>) {
        let Some((isolated, evidence)) = self.isolation_change() else {
            return;
        };
        self.isolated = isolated;
        let o = Observation::ManagerIsolation { isolated, evidence };
        if isolated {
            out.insert(0, o);
        } else {
            out.push(o);
        }
    }

    /// The new isolation verdict and its evidence, if it changed.
    fn isolation_change(&self) -> Option<(bool, String)> {
        let hosts: Vec<&Entry> = self.hosts.iter().filter_map(|&i| self.entry(i)).collect();
        let isos: Vec<&Entry> = self.isolation.iter().filter_map(|&i| self.entry(i)).collect();
        let reachable = hosts.iter().filter(|h| h.reachable()).count();
        let isolated = if isos.is_empty() {
            hosts.len() >= 2 && hosts.iter().all(|h| h.failing)
        } else {
            isos.iter().all(|i| i.health == Health::Dead) && (hosts.is_empty() || 2 * reachable < hosts.len())
        };
        if isolated == self.isolated {
            return None;
        }
        let mut evidence = String::new();
        if isolated {
            if isos.is_empty() {
                evidence.push_str("no isolation address configured");
            } else {
                evidence.push_str("all isolation addresses lost: ");
                for (n, i) in isos.iter().enumerate() {
                    let sep = if n == 0 { "" } else { "; " };
                    let _ = write!(
                        evidence,
                        "{sep}{} ({} probes lost since {})",
                        i.target.address(),
                        i.track.misses,
                        i.track.first_miss_sent
                    );
                }
            }
            if !hosts.is_empty() {
                let _ = write!(
                    evidence,
                    "; {} of {} hosts unreachable",
                    hosts.len() - reachable,
                    hosts.len()
                );
            }
        } else {
            let back: Vec<&str> = isos
                .iter()
                .filter(|i| i.health != Health::Dead)
                .map(|i| i.target.address())
                .collect();
            if !back.is_empty() {
                let _ = write!(evidence, "isolation address {} answers again", back.join(", "));
            } else if isos.is_empty() {
                evidence.push_str("a host answers again");
            }
            if !hosts.is_empty() {
                let sep = if evidence.is_empty() { "" } else { "; " };
                let _ = write!(evidence, "{sep}{reachable} of {} hosts reachable", hosts.len());
            }
        }
        Some((isolated, evidence))
    }

    /// The interval of one target's probes.
    pub fn interval(&self, target: &ProbeTarget) -> Duration {
        self.timing(target).interval
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of the target's kind, id and address, mixed with the seed (stable across runs and
/// platforms, unlike the standard library's hasher).
fn target_hash(t: &ProbeTarget, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    match t {
        ProbeTarget::Host { host, address } => {
            eat(b"h");
            eat(host.as_str().as_bytes());
            eat(&[0xff]);
            eat(address.as_bytes());
        }
        ProbeTarget::Guest { vm, address, .. } => {
            eat(b"g");
            eat(vm.as_str().as_bytes());
            eat(&[0xff]);
            eat(address.as_bytes());
        }
        ProbeTarget::Isolation { address } => {
            eat(b"i");
            eat(address.as_bytes());
        }
    }
    splitmix64(h ^ seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(i: usize) -> ProbeTarget {
        ProbeTarget::Guest {
            vm: format!("vm-{i}").into(),
            address: format!("127.2.{}.{}", i / 250, i % 250 + 1),
            host: None,
        }
    }

    #[test]
    fn memory_stays_bounded_under_churn_and_results() {
        let mut m = Monitor::new(Settings::default());
        for round in 0..200u64 {
            let now = Time::from_millis(round * 50);
            // 100 targets at a time, a different half every round.
            let base = (round as usize / 2) * 50;
            m.set_targets(now, (base..base + 100).map(guest));
            for t in m.due(now) {
                m.record_probe(now, now, &t, &ProbeResult::NoReply);
                m.record_probe(now, now, &t, &ProbeResult::Error("x".repeat(10)));
            }
        }
        assert_eq!(m.len(), 100);
        assert!(m.entries.len() <= 150, "slots reused: {}", m.entries.len());
        let _ = m.next_due();
        assert!(
            m.schedule.len() <= 2 * m.entries.len(),
            "schedule: {}",
            m.schedule.len()
        );
        for e in m.entries.iter().flatten() {
            let (_, total) = e.track.recent();
            assert!(total <= crate::HISTORY);
        }
    }
}
