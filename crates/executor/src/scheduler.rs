//! The pure part of the executor: which queued action may start next. No I/O, no clock, no tokio.
//!
//! Rules, checked in this order for each queued entry, highest priority first and FIFO within a
//! priority:
//! 1. at most `max_in_flight` entries run at once;
//! 2. an entry runs only when none of its [`Lock`]s is held by a running entry, and it is the
//!    oldest queued entry for each of them (so actions on one VM run one at a time, in submission
//!    order, whatever their priorities);
//! 3. at most `per_host` entries with the same host run at once.
//!
//! An entry that cannot start is skipped, not waited for: a full host does not hold up work on
//! other hosts.
//!
//! Because of rule 2, an urgent action can wait behind an earlier, less urgent one on the same
//! VM. To keep that wait short, queued entries inherit the priority of later entries that wait for
//! them (priority inheritance, transitively through shared locks).

use am_core::{Action, HostId, VmId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// What an action holds exclusively while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lock {
    /// A VM: power, snapshot, move and clone operations on it (and a restore's backup clone).
    Vm(VmId),
    /// A host, for host-level operations (reconnect, revive, fence, remove, maintenance).
    Host(HostId),
    /// A spare host being added, by its name in the pool.
    Spare(String),
}

impl Lock {
    /// The locks `action` holds while it runs: the VMs it is about, or else the host it acts on,
    /// or else the spare it adds.
    pub fn of(action: &Action) -> Vec<Lock> {
        match action {
            Action::RestoreClone { vm, backup, .. } => {
                vec![Lock::Vm(vm.clone()), Lock::Vm(backup.clone())]
            }
            Action::AddHost { spare } => vec![Lock::Spare(spare.clone())],
            other => match (other.vm(), other.host()) {
                (Some(vm), _) => vec![Lock::Vm(vm.clone())],
                (None, Some(host)) => vec![Lock::Host(host.clone())],
                (None, None) => Vec::new(),
            },
        }
    }
}

struct Entry<T> {
    locks: Vec<Lock>,
    host: Option<HostId>,
    item: T,
}

struct Held {
    locks: Vec<Lock>,
    host: Option<HostId>,
}

/// A priority queue of actions with the executor's admission rules. `T` is the caller's payload.
pub(crate) struct Scheduler<T> {
    max_in_flight: usize,
    per_host: usize,
    next_seq: u64,
    queue: BTreeMap<(Reverse<u8>, u64), Entry<T>>,
    /// The effective (possibly inherited) priority of each queued entry.
    priority: HashMap<u64, u8>,
    /// Queued sequence numbers per lock, oldest first.
    waiting: HashMap<Lock, VecDeque<u64>>,
    held: HashSet<Lock>,
    host_load: HashMap<HostId, usize>,
    running: HashMap<u64, Held>,
}

