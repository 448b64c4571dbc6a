//! XML in and out: a small writer for requests and a decoder from response bytes to [`Value`] trees.
//!
//! The decoder is schema-less. It uses what the vim25 wire format carries:
//! `xsi:type` names data objects, arrays (`ArrayOf...`) and primitive types; a `type` attribute marks a
//! managed object reference. Malformed or truncated input is an [`XmlError`], never a panic.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};

use crate::value::{DataObject, MoRef, Value};

/// Elements nested deeper than this are refused, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// The XML could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at byte {position})")]
pub struct XmlError {
    /// What went wrong.
    pub message: String,
    /// Byte offset in the input where it was noticed.
    pub position: u64,
}

impl XmlError {
    fn new(message: impl Into<String>, position: u64) -> Self {
        Self {
            message: message.into(),
            position,
        }
    }
}

/// A decoded document: the local name of the root element and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Local name of the root element (e.g. `Envelope`).
    pub root_name: String,
    /// The root element's content.
    pub root: Value,
}

struct Frame {
    name: String,
    xsi_type: Option<String>,
    moref_type: Option<String>,
    text: String,
    fields: Vec<(String, Value)>,
}

/// Decode an XML document into a [`Document`].
pub fn parse(input: &[u8]) -> Result<Document, XmlError> {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Frame> = Vec::with_capacity(16);
    let mut done: Option<Document> = None;

    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| XmlError::new(e.to_string(), reader.error_position()))?;
        match event {
            Event::Start(start) => {
                if done.is_some() {
                    return Err(XmlError::new("content after the root element", pos));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::new("elements nested too deeply", pos));
                }
                stack.push(open(&start, pos)?);
            }
            Event::Empty(start) => {
                if done.is_some() {
                    return Err(XmlError::new("content after the root element", pos));
                }
                let frame = open(&start, pos)?;
                close(frame, &mut stack, &mut done, pos)?;
            }
            Event::End(_) => {
                let frame = stack
                    .pop()
                    .ok_or_else(|| XmlError::new("unexpected end tag", pos))?;
                close(frame, &mut stack, &mut done, pos)?;
            }
            Event::Text(text) => {
                let s = text.decode().map_err(|e| XmlError::new(e.to_string(), pos))?;
                push_text(&mut stack, &s, pos)?;
            }
            Event::CData(data) => {
                let s = data.decode().map_err(|e| XmlError::new(e.to_string(), pos))?;
                push_text(&mut stack, &s, pos)?;
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| XmlError::new(e.to_string(), pos))?;
                let resolved: String = if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| XmlError::new(e.to_string(), pos))?
                {
                    c.to_string()
                } else if let Some(s) = resolve_predefined_entity(&name) {
                    s.to_string()
                } else {
                    return Err(XmlError::new(format!("unknown entity &{name};"), pos));
                };
                push_text(&mut stack, &resolved, pos)?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::new(
            "truncated document: unclosed elements",
            reader.buffer_position(),
        ));
    }
    done.ok_or_else(|| XmlError::new("empty document", 0))
}

fn push_text(stack: &mut [Frame], s: &str, pos: u64) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(frame) => {
            frame.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(XmlError::new("text outside the root element", pos)),
    }
}

fn open(start: &BytesStart<'_>, pos: u64) -> Result<Frame, XmlError> {
    let name = utf8(start.local_name().as_ref(), pos)?.to_string();
    let mut xsi_type = None;
    let mut moref_type = None;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError::new(e.to_string(), pos))?;
        let key = attr.key;
        if key.local_name().as_ref() != b"type" {
            continue;
        }
        let value = attr
            .unescape_value()
            .map_err(|e| XmlError::new(e.to_string(), pos))?;
        match key.prefix() {
            // Only xsi is used as a prefix for `type` in vim25; `xmlns:type` would be odd but harmless.
            Some(p) if p.as_ref() == b"xmlns" => {}
            Some(_) => {
                let v = value.as_ref();
                let local = v.rsplit_once(':').map_or(v, |(_, l)| l);
                xsi_type = Some(local.to_string());
            }
            None => moref_type = Some(value.into_owned()),
        }
    }
    Ok(Frame {
        name,
        xsi_type,
        moref_type,
        text: String::new(),
        fields: Vec::new(),
    })
}

fn utf8(bytes: &[u8], pos: u64) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|_| XmlError::new("invalid UTF-8 in a name", pos))
}

fn close(frame: Frame, stack: &mut [Frame], done: &mut Option<Document>, pos: u64) -> Result<(), XmlError> {
    let name = frame.name.clone();
    let value = finish(frame, pos)?;
    match stack.last_mut() {
        Some(parent) => parent.fields.push((name, value)),
        None => {
            *done = Some(Document {
                root_name: name,
                root: value,
            })
        }
    }
    Ok(())
}

