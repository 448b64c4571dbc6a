//! The key layout under `<prefix>/<unit>/`.
//!
//! | key | value | written |
//! | --- | --- | --- |
//! | `leader` | the leader's name, attached to its lease; its creation revision is the fencing token | by the winner of a campaign |
//! | `journal/<seq, 20 digits>` | one append's records, as a JSON array | every append, fenced |
//! | `checkpoint` | `{seq, state}`: the [`Recovery`](am_store::Recovery) fold up to batch `seq` | every [`CHECKPOINT_EVERY`](crate::journal::CHECKPOINT_EVERY) appends, fenced, in the same txn that deletes the batches it covers |
//! | `ha` | `{takeovers, leases_lost, last}`: the unit's leadership history | by each new leader, fenced |

/// The keys of one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    base: String,
}

impl Keys {
    /// The keys of `unit` under `prefix`.
    pub fn new(prefix: &str, unit: &str) -> Self {
        Keys {
            base: format!("{}/{unit}/", prefix.trim_end_matches('/')),
        }
    }

    /// The unit's directory (`/am/vc1/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The leader key.
    pub fn leader(&self) -> String {
        format!("{}leader", self.base)
    }

    /// The key of journal batch `seq`.
    pub fn batch(&self, seq: u64) -> String {
        format!("{}journal/{seq:020}", self.base)
    }

    /// The end of the journal's key range (exclusive).
    pub fn batches_end(&self) -> String {
        format!("{}journal0", self.base)
    }

    /// The checkpoint key.
    pub fn checkpoint(&self) -> String {
        format!("{}checkpoint", self.base)
    }

    /// The leadership history key.
    pub fn ha(&self) -> String {
        format!("{}ha", self.base)
    }

    /// The sequence number of a batch key, if it is one.
    pub fn seq_of(&self, key: &[u8]) -> Option<u64> {
        let key = std::str::from_utf8(key).ok()?;
        key.strip_prefix(&self.base)?
            .strip_prefix("journal/")?
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keys_sort_as_numbers_and_parse_back() {
        let k = Keys::new("/am/", "vc1");
        assert_eq!(k.leader(), "/am/vc1/leader");
        assert!(k.batch(9) < k.batch(10) && k.batch(10) < k.batches_end());
        assert_eq!(k.seq_of(k.batch(12345).as_bytes()), Some(12345));
        assert_eq!(k.seq_of(k.leader().as_bytes()), None);
    }
}
