//! The cost of journaling one decision (one `append`: a supervisor step's audit lines and
//! intents) in etcd against the SQLite journal: both durable (etcd's WAL and SQLite's
//! `synchronous=FULL` each fsync), on the same disk, the same batches (`am_store::sample`).
//! A one-member etcd on loopback: a three-member cluster adds a network round trip to a quorum.
//!
//! `cargo bench -p am-etcd --bench journal_cost` (or `cargo xtask bench-ha`); prints a Markdown
//! table and writes it to `target/bench-ha/journal.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use am_core::Journal;
use am_etcd::{Etcd, EtcdJournal, Settings, campaign};
use am_store::{SqliteJournal, sample};
use am_testbed::EtcdServer;
use std::time::{Duration, Instant};

const WARMUP: u64 = 20;
const N: u64 = 400;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    let pct = |p: f64| ms(v[((v.len() as f64 - 1.0) * p).round() as usize]);
    (mean, pct(0.5), pct(0.99))
}

fn run(journal: &mut dyn Journal) -> Vec<Duration> {
    let mut times = Vec::new();
    for k in 1..=WARMUP + N {
        let batch = sample::batch(k);
        let t = Instant::now();
        journal.append(&batch).unwrap();
        if k > WARMUP {
            times.push(t.elapsed());
        }
    }
    times
}

fn main() {
    let server = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut etcd_journal = rt.block_on(async {
        let mut s = Settings::new(vec![server.url.clone()], "bench", "a");
        s.lease_ttl = Duration::from_secs(5);
        let etcd = Etcd::connect(s).await.unwrap();
        let lease = campaign(&etcd, Duration::from_millis(100), |_| {}).await.unwrap();
        EtcdJournal::open(&etcd, &lease).await.unwrap().0
    });
    let dir = std::env::temp_dir().join(format!("am-bench-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("j.db");
    let _ = std::fs::remove_file(&path);
    let mut sqlite = SqliteJournal::open(&path).unwrap();

    let s = stats(run(&mut sqlite));
    let e = stats(run(&mut etcd_journal));
    let records = sample::batch(7).len();
    let table = format!(
        "| journal | mean ms | p50 ms | p99 ms | mean vs SQLite |\n|---|---|---|---|---|\n\
         | SQLite (WAL, synchronous=FULL) | {:.2} | {:.2} | {:.2} | 1.00 |\n\
         | etcd (one member, fenced txn) | {:.2} | {:.2} | {:.2} | {:.2} |\n\n\
         {N} appends of {records}-record decisions after {WARMUP} warm-up appends; one checkpoint every {} appends in etcd.\n",
        s.0,
        s.1,
        s.2,
        e.0,
        e.1,
        e.2,
        e.0 / s.0,
        am_etcd::journal::CHECKPOINT_EVERY
    );
    print!("{table}");
    let out = am_testbed::workspace_root().join("target/bench-ha");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("journal.md"), &table).unwrap();
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);
}