fn finish(frame: Frame, pos: u64) -> Result<Value, XmlError> {
    let Frame {
        name: _,
        xsi_type,
        moref_type,
        mut text,
        mut fields,
    } = frame;
    text.shrink_to_fit();
    if let Some(t) = xsi_type.as_deref() {
        if t.starts_with("ArrayOf") {
            return Ok(Value::Array(fields.into_iter().map(|(_, v)| v).collect()));
        }
        if t == "ManagedObjectReference" {
            return Ok(Value::MoRef(MoRef::new(moref_type.unwrap_or_default(), text)));
        }
    }
    if !fields.is_empty() {
        // Decoded values may be kept long (the inventory mirror): no room left over from growth.
        fields.shrink_to_fit();
        return Ok(Value::Data(DataObject {
            type_name: xsi_type,
            fields,
        }));
    }
    if let Some(kind) = moref_type {
        return Ok(Value::MoRef(MoRef::new(kind, text)));
    }
    match xsi_type {
        None => Ok(Value::Text(text)),
        Some(t) => primitive(t, text, pos),
    }
}

fn primitive(t: String, text: String, pos: u64) -> Result<Value, XmlError> {
    let bad = |what: &str| XmlError::new(format!("invalid {what} value {text:?}"), pos);
    match t.as_str() {
        "boolean" => match text.trim() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(bad("boolean")),
        },
        "int" | "long" | "short" | "byte" => text.trim().parse().map(Value::Int).map_err(|_| bad(&t)),
        "float" | "double" => text.trim().parse().map(Value::Float).map_err(|_| bad(&t)),
        _ if t.starts_with(|c: char| c.is_ascii_lowercase()) => Ok(Value::Text(text)),
        // A vim type with no child elements: an enum value, or a data object with no fields set.
        _ if text.trim().is_empty() => Ok(Value::Data(DataObject {
            type_name: Some(t),
            fields: Vec::new(),
        })),
        _ => Ok(Value::Text(text)),
    }
}

/// Byte range of the first element reached by following `path` (local names from the root).
///
/// Used to keep the raw XML of a fault's `detail`.
pub fn element_span(input: &[u8], path: &[&str]) -> Option<std::ops::Range<usize>> {
    let mut reader = Reader::from_reader(input);
    let mut depth = 0usize;
    let mut matched = 0usize;
    let mut start = None;
    loop {
        let pos = usize::try_from(reader.buffer_position()).ok()?;
        match reader.read_event().ok()? {
            Event::Start(e) => {
                if matched == depth
                    && path
                        .get(depth)
                        .is_some_and(|p| e.local_name().as_ref() == p.as_bytes())
                {
                    matched += 1;
                    if matched == path.len() {
                        start = Some(pos);
                    }
                }
                depth += 1;
            }
            Event::Empty(e)
                if matched == depth
                    && depth + 1 == path.len()
                    && path
                        .get(depth)
                        .is_some_and(|p| e.local_name().as_ref() == p.as_bytes()) =>
            {
                let end = usize::try_from(reader.buffer_position()).ok()?;
                return Some(pos..end);
            }
            Event::End(_) => {
                depth = depth.checked_sub(1)?;
                if matched > depth {
                    if matched == path.len()
                        && depth + 1 == path.len()
                        && let Some(s) = start
                    {
                        let end = usize::try_from(reader.buffer_position()).ok()?;
                        return Some(s..end);
                    }
                    matched = depth;
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Escape text for element content or attribute values.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Builds the XML of a request body: method arguments in WSDL order.
///
/// Names and types passed as `&str` are written as they are; text values are escaped.
#[derive(Default)]
pub struct XmlWriter {
    buf: String,
}

impl std::fmt::Debug for XmlWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The buffer may hold a password (Login, AddHost_Task): never print it.
        f.debug_struct("XmlWriter").field("len", &self.buf.len()).finish()
    }
}

impl XmlWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The XML written so far.
    pub fn into_string(self) -> String {
        self.buf
    }

    /// Open `<name>`.
    pub fn start(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>");
        self
    }

    /// Open `<name xsi:type="ty">`, for a data object of a subtype (e.g. `TraversalSpec`).
    pub fn start_typed(&mut self, name: &str, xsi_type: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name} xsi:type=\"{}\">", escape(xsi_type));
        self
    }

    /// Close `</name>`.
    pub fn end(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.buf, "</{name}>");
        self
    }

    /// `<name>text</name>`.
    pub fn text(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>{}</{name}>", escape(text));
        self
    }

    /// `<name xsi:type="ty">text</name>`, for values of `xsd:anyType` fields.
    pub fn typed_text(&mut self, name: &str, xsi_type: &str, text: &str) -> &mut Self {
        let _ = write!(
            self.buf,
            "<{name} xsi:type=\"{}\">{}</{name}>",
            escape(xsi_type),
            escape(text)
        );
        self
    }

    /// `<name>` + text, only when `text` is `Some`.
    pub fn opt_text(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.text(name, t);
        }
        self
    }

    /// A boolean element.
    pub fn bool(&mut self, name: &str, v: bool) -> &mut Self {
        self.text(name, if v { "true" } else { "false" })
    }

    /// A boolean element, only when `Some`.
    pub fn opt_bool(&mut self, name: &str, v: Option<bool>) -> &mut Self {
        if let Some(v) = v {
            self.bool(name, v);
        }
        self
    }

    /// An integer element.
    pub fn int(&mut self, name: &str, v: i64) -> &mut Self {
        let _ = write!(self.buf, "<{name}>{v}</{name}>");
        self
    }

    /// `<name type="Kind">value</name>`.
    pub fn moref(&mut self, name: &str, r: &MoRef) -> &mut Self {
        let _ = write!(
            self.buf,
            "<{name} type=\"{}\">{}</{name}>",
            escape(&r.kind),
            escape(&r.value)
        );
        self
    }

    /// A managed object reference element, only when `Some`.
    pub fn opt_moref(&mut self, name: &str, r: Option<&MoRef>) -> &mut Self {
        if let Some(r) = r {
            self.moref(name, r);
        }
        self
    }

    /// Write a decoded [`Value`] back as the element `name` (used to echo values and for raw fault XML).
    pub fn value(&mut self, name: &str, v: &Value) -> &mut Self {
        match v {
            Value::Text(s) => self.text(name, s),
            Value::Bool(b) => self.typed_text(name, "xsd:boolean", if *b { "true" } else { "false" }),
            Value::Int(i) => self.typed_text(name, "xsd:long", &i.to_string()),
            Value::Float(x) => self.typed_text(name, "xsd:double", &x.to_string()),
            Value::MoRef(r) => self.moref(name, r),
            Value::Array(items) => {
                self.start_typed(name, "ArrayOfAnyType");
                for item in items {
                    self.value("anyType", item);
                }
                self.end(name)
            }
            Value::Data(d) => {
                match &d.type_name {
                    Some(t) => self.start_typed(name, t),
                    None => self.start(name),
                };
                for (k, v) in &d.fields {
                    self.value(k, v);
                }
                self.end(name)
            }
        }
    }

    /// Append XML that the caller has already built and escaped.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.buf.push_str(xml);
        self
    }
}

