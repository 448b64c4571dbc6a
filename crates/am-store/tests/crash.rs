//! `kill -9` at random moments: a child process (this test binary, re-executed) appends batches
//! in a loop and is killed with SIGKILL; after each kill the parent reopens the file and checks it
//! holds whole batches only, every batch the child saw stored, and that `recover()` gives exactly
//! what the batches imply.
//!
//! `AM_STORE_CRASH_ROUNDS` sets the number of kills (default 40), `AM_STORE_CRASH_SEED` the seed
//! of the random delays (printed on each run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use am_core::{Action, ActionId, AlarmKind, HvError, Record, Subject, Time, VmId};
use am_store::{Recovered, SqliteJournal};
use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child's environment: the journal to write.
const CHILD_ENV: &str = "AM_STORE_CRASH_CHILD";
const VMS: u64 = 5;
const PRUNE_EVERY: u64 = 50;
const KEEP_AUDIT: usize = 300;
const KEEP_FINISHED: usize = 40;

fn action(k: u64) -> Action {
    let v = format!("vm-{}", k % VMS);
    match k % 4 {
        0 => power_on(&v),
        1 => reset(&v),
        2 => Action::CreateSnapshot {
            vm: v.as_str().into(),
            name: format!("b{k}"),
        },
        _ => Action::MigrateCold {
            vm: v.as_str().into(),
            to: "h2".into(),
        },
    }
}

fn user_of(k: u64) -> Option<String> {
    (k % 3 == 0).then(|| format!("user{}", k % 7))
}

/// Batch `k` (from 1): seven records that start and end with a marker naming `k`, the intent of
/// action `k`, the outcome of action `k - 3`, a VM state change and an alarm change.
fn batch(k: u64) -> Vec<Record> {
    let at = k * 1_000;
    let v = format!("vm-{}", k % VMS);
    let to = user_of(k).map_or("healthy".to_string(), |u| format!("off(by {u})"));
    let mut b = vec![note(at, Subject::Cluster, &format!("batch {k} begin"))];
    b.extend(issue(at, k, action(k)));
    b.push(transition(at, &v, "verifying(restart)", &to));
    b.push(if k > 3 {
        outcome(k - 3, (k % 10 == 0).then(|| HvError::Timeout { op: "x".into() }))
    } else {
        note(at, Subject::Cluster, "nothing finished yet")
    });
    let alarm_vm = vm(&format!("vm-{}", k % 3));
    b.push(if k % 2 == 0 {
        raise(alarm(
            at,
            AlarmKind::RestartLimit,
            alarm_vm,
            &format!("batch {k}"),
        ))
    } else {
        clear(at, AlarmKind::RestartLimit, alarm_vm)
    });
    b.push(note(at, Subject::Cluster, &format!("batch {k} end")));
    b
}

/// What `recover()` must give after batches `1..=kk`, restarts apart (see [`check`]).
fn expected(kk: u64) -> Recovered {
    let last_of = |modulus: u64, v: u64| (1..=kk).rev().find(|k| k % modulus == v);
    let mut active_alarms: Vec<_> = (0..3)
        .filter_map(|v| last_of(3, v))
        .filter(|k| k % 2 == 0)
        .map(|k| {
            alarm(
                k * 1_000,
                AlarmKind::RestartLimit,
                vm(&format!("vm-{}", k % 3)),
                &format!("batch {k}"),
            )
        })
        .collect();
    active_alarms.sort_by_key(|a| a.at);
    Recovered {
        next_action_id: kk + 1,
        unfinished: (kk.saturating_sub(2).max(1)..=kk)
            .map(|k| (ActionId(k), action(k)))
            .collect(),
        moving: Default::default(),
        active_alarms,
        user_offs: (0..VMS)
            .filter_map(|v| last_of(VMS, v))
            .filter_map(|k| Some((VmId::new(format!("vm-{}", k % VMS)), user_of(k)?)))
            .collect(),
        restarts: BTreeMap::new(),
        last_time: Time::from_millis(kk * 1_000),
    }
}

/// The child: appends batches after the last one stored until killed (30 s at most), saying
/// `begin k` before each append and `appended k` once it returned.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // an ordinary run: nothing to do
    };
    let mut j = SqliteJournal::open(&path).unwrap();
    let mut k = j.recover().unwrap().next_action_id;
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        writeln!(out, "begin {k}").unwrap();
        out.flush().unwrap();
        j.append_batch(&batch(k)).unwrap();
        writeln!(out, "appended {k}").unwrap();
        out.flush().unwrap();
        if k % PRUNE_EVERY == 0 {
            j.prune(KEEP_AUDIT, KEEP_FINISHED).unwrap();
        }
        k += 1;
    }
}

