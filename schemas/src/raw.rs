//! The raw envelope: a record exactly as a connector received it, plus where it came from.
//!
//! On Kafka the payload bytes are the message value, untouched; the metadata travels in a header
//! so that nothing re-encodes what was received. [`RawRecord::headers`] and
//! [`RawRecord::from_kafka`] are the two directions of that mapping.
//!
//! The metadata is one header, `ml`, whose value is a compact binary envelope (version byte 1,
//! then each field length-prefixed; layout in [`RawRecord::envelope`]). Until 2026-12-07 each
//! field was a header of its own (`ml.source_id`, `ml.attr.<name>`, ...): those records are
//! still read. The broker moves a fixed number of record bytes per second, and the per-field
//! headers' names made up a third of a typical FIX record's bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::{TOPIC_RAW_NEWS, TOPIC_RAW_TRADES};
use crate::{Result, SchemaError};

/// Which raw topic (and L1 table) a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedClass {
    Trades,
    News,
}

impl FeedClass {
    pub fn raw_topic(self) -> &'static str {
        match self {
            FeedClass::Trades => TOPIC_RAW_TRADES,
            FeedClass::News => TOPIC_RAW_NEWS,
        }
    }
}

/// How the payload bytes are to be read by enrichment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// One FIX tag=value message, delimiter as received (SOH, `|` or `^A`).
    Fix,
    /// One CSV line (without its line terminator).
    TradesCsv,
    /// One IEX-TP message (type byte first), without the IEX-TP segment header.
    IexTops,
    /// One RSS 2.0 `<item>` element, as it appeared in the document.
    RssItem,
    /// One Atom `<entry>` element, as it appeared in the document.
    AtomEntry,
    /// One JSON object (one line of a JSON-lines stream, or one element of a JSON array).
    Json,
    /// A record on a raw topic that lacks marketlake's headers (a foreign producer): kept as
    /// received, with the reason in its `decode_error` attribute.
    Unknown,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Fix => "fix",
            PayloadFormat::TradesCsv => "trades_csv",
            PayloadFormat::IexTops => "iex_tops",
            PayloadFormat::RssItem => "rss_item",
            PayloadFormat::AtomEntry => "atom_entry",
            PayloadFormat::Json => "json",
            PayloadFormat::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "fix" => PayloadFormat::Fix,
            "trades_csv" => PayloadFormat::TradesCsv,
            "iex_tops" => PayloadFormat::IexTops,
            "rss_item" => PayloadFormat::RssItem,
            "atom_entry" => PayloadFormat::AtomEntry,
            "json" => PayloadFormat::Json,
            "unknown" => PayloadFormat::Unknown,
            _ => return None,
        })
    }
}

/// A record as received, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The configured source id (`fix-dropcopy-1`), unique in a deployment.
    pub source_id: String,
    /// The connector kind that produced it (`fix`, `trades_csv`, ...).
    pub connector: String,
    pub class: FeedClass,
    pub format: PayloadFormat,
    /// Where in the world the bytes came from: a file path, a URL, a TCP peer.
    pub source_uri: String,
    /// Byte offset in the (decompressed) source file or stream, or a sequence number where the
    /// source has no byte positions (items of a polled feed). Unique per `(source_id, source_uri)`.
    pub source_position: i64,
    /// When the connector received the bytes, UTC nanoseconds.
    pub received_at_ns: i64,
    /// Instrument symbol when the connector could tell it without interpreting the record fully.
    pub symbol: Option<String>,
    /// The bytes, exactly as received.
    pub payload: Vec<u8>,
    /// Small source-specific facts needed to read the payload later (CSV header, pcap time, ...).
    pub attributes: BTreeMap<String, String>,
}

/// Kafka coordinates of a consumed record: the lineage link between a topic and a table row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Broker/producer timestamp in milliseconds, when the broker supplied one.
    pub timestamp_ms: Option<i64>,
}

/// A record that could not be framed or read, kept with its bytes and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub source_id: String,
    pub connector: String,
    pub source_uri: String,
    pub source_position: i64,
    pub received_at_ns: i64,
    pub reason: String,
    pub payload: Vec<u8>,
}

