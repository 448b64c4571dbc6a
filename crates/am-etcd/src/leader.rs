//! Leader election and the lease: who leads a unit, with which token, for how long.
//!
//! A campaign waits until the unit's leader key is absent, grants a lease of `lease_ttl`, and
//! creates the key on that lease in a transaction that succeeds only if the key still does not
//! exist. The key's creation revision is the **fencing token**: every journal write compares it
//! ([`Lease::fence`]), so a deposed leader's write is refused by etcd itself.
//!
//! The leader renews the lease every third of its TTL. It counts the lease from when it *sent*
//! the request that granted or renewed it (etcd counts from when it received it, later), so its
//! own idea of the expiry is never later than etcd's: [`Lease::remaining`] is a lower bound of
//! the time etcd still gives it. When the remaining time runs out without a renewal, or etcd
//! says the lease is gone, the lease is **lost** ([`Lease::lost`]); it never comes back.

use crate::client::{Etcd, request_error};
use crate::error::{EtcdError, Result};
use crate::keys::Keys;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Who leads a unit, as etcd shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's name.
    pub name: String,
    /// Its fencing token (the leader key's creation revision).
    pub token: i64,
    /// The time its lease has left in etcd.
    pub lease_remaining: Duration,
}

/// This daemon's leadership of one unit: the token and the lease behind it. Cheap to clone.
#[derive(Clone)]
pub struct Lease {
    shared: Arc<Shared>,
}

struct Shared {
    unit: String,
    name: String,
    token: i64,
    lease_id: i64,
    ttl: Duration,
    /// The key held on the lease (the unit's leader key, or a member's key).
    key: String,
    /// When the lease expires at the latest, by this process's monotonic clock.
    expires: Mutex<Instant>,
    /// `Some(reason)` once lost.
    lost: watch::Sender<Option<String>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("unit", &self.shared.unit)
            .field("token", &self.shared.token)
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The unit led.
    pub fn unit(&self) -> &str {
        &self.shared.unit
    }

    /// This daemon's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The fencing token: the leader key's creation revision.
    pub fn token(&self) -> i64 {
        self.shared.token
    }

    /// The lease's time to live.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// How long the lease surely still holds (zero once lost or expired).
    pub fn remaining(&self) -> Duration {
        if self.shared.lost.borrow().is_some() {
            return Duration::ZERO;
        }
        let expires = self
            .shared
            .expires
            .lock()
            .map(|e| *e)
            .unwrap_or_else(|_| Instant::now());
        expires.saturating_duration_since(Instant::now())
    }

    /// Whether the lease is lost (for good).
    pub fn is_lost(&self) -> bool {
        self.remaining().is_zero()
    }

    /// `Ok` when at least `needed` of the lease is left: what must hold before an action is
    /// handed to the hypervisor. Marks the lease lost when it has run out.
    pub fn check(&self, needed: Duration) -> Result<()> {
        let left = self.remaining();
        if left.is_zero() {
            let reason = self
                .shared
                .lost
                .borrow()
                .clone()
                .unwrap_or_else(|| "the lease ran out without a renewal".into());
            self.lose(&reason);
            return Err(self.fenced(reason));
        }
        if left < needed {
            return Err(self.fenced(format!(
                "{} ms of the lease left, {} ms needed",
                left.as_millis(),
                needed.as_millis()
            )));
        }
        Ok(())
    }

