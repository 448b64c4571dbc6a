//! Decoded vim25 values: managed object references, data objects, arrays and primitives.
//!
//! [`from_value`] maps a [`Value`] onto any `serde::Deserialize` type, so callers can declare the
//! few fields they need (`#[serde(rename_all = "camelCase")]`) instead of generated bindings.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

/// A managed object reference, such as `VirtualMachine:vm-42`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
pub struct MoRef {
    /// The managed object type, e.g. `VirtualMachine`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The server's id of the object, e.g. `vm-42`.
    pub value: String,
}

impl MoRef {
    /// A reference to the object `value` of type `kind`.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// A decoded XML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text without a primitive type: strings, enum values, dates, or untyped leaves.
    Text(String),
    /// `xsd:boolean`.
    Bool(bool),
    /// `xsd:int`, `xsd:long`, `xsd:short`, `xsd:byte`.
    Int(i64),
    /// `xsd:float`, `xsd:double`.
    Float(f64),
    /// A managed object reference.
    MoRef(MoRef),
    /// An `ArrayOf...` value.
    Array(Vec<Value>),
    /// A data object: its `xsi:type` (when sent) and its fields in document order.
    Data(DataObject),
}

/// A data object: fields in document order; a repeated field is an array.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataObject {
    /// The `xsi:type`, when the server sent one (e.g. `VirtualMachineSnapshotInfo`).
    pub type_name: Option<String>,
    /// Field names and values, in document order.
    pub fields: Vec<(String, Value)>,
}

impl DataObject {
    /// The first field called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// All fields called `name` (a repeated element is how vim25 sends a list inside a data object).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.fields.iter().filter(move |(k, _)| k == name).map(|(_, v)| v)
    }

    /// Remove and return the first field called `name`.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let i = self.fields.iter().position(|(k, _)| k == name)?;
        Some(self.fields.remove(i).1)
    }
}

