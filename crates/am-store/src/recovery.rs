//! What a restarted daemon needs, folded from records in memory: [`Recovery`].
//!
//! The SQLite journal keeps the same state in tables, written by SQL in the transaction of each
//! append (`write.rs`); a journal that keeps only records (the etcd journal of `am-etcd`) folds
//! them with [`Recovery::apply`] and reads the result with [`Recovery::recovered`]. Both give
//! the same [`Recovered`] for the same batches: `tests/fold.rs` checks it.
//!
//! The rules, the same as the SQLite journal's:
//! - an intent's time is that of its `Issued` audit line in the same batch, else the latest time
//!   journaled before it; an outcome's time is the latest time journaled before it;
//! - an intent without an outcome is unfinished; an outcome of an unknown id changes nothing;
//! - a `reset` or `power_on` intent is a restart of its VM, at the intent's time;
//! - an alarm raised again keeps its place (the order of first raises) and takes the new text;
//!   a clear removes it;
//! - a VM's transition to `off(by USER)` marks it as switched off by USER; any other transition
//!   of it removes the mark;
//! - the next action id is the largest id ever journaled plus one.

use crate::store::{RESTARTS_KEPT_PER_VM, Recovered};
use crate::write::user_off;
use am_core::{Action, ActionId, Alarm, AlarmChange, LogKind, Record, Subject, Time, Vm, VmId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// An intent without an outcome yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Open {
    id: ActionId,
    action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vm: Option<Box<Vm>>,
}

/// One restart of a VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Restart {
    at: Time,
    id: ActionId,
}

/// The recovery state of a journal, folded from its batches; serializable, so that a journal
/// can store it as a checkpoint and fold only the batches after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The largest action id journaled.
    max_action_id: u64,
    /// The latest time journaled.
    last_at: Time,
    /// Intents without an outcome, by id.
    open: Vec<Open>,
    /// Active alarms, in the order they were first raised.
    alarms: Vec<Alarm>,
    /// VMs switched off by a user, and by whom.
    user_offs: BTreeMap<VmId, String>,
    /// Restarts per VM, oldest first.
    restarts: BTreeMap<VmId, Vec<Restart>>,
}

impl Recovery {
    /// Folds one batch (the records of one `append`, in order).
    pub fn apply(&mut self, batch: &[Record]) {
        let mut issued_at: HashMap<ActionId, Time> = HashMap::new();
        for r in batch {
            match r {
                Record::Decision(e) => {
                    self.seen(e.at);
                    match (&e.kind, &e.subject) {
                        (LogKind::Transition { to, .. }, Subject::Vm(vm)) => match user_off(to) {
                            Some(user) => {
                                self.user_offs.insert(vm.clone(), user.to_owned());
                            }
                            None => {
                                self.user_offs.remove(vm);
                            }
                        },
                        (LogKind::Issued { id, .. }, _) => {
                            issued_at.insert(*id, e.at);
                        }
                        _ => {}
                    }
                }
                Record::Intent { id, action, vm } => {
                    let at = issued_at.get(id).copied().unwrap_or(self.last_at);
                    self.seen(at);
                    self.max_action_id = self.max_action_id.max(id.0);
                    if let Action::PowerOn { vm } | Action::Reset { vm } = action {
                        let list = self.restarts.entry(vm.clone()).or_default();
                        list.push(Restart { at, id: *id });
                        list.sort_by_key(|r| (r.at, r.id));
                    }
                    let open = Open {
                        id: *id,
                        action: action.clone(),
                        vm: vm.clone(),
                    };
                    match self.open.binary_search_by_key(id, |o| o.id) {
                        Ok(i) => self.open[i] = open,
                        Err(i) => self.open.insert(i, open),
                    }
                }
                Record::Outcome { id, .. } => {
                    if let Ok(i) = self.open.binary_search_by_key(id, |o| o.id) {
                        self.open.remove(i);
                    }
                }
                Record::Alarm(AlarmChange::Raise(a)) => {
                    self.seen(a.at);
                    match self
                        .alarms
                        .iter_mut()
                        .find(|o| o.kind == a.kind && o.subject == a.subject)
                    {
                        Some(old) => *old = a.clone(),
                        None => self.alarms.push(a.clone()),
                    }
                }
                Record::Alarm(AlarmChange::Clear { kind, subject, at }) => {
                    self.seen(*at);
                    self.alarms
                        .retain(|a| !(a.kind == *kind && a.subject == *subject));
                }
            }
        }
    }

    fn seen(&mut self, at: Time) {
        self.last_at = self.last_at.max(at);
    }

    /// Keeps the newest [`RESTARTS_KEPT_PER_VM`] restarts of each VM (what the SQLite journal's
    /// prune keeps); everything else a restart needs is kept whole.
    pub fn prune(&mut self) {
        for list in self.restarts.values_mut() {
            let extra = list.len().saturating_sub(RESTARTS_KEPT_PER_VM);
            list.drain(..extra);
        }
    }

    /// The latest time journaled.
    pub fn last_time(&self) -> Time {
        self.last_at
    }

    /// What a restarted daemon needs (the same as [`SqliteJournal::recover`](crate::SqliteJournal::recover)
    /// gives for the same batches).
    pub fn recovered(&self) -> Recovered {
        Recovered {
            next_action_id: self.max_action_id.saturating_add(1),
            unfinished: self.open.iter().map(|o| (o.id, o.action.clone())).collect(),
            moving: self
                .open
                .iter()
                .filter_map(|o| o.vm.as_ref().map(|vm| (o.id, (**vm).clone())))
                .collect(),
            active_alarms: self.alarms.clone(),
            user_offs: self.user_offs.clone(),
            restarts: self
                .restarts
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(vm, l)| (vm.clone(), l.iter().map(|r| r.at).collect()))
                .collect(),
            last_time: self.last_at,
        }
    }
}