const H_SOURCE_ID: &str = "ml.source_id";
const H_CONNECTOR: &str = "ml.connector";
const H_CLASS: &str = "ml.class";
const H_FORMAT: &str = "ml.format";
const H_URI: &str = "ml.source_uri";
const H_POSITION: &str = "ml.source_position";
const H_RECEIVED: &str = "ml.received_at_ns";
const H_SYMBOL: &str = "ml.symbol";
const H_REASON: &str = "ml.reason";
const H_ATTR_PREFIX: &str = "ml.attr.";
/// The one header of the compact envelope.
const H_ENVELOPE: &str = "ml";
const ENVELOPE_V1: u8 = 1;

/// Headers as `(name, value)` pairs, the form both rdkafka and tests can use.
pub type Headers = Vec<(String, Vec<u8>)>;

/// The `ml.*` headers of one Kafka record, read in one pass without copying.
#[derive(Default)]
struct HeaderFields<'a> {
    source_id: Option<&'a [u8]>,
    connector: Option<&'a [u8]>,
    class: Option<&'a [u8]>,
    format: Option<&'a [u8]>,
    uri: Option<&'a [u8]>,
    position: Option<&'a [u8]>,
    received: Option<&'a [u8]>,
    symbol: Option<&'a [u8]>,
    reason: Option<&'a [u8]>,
    envelope: Option<&'a [u8]>,
    attributes: Vec<(&'a str, &'a [u8])>,
}

impl<'a> HeaderFields<'a> {
    fn read(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut fields = HeaderFields::default();
        for (key, value) in headers {
            let slot = match key {
                H_SOURCE_ID => &mut fields.source_id,
                H_CONNECTOR => &mut fields.connector,
                H_CLASS => &mut fields.class,
                H_FORMAT => &mut fields.format,
                H_URI => &mut fields.uri,
                H_POSITION => &mut fields.position,
                H_RECEIVED => &mut fields.received,
                H_SYMBOL => &mut fields.symbol,
                H_REASON => &mut fields.reason,
                H_ENVELOPE => &mut fields.envelope,
                other => {
                    if let Some(name) = other.strip_prefix(H_ATTR_PREFIX) {
                        fields.attributes.push((name, value));
                    }
                    continue;
                }
            };
            // The first occurrence wins, as a lookup by name would find it.
            slot.get_or_insert(value);
        }
        fields
    }
}

fn required_str<'a>(value: Option<&'a [u8]>, name: &'static str) -> Result<&'a str> {
    let bytes = value.ok_or(SchemaError::MissingHeader(name))?;
    std::str::from_utf8(bytes).map_err(|e| SchemaError::InvalidHeader {
        name,
        reason: e.to_string(),
    })
}

fn required_text(value: Option<&[u8]>, name: &'static str) -> Result<String> {
    required_str(value, name).map(str::to_owned)
}

fn required_i64(value: Option<&[u8]>, name: &'static str) -> Result<i64> {
    let text = required_str(value, name)?;
    text.parse::<i64>().map_err(|e| SchemaError::InvalidHeader {
        name,
        reason: format!("`{text}` is not an integer: {e}"),
    })
}

/// The class field, in either header form.
fn class_field(text: &str) -> Result<FeedClass> {
    parse_class(text).ok_or_else(|| SchemaError::InvalidHeader {
        name: H_CLASS,
        reason: format!("unknown class `{text}`"),
    })
}

/// The payload format field, in either header form.
fn format_field(text: &str) -> Result<PayloadFormat> {
    PayloadFormat::parse(text).ok_or_else(|| SchemaError::InvalidHeader {
        name: H_FORMAT,
        reason: format!("unknown payload format `{text}`"),
    })
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let mut len = len as u64;
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Reads [`RawRecord::envelope`]; every read fails (`None`) rather than run past the end.
struct EnvelopeReader<'a> {
    rest: &'a [u8],
}

impl<'a> EnvelopeReader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn len(&mut self) -> Option<usize> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return usize::try_from(value).ok();
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.len()?;
        if len > self.rest.len() {
            return None;
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(i64::from_le_bytes(*bytes))
    }
}

fn malformed(reason: &str) -> SchemaError {
    SchemaError::InvalidHeader {
        name: H_ENVELOPE,
        reason: reason.to_string(),
    }
}

fn text<'a>(bytes: Option<&'a [u8]>, name: &'static str) -> Result<&'a str> {
    let bytes = bytes.ok_or_else(|| malformed("the envelope ends early"))?;
    std::str::from_utf8(bytes).map_err(|e| SchemaError::InvalidHeader {
        name,
        reason: e.to_string(),
    })
}

