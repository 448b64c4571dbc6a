//! Streaming: the elements at one path of a response, handed on as their bytes arrive.
//!
//! A full inventory is one `WaitForUpdatesEx` answer: at 10,000 VMs some 60 MB of XML, and twice
//! that again as a decoded tree. [`Splitter`] keeps neither: fed the body chunk by chunk, it
//! finds each complete element at its path (e.g. every `objectSet` of the update set), gives its
//! bytes to a sink and drops them, and keeps the rest of the document (the envelope, the version)
//! to be decoded as usual. Memory is one element and one chunk, whatever the response's size.
//!
//! The scan knows just enough XML to find element boundaries: start, end and empty-element tags
//! (quoted attribute values may hold `>`), comments, CDATA sections, processing instructions.
//! Everything else (names matching, entities, nesting) is checked by the decoder of each element
//! and of the rest.

/// Why splitting stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// An element, or the rest of the document, is over its limit.
    TooLarge(String),
    /// The sink asked to stop (it keeps its own reason).
    Stopped,
}

/// See the module docs.
pub struct Splitter<'a> {
    path: &'a [&'a str],
    max_element: usize,
    max_rest: usize,
    sink: &'a mut (dyn FnMut(&[u8]) -> bool + Send),
    /// Bytes not yet moved to `rest` or given to the sink; `buf[..scan]` is scanned.
    buf: Vec<u8>,
    scan: usize,
    /// Where the element being split starts in `buf` (it is then `0`).
    split_start: Option<usize>,
    depth: usize,
    /// How many of the open elements, from the root, match `path`.
    matched: usize,
    rest: Vec<u8>,
    elements: u64,
}

impl std::fmt::Debug for Splitter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter")
            .field("path", &self.path)
            .field("elements", &self.elements)
            .finish_non_exhaustive()
    }
}

/// One piece of markup found at the start of a slice.
enum Markup {
    Start { local: Vec<u8>, empty: bool },
    End,
    Other,
}

impl<'a> Splitter<'a> {
    /// Splits the elements at `path` (local names from the root) out to `sink`; an element, or
    /// the rest, over `max_bytes` stops the scan.
    pub fn new(
        path: &'a [&'a str],
        max_bytes: usize,
        sink: &'a mut (dyn FnMut(&[u8]) -> bool + Send),
    ) -> Self {
        Self {
            path,
            max_element: max_bytes,
            max_rest: max_bytes,
            sink,
            buf: Vec::new(),
            scan: 0,
            split_start: None,
            depth: 0,
            matched: 0,
            rest: Vec::new(),
            elements: 0,
        }
    }

    /// How many elements went to the sink.
    pub fn elements(&self) -> u64 {
        self.elements
    }

    /// The next chunk of the document.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), SplitError> {
        self.buf.extend_from_slice(chunk);
        while let Some(lt) = self.buf[self.scan..].iter().position(|&b| b == b'<') {
            let at = self.scan + lt;
            let Some((len, markup)) = markup(&self.buf[at..]) else {
                self.scan = at; // incomplete: wait for more
                break;
            };
            let end = at + len;
            self.scan = end;
            match markup {
                Markup::Start { local, empty } => self.start(at, end, &local, empty)?,
                Markup::End => self.end(end)?,
                Markup::Other => {}
            }
        }
        if self.split_start.is_none() {
            // Text up to the next markup (or all of it) belongs to the rest.
            let keep = self.buf[self.scan..]
                .iter()
                .position(|&b| b == b'<')
                .map_or(self.buf.len(), |p| self.scan + p);
            self.keep_rest(keep)?;
        }
        if self.buf.len() > self.max_element {
            return Err(SplitError::TooLarge(format!(
                "an element at {} is over the limit of {} bytes",
                self.path.join("/"),
                self.max_element
            )));
        }
        Ok(())
    }

    /// The document without the split elements (with whatever was left unfinished).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.rest);
        rest.append(&mut self.buf);
        rest
    }

    fn start(&mut self, at: usize, end: usize, local: &[u8], empty: bool) -> Result<(), SplitError> {
        let on_path = self.split_start.is_none()
            && self.matched == self.depth
            && self.path.get(self.depth).is_some_and(|p| p.as_bytes() == local);
        if empty {
            if on_path && self.depth + 1 == self.path.len() {
                self.keep_rest(at)?;
                self.emit(end - at)?;
            }
            return Ok(());
        }
        if on_path {
            self.matched += 1;
            if self.matched == self.path.len() {
                self.keep_rest(at)?;
                self.split_start = Some(0);
            }
        }
        self.depth += 1;
        Ok(())
    }

    fn end(&mut self, end: usize) -> Result<(), SplitError> {
        self.depth = self.depth.saturating_sub(1);
        if self.matched > self.depth {
            if self.split_start.is_some() && self.depth + 1 == self.path.len() {
                self.split_start = None;
                self.emit(end)?;
            }
            self.matched = self.depth;
        }
        Ok(())
    }

    /// Moves `buf[..n]` to the rest.
    fn keep_rest(&mut self, n: usize) -> Result<(), SplitError> {
        if self.rest.len() + n > self.max_rest {
            return Err(SplitError::TooLarge(format!(
                "the response outside {} is over the limit of {} bytes",
                self.path.join("/"),
                self.max_rest
            )));
        }
        self.rest.extend_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        // Past `scan` only text can have been moved (no markup starts there).
        self.scan = self.scan.saturating_sub(n);
        Ok(())
    }

    /// Gives `buf[..n]` (one element) to the sink and drops it.
    fn emit(&mut self, n: usize) -> Result<(), SplitError> {
        self.elements += 1;
        let go_on = (self.sink)(&self.buf[..n]);
        self.buf.drain(..n);
        self.scan -= n;
        if go_on { Ok(()) } else { Err(SplitError::Stopped) }
    }
}

