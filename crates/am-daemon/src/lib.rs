//! # am-daemon
//!
//! The Availability Manager service: the engine loop that drives the pure supervisor from real
//! (or simulated) sources, the journal, alarm delivery, the demo and its report. `main.rs` only
//! parses the command line and calls into this library, so tests drive exactly what runs.

pub mod alarm;
pub mod config;
pub mod demo;
pub mod engine;
pub mod journal;
pub mod plan;
pub mod report;
pub mod run;
pub mod scenario;