impl<'a> RawFields<'a> {
    fn from_envelope(envelope: &'a [u8]) -> Result<Self> {
        let mut reader = EnvelopeReader { rest: envelope };
        match reader.byte() {
            Some(ENVELOPE_V1) => {}
            Some(other) => return Err(malformed(&format!("unknown envelope version {other}"))),
            None => return Err(malformed("the envelope is empty")),
        }
        let source_id = text(reader.bytes(), H_SOURCE_ID)?;
        let connector = text(reader.bytes(), H_CONNECTOR)?;
        let class = class_field(text(reader.bytes(), H_CLASS)?)?;
        let format = format_field(text(reader.bytes(), H_FORMAT)?)?;
        let source_uri = text(reader.bytes(), H_URI)?;
        let early = || malformed("the envelope ends early");
        let source_position = reader.i64().ok_or_else(early)?;
        let received_at_ns = reader.i64().ok_or_else(early)?;
        let symbol = match reader.byte().ok_or_else(early)? {
            0 => None,
            1 => Some(reader.bytes().ok_or_else(early)?),
            other => {
                return Err(malformed(&format!(
                    "symbol flag {other} is neither 0 nor 1"
                )))
            }
        };
        let count = reader.len().ok_or_else(early)?;
        // Each attribute takes at least two bytes: a count beyond that is corrupt, not a
        // reason to reserve memory.
        if count > reader.rest.len() / 2 {
            return Err(early());
        }
        let mut attributes = Vec::with_capacity(count);
        for _ in 0..count {
            let name = text(reader.bytes(), H_ATTR_PREFIX)?;
            let value = reader.bytes().ok_or_else(early)?;
            attributes.push((name, value));
        }
        if !reader.rest.is_empty() {
            return Err(malformed("bytes after the last attribute"));
        }
        Ok(RawFields {
            source_id,
            connector,
            class,
            format,
            source_uri,
            source_position,
            received_at_ns,
            symbol,
            attributes,
        })
    }
}

/// Borrow `(name, value)` header pairs from their owned form.
pub fn header_pairs(headers: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, &[u8])> + '_ {
    headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
}

impl RawRecord {
    /// The Kafka key: the symbol where known (so one instrument stays in one partition and in
    /// order), else the source id.
    pub fn kafka_key(&self) -> &str {
        self.symbol.as_deref().unwrap_or(&self.source_id)
    }

    pub fn headers(&self) -> Headers {
        vec![(H_ENVELOPE.into(), self.envelope())]
    }

    /// The metadata as one header value: version byte `1`; then source id, connector, class,
    /// payload format and source URI, each as a LEB128 length and UTF-8 bytes; source position
    /// and receive time as little-endian `i64`s; a byte `0`/`1` for the symbol's absence or
    /// presence, then the symbol (length-prefixed) when present; a LEB128 count of attributes,
    /// then each attribute's name and value, length-prefixed. Lengths, not separators, so any
    /// bytes a file name or a feed carries round-trip.
    pub fn envelope(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.source_id.len()
                + self.source_uri.len()
                + self
                    .attributes
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        out.push(ENVELOPE_V1);
        for text in [
            self.source_id.as_str(),
            self.connector.as_str(),
            class_str(self.class),
            self.format.as_str(),
            self.source_uri.as_str(),
        ] {
            put_bytes(&mut out, text.as_bytes());
        }
        out.extend_from_slice(&self.source_position.to_le_bytes());
        out.extend_from_slice(&self.received_at_ns.to_le_bytes());
        match &self.symbol {
            Some(symbol) => {
                out.push(1);
                put_bytes(&mut out, symbol.as_bytes());
            }
            None => out.push(0),
        }
        put_len(&mut out, self.attributes.len());
        for (key, value) in &self.attributes {
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        out
    }

    /// Rebuild a record from a consumed Kafka message's value and headers.
    pub fn from_kafka(payload: &[u8], headers: &[(String, Vec<u8>)]) -> Result<Self> {
        Self::from_kafka_parts(header_pairs(headers), || payload.to_vec())
    }

    /// [`RawRecord::from_kafka`] over borrowed header pairs (one pass, no copies of what is not
    /// kept). `payload` is called only once the headers are valid, so a caller can keep the
    /// bytes for its error path.
    pub fn from_kafka_parts<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        payload: impl FnOnce() -> Vec<u8>,
    ) -> Result<Self> {
        let fields = RawFields::decode(headers)?;
        Ok(RawRecord {
            source_id: fields.source_id.to_owned(),
            connector: fields.connector.to_owned(),
            class: fields.class,
            format: fields.format,
            source_uri: fields.source_uri.to_owned(),
            source_position: fields.source_position,
            received_at_ns: fields.received_at_ns,
            symbol: fields
                .symbol
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
            payload: payload(),
            attributes: fields
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        })
    }
}

