//! [`EtcdJournal`]: the journal in etcd, beside the SQLite one, with the same recovery.
//!
//! Each [`append`](Journal::append) is one etcd transaction, **fenced**: `If(create_revision(leader)
//! == token) Then(put journal/<seq>)`. A refused compare means another daemon leads now (or the
//! lease expired): the append fails, the lease is marked lost, and the engine stops (a decision
//! that cannot be journaled is not acted on). Every [`CHECKPOINT_EVERY`] appends the same
//! transaction also stores the [`Recovery`] fold as the checkpoint and deletes the batches it
//! covers, so what a takeover reads is bounded: one checkpoint and fewer than
//! `CHECKPOINT_EVERY` batches.
//!
//! The etcd journal keeps what a restart needs, not the long audit trail: the SQLite journal's
//! `audit` table has no counterpart here (the audit lines are in the daemon's log, and the
//! batches until the next checkpoint).

use crate::client::{Etcd, request_error};
use crate::error::{EtcdError, Result};
use crate::keys::Keys;
use crate::leader::Lease;
use am_core::{Journal, JournalError, Record};
use am_store::{Recovered, Recovery};
use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};

/// Appends between checkpoints.
pub const CHECKPOINT_EVERY: u64 = 128;

/// Batches read per request at recovery.
const PAGE: i64 = 32;

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    state: Recovery,
}

/// The unit's leadership history (key `ha`), kept by each new leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Leaders that took the unit over from a previous one.
    pub takeovers: u64,
    /// Leaders whose lease ran out (they did not resign).
    pub leases_lost: u64,
    /// The latest leader: its name and token, and whether it resigned.
    pub last: Option<LastLeader>,
}

/// The latest leader of a unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastLeader {
    /// Its name.
    pub name: String,
    /// Its token.
    pub token: i64,
    /// Whether it gave the unit up cleanly.
    pub resigned: bool,
}

/// The journal of one unit in etcd, written only while its [`Lease`] holds.
pub struct EtcdJournal {
    etcd: Etcd,
    lease: Lease,
    keys: Keys,
    state: Recovery,
    /// The sequence number of the last batch stored.
    seq: u64,
}

impl std::fmt::Debug for EtcdJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdJournal")
            .field("unit", &self.lease.unit())
            .field("token", &self.lease.token())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> EtcdError {
    EtcdError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    }
}

impl EtcdJournal {
    /// Opens the unit's journal as its leader: reads the checkpoint and the batches after it,
    /// folds them, and records the takeover in the unit's history (fenced). Returns the journal,
    /// what a restarted daemon needs, and the history as it is now.
    pub async fn open(etcd: &Etcd, lease: &Lease) -> Result<(EtcdJournal, Recovered, History)> {
        let s = etcd.settings().clone();
        let keys = Keys::new(&s.prefix, &s.unit);
        let mut client = etcd.client();
        let k = keys.clone();
        let fence = lease.fence();
        let me = (lease.name().to_owned(), lease.token());
        let read = etcd
            .run(async move {
                let cp_key = k.checkpoint();
                let got = client
                    .get(cp_key.clone(), None)
                    .await
                    .map_err(|e| request_error(&s, "get", &cp_key, &e))?;
                let (mut seq, mut state) = match got.kvs().first() {
                    Some(kv) => {
                        let cp: Checkpoint =
                            serde_json::from_slice(kv.value()).map_err(|e| corrupt(kv.key(), e))?;
                        (cp.seq, cp.state)
                    }
                    None => (0, Recovery::default()),
                };
                loop {
                    let from = k.batch(seq + 1);
                    let page = client
                        .get(
                            from.clone(),
                            Some(
                                GetOptions::new()
                                    .with_range(k.batches_end())
                                    .with_sort(SortTarget::Key, SortOrder::Ascend)
                                    .with_limit(PAGE),
                            ),
                        )
                        .await
                        .map_err(|e| request_error(&s, "get", &from, &e))?;
                    for kv in page.kvs() {
                        let n = k
                            .seq_of(kv.key())
                            .ok_or_else(|| corrupt(kv.key(), "not a batch key"))?;
                        let batch: Vec<Record> =
                            serde_json::from_slice(kv.value()).map_err(|e| corrupt(kv.key(), e))?;
                        state.apply(&batch);
                        seq = n;
                    }
                    if !page.more() || page.kvs().is_empty() {
                        break;
                    }
                }
                // The history: a new leader after another is a takeover; one that did not
                // resign lost its lease.
                let ha_key = k.ha();
                let got = client
                    .get(ha_key.clone(), None)
                    .await
                    .map_err(|e| request_error(&s, "get", &ha_key, &e))?;
                let mut history: History = match got.kvs().first() {
                    Some(kv) => serde_json::from_slice(kv.value()).map_err(|e| corrupt(kv.key(), e))?,
                    None => History::default(),
                };
                if let Some(last) = &history.last
                    && last.token != me.1
                {
                    history.takeovers += 1;
                    if !last.resigned {
                        history.leases_lost += 1;
                    }
                }
                history.last = Some(LastLeader {
                    name: me.0.clone(),
                    token: me.1,
                    resigned: false,
                });
                let value = serde_json::to_vec(&history).map_err(|e| corrupt(ha_key.as_bytes(), e))?;
                let resp = client
                    .txn(
                        Txn::new()
                            .when(vec![fence])
                            .and_then(vec![TxnOp::put(ha_key.clone(), value, None)]),
                    )
                    .await
                    .map_err(|e| request_error(&s, "txn", &ha_key, &e))?;
                Ok((seq, state, history, resp.succeeded()))
            })
            .await?;
        let (seq, state, history, fenced_ok) = read;
        if !fenced_ok {
            lease.lose("the leader key changed before the journal was opened");
            return Err(lease.fenced("the leader key changed before the journal was opened".into()));
        }
        let recovered = state.recovered();
        Ok((
            EtcdJournal {
                etcd: etcd.clone(),
                lease: lease.clone(),
                keys,
                state,
                seq,
            },
            recovered,
            history,
        ))
    }

