//! The `Retrying` decorator, in virtual time.

// A test crate: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::{Action, ActionId, ActionOutcome, HostId, HvError, Hypervisor, MockHypervisor, VmId};
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

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_after_the_policy_delays() {
    let s = Script::new(vec![Err(busy()), Err(busy()), Ok(())]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_off().returning(move |_| s2.answer());
    let asked = Arc::default();
    let r = Retrying::with_policy(Arc::new(hv), recording_policy(Arc::clone(&asked)));
    assert_eq!(r.power_off(&VmId::from("vm-1")).await, Ok(()));
    assert_eq!(s.calls(), [0, 3_000, 9_000], "after 3 s, then 6 s");
    let asked: Vec<u32> = asked.lock().unwrap().iter().map(|(_, a)| *a).collect();
    assert_eq!(asked, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_returned_at_once() {
    let s = Script::new(vec![Err(HvError::not_found("vm", "vm-1"))]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_off().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(
        r.power_off(&VmId::from("vm-1")).await,
        Err(HvError::not_found("vm", "vm-1"))
    );
    assert_eq!(s.calls(), [0]);
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_makes_at_most_four_calls_with_growing_delays() {
    let s = Script::new(vec![Err(busy())]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_reset().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(r.reset(&VmId::from("vm-1")).await, Err(busy()));
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
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_on().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(r.power_on(&VmId::from("vm-1")).await, Ok(()));
    assert_eq!(s.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn power_on_on_a_running_vm_at_the_first_attempt_is_still_an_error() {
    let already = HvError::invalid_state("vm-1", "already powered on");
    let s = Script::new(vec![Err(already.clone())]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_on().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(r.power_on(&VmId::from("vm-1")).await, Err(already.clone()));
    // Nor after a rejected (unambiguous) attempt: the first attempt had no effect, so the VM was
    // already on before we acted.
    let s = Script::new(vec![Err(busy()), Err(already.clone())]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_on().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(r.power_on(&VmId::from("vm-1")).await, Err(already));
    assert_eq!(s.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn unregister_retried_after_a_lost_connection_that_finds_it_gone_succeeds() {
    let s = Script::new(vec![Err(unreachable()), Err(HvError::not_found("vm", "vm-1"))]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_unregister_vm().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(r.unregister_vm(&VmId::from("vm-1")).await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn clone_and_add_host_are_not_retried_after_ambiguous_failures() {
    let s = Script::new(vec![Err(timeout("clone_vm")), Ok(VmId::from("dup"))]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_clone_vm().returning(move |_, _, _, _| s2.answer());
    let h = Script::new(vec![Err(unreachable()), Ok(HostId::from("s1"))]);
    let h2 = h.clone();
    hv.expect_add_host().returning(move |_| h2.answer());
    let r = Retrying::new(Arc::new(hv));
    let got = r
        .clone_vm(&VmId::from("vm-1"), "vm-1-bak", &HostId::from("h1"), None)
        .await;
    assert_eq!(got, Err(timeout("clone_vm")));
    assert_eq!(s.calls(), [0], "a second clone must not be made blindly");
    assert_eq!(r.add_host("s1").await, Err(unreachable()));
    assert_eq!(h.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn clone_is_retried_when_the_server_refused_the_first_attempt() {
    let s = Script::new(vec![Err(busy()), Ok(VmId::from("vm-1-bak"))]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_clone_vm().returning(move |_, _, _, _| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    let got = r
        .clone_vm(&VmId::from("vm-1"), "vm-1-bak", &HostId::from("h1"), None)
        .await;
    assert_eq!(got, Ok(VmId::from("vm-1-bak")));
    assert_eq!(s.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn convergent_operations_are_retried_after_timeouts_too() {
    let s = Script::new(vec![
        Err(timeout("fence_host")),
        Err(timeout("fence_host")),
        Ok(()),
    ]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_fence_host().returning(move |_| s2.answer());
    let r = Retrying::new(Arc::new(hv));
    assert_eq!(r.fence_host(&HostId::from("h1")).await, Ok(()));
    assert_eq!(s.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_executor_deadline_bounds_the_retries() {
    let s = Script::new(vec![Err(busy())]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_on().returning(move |_| s2.answer());
    let slow = ExponentialBackoff {
        max_retries: 10,
        base: Duration::from_secs(60),
        max_delay: Duration::from_secs(600),
        jitter: 0.0,
    };
    let hv = Arc::new(Retrying::with_policy(Arc::new(hv), slow));
    let cfg = ExecutorConfig::default().with_timeout("power_on", Duration::from_secs(150));
    let (exec, mut rx) = Executor::new(hv, cfg);
    exec.submit(ActionId(7), Action::PowerOn { vm: "vm-1".into() }, 0);
    let done = common::outcomes(&mut rx, 1).await;
    assert_eq!(done, [(ActionId(7), Err(timeout("power_on")))]);
    assert_eq!(
        s.calls(),
        [0, 60_000],
        "the retry due at 180 s is cut by the deadline at 150 s"
    );
    assert_eq!(exec.stats()["power_on"].timed_out, 1);
    // And a retried success is one success for the executor.
    let s = Script::new(vec![Err(busy()), Ok(())]);
    let mut hv = MockHypervisor::new();
    let s2 = s.clone();
    hv.expect_power_off().returning(move |_| s2.answer());
    let (exec, mut rx) = Executor::new(Arc::new(Retrying::new(Arc::new(hv))), ExecutorConfig::default());
    exec.submit(ActionId(8), Action::PowerOff { vm: "vm-1".into() }, 0);
    assert_eq!(
        common::outcomes(&mut rx, 1).await,
        [(ActionId(8), Ok(ActionOutcome::Done))]
    );
}

#[tokio::test(start_paused = true)]
async fn every_operation_is_classified_as_its_docs_say() {
    let (vm, host) = (VmId::from("vm-1"), HostId::from("h1"));
    // Once: a single call after a timeout.
    let mut hv = MockHypervisor::new();
    hv.expect_reset().times(1).returning(|_| Err(timeout("x")));
    hv.expect_revert_snapshot()
        .times(1)
        .returning(|_, _| Err(timeout("x")));
    hv.expect_create_snapshot()
        .times(1)
        .returning(|_, _| Err(timeout("x")));
    hv.expect_clone_vm()
        .times(1)
        .returning(|_, _, _, _| Err(timeout("x")));
    hv.expect_restore_clone()
        .times(1)
        .returning(|_, _, _| Err(timeout("x")));
    hv.expect_revive_host().times(1).returning(|_| Err(timeout("x")));
    hv.expect_add_host().times(1).returning(|_| Err(timeout("x")));
    let r = Retrying::new(Arc::new(hv));
    assert!(r.reset(&vm).await.is_err());
    assert!(r.revert_snapshot(&vm, None).await.is_err());
    assert!(r.create_snapshot(&vm, "s").await.is_err());
    assert!(r.clone_vm(&vm, "c", &host, None).await.is_err());
    assert!(r.restore_clone(&vm, &vm, &host).await.is_err());
    assert!(r.revive_host(&host).await.is_err());
    assert!(r.add_host("s1").await.is_err());
    drop(r); // the mock checks the call counts when dropped

    // Convergent: retried after a timeout (the default policy: four calls in all).
    let mut hv = MockHypervisor::new();
    hv.expect_power_on().times(4).returning(|_| Err(timeout("x")));
    hv.expect_power_off().times(4).returning(|_| Err(timeout("x")));
    hv.expect_migrate()
        .times(4)
        .returning(|_, _, _| Err(timeout("x")));
    hv.expect_remove_snapshot()
        .times(4)
        .returning(|_, _| Err(timeout("x")));
    hv.expect_register_vm()
        .times(4)
        .returning(|_, _| Err(timeout("x")));
    hv.expect_unregister_vm()
        .times(4)
        .returning(|_| Err(timeout("x")));
    hv.expect_failover().times(4).returning(|_, _| Err(timeout("x")));
    hv.expect_reconnect_host()
        .times(4)
        .returning(|_| Err(timeout("x")));
    hv.expect_fence_host().times(4).returning(|_| Err(timeout("x")));
    hv.expect_remove_host().times(4).returning(|_| Err(timeout("x")));
    hv.expect_enter_maintenance()
        .times(4)
        .returning(|_| Err(timeout("x")));
    hv.expect_exit_maintenance()
        .times(4)
        .returning(|_| Err(timeout("x")));
    let r = Retrying::new(Arc::new(hv));
    let snap = am_core::SnapshotId::from("s");
    assert!(r.power_on(&vm).await.is_err());
    assert!(r.power_off(&vm).await.is_err());
    assert!(r.migrate(&vm, &host, true).await.is_err());
    assert!(r.remove_snapshot(&vm, &snap).await.is_err());
    assert!(r.register_vm(&vm, &host).await.is_err());
    assert!(r.unregister_vm(&vm).await.is_err());
    assert!(r.failover(&vm, &host).await.is_err());
    assert!(r.reconnect_host(&host).await.is_err());
    assert!(r.fence_host(&host).await.is_err());
    assert!(r.remove_host(&host).await.is_err());
    assert!(r.enter_maintenance(&host).await.is_err());
    assert!(r.exit_maintenance(&host).await.is_err());
}
