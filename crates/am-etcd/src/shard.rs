//! Sharding: N daemons share M units, each unit led by exactly one daemon at a time.
//!
//! Every daemon **joins** by holding `<prefix>/members/<name>` on a lease of its own. Which
//! daemon should lead which unit is a pure function of the live members, [`assign`]: balanced
//! (no member gets more than `ceil(M / N)` units) and the same in every daemon. A member
//! campaigns only for the units assigned to it, and **gives a unit up** (resigns: its lease is
//! revoked, the leader key goes) when the assignment moves it elsewhere, after a member joined,
//! so that the new owner can take it; when a member dies its member key expires with its lease,
//! the assignment moves its units to the others, and they campaign for them as soon as its
//! leader keys expire too. The leader key (not the assignment) is what makes a daemon act: two
//! daemons that briefly disagree on the members still cannot both lead a unit.
//!
//! [`Member`] runs this in the background and shows which units this daemon leads now.

use crate::client::{Etcd, request_error};
use crate::error::Result;
use crate::keys::Keys;
use crate::leader::{Lease, hold, leader_of};
use etcd_client::GetOptions;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// FNV-1a, 64 bits: a hash every daemon computes the same (std's is not promised stable).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Which member should lead each unit: rendezvous hashing (each unit to the member with the
/// highest `hash(unit, member)`), capped at `ceil(units / members)` units per member so that
/// the load is balanced. Units in name order; deterministic. No member: nothing assigned.
pub fn assign(units: &[String], members: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if members.is_empty() {
        return out;
    }
    let cap = units.len().div_ceil(members.len());
    let mut load: BTreeMap<&str, usize> = members.iter().map(|m| (m.as_str(), 0)).collect();
    let mut sorted: Vec<&String> = units.iter().collect();
    sorted.sort();
    sorted.dedup();
    for unit in sorted {
        let best = members
            .iter()
            .filter(|m| load.get(m.as_str()).copied().unwrap_or(0) < cap)
            .max_by_key(|m| (fnv(&[unit, m]), m.as_str()));
        if let Some(m) = best {
            *load.entry(m.as_str()).or_default() += 1;
            out.insert(unit.clone(), m.clone());
        }
    }
    out
}

/// The live members (those whose member key's lease holds), by name.
pub async fn members(etcd: &Etcd) -> Result<Vec<String>> {
    let s = etcd.settings().clone();
    let prefix = members_prefix(&s.prefix);
    let mut client = etcd.client();
    etcd.run(async move {
        let got = client
            .get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| request_error(&s, "get", &prefix, &e))?;
        let mut names: Vec<String> = got
            .kvs()
            .iter()
            .filter_map(|kv| {
                std::str::from_utf8(kv.key())
                    .ok()?
                    .strip_prefix(&prefix)
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    })
    .await
}

fn members_prefix(prefix: &str) -> String {
    format!("{}/members/", prefix.trim_end_matches('/'))
}

/// A daemon's membership and the units it leads, kept in the background.
pub struct Member {
    led: watch::Receiver<BTreeMap<String, Lease>>,
    task: tokio::task::JoinHandle<()>,
    membership: Lease,
}

impl Member {
    /// Joins (holds its member key on a lease) and starts leading the units [`assign`] gives it
    /// among `units`, looking again every `poll`.
    pub async fn join(etcd: &Etcd, units: Vec<String>, poll: Duration) -> Result<Member> {
        let key = format!(
            "{}{}",
            members_prefix(&etcd.settings().prefix),
            etcd.settings().name
        );
        let membership = loop {
            if let Some(l) = hold(etcd, key.clone()).await? {
                break l;
            }
            // A member of that name is still there (a previous run's lease): wait for it to go.
            tokio::time::sleep(poll).await;
        };
        let (tx, led) = watch::channel(BTreeMap::new());
        let task = tokio::spawn(drive(etcd.clone(), units, poll, tx, membership.clone()));
        Ok(Member {
            led,
            task,
            membership,
        })
    }

    /// The units this daemon leads now, with their leases (a unit being given up is not: its
    /// lease is marked lost before the leader key is deleted).
    pub fn led(&self) -> BTreeMap<String, Lease> {
        self.led
            .borrow()
            .iter()
            .filter(|(_, l)| !l.is_lost())
            .map(|(u, l)| (u.clone(), l.clone()))
            .collect()
    }

    /// Waits until the set of units led changes.
    pub async fn changed(&mut self) -> bool {
        self.led.changed().await.is_ok()
    }

    /// Whether its membership still holds.
    pub fn is_member(&self) -> bool {
        !self.membership.is_lost()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    etcd: Etcd,
    units: Vec<String>,
    poll: Duration,
    tx: watch::Sender<BTreeMap<String, Lease>>,
    membership: Lease,
) {
    let me = etcd.settings().name.clone();
    let mut led: BTreeMap<String, Lease> = BTreeMap::new();
    loop {
        if membership.is_lost() {
            // Not a member any more: lead nothing (the leases run out by themselves).
            tx.send_replace(BTreeMap::new());
            return;
        }
        let live = match members(&etcd).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the members; keeping what is led");
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        let plan = assign(&units, &live);
        let before: Vec<String> = led.keys().cloned().collect();
        led.retain(|_, l| !l.is_lost());
        for unit in &units {
            let mine = plan.get(unit) == Some(&me);
            let unit_etcd = etcd.for_unit(unit);
            match (mine, led.get(unit).cloned()) {
                (false, Some(lease)) => {
                    tracing::info!(%unit, to = ?plan.get(unit), "giving the unit up: assigned elsewhere");
                    crate::journal::resign(&unit_etcd, &lease).await;
                    led.remove(unit);
                }
                (true, None) => {
                    let keys = Keys::new(&etcd.settings().prefix, unit);
                    if let Ok(None) = leader_of(&unit_etcd, &keys).await
                        && let Ok(Some(lease)) = hold(&unit_etcd, keys.leader()).await
                    {
                        tracing::info!(%unit, token = lease.token(), "leading the unit (sharded)");
                        led.insert(unit.clone(), lease);
                    }
                }
                _ => {}
            }
        }
        if led.keys().cloned().collect::<Vec<_>>() != before {
            tx.send_replace(led.clone());
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn assignment_is_balanced_deterministic_and_moves_little() {
        let units = names(&["c0", "c1", "c2", "c3"]);
        let three = assign(&units, &names(&["a", "b", "c"]));
        assert_eq!(three.len(), 4, "every unit has an owner");
        let mut load = BTreeMap::new();
        for m in three.values() {
            *load.entry(m.clone()).or_insert(0) += 1;
        }
        assert!(load.values().all(|n| *n <= 2), "{three:?}");
        assert_eq!(
            three,
            assign(&units, &names(&["a", "b", "c"])),
            "the same everywhere"
        );
        // One member dies: its units move, and only those or enough to stay balanced.
        let two = assign(&units, &names(&["a", "b"]));
        assert_eq!(two.len(), 4);
        assert!(two.values().all(|m| m != "c"));
        let mut load = BTreeMap::new();
        for m in two.values() {
            *load.entry(m.clone()).or_insert(0) += 1;
        }
        assert_eq!(load.values().copied().collect::<Vec<_>>(), vec![2, 2]);
        assert!(assign(&units, &[]).is_empty());
        let one = assign(&units, &names(&["z"]));
        assert!(one.values().all(|m| m == "z") && one.len() == 4);
    }
}