    /// The sequence number of the last batch stored.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The lease it writes under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// What a restart would recover now.
    pub fn recovered(&self) -> Recovered {
        self.state.recovered()
    }

    /// Stores one batch, fenced (see the module's documentation).
    pub fn append_batch(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.lease.is_lost() {
            return Err(self.lease.fenced("the lease is lost".into()));
        }
        let seq = self.seq + 1;
        let batch_key = self.keys.batch(seq);
        let value = serde_json::to_vec(records).map_err(|e| corrupt(batch_key.as_bytes(), e))?;
        let mut ops = vec![TxnOp::put(batch_key.clone(), value, None)];
        let mut next = None;
        if seq % CHECKPOINT_EVERY == 0 {
            let mut state = self.state.clone();
            state.apply(records);
            state.prune();
            let cp = serde_json::to_vec(&Checkpoint {
                seq,
                state: state.clone(),
            })
            .map_err(|e| corrupt(self.keys.checkpoint().as_bytes(), e))?;
            ops = vec![
                TxnOp::put(self.keys.checkpoint(), cp, None),
                TxnOp::delete(
                    self.keys.batch(0),
                    Some(DeleteOptions::new().with_range(self.keys.batches_end())),
                ),
            ];
            next = Some(state);
        }
        let txn = Txn::new().when(vec![self.lease.fence()]).and_then(ops);
        let mut client = self.etcd.client();
        let s = self.etcd.settings().clone();
        let succeeded = self.etcd.block(async move {
            client
                .txn(txn)
                .await
                .map(|r| r.succeeded())
                .map_err(|e| request_error(&s, "txn", &batch_key, &e))
        })?;
        if !succeeded {
            let why = "etcd refused the write: the leader key no longer has this token";
            self.lease.lose(why);
            return Err(self.lease.fenced(why.into()));
        }
        match next {
            Some(state) => self.state = state,
            None => self.state.apply(records),
        }
        self.seq = seq;
        Ok(())
    }
}

/// A clean stop: marks this leader as resigned in the unit's history (fenced), then revokes
/// the lease so a standby takes over at once.
pub async fn resign(etcd: &Etcd, lease: &Lease) {
    let mut client = etcd.client();
    let s = etcd.settings().clone();
    let key = Keys::new(&etcd.settings().prefix, &etcd.settings().unit).ha();
    let fence = lease.fence();
    let me = (lease.name().to_owned(), lease.token());
    let marked = etcd
        .run(async move {
            let got = client
                .get(key.clone(), None)
                .await
                .map_err(|e| request_error(&s, "get", &key, &e))?;
            let mut history: History = match got.kvs().first() {
                Some(kv) => serde_json::from_slice(kv.value()).map_err(|e| corrupt(kv.key(), e))?,
                None => History::default(),
            };
            history.last = Some(LastLeader {
                name: me.0,
                token: me.1,
                resigned: true,
            });
            let value = serde_json::to_vec(&history).map_err(|e| corrupt(key.as_bytes(), e))?;
            client
                .txn(
                    Txn::new()
                        .when(vec![fence])
                        .and_then(vec![TxnOp::put(key.clone(), value, None)]),
                )
                .await
                .map_err(|e| request_error(&s, "txn", &key, &e))?;
            Ok(())
        })
        .await;
    if let Err(e) = marked {
        tracing::warn!(error = %e, "could not mark the resignation");
    }
    lease.resign(etcd).await;
}

impl Journal for EtcdJournal {
    fn append(&mut self, records: &[Record]) -> std::result::Result<(), JournalError> {
        self.append_batch(records)
            .map_err(|e| JournalError::Storage(e.to_string()))
    }
}

/// The unit's leadership history, read by anyone (status).
pub async fn history(etcd: &Etcd) -> Result<History> {
    let s = etcd.settings().clone();
    let key = Keys::new(&s.prefix, &s.unit).ha();
    let mut client = etcd.client();
    etcd.run(async move {
        let got = client
            .get(key.clone(), None)
            .await
            .map_err(|e| request_error(&s, "get", &key, &e))?;
        match got.kvs().first() {
            Some(kv) => serde_json::from_slice(kv.value()).map_err(|e| corrupt(kv.key(), e)),
            None => Ok(History::default()),
        }
    })
    .await
}