impl<T> Scheduler<T> {
    /// An empty scheduler; zero bounds are raised to one.
    pub(crate) fn new(max_in_flight: usize, per_host: usize) -> Self {
        Scheduler {
            max_in_flight: max_in_flight.max(1),
            per_host: per_host.max(1),
            next_seq: 0,
            queue: BTreeMap::new(),
            priority: HashMap::new(),
            waiting: HashMap::new(),
            held: HashSet::new(),
            host_load: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// Queues `item`; returns its sequence number (submission order).
    pub(crate) fn push(&mut self, priority: u8, action: &Action, item: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let locks = Lock::of(action);
        for lock in &locks {
            self.waiting.entry(lock.clone()).or_default().push_back(seq);
        }
        let host = action.host().cloned();
        for lock in &locks {
            self.boost_before(lock, seq, priority);
        }
        self.queue
            .insert((Reverse(priority), seq), Entry { locks, host, item });
        self.priority.insert(seq, priority);
        seq
    }

    /// Raises to `priority` every entry queued on `lock` before `seq`.
    fn boost_before(&mut self, lock: &Lock, seq: u64, priority: u8) {
        let earlier: Vec<u64> = self
            .waiting
            .get(lock)
            .map(|q| q.iter().copied().take_while(|s| *s < seq).collect())
            .unwrap_or_default();
        for s in earlier {
            self.boost(s, priority);
        }
    }

    /// Raises entry `seq` to `priority`, and with it the entries it waits for.
    fn boost(&mut self, seq: u64, priority: u8) {
        let Some(&current) = self.priority.get(&seq) else {
            return;
        };
        if current >= priority {
            return;
        }
        let Some(entry) = self.queue.remove(&(Reverse(current), seq)) else {
            return;
        };
        let locks = entry.locks.clone();
        self.queue.insert((Reverse(priority), seq), entry);
        self.priority.insert(seq, priority);
        for lock in &locks {
            self.boost_before(lock, seq, priority);
        }
    }

    /// Takes the next entry allowed to start, if any, and marks it running.
    pub(crate) fn pop_ready(&mut self) -> Option<(u64, T)> {
        if self.running.len() >= self.max_in_flight {
            return None;
        }
        let key = self
            .queue
            .iter()
            .find(|((_, seq), e)| self.may_start(*seq, e))
            .map(|(k, _)| *k)?;
        let entry = self.queue.remove(&key)?;
        let seq = key.1;
        self.priority.remove(&seq);
        for lock in &entry.locks {
            if let Some(q) = self.waiting.get_mut(lock) {
                q.retain(|s| *s != seq);
                if q.is_empty() {
                    self.waiting.remove(lock);
                }
            }
            self.held.insert(lock.clone());
        }
        if let Some(h) = &entry.host {
            *self.host_load.entry(h.clone()).or_default() += 1;
        }
        self.running.insert(
            seq,
            Held {
                locks: entry.locks,
                host: entry.host,
            },
        );
        Some((seq, entry.item))
    }

    fn may_start(&self, seq: u64, e: &Entry<T>) -> bool {
        let locks_free = e
            .locks
            .iter()
            .all(|l| !self.held.contains(l) && self.waiting.get(l).and_then(|q| q.front()) == Some(&seq));
        let host_free = e
            .host
            .as_ref()
            .is_none_or(|h| self.host_load.get(h).copied().unwrap_or(0) < self.per_host);
        locks_free && host_free
    }

    /// Marks the running entry `seq` finished, releasing its locks and host slot.
    pub(crate) fn finish(&mut self, seq: u64) {
        let Some(held) = self.running.remove(&seq) else {
            return;
        };
        for lock in &held.locks {
            self.held.remove(lock);
        }
        if let Some(h) = &held.host {
            if let Some(n) = self.host_load.get_mut(h) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.host_load.remove(h);
                }
            }
        }
    }

    /// Removes the first queued entry `is` accepts (and its place in the lock queues).
    pub(crate) fn remove_queued(&mut self, is: impl Fn(&T) -> bool) -> Option<T> {
        let key = self.queue.iter().find(|(_, e)| is(&e.item)).map(|(k, _)| *k)?;
        let entry = self.queue.remove(&key)?;
        let seq = key.1;
        self.priority.remove(&seq);
        for lock in &entry.locks {
            if let Some(q) = self.waiting.get_mut(lock) {
                q.retain(|s| *s != seq);
                if q.is_empty() {
                    self.waiting.remove(lock);
                }
            }
        }
        Some(entry.item)
    }

    /// Removes and returns every queued entry, in dispatch order.
    pub(crate) fn drain_queue(&mut self) -> Vec<T> {
        self.waiting.clear();
        self.priority.clear();
        std::mem::take(&mut self.queue)
            .into_values()
            .map(|e| e.item)
            .collect()
    }

    /// Queued entries, in dispatch order (priority, then submission).
    pub(crate) fn queued(&self) -> impl Iterator<Item = &T> {
        self.queue.values().map(|e| &e.item)
    }

    /// How many entries are queued.
    pub(crate) fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// How many entries run.
    pub(crate) fn running_len(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn power_on(vm: &str) -> Action {
        Action::PowerOn { vm: vm.into() }
    }

    fn failover(vm: &str, to: &str) -> Action {
        Action::Failover {
            vm: vm.into(),
            to: to.into(),
        }
    }

    fn push(s: &mut Scheduler<&'static str>, prio: u8, a: &Action, name: &'static str) -> u64 {
        s.push(prio, a, name)
    }

    fn drain_ready(s: &mut Scheduler<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| s.pop_ready().map(|(_, n)| n)).collect()
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut s = Scheduler::new(10, 10);
        push(&mut s, 1, &power_on("a"), "a1");
        push(&mut s, 5, &power_on("b"), "b5");
        push(&mut s, 1, &power_on("c"), "c1");
        push(&mut s, 5, &power_on("d"), "d5");
        assert_eq!(drain_ready(&mut s), ["b5", "d5", "a1", "c1"]);
    }

