//! JSON-lines and JSON-array news / social streams (tweets, IEX news, ...).
//!
//! Owns [`NewsJsonlSettings`] and the [`NewsJsonlDecoder`], which frames one record per JSON
//! object: a line of a JSON-lines stream, or a top-level element when the stream is one JSON
//! array. Array elements are delimited by a small resumable scanner (string / escape state and
//! bracket depth) so a large array is framed as it arrives rather than parsed whole; each framed
//! object is then parsed once to check it and to read its id and symbol.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::framing::{Frame, Framed, Malformed, StreamDecoder};
use crate::{ConnectorError, Result};

/// Settings of a `news-jsonl` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewsJsonlSettings {
    pub file: PathBuf,
    #[serde(default)]
    pub follow: bool,
    /// Field holding the item's unique id (dotted path allowed, e.g. "user.id_str"); default "id_str" then "id".
    #[serde(default)]
    pub id_field: Option<String>,
    /// Field holding a ticker for the Kafka key (e.g. IEX news "related" = "AAPL" — take the first comma-separated entry).
    #[serde(default)]
    pub symbol_field: Option<String>,
    /// Fixed symbol for a single-instrument stream (e.g. a StockNet per-ticker file).
    #[serde(default)]
    pub symbol: Option<String>,
}

impl NewsJsonlSettings {
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.file.as_os_str().is_empty() {
            return Err(ConnectorError::config(
                format!("{prefix}.file"),
                "must name a json-lines or json file",
            ));
        }
        for (name, path) in [
            ("id_field", &self.id_field),
            ("symbol_field", &self.symbol_field),
        ] {
            if let Some(path) = path {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(ConnectorError::config(
                        format!("{prefix}.{name}"),
                        format!("`{path}` is not a field name or dotted path"),
                    ));
                }
            }
        }
        if let Some(symbol) = &self.symbol {
            if symbol.trim().is_empty() || symbol.trim() != symbol {
                return Err(ConnectorError::config(
                    format!("{prefix}.symbol"),
                    "must be a non-empty symbol without surrounding whitespace",
                ));
            }
        }
        Ok(())
    }
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// After `[`: an element or `]`.
    Open,
    /// After `,`: an element (a `]` here is a tolerated trailing comma).
    AfterComma,
    /// After an element: `,` or `]`.
    AfterElement,
    /// After `]`: only whitespace, or another array (appended dumps).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace seen yet.
    Detect,
    Lines,
    Array(ArrayState),
}

/// Progress through the record that starts the unconsumed buffer, so a long record arriving in
/// many small reads is scanned once, not once per read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scan {
    /// Absolute position of the record this scan belongs to.
    start: u64,
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// Frames JSON-lines or a JSON array of objects; see the module documentation.
#[derive(Debug)]
pub struct NewsJsonlDecoder {
    id_field: Option<String>,
    symbol_field: Option<String>,
    symbol: Option<String>,
    mode: Mode,
    scan: Option<Scan>,
    /// True until the first byte of the stream has been looked at.
    at_stream_start: bool,
}

impl NewsJsonlDecoder {
    pub fn new(settings: &NewsJsonlSettings) -> Self {
        Self {
            id_field: settings.id_field.clone(),
            symbol_field: settings.symbol_field.clone(),
            symbol: settings.symbol.clone(),
            mode: Mode::Detect,
            scan: None,
            at_stream_start: true,
        }
    }

    fn resume(&mut self, start: u64) -> Scan {
        match self.scan.take() {
            Some(scan) if scan.start == start => scan,
            _ => Scan {
                start,
                ..Scan::default()
            },
        }
    }

    /// A record when `bytes` is one JSON object, else a malformed span.
    fn object(&self, bytes: &[u8], position: u64, problem: Option<&str>) -> Framed {
        if let Some(problem) = problem {
            return malformed(position, bytes, format!("invalid json: {problem}"));
        }
        match serde_json::from_slice::<Map<String, Value>>(bytes) {
            Ok(object) => Framed::Record(self.frame(bytes, position, &object)),
            Err(e) => malformed(position, bytes, format!("invalid json: {e}")),
        }
    }

