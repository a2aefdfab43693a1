//! Test support: the bundled sample files (`data/`) framed into [`RawRecord`]s by the real
//! connectors' decoders, exactly as the connector runtime would publish them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use marketlake_connectors::framing::{Frame, Framed, StreamDecoder};
use marketlake_connectors::{fix, iex_tops, news_jsonl, rss, trades_csv};
use marketlake_schemas::{FeedClass, KafkaPosition, PayloadFormat, RawRecord};

use crate::instruments::InstrumentMaster;

/// Why a bundled sample could not be turned into records (a broken checkout, not a test
/// failure of the code under test).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("sample {path}: {message}")]
    Read { path: String, message: String },
    #[error("sample {path}: the decoder stopped at byte {consumed} of {len}")]
    Partial {
        path: String,
        consumed: usize,
        len: usize,
    },
}

pub type Result<T> = std::result::Result<T, SampleError>;

fn failed(relative: &str, e: impl std::fmt::Display) -> SampleError {
    SampleError::Read {
        path: relative.to_owned(),
        message: e.to_string(),
    }
}

/// A receive time inside the samples' future (2025-06-01T00:00:00Z).
pub const RECEIVED_AT_NS: i64 = 1_748_736_000_000_000_000;

pub fn data_path(relative: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data")).join(relative)
}

fn read(relative: &str) -> Result<Vec<u8>> {
    std::fs::read(data_path(relative)).map_err(|e| failed(relative, e))
}

pub fn at() -> KafkaPosition {
    KafkaPosition {
        topic: "raw.trades".into(),
        partition: 0,
        offset: 17,
        timestamp_ms: None,
    }
}

/// The SEC tickers and the listings identifiers, merged.
pub fn bundled_master(version: i64) -> Result<InstrumentMaster> {
    InstrumentMaster::from_paths(
        &[
            data_path("refdata/sec_company_tickers_exchange_2025-01.json"),
            data_path("refdata/us_listings_identifiers.csv"),
        ],
        version,
    )
    .map_err(|e| failed("refdata", e))
}

pub fn shared_master(version: i64) -> Result<Arc<InstrumentMaster>> {
    bundled_master(version).map(Arc::new)
}

fn record(
    relative: &str,
    connector: &str,
    class: FeedClass,
    format: PayloadFormat,
    frame: Frame,
) -> RawRecord {
    RawRecord {
        source_id: format!("{connector}-sample"),
        connector: connector.into(),
        class,
        format,
        source_uri: format!("file://{}", data_path(relative).display()),
        source_position: i64::try_from(frame.position).unwrap_or(i64::MAX),
        received_at_ns: RECEIVED_AT_NS,
        symbol: frame.symbol,
        payload: frame.bytes,
        attributes: frame.attributes,
    }
}

fn records_only(items: Vec<Framed>) -> Vec<Frame> {
    items
        .into_iter()
        .filter_map(|item| match item {
            Framed::Record(frame) => Some(frame),
            Framed::Malformed(_) => None,
        })
        .collect()
}

fn decode_all(relative: &str, decoder: &mut dyn StreamDecoder, bytes: &[u8]) -> Result<Vec<Frame>> {
    let mut out = Vec::new();
    let consumed = decoder.decode(bytes, 0, true, &mut out);
    if consumed != bytes.len() {
        return Err(SampleError::Partial {
            path: relative.to_owned(),
            consumed,
            len: bytes.len(),
        });
    }
    Ok(records_only(out))
}

pub fn fix_records(relative: &str) -> Result<Vec<RawRecord>> {
    Ok(
        decode_all(relative, &mut fix::FixDecoder::new(), &read(relative)?)?
            .into_iter()
            .map(|f| record(relative, "fix", FeedClass::Trades, PayloadFormat::Fix, f))
            .collect(),
    )
}

pub fn csv_records(relative: &str) -> Result<Vec<RawRecord>> {
    let path = data_path(relative);
    let settings: trades_csv::TradesCsvSettings =
        serde_json::from_value(serde_json::json!({ "file": path }))
            .map_err(|e| failed(relative, e))?;
    let mut decoder =
        trades_csv::TradesCsvDecoder::new(&settings, relative).map_err(|e| failed(relative, e))?;
    Ok(decode_all(relative, &mut decoder, &read(relative)?)?
        .into_iter()
        .map(|f| {
            record(
                relative,
                "trades-csv",
                FeedClass::Trades,
                PayloadFormat::TradesCsv,
                f,
            )
        })
        .collect())
}

pub fn iex_records(relative: &str) -> Result<Vec<RawRecord>> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(read(relative)?.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|e| failed(relative, e))?;
    Ok(
        decode_all(relative, &mut iex_tops::IexTopsDecoder::new(), &bytes)?
            .into_iter()
            .map(|f| {
                record(
                    relative,
                    "iex-tops",
                    FeedClass::Trades,
                    PayloadFormat::IexTops,
                    f,
                )
            })
            .collect(),
    )
}

/// The feed's items as the rss connector publishes them (attributes included).
pub fn feed_records(relative: &str) -> Result<Vec<RawRecord>> {
    let document = read(relative)?;
    let head = String::from_utf8_lossy(&document[..200.min(document.len())]).to_lowercase();
    let encoding = head
        .split("encoding=")
        .nth(1)
        .and_then(|rest| rest.get(1..))
        .and_then(|rest| rest.split(['"', '\'']).next())
        .map(str::to_owned);
    Ok(rss::parse_feed(&document)
        .map_err(|e| failed(relative, e))?
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut attributes = BTreeMap::new();
            attributes.insert("item_id".to_owned(), item.id.clone());
            if let Some(encoding) = &encoding {
                attributes.insert("encoding".to_owned(), encoding.clone());
            }
            let frame = Frame {
                position: i as u64,
                bytes: item.bytes,
                symbol: None,
                attributes,
            };
            record(relative, "rss", FeedClass::News, item.format, frame)
        })
        .collect())
}

pub fn jsonl_records(relative: &str, settings: serde_json::Value) -> Result<Vec<RawRecord>> {
    let mut settings = settings;
    settings["file"] = serde_json::json!(data_path(relative));
    let settings: news_jsonl::NewsJsonlSettings =
        serde_json::from_value(settings).map_err(|e| failed(relative, e))?;
    let mut decoder = news_jsonl::NewsJsonlDecoder::new(&settings);
    Ok(decode_all(relative, &mut decoder, &read(relative)?)?
        .into_iter()
        .map(|f| {
            record(
                relative,
                "news-jsonl",
                FeedClass::News,
                PayloadFormat::Json,
                f,
            )
        })
        .collect())
}
