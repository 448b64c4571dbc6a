//! Durations written the way people write them: the project's one grammar
//! ([`am_core::time::duration_str`]), re-exported under the names the simulator has always used.

use std::time::Duration;

/// Parses `30s`, `1500ms`, `2m`, `1m30s`, `0.5s`, `1h`; the unit is required.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    am_core::time::duration_str::parse(text)
}

/// Writes a duration in the shortest of the forms [`parse_duration`] reads back (`5s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    am_core::time::duration_str::format(&d)
}

/// Serde helpers for a [`Duration`] written as `"5s"`.
pub use am_core::time::duration_str as serde_duration;
