//! The leader's death, freeze and cut-off from etcd, with two and three daemons on one unit.

use std::time::Duration;

use am_core::{Action, Record};
use am_testbed::{EtcdServer, Spec, Vcsim, signal};

use super::*;
use crate::common::*;

/// SIGKILL of the leader while its failover's power-ons are held in vCenter: the standby takes
/// the unit over, restores from the etcd journal, reconciles the unfinished failovers (the dead
/// leader's power-ons complete after its death) and moves every VM of the dead host: each runs
/// exactly once, none is left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_completes_a_failover_when_the_leader_is_killed_in_the_middle() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let etcd = EtcdServer::start();
    let dir = scratch("kill");
    let (mut a, mut b) = leader_and_standby(&sim, &etcd, &dir).await;
    let token_a = a.ha().await.unwrap().token.unwrap();
    let obs = observer(&sim).await;
    let (dead_name, dead_ref, dead_vms) = busiest(&sim);

    // The leader's power-ons wait in vCenter: it is in the middle of the failover when killed.
    let since = events(&obs).await.iter().map(|e| e.key).max().unwrap_or(0);
    sim.post("/hold?method=PowerOnVM_Task");
    sim.post(&format!("/host/crash?name={dead_name}"));
    until("a's failover to reach vCenter's power-on", &[&a], async || {
        let held = sim.get("/held");
        (!held.as_array()?.is_empty()).then_some(())
    })
    .await;
    a.kill9();
    // vCenter finishes what the dead leader had started.
    sim.post("/release?method=PowerOnVM_Task");

    let ha = until("b to take the unit over", &[&b], async || {
        b.ha().await.filter(|h| h.leading)
    })
    .await;
    assert!(ha.token.unwrap() > token_a, "a newer token: {ha:?}");
    assert_eq!(
        (ha.takeovers, ha.leases_lost),
        (1, 1),
        "a's lease ran out: {ha:?}"
    );
    until(
        "every VM of the dead host to run elsewhere, once",
        &[&b],
        async || all_moved(&sim, &obs, &dead_ref, &dead_vms).await.then_some(()),
    )
    .await;
    // Settle, then look again: nothing runs twice, nothing is left off.
    tokio::time::sleep(Duration::from_secs(3)).await;
    each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", tail(&b.log(), 80)));
    assert!(
        all_moved(&sim, &obs, &dead_ref, &dead_vms).await,
        "{}",
        tail(&b.log(), 80)
    );
    // vCenter's own count: each of the dead host's VMs was powered on exactly once, by the dead
    // leader's released call or by the new leader, never by both.
    let ons = power_ons(&obs, since).await;
    for name in &dead_vms {
        assert_eq!(
            ons.get(name),
            Some(&1),
            "{name} powered on once: {ons:?}\n{}",
            tail(&b.log(), 80)
        );
    }
    // What the journal in etcd shows: a's failovers, and b's restore reconciling them.
    let records = journal(&etcd).await;
    let failovers = records
        .iter()
        .filter(|r| {
            matches!(
                r,
                Record::Intent {
                    action: Action::Failover { .. },
                    ..
                }
            )
        })
        .count();
    assert!(failovers >= 1, "a's failovers are journaled: {records:?}");
    let reconciled = records.iter().any(|r| {
        matches!(r, Record::Decision(e) if matches!(&e.kind, am_core::LogKind::Note { message } if message.contains("unfinished before the restart")))
    });
    assert!(
        reconciled,
        "b reconciles a's unfinished failovers as a restarted daemon does"
    );
    let log_b = b.log();
    assert!(log_b.contains("leading the unit"), "{}", tail(&log_b, 40));
    assert!(b.exited().is_none(), "b keeps running");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A leader frozen (SIGSTOP) past its lease: the standby takes over and handles a host failure;
