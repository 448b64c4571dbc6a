//! # am-store
//!
//! The journal of the Availability Manager in an embedded SQLite database.
