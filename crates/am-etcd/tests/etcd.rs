//! The etcd side against a real etcd on loopback (`am_testbed::EtcdServer`, Debian's etcd):
//! recovery equal to the SQLite journal's, fencing, one leader at a time, named errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use am_core::Journal;
use am_etcd::{Etcd, EtcdError, EtcdJournal, Keys, Password, Settings, campaign, leader_of};
use am_store::{RESTARTS_KEPT_PER_VM, Recovered, SqliteJournal, sample};
use am_testbed::EtcdServer;
use std::time::Duration;

fn settings(server: &EtcdServer, unit: &str, name: &str) -> Settings {
    let mut s = Settings::new(vec![server.url.clone()], unit, name);
    s.lease_ttl = Duration::from_secs(2);
    s.request_timeout = Duration::from_secs(1);
    s
}

async fn lead(server: &EtcdServer, unit: &str, name: &str) -> (Etcd, am_etcd::Lease) {
    let etcd = Etcd::connect(settings(server, unit, name)).await.unwrap();
    let lease = tokio::time::timeout(
        Duration::from_secs(30),
        campaign(&etcd, Duration::from_millis(100), |_| {}),
    )
    .await
    .expect("leads within 30 s")
    .unwrap();
    (etcd, lease)
}

/// The restarts a pruned journal keeps (the newest per VM), everything else as is.
fn newest(mut r: Recovered) -> Recovered {
    for l in r.restarts.values_mut() {
        let extra = l.len().saturating_sub(RESTARTS_KEPT_PER_VM);
        l.drain(..extra);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_journal_recovers_what_sqlite_recovers_across_checkpoints_and_takeovers() {
    let server = EtcdServer::start();
    let dir = std::env::temp_dir().join(format!("am-etcd-eq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("j.db");
    let _ = std::fs::remove_file(&path);
    let mut sqlite = SqliteJournal::open(&path).unwrap();

    let (etcd, lease) = lead(&server, "vc1", "a").await;
    let (mut journal, recovered, history) = EtcdJournal::open(&etcd, &lease).await.unwrap();
    assert_eq!(
        recovered,
        sqlite.recover().unwrap(),
        "an empty unit recovers like an empty file"
    );
    assert_eq!(history.takeovers, 0);
    // More than two checkpoints' worth, then a tail.
    let n = 2 * am_etcd::journal::CHECKPOINT_EVERY + 37;
    for k in 1..=n {
        let batch = sample::batch(k);
        sqlite.append(&batch).unwrap();
        journal.append(&batch).unwrap();
    }
    let want = newest(sqlite.recover().unwrap());
    assert_eq!(newest(journal.recovered()), want, "in memory");
    // The batches a checkpoint covers are gone: at most a checkpoint's worth is read back.
    let mut client = etcd_client::Client::connect([server.url.as_str()], None)
        .await
        .unwrap();
    let keys = Keys::new("/am", "vc1");
    let left = client
        .get(
            keys.batch(0),
            Some(
                etcd_client::GetOptions::new()
                    .with_range(keys.batches_end())
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(left, 37, "only the tail after the last checkpoint is kept");

    // A clean handover: the next leader reads the same state back from etcd.
    am_etcd::resign(&etcd, &lease).await;
    drop(journal);
    drop(lease);
    let (etcd_b, lease_b) = lead(&server, "vc1", "b").await;
    let (journal_b, recovered_b, history_b) = EtcdJournal::open(&etcd_b, &lease_b).await.unwrap();
    assert_eq!(newest(recovered_b), want, "after a takeover");
    assert_eq!(journal_b.seq(), n);
    assert_eq!(
        (history_b.takeovers, history_b.leases_lost),
        (1, 0),
        "a resignation loses no lease"
    );
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_write_is_refused_and_nothing_of_it_is_stored() {
    let server = EtcdServer::start();
    let (etcd_a, lease_a) = lead(&server, "vc1", "a").await;
    let (mut journal_a, _, _) = EtcdJournal::open(&etcd_a, &lease_a).await.unwrap();
    journal_a.append(&sample::batch(1)).unwrap();
    assert!(lease_a.check(Duration::ZERO).is_ok());
    assert!(lease_a.token() > 0);

    // A's lease is revoked behind its back (as when it expires while A is cut off): the leader
    // key goes, B wins with a newer token.
    let mut admin = etcd_client::Client::connect([server.url.as_str()], None)
        .await
        .unwrap();
    let leases = admin.leases().await.unwrap();
    for l in leases.leases() {
        admin.lease_revoke(l.id()).await.unwrap();
    }
    let (etcd_b, lease_b) = lead(&server, "vc1", "b").await;
    assert!(lease_b.token() > lease_a.token(), "the new token is newer");
    let (_journal_b, recovered_b, history_b) = EtcdJournal::open(&etcd_b, &lease_b).await.unwrap();
    assert_eq!(recovered_b.next_action_id, 2, "A's first batch is there");
    assert_eq!(
        (history_b.takeovers, history_b.leases_lost),
        (1, 1),
        "A lost its lease"
    );

    // A's next write carries its old token: etcd refuses it.
    let e = journal_a.append(&sample::batch(2)).unwrap_err().to_string();
    assert!(e.contains("fenced") && e.contains("vc1"), "{e}");
    assert!(lease_a.is_lost(), "a refused write loses the lease");
    assert!(
        lease_a.check(Duration::ZERO).is_err(),
        "no action may start any more"
    );
    let (_, again, _) = {
        // B reads again: nothing of A's refused batch.
        let (etcd_c, lease_c) = (etcd_b.clone(), lease_b.clone());
        EtcdJournal::open(&etcd_c, &lease_c).await.unwrap()
    };
    assert_eq!(again.next_action_id, 2, "the refused batch stored nothing");
    let who = leader_of(&etcd_b, &Keys::new("/am", "vc1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((who.name.as_str(), who.token), ("b", lease_b.token()));
    assert!(who.lease_remaining > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_the_standby_takes_over_when_it_dies() {
    let server = EtcdServer::start();
    let (etcd_a, lease_a) = lead(&server, "vc1", "a").await;
    // Another unit is led independently.
    let (_etcd_other, lease_other) = lead(&server, "vc2", "b").await;
    assert_ne!(lease_other.token(), lease_a.token());
    let etcd_b = Etcd::connect(settings(&server, "vc1", "b")).await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let mut standby = Box::pin(campaign(&etcd_b, Duration::from_millis(100), move |l| {
        *seen2.lock().unwrap() = l.map(|l| l.name.clone());
    }));
    // While A renews its lease (three TTLs), B stands by and sees A lead.
    assert!(
        tokio::time::timeout(Duration::from_secs(6), &mut standby)
            .await
            .is_err(),
        "B must not lead while A's lease holds"
    );
    assert_eq!(seen.lock().unwrap().as_deref(), Some("a"));
    assert!(!lease_a.is_lost(), "A's lease is renewed: {lease_a:?}");
    // A dies without a word (its client and keep-alive stop): B leads once A's lease expires.
    drop(lease_a);
    drop(etcd_a);
    let lease_b = tokio::time::timeout(Duration::from_secs(30), standby)
        .await
        .expect("B leads after A's lease expired")
        .unwrap();
    assert_eq!(lease_b.name(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_is_not_renewed_is_lost_and_refuses_actions() {
    let server = EtcdServer::start();
    let (_etcd, lease) = lead(&server, "vc1", "a").await;
    assert!(lease.check(Duration::from_millis(100)).is_ok());
    let e = lease.check(Duration::from_secs(60)).unwrap_err().to_string();
    assert!(
        e.contains("needed"),
        "an action longer than the lease is refused: {e}"
    );
    // The member freezes: no renewal answers; the lease runs out locally.
    server.pause();
    let reason = tokio::time::timeout(Duration::from_secs(30), lease.lost())
        .await
        .expect("the lease is lost");
    server.resume();
    assert!(lease.is_lost() && !reason.is_empty(), "{reason}");
    assert!(lease.check(Duration::ZERO).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_and_refused_logins_are_named() {
    let port = am_testbed::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut s = Settings::new(vec![url.clone()], "vc1", "a");
    s.connect_timeout = Duration::from_millis(500);
    s.request_timeout = Duration::from_millis(500);
    let e = Etcd::connect(s).await.unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&url), "{e}");

    let server = EtcdServer::start();
    let mut admin = etcd_client::Client::connect([server.url.as_str()], None)
        .await
        .unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let mut s = settings(&server, "vc1", "a");
    s.user = Some(("root".into(), Password::new("wrong")));
    let e = Etcd::connect(s.clone()).await.unwrap_err();
    assert!(matches!(e, EtcdError::Auth { .. }), "{e:?}");
    assert!(e.to_string().contains("root"), "{e}");
    assert!(
        !format!("{s:?}").contains("wrong"),
        "the password is never printed"
    );
    s.user = Some(("root".into(), Password::new("rootpw")));
    let etcd = Etcd::connect(s).await.unwrap();
    let lease = campaign(&etcd, Duration::from_millis(100), |_| {}).await.unwrap();
    assert!(lease.token() > 0, "with the right password it leads");
}

#[test]
fn settings_are_checked() {
    let mut s = Settings::new(vec![], "", "a/b");
    s.lease_ttl = Duration::from_millis(1500);
    let e = s.validate().unwrap_err().to_string();
    for want in ["no endpoint", "unit", "name", "lease_ttl"] {
        assert!(e.contains(want), "{want} in {e}");
    }
    let ok = Settings::new(vec!["http://127.0.0.1:2379".into()], "vc1", "a");
    assert!(ok.validate().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_works_and_a_missing_certificate_is_refused() {
    let server = EtcdServer::start_tls();
    let files = server.tls.clone().unwrap();
    let mut s = settings(&server, "vc1", "a");
    s.tls = Some(am_etcd::Tls {
        ca_file: files.ca.clone(),
        cert_file: Some(files.client_cert.clone()),
        key_file: Some(files.client_key.clone()),
        domain: None,
    });
    let etcd = Etcd::connect(s.clone()).await.unwrap();
    let lease = campaign(&etcd, Duration::from_millis(100), |_| {}).await.unwrap();
    let (mut journal, _, _) = EtcdJournal::open(&etcd, &lease).await.unwrap();
    journal.append(&sample::batch(1)).unwrap();
    // Without a client certificate the member refuses the connection.
    let mut bare = s.clone();
    bare.tls = Some(am_etcd::Tls {
        cert_file: None,
        key_file: None,
        ..s.tls.clone().unwrap()
    });
    bare.connect_timeout = Duration::from_millis(500);
    assert!(
        Etcd::connect(bare).await.is_err(),
        "no client certificate, no etcd"
    );
    // A missing CA file is named.
    let mut missing = s;
    missing.tls.as_mut().unwrap().ca_file = "/nonexistent/ca.pem".into();
    let e = Etcd::connect(missing).await.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}
