//! An object's properties by path, as collected: what the mirror keeps of every watched object.
//!
//! A sorted vector, not a map of owned names: at 10,000 VMs a `BTreeMap<String, Value>` per VM
//! was some 4 KB a VM in tree nodes and name copies. The paths the adapter asks for are not
//! allocated (they are the constants' own); any other is kept as sent.
//!
//! VMs, the many, are kept [`Packed`]: their properties in one compact byte string (some 600
//! bytes a VM where the decoded values took 3 KB), unpacked only when an update touches them.

use std::borrow::Cow;

use vsphere_soap::{DataObject, MoRef, Value};

use crate::map::{DS_PROPS, HOST_PROPS, NAMED_PROPS, VM_PROPS};

/// See the module docs. Unset properties are absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Props(Vec<(Cow<'static, str>, Value)>);

/// Paths of other objects the adapter watches.
const OTHER_PROPS: &[&str] = &["field", "latestPage"];

fn watched() -> impl Iterator<Item = &'static str> {
    [HOST_PROPS, VM_PROPS, DS_PROPS, NAMED_PROPS, OTHER_PROPS]
        .into_iter()
        .flat_map(|l| l.iter().copied())
}

fn known(path: String) -> Cow<'static, str> {
    watched()
        .find(|p| *p == path)
        .map_or(Cow::Owned(path), Cow::Borrowed)
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

    /// Gives back the room a change left over.
    pub(crate) fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// Properties packed into bytes: see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Packed(Box<[u8]>);

// Value tags of the packed form.
const TEXT: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const MOREF: u8 = 5;
const ARRAY: u8 = 6;
const DATA: u8 = 7;
const TYPED_DATA: u8 = 8;

impl Packed {
    /// `p`, packed.
    pub(crate) fn of(p: &Props) -> Packed {
        let mut out = Vec::with_capacity(256);
        put_len(&mut out, p.0.len());
        for (k, v) in &p.0 {
            // A watched path by its place in the lists (1-based), any other by its text.
            match watched().position(|w| w == k.as_ref()) {
                Some(i) => put_len(&mut out, i + 1),
                None => {
                    put_len(&mut out, 0);
                    put_str(&mut out, k);
                }
            }
            put_value(&mut out, v);
        }
        Packed(out.into_boxed_slice())
    }

    /// The properties again (none if the bytes are not a packing: they always are).
    pub(crate) fn unpack(&self) -> Props {
        let mut r = Reader(&self.0);
        let mut props = Vec::new();
        let decoded = (|| {
            for _ in 0..r.len()? {
                let key = match r.len()? {
                    0 => Cow::Owned(r.text()?),
                    i => Cow::Borrowed(watched().nth(i - 1)?),
                };
                props.push((key, r.value(0)?));
            }
            Some(())
        })();
        if decoded.is_none() {
            tracing::error!("a packed property list did not unpack (a bug): the object shows no properties");
            props.clear();
        }
        Props(props)
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    // LEB128.
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Text(s) => {
            out.push(TEXT);
            put_str(out, s);
        }
        Value::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
        Value::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::MoRef(r) => {
            out.push(MOREF);
            put_str(out, &r.kind);
            put_str(out, &r.value);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            put_len(out, items.len());
            items.iter().for_each(|i| put_value(out, i));
        }
        Value::Data(d) => {
            match &d.type_name {
                Some(t) => {
                    out.push(TYPED_DATA);
                    put_str(out, t);
                }
                None => out.push(DATA),
            }
            put_len(out, d.fields.len());
            for (k, v) in &d.fields {
                put_str(out, k);
                put_value(out, v);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }

    fn text(&mut self) -> Option<String> {
        let n = self.len()?;
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        String::from_utf8(head.to_vec()).ok()
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > vsphere_soap::xml::MAX_DEPTH {
            return None;
        }
        Some(match self.byte()? {
            TEXT => Value::Text(self.text()?),
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => Value::Int(i64::from_le_bytes(self.bytes()?)),
            FLOAT => Value::Float(f64::from_le_bytes(self.bytes()?)),
            MOREF => {
                let kind = self.text()?;
                Value::MoRef(MoRef::new(kind, self.text()?))
            }
            ARRAY => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(self.0.len()));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            tag @ (DATA | TYPED_DATA) => {
                let type_name = if tag == TYPED_DATA {
                    Some(self.text()?)
                } else {
                    None
                };
                let n = self.len()?;
                let mut fields = Vec::with_capacity(n.min(self.0.len()));
                for _ in 0..n {
                    let k = self.text()?;
                    fields.push((k, self.value(depth + 1)?));
                }
                Value::Data(DataObject { type_name, fields })
            }
            _ => return None,
        })
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
        p.remove("custom.x");
        p.remove("name");
        assert!(p.0.is_empty() && p.get("name").is_none());
    }

    #[test]
    fn packing_keeps_every_value() {
        let nic = Value::Data(DataObject {
            type_name: Some("GuestNicInfo".into()),
            fields: vec![
                (
                    "ipAddress".into(),
                    Value::Array(vec![Value::Text("10.0.0.7".into())]),
                ),
                ("connected".into(), Value::Bool(true)),
                ("deviceConfigId".into(), Value::Int(-4000)),
                ("load".into(), Value::Float(0.25)),
                ("untyped".into(), Value::Data(DataObject::default())),
            ],
        });
        let p: Props = [
            ("name", Value::Text("web-01 \u{e9}".into())),
            ("runtime.host", Value::MoRef(MoRef::new("HostSystem", "host-9"))),
            ("guest.net", Value::Array(vec![nic])),
            ("summary.storage.committed", Value::Int(i64::MAX)),
            ("config.template", Value::Bool(false)),
            ("not.watched", Value::Text(String::new())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let packed = Packed::of(&p);
        assert_eq!(packed.unpack(), p);
        assert!(packed.0.len() < 200, "{} bytes", packed.0.len());
        assert_eq!(
            Packed(Box::new([3, 1])).unpack(),
            Props::new(),
            "a bad packing is no properties"
        );
    }
}