/// The markup starting `s` (which starts with `<`): its length and kind, `None` if incomplete.
fn markup(s: &[u8]) -> Option<(usize, Markup)> {
    let find = |from: usize, pat: &[u8]| {
        s.get(from..)?
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| from + p + pat.len())
    };
    match s.get(1)? {
        b'!' => {
            if s.len() < 4 {
                return None;
            }
            if s.starts_with(b"<!--") {
                return find(4, b"-->").map(|n| (n, Markup::Other));
            }
            if s.len() < 9 && b"<![CDATA[".starts_with(s) {
                return None;
            }
            if s.starts_with(b"<![CDATA[") {
                return find(9, b"]]>").map(|n| (n, Markup::Other));
            }
            find(2, b">").map(|n| (n, Markup::Other))
        }
        b'?' => find(2, b"?>").map(|n| (n, Markup::Other)),
        b'/' => find(2, b">").map(|n| (n, Markup::End)),
        _ => {
            let mut quote = None;
            let close = s.iter().enumerate().skip(1).find_map(|(i, &b)| {
                match (quote, b) {
                    (None, b'"' | b'\'') => quote = Some(b),
                    (Some(q), _) if q == b => quote = None,
                    (None, b'>') => return Some(i),
                    _ => {}
                }
                None
            })?;
            let empty = s[close - 1] == b'/';
            let name_end = s[1..close]
                .iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'/')
                .map_or(close, |p| p + 1);
            let name = &s[1..name_end];
            let local = name.rsplit(|&b| b == b':').next().unwrap_or(name).to_vec();
            Some((close + 1, Markup::Start { local, empty }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = concat!(
        r#"<?xml version="1.0"?><!-- a <comment> --><S:Envelope xmlns:S="s"><S:Body>"#,
        r#"<R><returnval><version>7</version><filterSet><filter type="F">f</filter>"#,
        r#"<objectSet a="x > y"><obj type="VM">vm-1</obj><v><![CDATA[<objectSet>]]></v></objectSet>"#,
        r#"<objectSet/>"#,
        r#"<objectSet><objectSet>nested</objectSet></objectSet>"#,
        r#"</filterSet></returnval></R></S:Body></S:Envelope>"#,
    );
    const PATH: &[&str] = &["Envelope", "Body", "R", "returnval", "filterSet", "objectSet"];

    fn split(doc: &[u8], chunk: usize, max: usize) -> (Result<Vec<u8>, SplitError>, Vec<String>) {
        let mut got = Vec::new();
        let mut sink = |b: &[u8]| {
            got.push(String::from_utf8_lossy(b).into_owned());
            true
        };
        let mut s = Splitter::new(PATH, max, &mut sink);
        let mut res = Ok(());
        for c in doc.chunks(chunk) {
            res = s.feed(c);
            if res.is_err() {
                break;
            }
        }
        let rest = res.map(|()| s.finish());
        (rest, got)
    }

    #[test]
    fn every_element_once_whatever_the_chunks() {
        let whole = split(DOC.as_bytes(), DOC.len(), 1 << 20);
        let (rest, got) = &whole;
        assert_eq!(
            got,
            &[
                r#"<objectSet a="x > y"><obj type="VM">vm-1</obj><v><![CDATA[<objectSet>]]></v></objectSet>"#,
                "<objectSet/>",
                "<objectSet><objectSet>nested</objectSet></objectSet>",
            ]
        );
        let rest = String::from_utf8(rest.clone().unwrap()).unwrap();
        assert!(rest.contains("<version>7</version><filterSet><filter type=\"F\">f</filter></filterSet>"));
        assert!(!rest.contains("objectSet"));
        crate::xml::parse(rest.as_bytes()).unwrap();
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(split(DOC.as_bytes(), chunk, 1 << 20), whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn an_element_over_the_limit_stops_the_scan() {
        let (res, got) = split(DOC.as_bytes(), 16, 60);
        assert!(
            matches!(res, Err(SplitError::TooLarge(m)) if m.contains("objectSet")),
            "{got:?}"
        );
    }

    #[test]
    fn the_sink_can_stop_it() {
        let mut sink = |_: &[u8]| false;
        let mut s = Splitter::new(PATH, 1 << 20, &mut sink);
        assert_eq!(s.feed(DOC.as_bytes()), Err(SplitError::Stopped));
    }

    #[test]
    fn a_truncated_document_keeps_its_tail_for_the_decoder() {
        let cut = &DOC.as_bytes()[..DOC.find("vm-1").unwrap()];
        let (rest, got) = split(cut, 5, 1 << 20);
        assert!(got.is_empty());
        let rest = rest.unwrap();
        assert!(crate::xml::parse(&rest).is_err());
    }
}