    #[test]
    fn global_bound_and_release() {
        let mut s = Scheduler::new(2, 10);
        let mut seqs = Vec::new();
        for (i, vm) in ["a", "b", "c"].iter().enumerate() {
            seqs.push(s.push(0, &power_on(vm), ["a", "b", "c"][i]));
        }
        assert_eq!(drain_ready(&mut s), ["a", "b"]);
        assert_eq!((s.running_len(), s.queued_len()), (2, 1));
        s.finish(seqs[0]);
        assert_eq!(drain_ready(&mut s), ["c"]);
    }

    #[test]
    fn per_host_bound_skips_to_other_hosts() {
        let mut s = Scheduler::new(10, 1);
        let first = push(&mut s, 9, &failover("a", "h1"), "a@h1");
        push(&mut s, 9, &failover("b", "h1"), "b@h1");
        push(&mut s, 1, &failover("c", "h2"), "c@h2");
        push(&mut s, 1, &power_on("d"), "d");
        assert_eq!(drain_ready(&mut s), ["a@h1", "c@h2", "d"]);
        s.finish(first);
        assert_eq!(drain_ready(&mut s), ["b@h1"]);
    }

    #[test]
    fn one_action_per_vm_in_submission_order_whatever_the_priority() {
        let mut s = Scheduler::new(10, 10);
        let first = push(&mut s, 1, &power_on("a"), "a-first");
        push(&mut s, 9, &Action::Reset { vm: "a".into() }, "a-second");
        push(&mut s, 0, &power_on("b"), "b");
        // "a-second" has the higher priority but was submitted later for the same VM.
        assert_eq!(drain_ready(&mut s), ["a-first", "b"]);
        s.finish(first);
        assert_eq!(drain_ready(&mut s), ["a-second"]);
    }

    #[test]
    fn queued_entries_inherit_the_priority_of_later_entries_on_the_same_vm() {
        let mut s = Scheduler::new(1, 10);
        let blocker = push(&mut s, 0, &power_on("x"), "blocker");
        assert_eq!(drain_ready(&mut s), ["blocker"]);
        push(&mut s, 1, &power_on("a"), "a-snapshot");
        push(&mut s, 5, &power_on("b"), "b");
        // Waits for a restore that holds "a" and "c", which waits for "c-first".
        push(&mut s, 2, &power_on("c"), "c-first");
        push(
            &mut s,
            1,
            &Action::RestoreClone {
                vm: "c".into(),
                backup: "a".into(),
                host: "h".into(),
            },
            "restore",
        );
        push(&mut s, 9, &Action::Reset { vm: "c".into() }, "c-urgent");
        assert_eq!(
            s.queued().copied().collect::<Vec<_>>(),
            ["a-snapshot", "c-first", "restore", "c-urgent", "b"]
        );
        s.finish(blocker);
        let mut order = Vec::new();
        while let Some((seq, name)) = s.pop_ready() {
            order.push(name);
            s.finish(seq);
        }
        assert_eq!(order, ["a-snapshot", "c-first", "restore", "c-urgent", "b"]);
    }

    #[test]
    fn restore_clone_locks_both_vms_and_host_ops_lock_the_host() {
        let mut s = Scheduler::new(10, 10);
        let restore = push(
            &mut s,
            0,
            &Action::RestoreClone {
                vm: "a".into(),
                backup: "a-bak".into(),
                host: "h1".into(),
            },
            "restore",
        );
        push(&mut s, 0, &Action::PowerOff { vm: "a-bak".into() }, "bak-off");
        let fence = push(&mut s, 0, &Action::FenceHost { host: "h2".into() }, "fence");
        push(&mut s, 0, &Action::ReviveHost { host: "h2".into() }, "revive");
        push(&mut s, 0, &Action::AddHost { spare: "s1".into() }, "add");
        assert_eq!(drain_ready(&mut s), ["restore", "fence", "add"]);
        s.finish(restore);
        s.finish(fence);
        assert_eq!(drain_ready(&mut s), ["bak-off", "revive"]);
    }

    #[test]
    fn zero_bounds_still_make_progress_and_drain_empties() {
        let mut s = Scheduler::new(0, 0);
        push(&mut s, 0, &power_on("a"), "a");
        push(&mut s, 0, &power_on("b"), "b");
        assert_eq!(drain_ready(&mut s), ["a"]);
        assert_eq!(s.queued().copied().collect::<Vec<_>>(), ["b"]);
        assert_eq!(s.drain_queue(), ["b"]);
        assert_eq!(s.queued_len(), 0);
        s.finish(12345); // unknown: ignored
        assert_eq!(s.running_len(), 1);
    }
}
