//! The journal: every decision is written before it is acted on. The seam and the in-memory
//! journal live in `am-core` (`am_core::journal`); the SQLite journal in `am-store`. This module
//! re-exports them and turns what a journal recovers into what the supervisor restores.

pub use am_core::journal::{Journal, JournalError, MemoryJournal, Record};
pub use am_store::{Recovered, SqliteJournal};

/// What a restarted daemon's supervisor learns from its journal.
pub fn restore_of(recovered: &Recovered) -> supervisor::Restore {
    supervisor::Restore {
        next_action_id: recovered.next_action_id,
        unfinished: recovered.unfinished.clone(),
        user_offs: recovered.user_offs.clone(),
        restarts: recovered.restarts.clone(),
        alarms: recovered.active_alarms.clone(),
    }
}
