//! # executor
//!
//! Runs the supervisor's [`Command::Execute`](am_core::Command::Execute) through a
//! [`Hypervisor`](am_core::Hypervisor) and reports each outcome as
//! [`Observation::ActionDone`](am_core::Observation::ActionDone) with the action's id.
//!
//! ## Model
//!
//! * **Queue.** [`ExecutorHandle::submit`] queues an action with a priority: higher priorities
//!   start first, FIFO within a priority. Submitting never blocks and never fails.
//! * **Bounds.** At most [`ExecutorConfig::max_in_flight`] actions run at once, and at most
//!   [`ExecutorConfig::per_host`] per host ([`Action::host`](am_core::Action::host): the target of
//!   moves, clones, failovers and host operations).
//! * **One action per VM.** An action holds [`Lock`]s while it runs: its VM (both VMs for a
//!   restore from a backup clone), or the host for host operations, or the spare's name for
//!   `add_host`. A later action on the same VM waits until the earlier one finished, and actions
//!   on one VM run in submission order whatever their priorities (an earlier action inherits the
//!   priority of a more urgent one queued behind it). Waiting actions do not hold up others: a busy
//!   VM or full host is skipped.
//! * **Deadlines.** Each action runs under `tokio::time::timeout` with its operation's deadline
//!   ([`ExecutorConfig::timeouts`]); when it expires the call is cancelled (dropped) and the
//!   outcome is `HvError::Timeout { op }` with `op` the [`Action::name`](am_core::Action::name).
//!   Dropping the call cannot stop what the server already started: the supervisor reconciles
//!   from the inventory.
//! * **Retries** are not the executor's business: wrap the backend in [`Retrying`], a
//!   [`Hypervisor`](am_core::Hypervisor) decorator (like govmomi's `vim25/retry.go`) that knows
//!   which operations may be repeated after an ambiguous failure (see [`retry`]). The
//!   executor's deadline bounds the whole action, retries included.
//! * **Results** arrive in completion order on an unbounded channel. Poll it with `recv().await`,
//!   or `try_recv()` from synchronous code. An action's outcome is sent before the next action on
//!   its VM starts.
//! * **Status.** [`ExecutorHandle::status`] (running, queued, per-operation counters and
//!   durations) for the status page.
//! * **Shutdown.** [`ExecutorHandle::shutdown`] refuses new work, hands back what was still
//!   queued (to journal) and waits for the running actions.
//!
//! Every action runs in a tracing span `action` with its id, operation, VM, host and priority,
//! with events when it starts and finishes. Only ids, names and error texts are logged.
//!
//! ## Example
//!
//! ```
//! use am_core::{Action, ActionId, ActionOutcome, MockHypervisor, Observation};
//! use executor::{Executor, ExecutorConfig, Retrying};
//! use std::sync::Arc;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let mut backend = MockHypervisor::new(); // a vCenter client or the simulator in real life
//!     backend.expect_execute().returning(|_| Ok(ActionOutcome::Done));
//!     let hv = Arc::new(Retrying::new(Arc::new(backend)));
//!     let cfg = ExecutorConfig::default().with_max_in_flight(8).with_per_host(2);
//!     let (exec, mut results) = Executor::new(hv, cfg);
//!
//!     exec.submit(ActionId(1), Action::PowerOn { vm: "vm-1".into() }, 5);
//!
//!     let Some(Observation::ActionDone { id, result }) = results.recv().await else {
//!         unreachable!("one outcome per action")
//!     };
//!     assert_eq!((id, result), (ActionId(1), Ok(ActionOutcome::Done)));
//!     assert_eq!(exec.stats()["power_on"].succeeded, 1);
//!     assert!(exec.shutdown().await.is_empty(), "nothing left queued");
//! }
//! ```

mod config;
mod executor;
pub mod retry;
mod scheduler;

pub use config::{DEFAULT_TIMEOUTS, ExecutorConfig};
pub use executor::{
    Executor, ExecutorHandle, ExecutorStatus, OpStats, QueuedAction, RunningAction, Submission,
};
pub use retry::{ExponentialBackoff, Repeat, RetryPolicy, Retrying};
pub use scheduler::Lock;