/// when the old leader thaws it acts on nothing (its lease ran out by its own clock, its journal
/// write would be refused) and exits saying it lost the leadership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_stops_acting() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let etcd = EtcdServer::start();
    let dir = scratch("pause");
    let (mut a, b) = leader_and_standby(&sim, &etcd, &dir).await;
    let obs = observer(&sim).await;
    signal(a.pid(), "STOP");
    until("b to take the unit over from the frozen a", &[&b], async || {
        b.ha().await.filter(|h| h.leading)
    })
    .await;
    // A host fails while a is frozen: only b may act on it.
    let (dead_name, dead_ref, dead_vms) = busiest(&sim);
    let since = events(&obs).await.iter().map(|e| e.key).max().unwrap_or(0);
    sim.post(&format!("/host/crash?name={dead_name}"));
    until("b to move the dead host's VMs", &[&b], async || {
        all_moved(&sim, &obs, &dead_ref, &dead_vms).await.then_some(())
    })
    .await;
    signal(a.pid(), "CONT");
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = a.exited() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never exited after thawing:\n{}",
            tail(&a.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "a exits with an error: {status:?}");
    let log_a = a.log();
    assert!(
        log_a.contains("lost the leadership") || log_a.contains("leadership lost"),
        "a says why it stopped:\n{}",
        tail(&log_a, 40)
    );
    println!("a after thawing:\n{}", tail(&log_a, 12));
    let after_thaw = log_a.rsplit("leadership lost").next().unwrap_or_default();
    assert!(
        !after_thaw.contains("issued"),
        "a issues nothing once its lease is lost:\n{}",
        tail(&log_a, 40)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", tail(&b.log(), 80)));
    assert!(all_moved(&sim, &obs, &dead_ref, &dead_vms).await);
    let ons = power_ons(&obs, since).await;
    for name in &dead_vms {
        assert_eq!(
            ons.get(name),
            Some(&1),
            "{name} powered on once (by b only): {ons:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three daemons on one unit: one leads, two stand by behind it; SIGKILL of the leader during a
/// failover: exactly one of the two takes over (the other stands by behind it) and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_three_daemons_exactly_one_takes_over() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let etcd = EtcdServer::start();
    let dir = scratch("three");
    let (mut a, b) = leader_and_standby(&sim, &etcd, &dir).await;
    let c = Daemon::start(&sim, &etcd, "c", &dir);
    until("c to stand by behind a", &[&a, &c], async || {
        let ha = c.ha().await?;
        (!ha.leading && ha.leader.as_deref() == Some("a")).then_some(())
    })
    .await;
    let obs = observer(&sim).await;
    let (dead_name, dead_ref, dead_vms) = busiest(&sim);
    let since = events(&obs).await.iter().map(|e| e.key).max().unwrap_or(0);
    sim.post("/hold?method=PowerOnVM_Task");
    sim.post(&format!("/host/crash?name={dead_name}"));
    until("a's failover to reach vCenter's power-on", &[&a], async || {
        (!sim.get("/held").as_array()?.is_empty()).then_some(())
    })
    .await;
    a.kill9();
    sim.post("/release?method=PowerOnVM_Task");
    let (new, other) = until("b or c to take the unit over", &[&b, &c], async || {
        let (hb, hc) = (b.ha().await?, c.ha().await?);
        match (hb.leading, hc.leading) {
            (true, false) => Some((&b, hc)),
            (false, true) => Some((&c, hb)),
            (true, true) => panic!("two leaders: {hb:?} {hc:?}"),
            (false, false) => None,
        }
    })
    .await;
    until(
        "the other to stand by behind the new leader",
        &[&b, &c],
        async || {
            let ha = if std::ptr::eq(new, &b) {
                c.ha().await?
            } else {
                b.ha().await?
            };
            (!ha.leading && ha.leader.as_deref() == Some(new.name.as_str())).then_some(())
        },
    )
    .await;
    assert!(!other.leading);
    until(
        "every VM of the dead host to run elsewhere, once",
        &[new],
        async || all_moved(&sim, &obs, &dead_ref, &dead_vms).await.then_some(()),
    )
    .await;
    // For a while, exactly one leads and every VM runs once.
    for _ in 0..10 {
        let leading = [b.ha().await, c.ha().await]
            .into_iter()
            .flatten()
            .filter(|h| h.leading)
            .count();
        assert_eq!(leading, 1, "exactly one leader");
        each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", tail(&new.log(), 80)));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ons = power_ons(&obs, since).await;
    for name in &dead_vms {
        assert_eq!(ons.get(name), Some(&1), "{name} powered on once: {ons:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// etcd goes away (its one member stopped) while a host fails: the leader, cut off, acts on
/// nothing (it cannot journal) and exits once its lease runs out; the standby outlives the
/// outage, and when etcd is back it takes the unit over and completes the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_and_the_standby_finishes_after_the_outage() {
    let sim = Vcsim::start(&Spec {
        hosts: 3,
        vms_per_host: 2,
        tls: true,
        ..Spec::default()
    });
    let mut etcd = EtcdServer::start();
    let dir = scratch("outage");
    let (mut a, mut b) = leader_and_standby(&sim, &etcd, &dir).await;
    let obs = observer(&sim).await;
    let before = vms(&obs).await;
    etcd.stop();
    let (dead_name, dead_ref, dead_vms) = busiest(&sim);
    sim.post(&format!("/host/crash?name={dead_name}"));
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = a.exited() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never stopped:\n{}",
            tail(&a.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "{status:?}");
    assert!(
        a.log().contains("lost the leadership") || a.log().contains("cannot journal"),
        "{}",
        tail(&a.log(), 30)
    );
    // Nothing moved while nobody could lead: every VM is where it was, in vCenter.
    let during = vms(&obs).await;
    for (moref, name, _, host) in &before {
        let now = during.iter().find(|(m, ..)| m == moref);
        assert_eq!(
            now.map(|v| &v.3),
            Some(host),
            "{name} was not touched during the outage"
        );
    }
    assert!(
        b.exited().is_none(),
        "the standby outlives the outage:\n{}",
        tail(&b.log(), 30)
    );
    // Nobody leads and b cannot take over: b raises the alarm (to its log and webhook) and shows
    // no leader in its status.
    until("b's unit-without-leader alarm", &[&b], async || {
        b.log().contains("UnitWithoutLeader").then_some(())
    })
    .await;
    let ha = b.ha().await.expect("b's status during the outage");
    assert!(!ha.leading && ha.leader.is_none(), "{ha:?}");
    etcd.restart();
    until("b to take the unit over after the outage", &[&b], async || {
        b.ha().await.filter(|h| h.leading)
    })
    .await;
    assert!(
        b.log()
            .lines()
            .any(|l| l.contains("alarm cleared") && l.contains("UnitWithoutLeader")),
        "the alarm is cleared once b leads:\n{}",
        tail(&b.log(), 30)
    );
    until("b to move the dead host's VMs", &[&b], async || {
        all_moved(&sim, &obs, &dead_ref, &dead_vms).await.then_some(())
    })
    .await;
    each_runs_once(&sim).unwrap_or_else(|e| panic!("{e}\n{}", tail(&b.log(), 80)));
    let _ = std::fs::remove_dir_all(&dir);
}
