//! An object's properties by path, as collected: what the mirror keeps of every watched object.
//!
//! A sorted vector, not a map of owned names: at 10,000 VMs a `BTreeMap<String, Value>` per VM
//! was some 4 KB a VM in tree nodes and name copies. The paths the adapter asks for are not
//! allocated (they are the constants' own); any other is kept as sent.

use std::borrow::Cow;

use vsphere_soap::Value;

use crate::map::{DS_PROPS, HOST_PROPS, NAMED_PROPS, VM_PROPS};

/// See the module docs. Unset properties are absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Props(Vec<(Cow<'static, str>, Value)>);

/// Paths of other objects the adapter watches.
const OTHER_PROPS: &[&str] = &["field", "latestPage"];

fn known(path: String) -> Cow<'static, str> {
    [HOST_PROPS, VM_PROPS, DS_PROPS, NAMED_PROPS, OTHER_PROPS]
        .iter()
        .flat_map(|l| l.iter())
        .find(|p| **p == path)
        .map_or(Cow::Owned(path), |p| Cow::Borrowed(*p))
}

impl Props {
    /// No properties.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn find(&self, path: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(path))
    }

    /// The value of `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&Value> {
        self.find(path).ok().and_then(|i| self.0.get(i)).map(|(_, v)| v)
    }

    /// Sets `path`.
    pub(crate) fn insert(&mut self, path: String, value: Value) {
        match self.find(&path) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => self.0.insert(i, (known(path), value)),
        }
    }

    /// Unsets `path`.
    pub(crate) fn remove(&mut self, path: &str) {
        if let Ok(i) = self.find(path) {
            self.0.remove(i);
        }
    }

    /// Unsets everything.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Gives back the room a change left over.
    pub(crate) fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl FromIterator<(String, Value)> for Props {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut p = Props::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p.shrink();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_set_of_paths() {
        let mut p: Props = [("name", "a"), ("guest.net", "b"), ("custom.x", "c")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::Text(v.into())))
            .collect();
        assert_eq!(p.get("name").and_then(Value::as_str), Some("a"));
        assert_eq!(p.get("custom.x").and_then(Value::as_str), Some("c"));
        assert!(
            matches!(p.0[1].0, Cow::Borrowed("guest.net")),
            "a watched path is not copied"
        );
        p.insert("name".into(), Value::Bool(true));
        p.remove("guest.net");
        p.remove("nothing");
        let keys: Vec<&str> = p.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["custom.x", "name"]);
        assert_eq!(p.get("name"), Some(&Value::Bool(true)));
        p.clear();
        assert!(p.0.is_empty() && p.get("name").is_none());
    }
}