/// Kills the child if the parent fails half-way.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The journal after a kill: sound, whole batches only, every acknowledged batch there, and
/// `recover()` as the batches imply. Returns the last batch stored.
fn check(path: &Path, begun: Option<u64>, acked: Option<u64>, before: u64, log: &str) -> u64 {
    let j = SqliteJournal::open(path).unwrap_or_else(|e| panic!("reopen after kill: {e}\n{log}"));
    assert_eq!(j.quick_check().unwrap(), Ok(()));
    let r = j.recover().unwrap();
    let kk = r.next_action_id - 1;
    // Durable: what the child saw acknowledged is there; at most the batch it was writing more.
    let floor = acked.unwrap_or(before);
    assert!(
        kk >= floor,
        "acknowledged batch {floor} lost (stored up to {kk})\n{log}"
    );
    assert!(
        kk <= begun.unwrap_or(before),
        "batch {kk} stored but never begun\n{log}"
    );

    // Atomic: the audit log is exactly the tail of batches 1..=kk, so no batch is partial (only
    // the oldest one kept can be cut, by pruning, and only once pruning ran).
    let rows: Vec<Record> = j
        .records(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let mut tail = Vec::new();
    let mut k = kk;
    while tail.len() < rows.len() && k >= 1 {
        let mut b = batch(k);
        b.append(&mut tail);
        tail = b;
        k -= 1;
    }
    let cut = tail.len() - rows.len();
    assert_eq!(
        rows,
        tail[cut..].to_vec(),
        "audit log is not whole batches 1..={kk}"
    );
    if kk < PRUNE_EVERY {
        assert_eq!(
            rows.len() as u64,
            7 * kk,
            "nothing pruned yet, so nothing may be missing"
        );
    }

    // Recover: exactly what the batches imply; restarts as the newest of those implied.
    let mut want = expected(kk);
    let mut got = r.clone();
    got.active_alarms.sort_by_key(|a| a.at);
    let restarts = std::mem::take(&mut got.restarts);
    want.restarts = BTreeMap::new();
    assert_eq!(got, want, "recover() after batch {kk}");
    for v in 0..VMS {
        let name = VmId::new(format!("vm-{v}"));
        let all: Vec<Time> = (1..=kk)
            .filter(|k| k % VMS == v && k % 4 <= 1)
            .map(|k| Time::from_millis(k * 1_000))
            .collect();
        let kept = restarts.get(&name).cloned().unwrap_or_default();
        assert!(
            all.ends_with(&kept),
            "restarts of {name}: {kept:?} not the newest of {all:?}"
        );
        assert!(kept.len() >= all.len().min(am_store::RESTARTS_KEPT_PER_VM));
    }
    kk
}

#[test]
fn kill_nine_at_random_moments_never_leaves_a_partial_batch() {
    let rounds: u32 = std::env::var("AM_STORE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed = std::env::var("AM_STORE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test: {rounds} rounds, AM_STORE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("crash");
    let path = dir.file("j.db");
    let exe = std::env::current_exe().unwrap();

    let mut stored = 0u64;
    let (mut batches, mut journals) = (0u64, 1u32);
    let (mut mid_append_lost, mut mid_append_kept, mut before_first) = (0u32, 0u32, 0u32);
    for round in 0..rounds {
        // Now and then a new journal, killed early: a kill while the schema is created.
        let fresh = round > 0 && rng.below(8) == 0;
        if fresh {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            stored = 0;
            journals += 1;
        }
        let child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = Reaper(child);
        let stdout = child.0.stdout.take().unwrap();
        let mut stderr = child.0.stderr.take().unwrap();
        let lines = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let delay = if fresh { rng.below(40) } else { 20 + rng.below(230) };
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("child ended by itself ({status}): {}", errors.join().unwrap());
        }
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let lines = lines.join().unwrap();
        let _ = errors.join();
        // The harness may print `test crash_child ... ` before the child's first line.
        let last = |prefix: &str| {
            lines
                .iter()
                .rev()
                .find_map(|l| l.rsplit_once(prefix)?.1.trim().parse::<u64>().ok())
        };
        let (begun, acked) = (last("begin "), last("appended "));
        let log = format!(
            "round {round} (seed {seed}, delay {delay} ms, fresh {fresh}): child began {begun:?}, \
             acknowledged {acked:?}; its output: {lines:?}"
        );
        let kk = check(&path, begun, acked, stored, &log);
        match (begun, acked) {
            (None, _) => before_first += 1,
            (Some(b), a) if a != Some(b) && kk + 1 == b => mid_append_lost += 1,
            (Some(b), a) if a != Some(b) && kk == b => mid_append_kept += 1,
            _ => {}
        }
        batches += kk - stored;
        stored = kk;
    }
    println!(
        "crash test: {rounds} kills over {journals} journal files, {batches} batches stored; \
         killed inside an append {} times ({mid_append_lost} rolled back, {mid_append_kept} \
         committed before the acknowledgement), before the first append {before_first} times; \
         every check passed",
        mid_append_lost + mid_append_kept
    );
}
