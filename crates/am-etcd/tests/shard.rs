//! Sharding against a real etcd: four units over three members, each led by exactly one,
//! balanced; rebalanced when a member dies and when one joins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_etcd::shard::Member;
use am_etcd::{Etcd, Keys, Settings, leader_of};
use am_testbed::EtcdServer;
use std::collections::BTreeMap;
use std::time::Duration;

const UNITS: [&str; 4] = ["c0", "c1", "c2", "c3"];

async fn member(server: &EtcdServer, name: &str) -> (Etcd, Member) {
    let mut s = Settings::new(vec![server.url.clone()], "unused", name);
    s.lease_ttl = Duration::from_secs(2);
    s.request_timeout = Duration::from_secs(1);
    let etcd = Etcd::connect(s).await.unwrap();
    let units = UNITS.iter().map(|u| (*u).to_owned()).collect();
    let m = Member::join(&etcd, units, Duration::from_millis(100))
        .await
        .unwrap();
    (etcd, m)
}

/// Waits until every unit is led by exactly one of `members` (by their own account and by the
/// leader key), with at most `cap` units each; returns unit -> member.
async fn settled(etcd: &Etcd, members: &[(&str, &Member)], cap: usize) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut by_unit: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, m) in members {
            for unit in m.led().keys() {
                by_unit.entry(unit.clone()).or_default().push((*name).to_owned());
            }
        }
        for (unit, who) in &by_unit {
            assert!(who.len() <= 1, "unit {unit} led by {who:?} at once");
        }
        let mut keys_agree = true;
        for unit in UNITS {
            let key = leader_of(&etcd.for_unit(unit), &Keys::new("/am", unit))
                .await
                .unwrap();
            let claimed = by_unit.get(unit).and_then(|w| w.first());
            keys_agree &= key.map(|k| k.name).as_ref() == claimed;
        }
        let loads: Vec<usize> = members.iter().map(|(_, m)| m.led().len()).collect();
        let now: BTreeMap<String, String> = by_unit.iter().map(|(u, w)| (u.clone(), w[0].clone())).collect();
        let names: Vec<String> = members.iter().map(|(n, _)| (*n).to_owned()).collect();
        let units: Vec<String> = UNITS.iter().map(|u| (*u).to_owned()).collect();
        let plan = am_etcd::shard::assign(&units, &names);
        if now == plan && keys_agree && loads.iter().all(|l| *l <= cap) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {by_unit:?}, loads {loads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_units_over_three_members_each_led_by_exactly_one_and_rebalanced() {
    let server = EtcdServer::start();
    let (ea, a) = member(&server, "a").await;
    let (eb, b) = member(&server, "b").await;
    let (ec, c) = member(&server, "c").await;
    let first = settled(&ea, &[("a", &a), ("b", &b), ("c", &c)], 2).await;
    assert!(first.values().any(|m| m == "c"), "c leads something: {first:?}");

    // c dies: its units go to a and b (two each), never two leaders of one unit.
    drop(c);
    drop(ec);
    let after = settled(&ea, &[("a", &a), ("b", &b)], 2).await;
    assert!(after.values().all(|m| m != "c"), "{after:?}");
    for (unit, m) in &first {
        if m != "c" {
            assert_eq!(
                after.get(unit),
                Some(m),
                "a unit of a survivor stays where it was"
            );
        }
    }

    // d joins: the assignment gives it units; their leaders give them up and d takes them.
    let (_ed, d) = member(&server, "d").await;
    let joined = settled(&ea, &[("a", &a), ("b", &b), ("d", &d)], 2).await;
    assert!(joined.values().any(|m| m == "d"), "d leads something: {joined:?}");
    drop(eb);
}