/// The metadata of a raw record read from its Kafka headers, borrowed: what
/// [`RawRecord::from_kafka_parts`] owns and what L1's row builder appends without copying twice.
pub(crate) struct RawFields<'a> {
    pub source_id: &'a str,
    pub connector: &'a str,
    pub class: FeedClass,
    pub format: PayloadFormat,
    pub source_uri: &'a str,
    pub source_position: i64,
    pub received_at_ns: i64,
    pub symbol: Option<&'a [u8]>,
    /// `ml.attr.*` headers in the order received, names without the prefix.
    pub attributes: Vec<(&'a str, &'a [u8])>,
}

impl<'a> RawFields<'a> {
    pub fn decode(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self> {
        let fields = HeaderFields::read(headers);
        if let Some(envelope) = fields.envelope {
            return Self::from_envelope(envelope);
        }
        let class = class_field(required_str(fields.class, H_CLASS)?)?;
        let format = format_field(required_str(fields.format, H_FORMAT)?)?;
        Ok(RawFields {
            source_id: required_str(fields.source_id, H_SOURCE_ID)?,
            connector: required_str(fields.connector, H_CONNECTOR)?,
            class,
            format,
            source_uri: required_str(fields.uri, H_URI)?,
            source_position: required_i64(fields.position, H_POSITION)?,
            received_at_ns: required_i64(fields.received, H_RECEIVED)?,
            symbol: fields.symbol,
            attributes: fields.attributes,
        })
    }
}

impl DeadLetter {
    pub fn headers(&self) -> Headers {
        vec![
            (H_SOURCE_ID.into(), self.source_id.clone().into_bytes()),
            (H_CONNECTOR.into(), self.connector.clone().into_bytes()),
            (H_URI.into(), self.source_uri.clone().into_bytes()),
            (
                H_POSITION.into(),
                self.source_position.to_string().into_bytes(),
            ),
            (
                H_RECEIVED.into(),
                self.received_at_ns.to_string().into_bytes(),
            ),
            (H_REASON.into(), self.reason.clone().into_bytes()),
        ]
    }

    pub fn from_kafka(payload: &[u8], headers: &[(String, Vec<u8>)]) -> Result<Self> {
        Self::from_kafka_parts(header_pairs(headers), || payload.to_vec())
    }

    /// See [`RawRecord::from_kafka_parts`].
    pub fn from_kafka_parts<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        payload: impl FnOnce() -> Vec<u8>,
    ) -> Result<Self> {
        let fields = HeaderFields::read(headers);
        Ok(DeadLetter {
            source_id: required_text(fields.source_id, H_SOURCE_ID)?,
            connector: required_text(fields.connector, H_CONNECTOR)?,
            source_uri: required_text(fields.uri, H_URI)?,
            source_position: required_i64(fields.position, H_POSITION)?,
            received_at_ns: required_i64(fields.received, H_RECEIVED)?,
            reason: required_text(fields.reason, H_REASON)?,
            payload: payload(),
        })
    }
}

fn class_str(class: FeedClass) -> &'static str {
    match class {
        FeedClass::Trades => "trades",
        FeedClass::News => "news",
    }
}

