//! The journal: every decision is written before it is acted on. The seam and the in-memory
//! journal live in `am-core` (`am_core::journal`); this module re-exports them for the daemon.

pub use am_core::journal::{Journal, JournalError, MemoryJournal, Record};
