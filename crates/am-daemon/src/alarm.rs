//! Alarm delivery. The supervisor raises and clears alarms (deduplicated); sinks deliver them.

use am_core::{AlarmChange, Severity};

/// Somewhere alarms go (the log, a webhook, vCenter events).
pub trait AlarmSink: Send {
    /// Delivers one change. Delivery problems are the sink's to log; they never stop the engine.
    fn deliver(&mut self, change: &AlarmChange);
}

/// Writes alarms to the tracing log.
#[derive(Debug, Default)]
pub struct LogSink;

impl AlarmSink for LogSink {
    fn deliver(&mut self, change: &AlarmChange) {
        match change {
            AlarmChange::Raise(a) => match a.severity {
                Severity::Critical => {
                    tracing::error!(kind = ?a.kind, subject = %a.subject, "ALARM {}", a.message)
                }
                Severity::Warning => {
                    tracing::warn!(kind = ?a.kind, subject = %a.subject, "ALARM {}", a.message)
                }
                Severity::Info => tracing::info!(kind = ?a.kind, subject = %a.subject, "ALARM {}", a.message),
            },
            AlarmChange::Clear { kind, subject, .. } => tracing::info!(?kind, %subject, "alarm cleared"),
        }
    }
}
