//! Tasks: `TaskInfo`, awaited through `WaitForUpdatesEx` on the task's `info` (no polling).

use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Result, TaskError, VimFault};
use crate::property::PropertyFilterSpec;
use crate::value::{MoRef, Value};

/// The state of a task (`TaskInfoState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Queued.
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Success,
    /// Finished with an error.
    Error,
}

/// What a task is doing or did (`TaskInfo`), the fields an HA manager needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    /// The task.
    pub task: MoRef,
    /// The task key.
    pub key: String,
    /// e.g. `VirtualMachine.powerOn`.
    pub description_id: String,
    /// The object the task runs on.
    pub entity: Option<MoRef>,
    /// Its name.
    pub entity_name: Option<String>,
    /// Current state.
    pub state: TaskState,
    /// Progress in percent, while running.
    pub progress: Option<i64>,
    /// The result (e.g. the new VM of `CloneVM_Task`).
    pub result: Option<Value>,
    /// The fault, in state `Error`.
    pub error: Option<VimFault>,
    /// The event chain id: events of this task share it.
    pub event_chain_id: Option<i64>,
    /// When the task was queued, started, completed (xsd:dateTime).
    pub queue_time: Option<String>,
    /// When the task started.
    pub start_time: Option<String>,
    /// When the task completed.
    pub complete_time: Option<String>,
}

impl TaskInfo {
    /// Decode a `TaskInfo` value.
    pub fn from_value(v: &Value) -> Result<Self> {
        let bad = |r: &str| Error::Decode {
            method: "TaskInfo".into(),
            reason: r.into(),
        };
        let s = |k: &str| v.field(k).and_then(Value::as_str).map(str::to_string);
        let state = match v.field("state").and_then(Value::as_str) {
            Some("queued") => TaskState::Queued,
            Some("running") => TaskState::Running,
            Some("success") => TaskState::Success,
            Some("error") => TaskState::Error,
            other => return Err(bad(&format!("unknown task state {other:?}"))),
        };
        Ok(TaskInfo {
            task: v
                .field("task")
                .and_then(Value::as_moref)
                .cloned()
                .ok_or_else(|| bad("no task"))?,
            key: s("key").unwrap_or_default(),
            description_id: s("descriptionId").unwrap_or_default(),
            entity: v.field("entity").and_then(Value::as_moref).cloned(),
            entity_name: s("entityName"),
            state,
            progress: v.field("progress").and_then(Value::as_i64),
            result: v.field("result").cloned(),
            error: v.field("error").map(VimFault::from_localized),
            event_chain_id: v.field("eventChainId").and_then(Value::as_i64),
            queue_time: s("queueTime"),
            start_time: s("startTime"),
            complete_time: s("completeTime"),
        })
    }

    /// The result as a managed object reference (clone, register).
    pub fn result_moref(&self) -> Option<&MoRef> {
        self.result.as_ref().and_then(Value::as_moref)
    }
}

impl Client {
    /// Wait until `task` succeeds (its `TaskInfo`) or fails ([`Error::Task`]).
    ///
    /// Reads the task's `info` once; unless it is finished, follows it with `WaitForUpdatesEx`;
    /// gives up after `timeout`.
    pub async fn wait_for_task(&self, task: &MoRef, timeout: Duration) -> Result<TaskInfo> {
        // One read first: a task is often done by the time its method returned (a collector of
        // its own, its filter, a wait and its removal are four calls, and vcsim batches a
        // collector's updates every 250 ms).
        if let Some(v) = self.retrieve_property_raw(task, "info").await?
            && let Some(done) = finished(task, TaskInfo::from_value(&v)?)
        {
            return done;
        }
        let spec = PropertyFilterSpec::for_object(task, &["info"]);
        let mut watch = self.watch(spec).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break Err(Error::Timeout(format!("task {task}")));
            }
            // Whole seconds, at least one, so vcsim and vCenter both block rather than spin.
            let wait = Duration::from_secs(left.as_secs().clamp(1, 60));
            let set = match watch.next(wait).await {
                Ok(Some(set)) => set,
                Ok(None) => continue,
                Err(e) => break Err(e),
            };
            let info = set
                .objects
                .iter()
                .flat_map(|o| o.changes.iter())
                .filter(|c| c.name == "info")
                .filter_map(|c| c.val.as_ref())
                .next_back()
                .map(TaskInfo::from_value);
            match info {
                Some(Ok(info)) => {
                    if let Some(done) = finished(task, info) {
                        break done;
                    }
                }
                Some(Err(e)) => break Err(e),
                None => {}
            }
        };
        if let Err(e) = watch.close().await {
            tracing::debug!(error = %e, "closing task watch failed");
        }
        outcome
    }

    /// `CancelTask`.
    pub async fn cancel_task(&self, task: &MoRef) -> Result<()> {
        self.invoke("CancelTask", task, |_| {}).await.map(drop)
    }
}

/// The outcome of a task in state `info`, if it has one: its info, or its fault as an error.
fn finished(task: &MoRef, info: TaskInfo) -> Option<Result<TaskInfo>> {
    match info.state {
        TaskState::Success => Some(Ok(info)),
        TaskState::Error => {
            let fault = info.error.clone().unwrap_or_else(|| {
                VimFault::from_value(
                    "MethodFault",
                    Value::Text(String::new()),
                    String::new(),
                    String::new(),
                )
            });
            Some(Err(Error::Task(Box::new(TaskError {
                task: task.clone(),
                description_id: info.description_id,
                entity: info.entity,
                fault,
            }))))
        }
        _ => None,
    }
}
