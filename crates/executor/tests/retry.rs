//! The `Retrying` decorator, in virtual time.

// A test crate: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::{Action, ActionId, ActionOutcome, HvError, Hypervisor, MockHypervisor};
use executor::{Executor, ExecutorConfig, ExponentialBackoff, Retrying};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Records the (virtual) millisecond of each call and answers from a script; the last answer
/// repeats.
#[derive(Clone)]
struct Script<T> {
    t0: Instant,
    calls: Arc<Mutex<Vec<u128>>>,
    answers: Arc<Mutex<Vec<Result<T, HvError>>>>,
}

impl<T: Clone> Script<T> {
    fn new(answers: Vec<Result<T, HvError>>) -> Self {
        Script {
            t0: Instant::now(),
            calls: Arc::default(),
            answers: Arc::new(Mutex::new(answers)),
        }
    }

    fn answer(&self) -> Result<T, HvError> {
        self.calls.lock().unwrap().push(self.t0.elapsed().as_millis());
        let mut a = self.answers.lock().unwrap();
        if a.len() > 1 { a.remove(0) } else { a[0].clone() }
    }

    fn calls(&self) -> Vec<u128> {
        self.calls.lock().unwrap().clone()
    }
}

fn busy() -> HvError {
    HvError::Busy {
        id: "vm-1".into(),
        detail: "another task holds it".into(),
    }
}

fn timeout(op: &str) -> HvError {
    HvError::Timeout { op: op.into() }
}

fn unreachable() -> HvError {
    HvError::Unreachable {
        target: "vcenter".into(),
        detail: "connection reset".into(),
    }
}

/// A policy with fixed, recognisable delays that records what it was asked.
fn recording_policy(
    asked: Arc<Mutex<Vec<(String, u32)>>>,
) -> impl Fn(&HvError, u32) -> Option<Duration> + Send + Sync {
    move |e, attempt| {
        asked.lock().unwrap().push((e.to_string(), attempt));
        (e.is_retryable() && attempt <= 2).then(|| Duration::from_secs(u64::from(attempt) * 3))
    }
}

/// A mock answering every call from `s` (a script of outcomes).
fn scripted(s: &Script<ActionOutcome>) -> MockHypervisor {
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_execute().returning(move |_| s2.answer());
    hv
}

const DONE: ActionOutcome = ActionOutcome::Done;

fn power_on() -> Action {
    Action::PowerOn { vm: "vm-1".into() }
}

fn power_off() -> Action {
    Action::PowerOff { vm: "vm-1".into() }
}