fn parse_class(text: &str) -> Option<FeedClass> {
    match text {
        "trades" => Some(FeedClass::Trades),
        "news" => Some(FeedClass::News),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RawRecord {
        RawRecord {
            source_id: "ibm-ticks".into(),
            connector: "trades_csv".into(),
            class: FeedClass::Trades,
            format: PayloadFormat::TradesCsv,
            source_uri: "file:///data/ibm.csv".into(),
            source_position: 42,
            received_at_ns: 1_700_000_000_123_456_789,
            symbol: Some("IBM".into()),
            payload: b"14430270,1815200,283,P,20002020,0".to_vec(),
            attributes: BTreeMap::from([("file_date".into(), "2013-10-07".into())]),
        }
    }

    #[test]
    fn raw_record_round_trips_through_kafka_headers() {
        let record = sample();
        let decoded = RawRecord::from_kafka(&record.payload, &record.headers()).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(record.kafka_key(), "IBM");
    }

    impl RawRecord {
        /// The per-field headers written until 2026-12-07, still read.
        fn legacy_headers(&self) -> Headers {
            let mut headers: Headers = vec![
                (H_SOURCE_ID.into(), self.source_id.clone().into_bytes()),
                (H_CONNECTOR.into(), self.connector.clone().into_bytes()),
                (H_CLASS.into(), class_str(self.class).as_bytes().to_vec()),
                (H_FORMAT.into(), self.format.as_str().as_bytes().to_vec()),
                (H_URI.into(), self.source_uri.clone().into_bytes()),
                (
                    H_POSITION.into(),
                    self.source_position.to_string().into_bytes(),
                ),
                (
                    H_RECEIVED.into(),
                    self.received_at_ns.to_string().into_bytes(),
                ),
            ];
            if let Some(symbol) = &self.symbol {
                headers.push((H_SYMBOL.into(), symbol.clone().into_bytes()));
            }
            for (key, value) in &self.attributes {
                headers.push((format!("{H_ATTR_PREFIX}{key}"), value.clone().into_bytes()));
            }
            headers
        }
    }

    #[test]
    fn records_with_per_field_headers_are_still_read() {
        let record = sample();
        let decoded = RawRecord::from_kafka(&record.payload, &record.legacy_headers()).unwrap();
        assert_eq!(decoded, record);
        // The envelope is what is written now: a third smaller even for this short record.
        let size =
            |headers: &Headers| -> usize { headers.iter().map(|(k, v)| k.len() + v.len()).sum() };
        assert!(size(&record.headers()) * 3 < size(&record.legacy_headers()) * 2);
    }

    #[test]
    fn envelopes_round_trip_any_bytes_and_refuse_damage() {
        let mut record = sample();
        record.source_uri = "file:///data/odd\u{1f}name\u{0}.csv".into();
        record.symbol = None;
        record.attributes.insert("empty".into(), String::new());
        record.source_position = -1;
        let decoded = RawRecord::from_kafka(&record.payload, &record.headers()).unwrap();
        assert_eq!(decoded, record);
        record.attributes.clear();
        let decoded = RawRecord::from_kafka(&record.payload, &record.headers()).unwrap();
        assert_eq!(decoded, record);

        let envelope = record.envelope();
        for cut in 0..envelope.len() {
            let headers = vec![(H_ENVELOPE.to_string(), envelope[..cut].to_vec())];
            let err = RawRecord::from_kafka(&record.payload, &headers).unwrap_err();
            assert!(err.to_string().contains("ml"), "{err}");
        }
        let mut longer = envelope.clone();
        longer.push(0);
        let headers = vec![(H_ENVELOPE.to_string(), longer)];
        assert!(RawRecord::from_kafka(&record.payload, &headers).is_err());
        let mut version_2 = envelope;
        version_2[0] = 2;
        let headers = vec![(H_ENVELOPE.to_string(), version_2)];
        let err = RawRecord::from_kafka(&record.payload, &headers).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn missing_or_bad_headers_are_named() {
        let record = sample();
        let mut headers = record.legacy_headers();
        headers.retain(|(k, _)| k != H_POSITION);
        let err = RawRecord::from_kafka(&record.payload, &headers).unwrap_err();
        assert!(err.to_string().contains("ml.source_position"), "{err}");

        let mut headers = record.legacy_headers();
        for (k, v) in headers.iter_mut() {
            if k == H_RECEIVED {
                *v = b"soon".to_vec();
            }
        }
        let err = RawRecord::from_kafka(&record.payload, &headers).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
    }

    #[test]
    fn dead_letter_round_trips() {
        let letter = DeadLetter {
            source_id: "fix-a".into(),
            connector: "fix".into(),
            source_uri: "tcp://127.0.0.1:5000".into(),
            source_position: 7,
            received_at_ns: 5,
            reason: "bad checksum: computed 12, declared 13".into(),
            payload: vec![0, 1, 2, 255],
        };
        let decoded = DeadLetter::from_kafka(&letter.payload, &letter.headers()).unwrap();
        assert_eq!(decoded, letter);
    }
}
