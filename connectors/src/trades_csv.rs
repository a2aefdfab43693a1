//! CSV tick/bar framing: the `trades_csv` source settings and a [`StreamDecoder`] that turns
//! each data line of a trades or bars CSV (QuantConnect LEAN files or headered exports) into one
//! record, carrying the column names, file date and symbol needed to read the row later.
//!
//! Framing is line-based: a record is one physical line. A quoted field may contain the
//! delimiter, but a line break inside a quoted field is not supported: such a line is reported
//! as malformed (`unterminated quoted field ...`) and the next line is framed on its own, so one
//! stray quote cannot swallow the rest of a file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::framing::{Frame, Framed, Malformed, StreamDecoder};
use crate::ConnectorError;

/// LEAN trade tick layout (`<date>_<symbol>_Trade_Tick.csv`); prices are deci-cents.
const LEAN_TICK_COLUMNS: &[&str] = &[
    "time_ms",
    "price",
    "quantity",
    "exchange",
    "sale_condition",
    "suspicious",
];

/// LEAN trade bar layout (`<date>_<symbol>_{second,minute,hour}_trade.csv`).
const LEAN_BAR_COLUMNS: &[&str] = &["time_ms", "open", "high", "low", "close", "volume"];

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A line still without its terminator after this many bytes is reported in pieces, so a file
/// without line breaks cannot make the caller buffer without bound.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Settings of a `trades_csv` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TradesCsvSettings {
    pub file: PathBuf,
    #[serde(default)]
    pub follow: bool,
    /// None = detect: a first line without any numeric field is a header.
    #[serde(default)]
    pub has_header: Option<bool>,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Fixed symbol for files that carry none (LEAN files), e.g. "IBM".
    #[serde(default)]
    pub symbol: Option<String>,
    /// Column holding the symbol: a header name, or a 0-based index as a string.
    #[serde(default)]
    pub symbol_column: Option<String>,
    /// Take the symbol from a LEAN-style file name `<yyyymmdd>_<symbol>_...csv` when neither of
    /// the above is set.
    #[serde(default = "yes")]
    pub symbol_from_file_name: bool,
    /// Column names for header-less files, recorded as the `columns` attribute so enrichment can
    /// read rows. Default: the LEAN layout matching the file name (trade bars for
    /// `_minute_trade` and the like, else ticks `time_ms,price,quantity,exchange,sale_condition,suspicious`).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

fn default_delimiter() -> char {
    ','
}

fn yes() -> bool {
    true
}