fn clone_vm() -> Action {
    Action::Clone {
        vm: "vm-1".into(),
        name: "vm-1-bak".into(),
        host: "h1".into(),
        datastore: None,
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_after_the_policy_delays() {
    let s = Script::new(vec![Err(busy()), Err(busy()), Ok(DONE)]);
    let asked = Arc::default();
    let r = Retrying::with_policy(Arc::new(scripted(&s)), recording_policy(Arc::clone(&asked)));
    assert_eq!(r.execute(&power_off()).await, Ok(DONE));
    assert_eq!(s.calls(), [0, 3_000, 9_000], "after 3 s, then 6 s");
    let asked: Vec<u32> = asked.lock().unwrap().iter().map(|(_, a)| *a).collect();
    assert_eq!(asked, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_returned_at_once() {
    let s = Script::new(vec![Err(HvError::not_found("vm", "vm-1"))]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(
        r.execute(&power_off()).await,
        Err(HvError::not_found("vm", "vm-1"))
    );
    assert_eq!(s.calls(), [0]);
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_makes_at_most_four_calls_with_growing_delays() {
    let s = Script::new(vec![Err(busy())]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(r.execute(&Action::Reset { vm: "vm-1".into() }).await, Err(busy()));
    let calls = s.calls();
    assert_eq!(calls.len(), 4, "one call and three retries: {calls:?}");
    let gaps: Vec<u128> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, base) in gaps.iter().zip([1_000u128, 2_000, 4_000]) {
        assert!(*gap >= base && *gap <= base * 6 / 5, "gap {gap} for base {base}");
    }
    // The jitter is deterministic: the policy gives the same delays again.
    let p = ExponentialBackoff::default();
    let expected: Vec<u128> = (1..=3).map(|a| p.delay(&busy(), a).as_millis()).collect();
    assert_eq!(gaps, expected);
}

#[tokio::test(start_paused = true)]
async fn power_on_retried_after_a_timeout_that_finds_the_vm_on_succeeds() {
    let s = Script::new(vec![
        Err(timeout("power_on")),
        Err(HvError::invalid_state("vm-1", "already powered on")),
    ]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(r.execute(&power_on()).await, Ok(DONE));
    assert_eq!(s.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn power_on_on_a_running_vm_at_the_first_attempt_is_still_an_error() {
    let already = HvError::invalid_state("vm-1", "already powered on");
    let s = Script::new(vec![Err(already.clone())]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(r.execute(&power_on()).await, Err(already.clone()));
    // Nor after a rejected (unambiguous) attempt: the first attempt had no effect, so the VM was
    // already on before we acted.
    let s = Script::new(vec![Err(busy()), Err(already.clone())]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(r.execute(&power_on()).await, Err(already));
    assert_eq!(s.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn unregister_retried_after_a_lost_connection_that_finds_it_gone_succeeds() {
    let s = Script::new(vec![Err(unreachable()), Err(HvError::not_found("vm", "vm-1"))]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(
        r.execute(&Action::Unregister { vm: "vm-1".into() }).await,
        Ok(DONE)
    );
}

#[tokio::test(start_paused = true)]
async fn clone_and_add_host_are_not_retried_after_ambiguous_failures() {
    let s = Script::new(vec![
        Err(timeout("clone_vm")),
        Ok(ActionOutcome::VmCreated("dup".into())),
    ]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(r.execute(&clone_vm()).await, Err(timeout("clone_vm")));
    assert_eq!(s.calls(), [0], "a second clone must not be made blindly");
    let h = Script::new(vec![
        Err(unreachable()),
        Ok(ActionOutcome::HostAdded("s1".into())),
    ]);
    let r = Retrying::new(Arc::new(scripted(&h)));
    assert_eq!(
        r.execute(&Action::AddHost { spare: "s1".into() }).await,
        Err(unreachable())
    );
    assert_eq!(h.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn clone_is_retried_when_the_server_refused_the_first_attempt() {
    let made = ActionOutcome::VmCreated("vm-1-bak".into());
    let s = Script::new(vec![Err(busy()), Ok(made.clone())]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(r.execute(&clone_vm()).await, Ok(made));
    assert_eq!(s.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn convergent_operations_are_retried_after_timeouts_too() {
    let s = Script::new(vec![
        Err(timeout("fence_host")),
        Err(timeout("fence_host")),
        Ok(DONE),
    ]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert_eq!(
        r.execute(&Action::FenceHost { host: "h1".into() }).await,
        Ok(DONE)
    );
    assert_eq!(s.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_executor_deadline_bounds_the_retries() {
    let s = Script::new(vec![Err(busy())]);
    let slow = ExponentialBackoff {
        max_retries: 10,
        base: Duration::from_secs(60),
        max_delay: Duration::from_secs(600),
        jitter: 0.0,
    };
    let hv = Arc::new(Retrying::with_policy(Arc::new(scripted(&s)), slow));
    let cfg = ExecutorConfig::default().with_timeout("power_on", Duration::from_secs(150));
    let (exec, mut rx) = Executor::new(hv, cfg);
    exec.submit(ActionId(7), power_on(), 0);
    let done = common::outcomes(&mut rx, 1).await;
    assert_eq!(done, [(ActionId(7), Err(timeout("power_on")))]);
    assert_eq!(
        s.calls(),
        [0, 60_000],
        "the retry due at 180 s is cut by the deadline at 150 s"
    );
    assert_eq!(exec.stats()["power_on"].timed_out, 1);
    // And a retried success is one success for the executor.
    let s = Script::new(vec![Err(busy()), Ok(DONE)]);
    let (exec, mut rx) = Executor::new(
        Arc::new(Retrying::new(Arc::new(scripted(&s)))),
        ExecutorConfig::default(),
    );
    exec.submit(ActionId(8), power_off(), 0);
    assert_eq!(
        common::outcomes(&mut rx, 1).await,
        [(ActionId(8), Ok(ActionOutcome::Done))]
    );
}

/// How many calls the default policy makes of `action` when every one times out.
async fn calls_after_timeouts(action: &Action) -> usize {
    let s = Script::new(vec![Err(timeout("x"))]);
    let r = Retrying::new(Arc::new(scripted(&s)));
    assert!(r.execute(action).await.is_err());
    s.calls().len()
}

#[tokio::test(start_paused = true)]
async fn every_operation_is_classified_as_its_docs_say() {
    let (vm, host) = (|| am_core::VmId::from("vm-1"), || am_core::HostId::from("h1"));
    // Once: a single call after a timeout.
    let once = [
        Action::Reset { vm: vm() },
        Action::RevertSnapshot {
            vm: vm(),
            snapshot: None,
        },
        Action::CreateSnapshot {
            vm: vm(),
            name: "s".into(),
        },
        clone_vm(),
        Action::RestoreClone {
            vm: vm(),
            backup: vm(),
            host: host(),
        },
        Action::ReviveHost { host: host() },
        Action::AddHost { spare: "s1".into() },
    ];
    for a in &once {
        assert_eq!(calls_after_timeouts(a).await, 1, "{a} is done at most once");
    }
    // Convergent: retried after a timeout (the default policy: four calls in all).
    let convergent = [
        power_on(),
        power_off(),
        Action::MigrateLive { vm: vm(), to: host() },
        Action::MigrateCold { vm: vm(), to: host() },
        Action::RemoveSnapshot {
            vm: vm(),
            snapshot: "s".into(),
        },
        Action::Register {
            vm: vm(),
            host: host(),
        },
        Action::Unregister { vm: vm() },
        Action::Failover { vm: vm(), to: host() },
        Action::ReconnectHost { host: host() },
        Action::FenceHost { host: host() },
        Action::RemoveHost { host: host() },
        Action::EnterMaintenance { host: host() },
        Action::ExitMaintenance { host: host() },
    ];
    for a in &convergent {
        assert_eq!(calls_after_timeouts(a).await, 4, "{a} is retried after a timeout");
    }
}