const ENVELOPE_START: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/""#,
    r#" xmlns:xsd="http://www.w3.org/2001/XMLSchema""#,
    r#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#
);
const ENVELOPE_END: &str = "</soapenv:Body></soapenv:Envelope>";

/// The full request envelope for `method` on `this` with already-serialized `args`.
pub fn envelope(method: &str, this: &MoRef, args: &str) -> String {
    let mut s = String::with_capacity(ENVELOPE_START.len() + ENVELOPE_END.len() + args.len() + 128);
    s.push_str(ENVELOPE_START);
    let _ = write!(
        s,
        "<{method} xmlns=\"urn:vim25\"><_this type=\"{}\">{}</_this>",
        escape(&this.kind),
        escape(&this.value)
    );
    s.push_str(args);
    let _ = write!(s, "</{method}>");
    s.push_str(ENVELOPE_END);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_typed_values() {
        let xml = br#"<r xmlns:xsi="x"><a xsi:type="xsd:int">5</a><b type="HostSystem">host-1</b>
            <c xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Datastore">ds-1</ManagedObjectReference></c>
            <d>x &amp; y&#33;</d><e xsi:type="xsd:boolean">true</e><f xsi:type="GuestInfo"/></r>"#;
        let doc = parse(xml).unwrap();
        assert_eq!(doc.root_name, "r");
        let Value::Data(d) = doc.root else { panic!() };
        assert_eq!(d.get("a"), Some(&Value::Int(5)));
        assert_eq!(
            d.get("b").and_then(Value::as_moref),
            Some(&MoRef::new("HostSystem", "host-1"))
        );
        assert_eq!(d.get("c").map(|v| v.items().len()), Some(1));
        assert_eq!(d.get("d").and_then(Value::as_str), Some("x & y!"));
        assert_eq!(d.get("e"), Some(&Value::Bool(true)));
        assert!(matches!(d.get("f"), Some(Value::Data(_))));
    }

    #[test]
    fn rejects_truncated_and_mismatched() {
        assert!(parse(b"<a><b>").is_err());
        assert!(parse(b"<a></b>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"<a/><b/>").is_err());
        assert!(parse(b"<a>&bogus;</a>").is_err());
        assert!(parse(br#"<a xmlns:xsi="x" xsi:type="xsd:int">nope</a>"#).is_err());
    }

    #[test]
    fn depth_is_limited() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        let err = parse(deep.as_bytes()).unwrap_err();
        assert!(err.message.contains("deep"), "{err}");
    }

    #[test]
    fn writer_escapes() {
        let mut w = XmlWriter::new();
        w.text("name", "a<b&\"c\"")
            .moref("obj", &MoRef::new("Folder", "group-<1>"));
        assert_eq!(
            w.into_string(),
            "<name>a&lt;b&amp;&quot;c&quot;</name><obj type=\"Folder\">group-&lt;1&gt;</obj>"
        );
    }

    #[test]
    fn span_of_detail() {
        let xml = b"<E><B><F><c>x</c><detail><X>1</X></detail></F></B></E>";
        let r = element_span(xml, &["E", "B", "F", "detail"]).unwrap();
        assert_eq!(&xml[r], b"<detail><X>1</X></detail>");
        assert!(element_span(xml, &["E", "B", "nope"]).is_none());
    }
}
