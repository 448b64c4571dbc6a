//! The executor against a fake hypervisor, in virtual time.

// A test crate: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::{Action, ActionId, ActionOutcome, HostId, HvError, MockHypervisor, SnapshotId, VmId};
use common::{FakeHv, failover, ms_since, outcomes, power_off, power_on, reset};
use executor::{Executor, ExecutorConfig, Submission};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn cfg(max_in_flight: usize, per_host: usize) -> ExecutorConfig {
    ExecutorConfig::default()
        .with_max_in_flight(max_in_flight)
        .with_per_host(per_host)
}

#[tokio::test(start_paused = true)]
async fn global_bound_is_respected_and_every_id_comes_back_once() {
    let hv = FakeHv::new(10 * SEC);
    let t0 = Instant::now();
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(3, 100));
    for i in 0..10 {
        exec.submit(ActionId(i), power_on(&format!("vm-{i}")), 0);
    }
    assert_eq!(exec.load(), (3, 7));
    let done = outcomes(&mut rx, 10).await;
    let ids: BTreeSet<_> = done.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, (0..10).collect());
    assert!(done.iter().all(|(_, r)| r == &Ok(ActionOutcome::Done)));
    assert_eq!(hv.rec.lock().unwrap().max_running, 3);
    // Four waves of three, ten (virtual) seconds each.
    assert_eq!(ms_since(t0), 40_000);
    assert_eq!(exec.load(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn per_host_bound_is_respected_without_holding_up_other_hosts() {
    let hv = FakeHv::new(10 * SEC);
    let t0 = Instant::now();
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(100, 2));
    for i in 0..6 {
        exec.submit(ActionId(i), failover(&format!("a{i}"), "h1"), 9);
    }
    exec.submit(ActionId(10), failover("b0", "h2"), 0);
    exec.submit(ActionId(11), failover("b1", "h2"), 0);
    exec.submit(ActionId(12), power_on("c0"), 0);
    let done = outcomes(&mut rx, 9).await;
    let first_wave: BTreeSet<_> = done[..5].iter().map(|(id, _)| id.0).collect();
    assert_eq!(first_wave, BTreeSet::from([0, 1, 10, 11, 12]));
    let rec = hv.rec.lock().unwrap();
    assert_eq!(rec.max_per_host["h1"], 2);
    assert_eq!(rec.max_per_host["h2"], 2);
    assert_eq!(rec.max_running, 5);
    assert_eq!(ms_since(t0), 30_000, "h1's six failovers in three waves of two");
}

#[tokio::test(start_paused = true)]
async fn actions_on_one_vm_never_overlap_and_run_in_submission_order() {
    let hv = FakeHv::new(5 * SEC);
    hv.delay("vm-b", 3 * SEC);
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(10, 10));
    // Priorities go against submission order on purpose: per VM, submission order wins.
    exec.submit(ActionId(1), power_off("vm-a"), 1);
    exec.submit(ActionId(2), reset("vm-a"), 9);
    exec.submit(ActionId(3), failover("vm-a", "h2"), 5);
    exec.submit(ActionId(4), power_on("vm-b"), 0);
    exec.submit(ActionId(5), power_on("vm-a"), 9);
    let done = outcomes(&mut rx, 5).await;
    let order: Vec<u64> = done.iter().map(|(id, _)| id.0).collect();
    assert_eq!(order, [4, 1, 2, 3, 5]);
    assert!(hv.rec.lock().unwrap().overlaps.is_empty());
    assert_eq!(
        hv.log(),
        [
            "0 start power_off vm-a",
            "0 start power_on vm-b",
            "3000 end power_on vm-b",
            "5000 end power_off vm-a",
            "5000 start reset vm-a",
            "10000 end reset vm-a",
            "10000 start failover vm-a",
            "15000 end failover vm-a",
            "15000 start power_on vm-a",
            "20000 end power_on vm-a",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn host_operations_on_one_host_never_overlap() {
    let hv = FakeHv::new(5 * SEC);
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(10, 10));
    exec.submit(ActionId(1), Action::FenceHost { host: "h1".into() }, 0);
    exec.submit(ActionId(2), Action::ReviveHost { host: "h1".into() }, 0);
    exec.submit(ActionId(3), Action::ReconnectHost { host: "h2".into() }, 0);
    let order: Vec<u64> = outcomes(&mut rx, 3).await.iter().map(|(id, _)| id.0).collect();
    assert_eq!(order, [1, 3, 2]);
    assert!(hv.rec.lock().unwrap().overlaps.is_empty());
}

#[tokio::test(start_paused = true)]
async fn when_capacity_frees_up_the_highest_priority_starts_first() {
    let hv = FakeHv::new(SEC);
    hv.delay("blocker", 60 * SEC);
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(1, 10));
    exec.submit(ActionId(0), power_on("blocker"), 0);
    exec.submit(ActionId(1), power_on("low"), 1);
    exec.submit(ActionId(2), power_on("high"), 9);
    exec.submit(ActionId(3), power_on("mid"), 5);
    exec.submit(ActionId(4), power_on("high-later"), 9);
    let queued: Vec<u64> = exec.queued().iter().map(|q| q.submission.id.0).collect();
    assert_eq!(queued, [2, 4, 3, 1], "the status page lists the dispatch order");
    outcomes(&mut rx, 5).await;
    assert_eq!(
        hv.started(),
        [
            "power_on blocker",
            "power_on high",
            "power_on high-later",
            "power_on mid",
            "power_on low"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_cancels_the_call_reports_timeout_and_the_vm_next_action_runs() {
    let hv = FakeHv::new(SEC);
    hv.delay("vm-a", Duration::from_secs(3600));
    let cfg = cfg(10, 10).with_timeout("power_on", 120 * SEC);
    let (exec, mut rx) = Executor::new(hv.clone(), cfg);
    exec.submit(ActionId(1), power_on("vm-a"), 0);
    exec.submit(ActionId(2), power_off("vm-a"), 0);
    exec.submit(ActionId(3), power_on("vm-b"), 0);
    let done = outcomes(&mut rx, 3).await;
    assert_eq!(done[0], (ActionId(3), Ok(ActionOutcome::Done)));
    assert_eq!(
        done[1],
        (
            ActionId(1),
            Err(HvError::Timeout {
                op: "power_on".into()
            })
        )
    );
    assert_eq!(done[2].0, ActionId(2));
    assert!(hv.log().starts_with(&[
        "0 start power_on vm-a".to_owned(),
        "0 start power_on vm-b".to_owned(),
        "1000 end power_on vm-b".to_owned(),
        "120000 cancelled power_on vm-a".to_owned(),
        "120000 start power_off vm-a".to_owned(),
    ]));
    let stats = exec.stats();
    assert_eq!(stats["power_on"].started, 2);
    assert_eq!(stats["power_on"].timed_out, 1);
    assert_eq!(stats["power_on"].failed, 1);
    assert_eq!(stats["power_on"].succeeded, 1);
    assert_eq!(stats["power_on"].max_time, 120 * SEC);
}

#[tokio::test(start_paused = true)]
async fn outcomes_carry_their_ids_and_values() {
    let mut hv = MockHypervisor::new();
    hv.expect_execute().returning(|a| match a {
        Action::Clone { name, .. } => Ok(ActionOutcome::VmCreated(VmId::from(name.as_str()))),
        Action::AddHost { spare } => Ok(ActionOutcome::HostAdded(HostId::from(spare.as_str()))),
        Action::CreateSnapshot { .. } => Ok(ActionOutcome::SnapshotCreated(SnapshotId::from("snap-1"))),
        other => Err(HvError::not_found("vm", other.vm().map_or("?", |v| v.as_str()))),
    });
    let (exec, mut rx) = Executor::new(Arc::new(hv), ExecutorConfig::default());
    exec.submit(
        ActionId(10),
        Action::Clone {
            vm: "vm-1".into(),
            name: "vm-1-bak".into(),
            host: "h1".into(),
            datastore: None,
        },
        0,
    );
    exec.submit(ActionId(11), Action::AddHost { spare: "s1".into() }, 0);
    exec.submit(
        ActionId(12),
        Action::CreateSnapshot {
            vm: "vm-2".into(),
            name: "pre".into(),
        },
        0,
    );
    exec.submit(ActionId(13), power_on("vm-3"), 0);
    let mut done = outcomes(&mut rx, 4).await;
    done.sort_by_key(|(id, _)| *id);
    assert_eq!(
        done,
        [
            (ActionId(10), Ok(ActionOutcome::VmCreated("vm-1-bak".into()))),
            (ActionId(11), Ok(ActionOutcome::HostAdded("s1".into()))),
            (ActionId(12), Ok(ActionOutcome::SnapshotCreated("snap-1".into()))),
            (ActionId(13), Err(HvError::not_found("vm", "vm-3"))),
        ]
    );
    let stats = exec.stats();
    assert_eq!((stats["power_on"].failed, stats["power_on"].timed_out), (1, 0));
    assert_eq!(stats["clone"].succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_the_queue_and_waits_for_running_actions() {
    let hv = FakeHv::new(30 * SEC);
    let t0 = Instant::now();
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(1, 10));
    exec.submit(ActionId(1), power_on("vm-a"), 0);
    exec.submit(ActionId(2), power_on("vm-b"), 0);
    exec.submit(ActionId(3), power_on("vm-c"), 7);
    tokio::time::sleep(10 * SEC).await;
    let unstarted = exec.shutdown().await;
    assert_eq!(ms_since(t0), 30_000, "waited for the running action");
    assert_eq!(
        unstarted,
        [
            Submission {
                id: ActionId(3),
                action: power_on("vm-c"),
                priority: 7
            },
            Submission {
                id: ActionId(2),
                action: power_on("vm-b"),
                priority: 0
            },
        ]
    );
    assert_eq!(
        outcomes(&mut rx, 1).await,
        [(ActionId(1), Ok(ActionOutcome::Done))]
    );
    assert_eq!(hv.started(), ["power_on vm-a"]);
    assert!(exec.status().shutting_down);

    // Later submissions are refused, and said so.
    exec.submit(ActionId(4), power_on("vm-d"), 0);
    let done = outcomes(&mut rx, 1).await;
    assert!(
        matches!(&done[0], (ActionId(4), Err(HvError::Api { fault, retryable: false, .. })) if fault == "ExecutorShutdown")
    );
    assert_eq!(hv.started(), ["power_on vm-a"]);

    // The channel closes once no handle is left.
    drop(exec);
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_backend_fails_the_action_and_frees_the_vm() {
    let hv = FakeHv::new(SEC);
    hv.panics.lock().unwrap().insert("vm-a".into());
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(10, 10));
    exec.submit(ActionId(1), power_on("vm-a"), 0);
    let done = outcomes(&mut rx, 1).await;
    assert!(matches!(&done[0], (ActionId(1), Err(HvError::Api { fault, .. })) if fault == "ExecutorPanic"));
    hv.panics.lock().unwrap().clear();
    exec.submit(ActionId(2), power_on("vm-a"), 0);
    assert_eq!(
        outcomes(&mut rx, 1).await,
        [(ActionId(2), Ok(ActionOutcome::Done))]
    );
}

#[tokio::test(start_paused = true)]
async fn status_shows_running_and_queued_work_and_stats_add_up() {
    let hv = FakeHv::new(10 * SEC);
    hv.delay("vm-b", 20 * SEC);
    let (exec, rx) = Executor::new(hv.clone(), cfg(2, 10));
    exec.submit(ActionId(1), power_on("vm-a"), 0);
    exec.submit(ActionId(2), power_on("vm-b"), 0);
    exec.submit(ActionId(3), power_off("vm-a"), 0);
    tokio::time::sleep(4 * SEC).await;
    let st = exec.status();
    let running: Vec<_> = st
        .running
        .iter()
        .map(|r| (r.submission.id.0, r.running.as_secs(), r.timeout.as_secs()))
        .collect();
    assert_eq!(running, [(1, 4, 120), (2, 4, 120)]);
    assert_eq!(st.queued.len(), 1);
    assert_eq!(
        (st.queued[0].submission.id, st.queued[0].waiting),
        (ActionId(3), 4 * SEC)
    );
    assert!(!st.shutting_down);

    exec.idle().await;
    assert_eq!(rx.len(), 3);
    let stats = exec.stats();
    let on = &stats["power_on"];
    assert_eq!((on.started, on.succeeded, on.failed), (2, 2, 0));
    assert_eq!(
        (on.total_time, on.max_time, on.mean_time()),
        (30 * SEC, 20 * SEC, 15 * SEC)
    );
    assert_eq!(stats["power_off"].finished(), 1);
}

/// The same invariants on a multi-threaded runtime, where completions race each other for real.
/// Asserts no timing, only the bounds and the per-VM order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_hold_on_a_multi_threaded_runtime() {
    let hv = FakeHv::new(Duration::from_millis(1));
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(4, 2));
    let mut n = 0;
    for round in 0..10 {
        for vm in 0..8 {
            let action = match round % 3 {
                0 => failover(&format!("vm-{vm}"), &format!("h{}", vm % 3)),
                1 => power_off(&format!("vm-{vm}")),
                _ => power_on(&format!("vm-{vm}")),
            };
            exec.submit(ActionId(n), action, (vm % 4) as u8);
            n += 1;
        }
    }
    let done = outcomes(&mut rx, n as usize).await;
    assert!(done.iter().all(|(_, r)| r.is_ok()));
    let rec = hv.rec.lock().unwrap();
    assert!(rec.overlaps.is_empty(), "{:?}", rec.overlaps);
    assert!(rec.max_running <= 4);
    assert!(rec.max_per_host.values().all(|m| *m <= 2));
    // Per VM, calls started in submission order.
    for vm in 0..8 {
        let name = format!("vm-{vm}");
        let ops: Vec<&str> = rec
            .started
            .iter()
            .filter(|s| s.ends_with(&format!(" {name}")))
            .map(|s| s.split(' ').next().unwrap())
            .collect();
        let expected: Vec<&str> = (0..10)
            .map(|r| ["failover", "power_off", "power_on"][r % 3])
            .collect();
        assert_eq!(ops, expected, "{name}");
    }
}

/// A long action on a VM (a backup snapshot on a host that just died) does not hold up the
/// failover queued behind it once it is cancelled: the running call is dropped at once, a queued
/// one never starts, neither reports an outcome, and the failover runs right away.
#[tokio::test(start_paused = true)]
async fn a_cancelled_action_frees_its_vm_at_once_and_reports_nothing() {
    let hv = FakeHv::new(200 * SEC);
    let t0 = Instant::now();
    let (exec, mut rx) = Executor::new(hv.clone(), cfg(10, 10));
    let snapshot = Action::CreateSnapshot {
        vm: "vm-a".into(),
        name: "am-backup-1".into(),
    };
    exec.submit(ActionId(1), snapshot, 1);
    exec.submit(ActionId(2), reset("vm-a"), 1);
    exec.submit(ActionId(3), failover("vm-a", "h2"), 9);
    tokio::time::sleep(SEC).await;
    assert_eq!(
        exec.load(),
        (1, 2),
        "the snapshot runs; the reset and the failover wait"
    );
    exec.cancel(ActionId(2));
    exec.cancel(ActionId(1));
    exec.cancel(ActionId(99));
    let done = outcomes(&mut rx, 1).await;
    assert_eq!(done[0].0, ActionId(3), "only the failover reports: {done:?}");
    assert_eq!(
        ms_since(t0),
        201_000,
        "the failover started when the snapshot was cancelled"
    );
    assert_eq!(exec.load(), (0, 0));
    let started = hv.started();
    assert!(
        !started.iter().any(|o| o.contains("reset")),
        "the cancelled reset never ran: {started:?}"
    );
}