impl Value {
    /// The text, for [`Value::Text`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, from `Int` or from text that parses.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A float, from `Float`, `Int` or text that parses.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(x) => Some(*x),
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => Some(*i as f64),
            Value::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A boolean, from `Bool` or the text `true`/`false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Text(s) => match s.trim() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The reference, for [`Value::MoRef`].
    pub fn as_moref(&self) -> Option<&MoRef> {
        match self {
            Value::MoRef(r) => Some(r),
            _ => None,
        }
    }

    /// The data object, for [`Value::Data`].
    pub fn as_data(&self) -> Option<&DataObject> {
        match self {
            Value::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The items of an array; any other value is a list of one.
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(v) => v,
            other => std::slice::from_ref(other),
        }
    }

    /// All managed object references in an array (or the one reference).
    pub fn morefs(&self) -> Vec<&MoRef> {
        self.items().iter().filter_map(Value::as_moref).collect()
    }

    /// The first field `name` of a data object.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.as_data().and_then(|d| d.get(name))
    }

    /// Follow a dotted path of fields, e.g. `"quickStats.overallCpuUsage"`.
    pub fn path(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |v, seg| v.field(seg))
    }

    /// The `xsi:type` of a data object.
    pub fn type_name(&self) -> Option<&str> {
        self.as_data().and_then(|d| d.type_name.as_deref())
    }
}

/// An error mapping a [`Value`] onto a Rust type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError(msg.to_string())
    }
}

/// Map a [`Value`] onto `T` with serde.
///
/// Data objects are maps of their fields (repeated fields become sequences, a single value becomes a
/// sequence of one when `T` wants a `Vec`), plus the key `@xsi:type` when the type was sent. A
/// managed object reference is a map with `type` and `value`. Text converts to numbers and booleans
/// on demand; enums are matched by their text.
pub fn from_value<'de, T: serde::Deserialize<'de>>(value: &'de Value) -> Result<T, DecodeError> {
    T::deserialize(Node::One(value))
}

/// A value, or a group of repeated fields with the same name.
#[derive(Clone, Copy)]
enum Node<'a> {
    One(&'a Value),
    Many(&'a [(String, Value)], &'a str),
}

impl<'de> Node<'de> {
    fn single(self) -> &'de Value {
        match self {
            Node::One(v) => v,
            Node::Many(fields, name) => fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .unwrap_or(&NULL_TEXT),
        }
    }

    fn text_for<V: Visitor<'de>>(self, visitor: &V) -> Result<&'de str, DecodeError> {
        match self.single() {
            Value::Text(s) => Ok(s.as_str()),
            Value::MoRef(r) => Ok(r.value.as_str()),
            other => Err(de::Error::invalid_type(unexpected(other), visitor)),
        }
    }
}

static NULL_TEXT: Value = Value::Text(String::new());

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Text(s) => de::Unexpected::Str(s),
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Int(i) => de::Unexpected::Signed(*i),
        Value::Float(x) => de::Unexpected::Float(*x),
        Value::MoRef(_) => de::Unexpected::Other("managed object reference"),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Data(_) => de::Unexpected::Map,
    }
}

macro_rules! int_method {
    ($name:ident, $visit:ident, $ty:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            let v = self.single();
            let n = v
                .as_i64()
                .ok_or_else(|| de::Error::invalid_type(unexpected(v), &visitor))?;
            let n = <$ty>::try_from(n).map_err(|_| DecodeError(format!("integer {n} out of range")))?;
            visitor.$visit(n)
        }
    };
}

impl<'de> de::Deserializer<'de> for Node<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self {
            Node::Many(..) => self.deserialize_seq(visitor),
            Node::One(v) => match v {
                Value::Text(s) => visitor.visit_borrowed_str(s),
                Value::Bool(b) => visitor.visit_bool(*b),
                Value::Int(i) => visitor.visit_i64(*i),
                Value::Float(x) => visitor.visit_f64(*x),
                Value::MoRef(_) | Value::Data(_) => self.deserialize_map(visitor),
                Value::Array(_) => self.deserialize_seq(visitor),
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let v = self.single();
        match v.as_bool() {
            Some(b) => visitor.visit_bool(b),
            None => Err(de::Error::invalid_type(unexpected(v), &visitor)),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let v = self.single();
        match v.as_f64() {
            Some(x) => visitor.visit_f64(x),
            None => Err(de::Error::invalid_type(unexpected(v), &visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.single() {
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            Value::Int(i) => visitor.visit_string(i.to_string()),
            Value::Float(x) => visitor.visit_string(x.to_string()),
            _ => {
                let s = self.text_for(&visitor)?;
                visitor.visit_borrowed_str(s)
            }
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self {
            Node::Many(fields, name) => visitor.visit_seq(Seq {
                iter: Box::new(fields.iter().filter(move |(k, _)| k == name).map(|(_, v)| v)),
            }),
            Node::One(Value::Array(items)) => visitor.visit_seq(Seq {
                iter: Box::new(items.iter()),
            }),
            Node::One(v) => visitor.visit_seq(Seq {
                iter: Box::new(std::iter::once(v)),
            }),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.single() {
            Value::MoRef(r) => visitor.visit_map(MorefMap { r, step: 0 }),
            Value::Data(d) => visitor.visit_map(Fields {
                data: d,
                pos: 0,
                type_pending: d.type_name.is_some(),
            }),
            Value::Text(s) if s.trim().is_empty() => visitor.visit_map(Fields {
                data: &EMPTY_DATA,
                pos: 0,
                type_pending: false,
            }),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let s = self.text_for(&visitor)?;
        visitor.visit_enum(s.into_deserializer())
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! { bytes byte_buf i128 u128 }
}

static EMPTY_DATA: DataObject = DataObject {
    type_name: None,
    fields: Vec::new(),
};

struct Seq<'a> {
    iter: Box<dyn Iterator<Item = &'a Value> + 'a>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.iter.next() {
            Some(v) => seed.deserialize(Node::One(v)).map(Some),
            None => Ok(None),
        }
    }
}

struct MorefMap<'a> {
    r: &'a MoRef,
    step: u8,
}

impl<'de> MapAccess<'de> for MorefMap<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DecodeError> {
        let key = match self.step {
            0 => "type",
            1 => "value",
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DecodeError> {
        let s: &'de str = if self.step == 0 {
            &self.r.kind
        } else {
            &self.r.value
        };
        self.step += 1;
        seed.deserialize(StrDe(s))
    }
}

/// A borrowed string that also deserializes as `Some(string)`.
struct StrDe<'a>(&'a str);

impl<'de> de::Deserializer<'de> for StrDe<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_some(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Fields<'a> {
    data: &'a DataObject,
    pos: usize,
    type_pending: bool,
}

impl<'de> MapAccess<'de> for Fields<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DecodeError> {
        if self.type_pending {
            return seed
                .deserialize(de::value::BorrowedStrDeserializer::new("@xsi:type"))
                .map(Some);
        }
        // Skip fields whose name appeared earlier: repeated fields are delivered once, as a group.
        while let Some((name, _)) = self.data.fields.get(self.pos) {
            if self.data.fields[..self.pos].iter().any(|(k, _)| k == name) {
                self.pos += 1;
                continue;
            }
            return seed
                .deserialize(de::value::BorrowedStrDeserializer::new(name))
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DecodeError> {
        if self.type_pending {
            self.type_pending = false;
            let t: &'de str = self.data.type_name.as_deref().unwrap_or_default();
            return seed.deserialize(StrDe(t));
        }
        let Some((name, value)) = self.data.fields.get(self.pos) else {
            return Err(DecodeError("value requested past the end of a map".into()));
        };
        self.pos += 1;
        let repeated = self.data.fields[self.pos..].iter().any(|(k, _)| k == name);
        if repeated {
            seed.deserialize(Node::Many(self.data.fields(), name))
        } else {
            seed.deserialize(Node::One(value))
        }
    }
}

impl DataObject {
    fn fields(&self) -> &[(String, Value)] {
        &self.fields
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    /// Values round-trip only through [`from_value`]; other deserializers get a best-effort tree.
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any vim25 value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(E::custom)
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut d = DataObject::default();
        while let Some(k) = map.next_key::<String>()? {
            let v: Value = map.next_value()?;
            if k == "@xsi:type" {
                d.type_name = v.as_str().map(str::to_string);
            } else {
                d.fields.push((k, v));
            }
        }
        if d.type_name.is_none()
            && d.fields.len() == 2
            && let (Some(Value::Text(kind)), Some(Value::Text(value))) = (d.get("type"), d.get("value"))
        {
            return Ok(Value::MoRef(MoRef::new(kind.clone(), value.clone())));
        }
        Ok(Value::Data(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse;

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Snap {
        #[serde(rename = "@xsi:type")]
        ty: Option<String>,
        current_snapshot: Option<MoRef>,
        root_snapshot_list: Vec<Tree>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Tree {
        snapshot: MoRef,
        name: String,
        id: i32,
        quiesced: bool,
        #[serde(default)]
        child_snapshot_list: Vec<Tree>,
    }

    #[test]
    fn serde_mapping() {
        let xml = br#"<val xmlns:xsi="x" xsi:type="VirtualMachineSnapshotInfo">
          <currentSnapshot type="VirtualMachineSnapshot">snapshot-2</currentSnapshot>
          <rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-1</snapshot><name>a</name><id>1</id><quiesced>false</quiesced>
            <childSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-2</snapshot><name>b</name><id>2</id><quiesced>true</quiesced></childSnapshotList>
          </rootSnapshotList>
          <rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-3</snapshot><name>c</name><id>3</id><quiesced>false</quiesced></rootSnapshotList>
        </val>"#;
        let doc = parse(xml).unwrap();
        let s: Snap = from_value(&doc.root).unwrap();
        assert_eq!(s.ty.as_deref(), Some("VirtualMachineSnapshotInfo"));
        assert_eq!(s.current_snapshot.unwrap().value, "snapshot-2");
        assert_eq!(s.root_snapshot_list.len(), 2);
        assert_eq!(s.root_snapshot_list[0].child_snapshot_list[0].name, "b");
        assert!(s.root_snapshot_list[0].child_snapshot_list[0].quiesced);
        assert_eq!(s.root_snapshot_list[1].id, 3);
        assert_eq!(s.root_snapshot_list[0].snapshot.value, "snapshot-1");
        let again: Value = from_value(&doc.root).unwrap();
        assert_eq!(again.type_name(), Some("VirtualMachineSnapshotInfo"));
        assert_eq!(
            again
                .path("currentSnapshot")
                .and_then(Value::as_moref)
                .map(|r| r.value.as_str()),
            Some("snapshot-2")
        );
    }

    #[test]
    fn enum_and_errors() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(rename_all = "camelCase")]
        enum Power {
            PoweredOn,
            PoweredOff,
        }
        assert_eq!(
            from_value::<Power>(&Value::Text("poweredOn".into())).unwrap(),
            Power::PoweredOn
        );
        assert!(from_value::<Power>(&Value::Text("nope".into())).is_err());
        assert!(from_value::<i32>(&Value::Text("x".into())).is_err());
        assert_eq!(from_value::<Vec<i64>>(&Value::Int(4)).unwrap(), vec![4]);
    }
}