    fn frame(&self, bytes: &[u8], position: u64, object: &Map<String, Value>) -> Frame {
        let mut attributes = BTreeMap::new();
        let id = match &self.id_field {
            Some(path) => lookup(object, path).and_then(scalar_text),
            None => lookup(object, "id_str")
                .and_then(scalar_text)
                .or_else(|| lookup(object, "id").and_then(scalar_text)),
        };
        if let Some(id) = id {
            attributes.insert("id".to_string(), id);
        }
        let symbol = self.symbol.clone().or_else(|| {
            let path = self.symbol_field.as_deref()?;
            first_symbol(lookup(object, path)?)
        });
        Frame {
            position,
            bytes: bytes.to_vec(),
            symbol,
            attributes,
        }
    }

    fn lines(&mut self, buf: &[u8], base: u64, eof: bool, out: &mut Vec<Framed>) -> usize {
        let mut pos = 0usize;
        while let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) {
            let at = base.saturating_add(pos as u64);
            let mut scan = self.resume(at);
            let from = scan.scanned.min(rest.len());
            let newline = rest
                .get(from..)
                .and_then(|tail| tail.iter().position(|&b| b == b'\n'))
                .map(|i| i.saturating_add(from));
            match newline {
                Some(end) => {
                    let line = rest.get(..end).unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if !line.trim_ascii().is_empty() {
                        out.push(self.object(line, at, None));
                    }
                    pos = pos.saturating_add(end).saturating_add(1);
                }
                None if eof => {
                    let line = rest.strip_suffix(b"\r").unwrap_or(rest);
                    if !line.trim_ascii().is_empty() {
                        let framed = match self.object(line, at, None) {
                            Framed::Malformed(bad) => malformed(
                                at,
                                line,
                                format!(
                                    "truncated: last line has no line terminator and is not a json object ({})",
                                    bad.reason
                                ),
                            ),
                            record => record,
                        };
                        out.push(framed);
                    }
                    pos = buf.len();
                }
                None => {
                    scan.scanned = rest.len();
                    self.scan = Some(scan);
                    break;
                }
            }
        }
        pos
    }

    fn array(
        &mut self,
        mut state: ArrayState,
        buf: &[u8],
        base: u64,
        eof: bool,
        out: &mut Vec<Framed>,
    ) -> usize {
        let mut pos = 0usize;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let blank = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
            pos = pos.saturating_add(blank);
            let rest = rest.get(blank..).unwrap_or_default();
            let at = base.saturating_add(pos as u64);
            let Some(&first) = rest.first() else {
                if eof && state != ArrayState::Closed {
                    out.push(malformed(
                        at,
                        &[],
                        "truncated: json array is missing its closing ']'".to_string(),
                    ));
                    state = ArrayState::Closed;
                }
                break;
            };
            let problem = match (state, first) {
                (ArrayState::Closed, b'[') => {
                    state = ArrayState::Open;
                    pos = pos.saturating_add(1);
                    continue;
                }
                (ArrayState::Closed, _) => Some("data after the end of the json array"),
                (_, b']') => {
                    state = ArrayState::Closed;
                    pos = pos.saturating_add(1);
                    continue;
                }
                (ArrayState::AfterElement, b',') => {
                    state = ArrayState::AfterComma;
                    pos = pos.saturating_add(1);
                    continue;
                }
                (_, b',') => {
                    out.push(malformed(
                        at,
                        b",",
                        "invalid json: unexpected ',' in array".to_string(),
                    ));
                    pos = pos.saturating_add(1);
                    continue;
                }
                (ArrayState::AfterElement, _) => Some("expected ',' or ']' before this element"),
                (ArrayState::Open | ArrayState::AfterComma, _) => None,
            };
            let mut scan = self.resume(at);
            match scan_element(rest, &mut scan) {
                Some(end) => {
                    let element = rest.get(..end).unwrap_or_default();
                    out.push(self.object(element, at, problem));
                    pos = pos.saturating_add(end);
                    if state != ArrayState::Closed {
                        state = ArrayState::AfterElement;
                    }
                }
                None if eof => {
                    out.push(malformed(
                        at,
                        rest,
                        format!(
                            "truncated: json array element is unterminated after {} bytes",
                            rest.len()
                        ),
                    ));
                    pos = buf.len();
                    state = ArrayState::Closed;
                }
                None => {
                    self.scan = Some(scan);
                    break;
                }
            }
        }
        self.mode = Mode::Array(state);
        pos
    }
}