    /// Waits until the lease is lost; gives the reason.
    pub async fn lost(&self) -> String {
        let mut rx = self.shared.lost.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            let left = self.remaining();
            if left.is_zero() {
                let reason = "the lease ran out without a renewal".to_owned();
                self.lose(&reason);
                return reason;
            }
            // Woken by a loss, or when the lease would run out.
            let _ = tokio::time::timeout(left + Duration::from_millis(1), rx.changed()).await;
        }
    }

    /// Marks the lease lost (first reason wins).
    pub(crate) fn lose(&self, reason: &str) {
        self.shared.lost.send_if_modified(|l| {
            if l.is_none() {
                tracing::error!(unit = %self.shared.unit, token = self.shared.token, %reason, "leadership lost");
                *l = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
    }

    /// The compare every fenced write carries: the leader key still has our creation revision.
    pub(crate) fn fence(&self) -> Compare {
        Compare::create_revision(self.shared.key.clone(), CompareOp::Equal, self.shared.token)
    }

    /// The error of a write that `fence` refused, or of an action the lease does not cover.
    pub(crate) fn fenced(&self, detail: String) -> EtcdError {
        EtcdError::Fenced {
            unit: self.shared.unit.clone(),
            token: self.shared.token,
            detail,
        }
    }

    fn renewed(&self, sent: Instant, ttl_secs: i64) {
        let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(0));
        if let Ok(mut e) = self.shared.expires.lock() {
            *e = (*e).max(sent + ttl);
        }
    }

    /// Gives the unit up at once (a clean stop): revokes the lease, which deletes the leader key,
    /// so a standby need not wait for the TTL.
    pub async fn resign(&self, etcd: &Etcd) {
        self.lose("resigned");
        let id = self.shared.lease_id;
        let mut client = etcd.client();
        let done = etcd
            .run(async move {
                client
                    .lease_revoke(id)
                    .await
                    .map(|_| ())
                    .map_err(|e| EtcdError::Request {
                        op: "lease revoke",
                        key: id.to_string(),
                        detail: e.to_string(),
                    })
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not revoke the lease; the standby waits for its TTL");
        }
    }
}

/// Who leads `keys`' unit now, if anyone.
pub async fn leader_of(etcd: &Etcd, keys: &Keys) -> Result<Option<LeaderInfo>> {
    let mut client = etcd.client();
    let settings = etcd.settings().clone();
    let key = keys.leader();
    etcd.run(async move {
        let got = client
            .get(key.clone(), None)
            .await
            .map_err(|e| request_error(&settings, "get", &key, &e))?;
        let Some(kv) = got.kvs().first() else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(kv.value()).into_owned();
        let remaining = match client.lease_time_to_live(kv.lease(), None).await {
            Ok(t) => Duration::from_secs(u64::try_from(t.ttl()).unwrap_or(0)),
            Err(_) => Duration::ZERO,
        };
        Ok(Some(LeaderInfo {
            name,
            token: kv.create_revision(),
            lease_remaining: remaining,
        }))
    })
    .await
}

/// Campaigns for the unit of `etcd`'s settings until this daemon leads it: polls the leader key
/// every `poll` while another daemon holds it (calling `standby` with who leads, for the status),
/// then creates it on a new lease. Returns the lease, already renewed in the background.
pub async fn campaign(
    etcd: &Etcd,
    poll: Duration,
    mut standby: impl FnMut(Option<&LeaderInfo>) + Send,
) -> Result<Lease> {
    let s = etcd.settings().clone();
    let keys = Keys::new(&s.prefix, &s.unit);
    let mut announced: Option<i64> = None;
    loop {
        // A standby outlives an etcd outage: it tries again (a refused login or a bad value
        // is not an outage, and ends the campaign).
        let current = match leader_of(etcd, &keys).await {
            Ok(c) => c,
            Err(e) if e.is_transient() => {
                tracing::warn!(unit = %s.unit, error = %e, "etcd does not answer; still standing by");
                standby(None);
                tokio::time::sleep(poll).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        standby(current.as_ref());
        if let Some(l) = &current {
            if announced != Some(l.token) {
                tracing::info!(unit = %s.unit, leader = %l.name, token = l.token, "standing by");
                announced = Some(l.token);
            }
            tokio::time::sleep(poll).await;
            continue;
        }
        match hold(etcd, keys.leader()).await {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(unit = %s.unit, error = %e, "campaign failed; trying again");
                tokio::time::sleep(poll).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: a new lease, and `key` on it if nobody created it meanwhile (the unit's leader
/// key, or a member's key). The lease is renewed in the background.
pub(crate) async fn hold(etcd: &Etcd, key: String) -> Result<Option<Lease>> {
    let s = etcd.settings().clone();
    let ttl_secs = i64::try_from(s.lease_ttl.as_secs()).unwrap_or(i64::MAX);
    let mut client = etcd.client();
    let leader = key.clone();
    let name = s.name.clone();
    let sent = Instant::now();
    let won = etcd
        .run(async move {
            let granted = client
                .lease_grant(ttl_secs, None)
                .await
                .map_err(|e| request_error(&s, "lease grant", &leader, &e))?;
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    leader.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(
                    leader.clone(),
                    name,
                    Some(PutOptions::new().with_lease(granted.id())),
                )]);
            let resp = client
                .txn(txn)
                .await
                .map_err(|e| request_error(&s, "txn", &leader, &e))?;
            if resp.succeeded() {
                let token = resp.header().map(|h| h.revision()).unwrap_or(0);
                Ok(Some((granted.id(), granted.ttl(), token)))
            } else {
                let _ = client.lease_revoke(granted.id()).await;
                Ok(None)
            }
        })
        .await?;
    let Some((lease_id, ttl, token)) = won else {
        return Ok(None);
    };
    let s = etcd.settings();
    let (lost, _) = watch::channel(None);
    let lease = Lease {
        shared: Arc::new(Shared {
            unit: s.unit.clone(),
            name: s.name.clone(),
            token,
            lease_id,
            ttl: s.lease_ttl,
            key,
            expires: Mutex::new(sent),
            lost,
        }),
    };
    lease.renewed(sent, ttl);
    tracing::info!(key = %lease.shared.key, name = %s.name, token, ttl_s = ttl, "holding the key on a lease");
    // The keep-alive holds the client, not the `Etcd`: when the last handle goes, the etcd thread
    // stops, and with it the renewals (a dead leader's lease then expires).
    etcd.spawn(keep_alive(etcd.client(), s.request_timeout, lease.clone()));
    Ok(Some(lease))
}

/// Renews the lease every third of its TTL until it is lost; a renewal that etcd answers with
/// TTL 0 (the lease is gone) or none before the lease runs out loses it.
async fn keep_alive(client: etcd_client::Client, timeout: Duration, lease: Lease) {
    let every = lease.ttl() / 3;
    let id = lease.shared.lease_id;
    let mut stream = None;
    loop {
        let mut pause = every;
        if lease.is_lost() {
            lease.lose("the lease ran out without a renewal");
            return;
        }
        if stream.is_none() {
            let mut client = client.clone();
            match tokio::time::timeout(timeout, client.lease_keep_alive(id)).await {
                Ok(Ok(pair)) => stream = Some(pair),
                Ok(Err(e)) => tracing::warn!(error = %e, "lease keep-alive stream failed"),
                Err(_) => tracing::warn!("lease keep-alive stream did not open in time"),
            }
        }
        if let Some((keeper, answers)) = stream.as_mut() {
            let sent = Instant::now();
            let wait = lease.remaining().min(timeout);
            let answer = tokio::time::timeout(wait, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => lease.renewed(sent, r.ttl()),
                Ok(Ok(Some(_))) => {
                    lease.lose("etcd says the lease expired");
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        remaining_ms = lease.remaining().as_millis() as u64,
                        "lease renewal failed; retrying"
                    );
                    stream = None;
                    pause = Duration::from_millis(200).min(every);
                }
            }
        } else {
            pause = Duration::from_millis(200).min(every);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = lease.lost() => return,
        }
    }
}
