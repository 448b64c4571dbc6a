//! The journal seam: every decision is written here before it is acted on.
//!
//! The engine appends a supervisor step's audit lines and the intents of its actions *before*
//! handing them to the executor, and each outcome after. A journal that survives a crash lets a
//! restarted daemon see which intents never finished.

use crate::action::{Action, ActionId};
use crate::error::HvError;
use crate::protocol::{AlarmChange, LogEntry};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Why the journal could not write or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage failed.
    #[error("journal storage failed: {0}")]
    Storage(String),
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// An audit line from the supervisor.
    Decision(LogEntry),
    /// An action about to be handed to the executor.
    Intent {
        /// Id.
        id: ActionId,
        /// What.
        action: Action,
        /// The VM it moves, as the manager saw it when deciding (for actions that register a VM
        /// anew: what finds it again after a restart, by its configuration path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<Box<crate::model::Vm>>,
    },
    /// An action's outcome.
    Outcome {
        /// Id.
        id: ActionId,
        /// The error, if it failed.
        error: Option<HvError>,
    },
    /// An alarm change.
    Alarm(AlarmChange),
}

/// Where records go. `append` returns only once the records are stored.
pub trait Journal: Send {
    /// Stores records, in order.
    fn append(&mut self, records: &[Record]) -> Result<(), JournalError>;

    /// Stores one step: its audit lines (as [`Record::Decision`]s), then `records`, in order.
    /// A journal may store the lines without copying them: a first inventory of 10,000 VMs
    /// logs a line per VM, some 2 MB copied by this default.
    fn append_step(&mut self, log: &[crate::LogEntry], records: &[Record]) -> Result<(), JournalError> {
        let mut all: Vec<Record> = log.iter().cloned().map(Record::Decision).collect();
        all.extend_from_slice(records);
        self.append(&all)
    }
}

/// A journal in memory (the demo and tests); clones share the same records.
#[derive(Clone, Debug, Default)]
pub struct MemoryJournal {
    records: Arc<Mutex<Vec<Record>>>,
}

impl MemoryJournal {
    /// All records so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        let mut guard = self
            .records
            .lock()
            .map_err(|_| JournalError::Storage("poisoned lock".into()))?;
        guard.extend_from_slice(records);
        Ok(())
    }
}