impl StreamDecoder for NewsJsonlDecoder {
    fn decode(&mut self, buf: &[u8], base: u64, eof: bool, out: &mut Vec<Framed>) -> usize {
        match self.mode {
            Mode::Lines => self.lines(buf, base, eof, out),
            Mode::Array(state) => self.array(state, buf, base, eof, out),
            Mode::Detect => {
                // A BOM is an encoding mark, not content: drop it before telling the two layouts apart.
                let first_look = self.at_stream_start;
                if first_look && buf.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(buf) && !eof {
                    return 0;
                }
                if !buf.is_empty() {
                    self.at_stream_start = false;
                }
                let skip = if first_look && buf.starts_with(UTF8_BOM) {
                    UTF8_BOM.len()
                } else {
                    0
                };
                let rest = buf.get(skip..).unwrap_or_default();
                let rest_base = base.saturating_add(skip as u64);
                match rest.iter().position(|b| !b.is_ascii_whitespace()) {
                    None if eof => buf.len(),
                    None => skip,
                    Some(first) => {
                        let used = if rest.get(first) == Some(&b'[') {
                            self.mode = Mode::Array(ArrayState::Open);
                            let opened = first.saturating_add(1);
                            let after = rest.get(opened..).unwrap_or_default();
                            opened.saturating_add(self.array(
                                ArrayState::Open,
                                after,
                                rest_base.saturating_add(opened as u64),
                                eof,
                                out,
                            ))
                        } else {
                            self.mode = Mode::Lines;
                            self.lines(rest, rest_base, eof, out)
                        };
                        skip.saturating_add(used)
                    }
                }
            }
        }
    }
}

fn malformed(position: u64, bytes: &[u8], reason: String) -> Framed {
    Framed::Malformed(Malformed {
        position,
        bytes: bytes.to_vec(),
        reason,
    })
}

/// Length of the JSON value that starts `bytes`, or `None` when it does not end within them.
/// Only strings and brackets are tracked: validity is left to the parser that follows.
fn scan_element(bytes: &[u8], scan: &mut Scan) -> Option<usize> {
    let mut i = scan.scanned;
    while let Some(&byte) = bytes.get(i) {
        let next = i.saturating_add(1);
        if scan.in_string {
            if scan.escaped {
                scan.escaped = false;
            } else if byte == b'\\' {
                scan.escaped = true;
            } else if byte == b'"' {
                scan.in_string = false;
                if scan.depth == 0 {
                    return Some(next);
                }
            }
        } else if i == 0 {
            // The first byte always belongs to the element, whatever it is.
            match byte {
                b'"' => scan.in_string = true,
                b'{' | b'[' => scan.depth = 1,
                _ => {}
            }
        } else {
            match byte {
                b'"' => scan.in_string = true,
                b'{' | b'[' => scan.depth = scan.depth.saturating_add(1),
                b'}' | b']' => {
                    if scan.depth == 0 {
                        return Some(i);
                    }
                    scan.depth = scan.depth.saturating_sub(1);
                    if scan.depth == 0 {
                        return Some(next);
                    }
                }
                b',' if scan.depth == 0 => return Some(i),
                _ if scan.depth == 0 && byte.is_ascii_whitespace() => return Some(i),
                _ => {}
            }
        }
        i = next;
    }
    scan.scanned = i;
    None
}