impl TradesCsvSettings {
    /// Checks the settings; `prefix` is the dotted path of this source's table, used to name the
    /// bad key in the error.
    pub fn validate(&self, prefix: &str) -> crate::Result<()> {
        let bad = |key: &str, message: String| {
            Err(ConnectorError::config(format!("{prefix}.{key}"), message))
        };
        if self.file.as_os_str().is_empty() {
            return bad("file", "is empty; give the path of the csv file".to_owned());
        }
        if !self.delimiter.is_ascii() || matches!(self.delimiter, '"' | '\r' | '\n') {
            return bad(
                "delimiter",
                format!(
                    "`{}` cannot separate fields; use a single ascii character other than a quote or line break, e.g. \",\" or \";\"",
                    self.delimiter.escape_default()
                ),
            );
        }
        if let Some(symbol) = &self.symbol {
            if symbol.trim().is_empty() {
                return bad(
                    "symbol",
                    "is empty; give the instrument symbol, e.g. \"IBM\", or remove the key"
                        .to_owned(),
                );
            }
            if self.symbol_column.is_some() {
                return bad(
                    "symbol_column",
                    "set either a fixed `symbol` or a `symbol_column`, not both".to_owned(),
                );
            }
        }
        if let Some(columns) = &self.columns {
            if self.has_header == Some(true) {
                return bad(
                    "columns",
                    "only applies to header-less files, but `has_header` is true; remove one of them".to_owned(),
                );
            }
            if columns.is_empty() {
                return bad(
                    "columns",
                    "is empty; list the column names or remove the key to use the lean layout"
                        .to_owned(),
                );
            }
            for (i, name) in columns.iter().enumerate() {
                if name.trim().is_empty() {
                    return bad("columns", format!("name {i} is empty"));
                }
                if columns.iter().take(i).any(|other| other == name) {
                    return bad("columns", format!("`{name}` is listed twice"));
                }
            }
        }
        if let Some(column) = &self.symbol_column {
            match ColumnRef::parse(column) {
                None => {
                    return bad(
                        "symbol_column",
                        "is empty; give a header name or a 0-based column index".to_owned(),
                    )
                }
                Some(ColumnRef::Index(index)) => {
                    if let Some(columns) = &self.columns {
                        if index >= columns.len() {
                            let count = columns.len();
                            return bad(
                                "symbol_column",
                                format!("index {index} is past the {count} names in `columns` (indexes are 0-based)"),
                            );
                        }
                    }
                }
                Some(ColumnRef::Name(name)) => {
                    let in_columns = self
                        .columns
                        .as_ref()
                        .is_some_and(|columns| columns.contains(&name));
                    if self.has_header == Some(false) && !in_columns {
                        return bad(
                            "symbol_column",
                            format!("`{name}` names a column, but the file has no header; give a 0-based index or list the names in `columns`"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ColumnRef {
    Index(usize),
    Name(String),
}

impl ColumnRef {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(match text.parse::<usize>() {
            Ok(index) => ColumnRef::Index(index),
            Err(_) => ColumnRef::Name(text.to_owned()),
        })
    }

    fn resolve(&self, names: Option<&[String]>) -> Option<usize> {
        match self {
            ColumnRef::Index(index) => Some(*index),
            ColumnRef::Name(name) => {
                let names = names?;
                names
                    .iter()
                    .position(|n| n == name)
                    .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))
            }
        }
    }
}

#[derive(Debug)]
enum SymbolSource {
    Fixed(String),
    Column(ColumnRef),
    Unknown,
}

/// What the first non-empty line decided for the rest of the file.
#[derive(Debug)]
struct Layout {
    expected_fields: usize,
    columns: Option<String>,
    symbol_index: Option<usize>,
}

/// Incremental line framer for one CSV file.
#[derive(Debug)]
pub struct TradesCsvDecoder {
    delimiter: u8,
    has_header: Option<bool>,
    configured_columns: Option<Vec<String>>,
    default_columns: &'static [&'static str],
    symbol: SymbolSource,
    file_date: Option<String>,
    layout: Option<Layout>,
    at_stream_start: bool,
    /// The previous piece was cut from an overlong line: the rest of that line is no record.
    in_overlong_line: bool,
}

impl TradesCsvDecoder {
    /// `file_name` is the source file's name or path; LEAN names give the date and symbol.
    pub fn new(settings: &TradesCsvSettings, file_name: &str) -> crate::Result<Self> {
        settings.validate("trades_csv")?;
        let delimiter = u8::try_from(u32::from(settings.delimiter)).map_err(|_| {
            ConnectorError::config("trades_csv.delimiter", "must be an ascii character")
        })?;
        let base_name = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
        let (file_date, name_symbol) = parse_lean_file_name(base_name);
        let symbol = if let Some(symbol) = &settings.symbol {
            SymbolSource::Fixed(symbol.trim().to_owned())
        } else if let Some(column) = settings.symbol_column.as_deref().and_then(ColumnRef::parse) {
            SymbolSource::Column(column)
        } else if let Some(symbol) = name_symbol.filter(|_| settings.symbol_from_file_name) {
            SymbolSource::Fixed(symbol)
        } else {
            SymbolSource::Unknown
        };
        let lower = base_name.to_ascii_lowercase();
        let is_bar_file = ["_second_trade", "_minute_trade", "_hour_trade"]
            .iter()
            .any(|marker| lower.contains(marker));
        Ok(Self {
            delimiter,
            has_header: settings.has_header,
            configured_columns: settings.columns.clone(),
            default_columns: if is_bar_file {
                LEAN_BAR_COLUMNS
            } else {
                LEAN_TICK_COLUMNS
            },
            symbol,
            file_date,
            layout: None,
            at_stream_start: true,
            in_overlong_line: false,
        })
    }

    fn frame_line(&mut self, line: &[u8], position: u64, out: &mut Vec<Framed>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let fields = match split_fields(line, self.delimiter) {
            Ok(fields) => fields,
            Err(reason) => {
                out.push(malformed(line, position, reason.to_owned()));
                return;
            }
        };
        let layout = match &mut self.layout {
            Some(layout) => layout,
            slot @ None => {
                let is_header = self
                    .has_header
                    .unwrap_or_else(|| !fields.iter().any(|f| is_numeric(f)));
                let layout = if is_header {
                    let names: Vec<String> =
                        fields.iter().map(|f| lossy(f).trim().to_owned()).collect();
                    Layout {
                        expected_fields: names.len(),
                        columns: Some(names.join(",")),
                        symbol_index: resolve_symbol(&self.symbol, Some(&names)),
                    }
                } else if let Some(names) = &self.configured_columns {
                    Layout {
                        expected_fields: names.len(),
                        columns: Some(names.join(",")),
                        symbol_index: resolve_symbol(&self.symbol, Some(names)),
                    }
                } else {
                    // The default names are only recorded when they fit: a wrong layout would
                    // mislabel every row, while a missing one is visible.
                    let names: Option<Vec<String>> = (self.default_columns.len() == fields.len())
                        .then(|| {
                            self.default_columns
                                .iter()
                                .map(|n| (*n).to_owned())
                                .collect()
                        });
                    Layout {
                        expected_fields: fields.len(),
                        columns: names.as_ref().map(|n| n.join(",")),
                        symbol_index: resolve_symbol(&self.symbol, names.as_deref()),
                    }
                };
                let layout = slot.insert(layout);
                if is_header {
                    return;
                }
                layout
            }
        };
        if fields.len() != layout.expected_fields {
            out.push(malformed(
                line,
                position,
                format!(
                    "wrong field count: expected {}, found {}",
                    layout.expected_fields,
                    fields.len()
                ),
            ));
            return;
        }
        let symbol = match &self.symbol {
            SymbolSource::Fixed(symbol) => Some(symbol.clone()),
            SymbolSource::Column(_) => layout
                .symbol_index
                .and_then(|i| fields.get(i))
                .map(|f| lossy(f).trim().to_owned())
                .filter(|s| !s.is_empty()),
            SymbolSource::Unknown => None,
        };
        let mut attributes = BTreeMap::new();
        if let Some(columns) = &layout.columns {
            attributes.insert("columns".to_owned(), columns.clone());
        }
        if let Some(date) = &self.file_date {
            attributes.insert("file_date".to_owned(), date.clone());
        }
        if self.delimiter != b',' {
            attributes.insert(
                "delimiter".to_owned(),
                char::from(self.delimiter).to_string(),
            );
        }
        out.push(Framed::Record(Frame {
            position,
            bytes: line.to_vec(),
            symbol,
            attributes,
        }));
    }
}

impl StreamDecoder for TradesCsvDecoder {
    fn decode(&mut self, buf: &[u8], base: u64, eof: bool, out: &mut Vec<Framed>) -> usize {
        let mut pos = 0;
        while let Some(rest) = buf.get(pos..).filter(|rest| !rest.is_empty()) {
            let position = base.saturating_add(pos as u64);
            let searched = rest.get(..MAX_LINE_BYTES).unwrap_or(rest);
            let (line_len, next) = match searched.iter().position(|b| *b == b'\n') {
                Some(i) => (i, pos.saturating_add(i).saturating_add(1)),
                None if searched.len() == MAX_LINE_BYTES => {
                    out.push(malformed(
                        searched,
                        position,
                        format!("line longer than {MAX_LINE_BYTES} bytes"),
                    ));
                    self.in_overlong_line = true;
                    pos = pos.saturating_add(MAX_LINE_BYTES);
                    continue;
                }
                None if eof => (rest.len(), buf.len()),
                None => break,
            };
            let mut line = rest.get(..line_len).unwrap_or(rest);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            if std::mem::take(&mut self.in_overlong_line) {
                out.push(malformed(
                    line,
                    position,
                    format!("end of a line longer than {MAX_LINE_BYTES} bytes"),
                ));
                pos = next;
                continue;
            }
            let mut start = pos;
            if self.at_stream_start {
                self.at_stream_start = false;
                if let Some(stripped) = line.strip_prefix(UTF8_BOM) {
                    line = stripped;
                    start = start.saturating_add(UTF8_BOM.len());
                }
            }
            self.frame_line(line, base.saturating_add(start as u64), out);
            pos = next;
        }
        pos
    }
}

fn resolve_symbol(source: &SymbolSource, names: Option<&[String]>) -> Option<usize> {
    let SymbolSource::Column(column) = source else {
        return None;
    };
    let index = column.resolve(names);
    if index.is_none() {
        tracing::warn!(
            ?column,
            "symbol column not found in the csv header; records carry no symbol"
        );
    }
    index
}

fn malformed(line: &[u8], position: u64, reason: String) -> Framed {
    Framed::Malformed(Malformed {
        position,
        bytes: line.to_vec(),
        reason,
    })
}

/// `(file_date, symbol)` from a LEAN file name `<yyyymmdd>_<symbol>_...csv`.
fn parse_lean_file_name(name: &str) -> (Option<String>, Option<String>) {
    let bytes = name.as_bytes();
    let (Some(digits), Some(b'_')) = (bytes.get(..8), bytes.get(8)) else {
        return (None, None);
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return (None, None);
    }
    let number = |range: std::ops::Range<usize>| -> u32 {
        digits
            .get(range)
            .unwrap_or_default()
            .iter()
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return (None, None);
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    let symbol = name
        .get(9..)
        .and_then(|rest| rest.split(['_', '.']).next())
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_uppercase);
    (Some(date), symbol)
}

/// Splits one line into fields (RFC 4180 quoting: a field starting with `"` is quoted, `""`
/// inside it is a quote).
fn split_fields(line: &[u8], delimiter: u8) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut at_field_start = true;
    let mut in_quotes = false;
    let mut bytes = line.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_quotes {
            if b == b'"' {
                if bytes.peek() == Some(&b'"') {
                    field.push(b'"');
                    bytes.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(b);
            }
        } else if b == delimiter {
            fields.push(std::mem::take(&mut field));
            at_field_start = true;
        } else if b == b'"' && at_field_start {
            in_quotes = true;
            at_field_start = false;
        } else {
            field.push(b);
            at_field_start = false;
        }
    }
    if in_quotes {
        return Err(
            "unterminated quoted field (line breaks inside quoted fields are not supported)",
        );
    }
    fields.push(field);
    Ok(fields)
}

/// A plain decimal number such as `14430270`, `-1.5` or `1e3` (but not `nan` or `inf`, which
/// are plausible column names).
fn is_numeric(field: &[u8]) -> bool {
    let text = lossy(field);
    let text = text.trim();
    text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.parse::<f64>().is_ok()
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn data(relative: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data")
            .join(relative);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn settings(file: &str) -> TradesCsvSettings {
        serde_json::from_value(serde_json::json!({ "file": file })).expect("minimal settings")
    }

    fn decoder(settings: &TradesCsvSettings, name: &str) -> TradesCsvDecoder {
        TradesCsvDecoder::new(settings, name).expect("valid settings")
    }

    fn decode_whole(settings: &TradesCsvSettings, name: &str, bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        let consumed = decoder(settings, name).decode(bytes, 0, true, &mut out);
        assert_eq!(consumed, bytes.len(), "eof must consume everything");
        out
    }

    /// Feeds `bytes` in deterministic pseudo-random chunks of 1..=7 bytes, the way the runtime
    /// does: append, decode, drop what was consumed.
    fn decode_chunked(
        settings: &TradesCsvSettings,
        name: &str,
        bytes: &[u8],
        mut seed: u64,
    ) -> Vec<Framed> {
        let mut decoder = decoder(settings, name);
        let mut out = Vec::new();
        let mut pending = Vec::new();
        let mut base = 0u64;
        let mut fed = 0;
        while fed < bytes.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let end = (fed + 1 + (seed % 7) as usize).min(bytes.len());
            pending.extend_from_slice(&bytes[fed..end]);
            fed = end;
            let consumed = decoder.decode(&pending, base, false, &mut out);
            pending.drain(..consumed);
            base += consumed as u64;
        }
        let consumed = decoder.decode(&pending, base, true, &mut out);
        assert_eq!(consumed, pending.len());
        out
    }

    fn records(items: &[Framed]) -> Vec<&Frame> {
        items
            .iter()
            .filter_map(|item| match item {
                Framed::Record(frame) => Some(frame),
                Framed::Malformed(_) => None,
            })
            .collect()
    }

    fn column_sum(frames: &[&Frame], index: usize) -> i64 {
        frames
            .iter()
            .map(|f| {
                let line = std::str::from_utf8(&f.bytes).expect("ascii");
                line.split(',')
                    .nth(index)
                    .expect("column")
                    .parse::<i64>()
                    .expect("integer")
            })
            .sum()
    }

    const SAMPLES: &[(&str, usize, &str, &str, usize, i64)] = &[
        // file, rows, symbol, file_date, quantity/volume column, its sum
        (
            "20131007_ibm_Trade_Tick.csv",
            24293,
            "IBM",
            "2013-10-07",
            2,
            3_960_352,
        ),
        (
            "20140605_aapl_minute_trade.csv",
            686,
            "AAPL",
            "2014-06-05",
            5,
            10_850_763,
        ),
        (
            "20140606_aapl_minute_trade.csv",
            783,
            "AAPL",
            "2014-06-06",
            5,
            12_518_331,
        ),
        (
            "20151223_goog_minute_trade.csv",
            432,
            "GOOG",
            "2015-12-23",
            5,
            1_551_397,
        ),
        (
            "20151224_goog_minute_trade.csv",
            227,
            "GOOG",
            "2015-12-24",
            5,
            521_596,
        ),
    ];

    #[test]
    fn lean_samples_match_provenance() {
        for (name, rows, symbol, date, volume_column, volume) in SAMPLES {
            let path = format!("marketdata/csv/{name}");
            let bytes = data(&path);
            let items = decode_whole(&settings(&path), &path, &bytes);
            let frames = records(&items);
            assert_eq!(frames.len(), items.len(), "{name}: no malformed rows");
            assert_eq!(frames.len(), *rows, "{name}");
            assert_eq!(column_sum(&frames, *volume_column), *volume, "{name}");
            let columns = if name.contains("Tick") {
                "time_ms,price,quantity,exchange,sale_condition,suspicious"
            } else {
                "time_ms,open,high,low,close,volume"
            };
            for frame in &frames {
                assert_eq!(frame.symbol.as_deref(), Some(*symbol), "{name}");
                assert_eq!(frame.attributes["file_date"], *date, "{name}");
                assert_eq!(frame.attributes["columns"], columns, "{name}");
                let at = frame.position as usize;
                assert_eq!(&bytes[at..at + frame.bytes.len()], &frame.bytes[..]);
                assert_eq!(
                    bytes.get(at + frame.bytes.len()).copied().unwrap_or(b'\n'),
                    b'\n'
                );
            }
        }
    }

    #[test]
    fn ibm_first_and_last_ticks() {
        let path = "marketdata/csv/20131007_ibm_Trade_Tick.csv";
        let items = decode_whole(&settings(path), path, &data(path));
        let frames = records(&items);
        assert_eq!(frames[0].position, 0);
        assert_eq!(frames[0].bytes, b"14430270,1815200,283,P,20002020,0");
        assert_eq!(
            frames.last().map(|f| &f.bytes[..]),
            Some(&b"69967550,1819900,200,P,20002020,0"[..])
        );
    }

    #[test]
    fn header_is_detected_and_not_a_record() {
        let text = "\u{feff}time,Symbol,price,size,venue\r\n\
                    2024-01-02T14:30:00Z,IBM,161.5,100,\"NYSE, Inc\"\r\n\
                    \r\n\
                    2024-01-02T14:30:01Z,AAPL,185.25,20,\"Nasdaq \"\"Q\"\"\"\r\n";
        let mut settings = settings("trades.csv");
        settings.symbol_column = Some("symbol".into());
        let items = decode_whole(&settings, "trades.csv", text.as_bytes());
        let frames = records(&items);
        assert_eq!(frames.len(), 2, "{items:?}");
        assert_eq!(frames[0].symbol.as_deref(), Some("IBM"));
        assert_eq!(frames[1].symbol.as_deref(), Some("AAPL"));
        assert_eq!(
            frames[0].attributes["columns"],
            "time,Symbol,price,size,venue"
        );
        assert!(!frames[0].attributes.contains_key("file_date"));
        assert_eq!(
            frames[0].bytes,
            &b"2024-01-02T14:30:00Z,IBM,161.5,100,\"NYSE, Inc\""[..]
        );
        let second_line = text.find("2024").expect("row") as u64;
        assert_eq!(frames[0].position, second_line);

        // Declared header-less: the same first line is malformed data, not column names.
        let mut no_header = settings.clone();
        no_header.has_header = Some(false);
        no_header.symbol_column = Some("1".into());
        let items = decode_whole(&no_header, "trades.csv", text.as_bytes());
        assert_eq!(records(&items).len(), 3);
        assert_eq!(
            records(&items)[0].position,
            3,
            "the byte order mark is skipped"
        );
        assert!(!records(&items)[0].attributes.contains_key("columns"));
    }

    #[test]
    fn configured_columns_and_delimiter_are_recorded() {
        let text = "1;IBM;10\n2;MSFT;20\n";
        let mut settings = settings("ticks.csv");
        settings.delimiter = ';';
        settings.columns = Some(vec!["seq".into(), "sym".into(), "qty".into()]);
        settings.symbol_column = Some("sym".into());
        let items = decode_whole(&settings, "ticks.csv", text.as_bytes());
        let frames = records(&items);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].symbol.as_deref(), Some("MSFT"));
        assert_eq!(frames[1].attributes["columns"], "seq,sym,qty");
        assert_eq!(frames[1].attributes["delimiter"], ";");
    }

    #[test]
    fn wrong_field_count_and_open_quote_are_malformed() {
        let text = "14430270,1815200,283,P,20002020,0\n14450472,1818000,500,P\n\"open,1,2,3,4,5\n14450826,1818000,500,P,2000,0";
        let path = "20131007_ibm_Trade_Tick.csv";
        let items = decode_whole(&settings(path), path, text.as_bytes());
        assert_eq!(items.len(), 4);
        let Framed::Malformed(short) = &items[1] else {
            panic!("{items:?}");
        };
        assert_eq!(short.reason, "wrong field count: expected 6, found 4");
        assert_eq!(short.position, 34);
        assert_eq!(short.bytes, b"14450472,1818000,500,P");
        let Framed::Malformed(quote) = &items[2] else {
            panic!("{items:?}");
        };
        assert!(quote.reason.starts_with("unterminated quoted field"));
        assert!(matches!(&items[3], Framed::Record(f) if f.bytes.ends_with(b",2000,0")));
    }

    #[test]
    fn incomplete_last_line_waits_for_eof() {
        let path = "20131007_ibm_Trade_Tick.csv";
        let mut decoder = decoder(&settings(path), path);
        let mut out = Vec::new();
        let text = b"14430270,1815200,283,P,20002020,0\r\n14450472,1818000";
        assert_eq!(decoder.decode(text, 0, false, &mut out), 35);
        assert_eq!(out.len(), 1);
        assert_eq!(
            decoder.decode(&text[35..], 35, true, &mut out),
            text.len() - 35
        );
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[1], Framed::Malformed(bad) if bad.position == 35));
    }

    #[test]
    fn chunk_boundaries_do_not_change_output() {
        for (i, (name, ..)) in SAMPLES.iter().enumerate() {
            let path = format!("marketdata/csv/{name}");
            let bytes = data(&path);
            let settings = settings(&path);
            assert_eq!(
                decode_chunked(&settings, &path, &bytes, 0x2545_F491_4F6C_DD1D + i as u64),
                decode_whole(&settings, &path, &bytes),
                "{name}"
            );
        }
        let text = b"\xEF\xBB\xBFa,b\r\n1,\"x,\"\"y\"\r\n\r\n2\n3,4";
        let settings = settings("x.csv");
        assert_eq!(
            decode_chunked(&settings, "x.csv", text, 3),
            decode_whole(&settings, "x.csv", text)
        );
    }

    #[test]
    fn overlong_line_is_reported_in_pieces() {
        let mut text = vec![b'7'; MAX_LINE_BYTES + 10];
        text.extend_from_slice(b"\n1,2\n");
        let settings = settings("x.csv");
        let items = decode_whole(&settings, "x.csv", &text);
        let reasons: Vec<String> = items
            .iter()
            .map(|item| match item {
                Framed::Malformed(bad) => bad.reason.clone(),
                Framed::Record(frame) => String::from_utf8_lossy(&frame.bytes).into_owned(),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "line longer than 1048576 bytes",
                "end of a line longer than 1048576 bytes",
                "1,2"
            ]
        );
        assert_eq!(items[1].position(), MAX_LINE_BYTES as u64);
    }

    #[test]
    fn lean_file_names() {
        assert_eq!(
            parse_lean_file_name("20131007_ibm_Trade_Tick.csv"),
            (Some("2013-10-07".into()), Some("IBM".into()))
        );
        assert_eq!(
            parse_lean_file_name("20151224_goog.csv"),
            (Some("2015-12-24".into()), Some("GOOG".into()))
        );
        assert_eq!(parse_lean_file_name("20131399_ibm_x.csv"), (None, None));
        assert_eq!(parse_lean_file_name("ibm.csv"), (None, None));
        assert_eq!(parse_lean_file_name("2013100é_x"), (None, None));
        let fixed = TradesCsvSettings {
            symbol: Some("MSFT".into()),
            ..settings("20131007_ibm_Trade_Tick.csv")
        };
        let items = decode_whole(&fixed, "20131007_ibm_Trade_Tick.csv", b"1,2,3,N,0,0\n");
        assert_eq!(records(&items)[0].symbol.as_deref(), Some("MSFT"));
        let unnamed = TradesCsvSettings {
            symbol_from_file_name: false,
            ..settings("20131007_ibm_Trade_Tick.csv")
        };
        let items = decode_whole(&unnamed, "20131007_ibm_Trade_Tick.csv", b"1,2,3,N,0,0\n");
        assert_eq!(records(&items)[0].symbol, None);
    }

    #[test]
    fn settings_validation() {
        let defaults = settings("a.csv");
        assert_eq!(defaults.delimiter, ',');
        assert!(defaults.symbol_from_file_name);
        assert!(defaults.validate("sources.ticks").is_ok());
        assert!(serde_json::from_str::<TradesCsvSettings>(r#"{"file":"a","sep":";"}"#).is_err());

        let setting = |settings: TradesCsvSettings| match settings.validate("sources.ticks") {
            Err(ConnectorError::Config { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        let with = |change: fn(&mut TradesCsvSettings)| {
            let mut settings = settings("a.csv");
            change(&mut settings);
            setting(settings)
        };
        assert_eq!(with(|s| s.delimiter = 'é'), "sources.ticks.delimiter");
        assert_eq!(with(|s| s.delimiter = '"'), "sources.ticks.delimiter");
        assert_eq!(
            with(|s| s.symbol = Some(" ".into())),
            "sources.ticks.symbol"
        );
        assert_eq!(
            with(|s| s.symbol_column = Some(String::new())),
            "sources.ticks.symbol_column"
        );
        assert_eq!(
            with(|s| {
                s.symbol = Some("IBM".into());
                s.symbol_column = Some("0".into());
            }),
            "sources.ticks.symbol_column"
        );
        assert_eq!(
            with(|s| {
                s.has_header = Some(false);
                s.symbol_column = Some("ticker".into());
            }),
            "sources.ticks.symbol_column"
        );
        assert_eq!(
            with(|s| {
                s.columns = Some(vec!["a".into(), "b".into()]);
                s.symbol_column = Some("2".into());
            }),
            "sources.ticks.symbol_column"
        );
        assert_eq!(
            with(|s| s.columns = Some(vec!["a".into(), "a".into()])),
            "sources.ticks.columns"
        );
        assert_eq!(
            with(|s| {
                s.has_header = Some(true);
                s.columns = Some(vec!["a".into()]);
            }),
            "sources.ticks.columns"
        );
        let mut ok = settings("a.csv");
        ok.has_header = Some(false);
        ok.columns = Some(vec!["t".into(), "ticker".into()]);
        ok.symbol_column = Some("ticker".into());
        assert!(ok.validate("sources.ticks").is_ok());
        assert!(TradesCsvDecoder::new(&ok, "a.csv").is_ok());
        ok.delimiter = '\n';
        assert!(TradesCsvDecoder::new(&ok, "a.csv").is_err());
    }
}