/// The value at `path`: the whole path as one key first (keys may contain dots), else its
/// dot-separated segments, with numeric segments indexing arrays.
fn lookup<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = object.get(path) {
        return Some(value);
    }
    let (head, tail) = path.split_once('.')?;
    lookup_value(object.get(head)?, tail)
}

fn lookup_value<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    match value {
        Value::Object(object) => lookup(object, path),
        Value::Array(items) => {
            let (head, tail) = match path.split_once('.') {
                Some((head, tail)) => (head, Some(tail)),
                None => (path, None),
            };
            let item = items.get(head.parse::<usize>().ok()?)?;
            match tail {
                Some(tail) => lookup_value(item, tail),
                None => Some(item),
            }
        }
        _ => None,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// First entry of a comma-separated string (`"AAPL,Computer Hardware,..."`) or of an array.
fn first_symbol(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .map(str::to_string),
        Value::Array(items) => items.first().and_then(first_symbol),
        _ => None,
    }
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what a test should do.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn read(name: &str) -> Vec<u8> {
        let path = format!("{}/../data/news/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    fn settings() -> NewsJsonlSettings {
        NewsJsonlSettings {
            file: "x.jsonl".into(),
            follow: false,
            id_field: None,
            symbol_field: None,
            symbol: None,
        }
    }

    fn decode_all(settings: &NewsJsonlSettings, data: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        let consumed = NewsJsonlDecoder::new(settings).decode(data, 0, true, &mut out);
        assert_eq!(consumed, data.len());
        out
    }

    fn decode_chunked(settings: &NewsJsonlSettings, data: &[u8], seed: u64) -> Vec<Framed> {
        let mut decoder = NewsJsonlDecoder::new(settings);
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut base = 0u64;
        let mut rng = seed;
        let mut fed = 0usize;
        while fed < data.len() {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let size = ((rng >> 33) % 4096 + 1) as usize;
            let end = (fed + size).min(data.len());
            pending.extend_from_slice(&data[fed..end]);
            fed = end;
            let consumed = decoder.decode(&pending, base, false, &mut out);
            assert!(consumed <= pending.len());
            pending.drain(..consumed);
            base += consumed as u64;
        }
        let consumed = decoder.decode(&pending, base, true, &mut out);
        assert_eq!(consumed, pending.len());
        out
    }

    fn records(out: &[Framed]) -> Vec<&Frame> {
        out.iter()
            .filter_map(|f| match f {
                Framed::Record(frame) => Some(frame),
                Framed::Malformed(_) => None,
            })
            .collect()
    }

    fn check_positions(data: &[u8], out: &[Framed]) {
        for framed in out {
            let (at, bytes) = match framed {
                Framed::Record(f) => (f.position as usize, &f.bytes),
                Framed::Malformed(m) => (m.position as usize, &m.bytes),
            };
            assert_eq!(&data[at..at + bytes.len()], bytes.as_slice());
        }
    }

    #[test]
    fn stocknet_aapl_tweets() {
        let data = read("stocknet_tweets_AAPL_2014-06-01_to_2014-06-08.jsonl");
        let fixed = NewsJsonlSettings {
            symbol: Some("AAPL".into()),
            ..settings()
        };
        let out = decode_all(&fixed, &data);
        assert_eq!(out.len(), 334);
        let frames = records(&out);
        assert_eq!(frames.len(), 334);
        let ids: BTreeSet<&str> = frames.iter().map(|f| f.attributes["id"].as_str()).collect();
        assert_eq!(ids.len(), 334);
        assert!(frames.iter().all(|f| f.symbol.as_deref() == Some("AAPL")));
        assert!(frames
            .iter()
            .all(|f| f.bytes.starts_with(b"{") && f.bytes.ends_with(b"}")));
        check_positions(&data, &out);
        assert_eq!(decode_chunked(&fixed, &data, 5), out);
    }

    #[test]
    fn stocknet_goog_tweets_with_a_dotted_id_field() {
        let data = read("stocknet_tweets_GOOG_2015-12-14_to_2015-12-27.jsonl");
        let out = decode_all(&settings(), &data);
        let frames = records(&out);
        assert_eq!((out.len(), frames.len()), (43, 43));
        let ids: BTreeSet<&str> = frames.iter().map(|f| f.attributes["id"].as_str()).collect();
        assert_eq!(ids.len(), 43);
        assert!(frames.iter().all(|f| f.symbol.is_none()));
        let by_user = NewsJsonlSettings {
            id_field: Some("user.id_str".into()),
            symbol_field: Some("entities.symbols.0.text".into()),
            ..settings()
        };
        let out = decode_all(&by_user, &data);
        let frames = records(&out);
        assert!(frames.iter().all(|f| f.attributes.contains_key("id")));
        assert!(frames.iter().any(|f| f.symbol.is_some()));
        assert_eq!(decode_chunked(&by_user, &data, 11), out);
    }

    #[test]
    fn iex_news_json_array() {
        let data = read("iex_news_aapl.json");
        let related = NewsJsonlSettings {
            symbol_field: Some("related".into()),
            ..settings()
        };
        let out = decode_all(&related, &data);
        assert_eq!(out.len(), 10);
        let frames = records(&out);
        assert_eq!(frames.len(), 10);
        assert!(frames.iter().all(|f| f.symbol.as_deref() == Some("AAPL")));
        assert!(frames
            .iter()
            .all(|f| f.bytes.starts_with(b"{\"datetime\"") && f.bytes.ends_with(b"}")));
        check_positions(&data, &out);
        assert_eq!(frames[0].position, 1);
        for seed in [1, 2, 3] {
            assert_eq!(decode_chunked(&related, &data, seed), out);
        }
        // Byte-at-a-time feeding exercises the resumable scanner inside strings and escapes.
        let mut decoder = NewsJsonlDecoder::new(&related);
        let mut one_by_one = Vec::new();
        let mut pending = Vec::new();
        let mut base = 0u64;
        for &byte in &data {
            pending.push(byte);
            let used = decoder.decode(&pending, base, false, &mut one_by_one);
            pending.drain(..used);
            base += used as u64;
        }
        decoder.decode(&pending, base, true, &mut one_by_one);
        assert_eq!(one_by_one, out);
    }

    #[test]
    fn malformed_lines_keep_their_bytes_and_do_not_stop_the_stream() {
        let data =
            b"{\"id\":1}\r\n{bad json\n\n[1,2]\r\n   \n{\"id_str\":\"x\",\"id\":2}\n{\"id\":3}";
        let out = decode_all(&settings(), data);
        assert_eq!(out.len(), 5, "{out:?}");
        let Framed::Malformed(bad) = &out[1] else {
            panic!("{:?}", out[1]);
        };
        assert_eq!(bad.bytes, b"{bad json");
        assert_eq!(bad.position, 10);
        assert!(bad.reason.starts_with("invalid json: "), "{}", bad.reason);
        let Framed::Malformed(array) = &out[2] else {
            panic!("{:?}", out[2]);
        };
        assert_eq!(array.bytes, b"[1,2]");
        assert!(array.reason.starts_with("invalid json: "));
        let frames = records(&out);
        let ids: Vec<&str> = frames.iter().map(|f| f.attributes["id"].as_str()).collect();
        assert_eq!(ids, ["1", "x", "3"]);
        check_positions(data, &out);
        for seed in 0..20 {
            assert_eq!(decode_chunked(&settings(), data, seed), out);
        }
    }

    #[test]
    fn truncated_streams_end_in_one_malformed() {
        let lines = b"{\"id\":1}\n{\"id\":2, \"te";
        let out = decode_all(&settings(), lines);
        assert_eq!(out.len(), 2);
        let Framed::Malformed(bad) = &out[1] else {
            panic!("{:?}", out[1]);
        };
        assert!(bad.reason.starts_with("truncated: "), "{}", bad.reason);
        assert_eq!(bad.bytes, b"{\"id\":2, \"te");
        // Without eof the partial line is left for later.
        let mut out = Vec::new();
        let used = NewsJsonlDecoder::new(&settings()).decode(lines, 0, false, &mut out);
        assert_eq!((used, out.len()), (9, 1));

        let data = read("iex_news_aapl.json");
        let cut = &data[..data.len() / 2];
        let out = decode_all(&settings(), cut);
        let (last, before) = out.split_last().unwrap();
        assert!(before.iter().all(|f| matches!(f, Framed::Record(_))));
        let Framed::Malformed(bad) = last else {
            panic!("{last:?}");
        };
        assert!(bad.reason.starts_with("truncated: "), "{}", bad.reason);
        assert_eq!(bad.bytes, &cut[bad.position as usize..]);
        let unclosed = decode_all(&settings(), b"[{\"a\":1} ");
        assert_eq!(unclosed.len(), 2);
        assert!(
            matches!(&unclosed[1], Framed::Malformed(m) if m.reason.starts_with("truncated: "))
        );
    }

    #[test]
    fn array_elements_that_are_not_objects_are_malformed() {
        let data = b" \xef\xbb\xbf[1, \"a,]\\\"\" ,{\"id\":\"q\"} {\"id\":4},,[{}] , {\"x\":\"}\"} ,] trailing";
        let data = &data[1..];
        let out = decode_all(&settings(), data);
        let kinds: Vec<String> = out
            .iter()
            .map(|f| match f {
                Framed::Record(r) => format!("R {}", String::from_utf8_lossy(&r.bytes)),
                Framed::Malformed(m) => format!("M {}", String::from_utf8_lossy(&m.bytes)),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "M 1",
                "M \"a,]\\\"\"",
                "R {\"id\":\"q\"}",
                "M {\"id\":4}",
                "M ,",
                "M [{}]",
                "R {\"x\":\"}\"}",
                "M trailing",
            ]
        );
        check_positions(data, &out);
        for seed in 0..20 {
            assert_eq!(decode_chunked(&settings(), data, seed), out);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let news = read("iex_news_aapl.json");
        let tweets = read("stocknet_tweets_GOOG_2015-12-14_to_2015-12-27.jsonl");
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..200u64 {
            let mut data = match round % 3 {
                0 => news.clone(),
                1 => tweets[..20_000].to_vec(),
                _ => (0..(next() % 2000)).map(|_| next() as u8).collect(),
            };
            if !data.is_empty() {
                for _ in 0..10 {
                    let at = (next() as usize) % data.len();
                    data[at] = b"{}[]\",\\\n\r x"[(next() % 11) as usize];
                }
            }
            let whole = decode_all(&settings(), &data);
            check_positions(&data, &whole);
            assert_eq!(decode_chunked(&settings(), &data, round), whole);
        }
    }

    #[test]
    fn settings_validation() {
        assert!(settings().validate("p").is_ok());
        let bad_path = NewsJsonlSettings {
            id_field: Some("user..id".into()),
            ..settings()
        };
        let err = bad_path.validate("p").unwrap_err().to_string();
        assert!(err.contains("p.id_field"), "{err}");
        let blank = NewsJsonlSettings {
            symbol: Some(" ".into()),
            ..settings()
        };
        assert!(blank.validate("p").is_err());
        let no_file = NewsJsonlSettings {
            file: PathBuf::new(),
            ..settings()
        };
        assert!(no_file.validate("p").is_err());
        assert!(
            serde_json::from_str::<NewsJsonlSettings>(r#"{"file":"f","idfield":"x"}"#).is_err()
        );
    }
}
