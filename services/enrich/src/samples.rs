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

/// A receive time inside the samples' future (2025-06-01T00:00:00Z).
pub const RECEIVED_AT_NS: i64 = 1_748_736_000_000_000_000;

pub fn data_path(relative: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data")).join(relative)
}

fn read(relative: &str) -> Vec<u8> {
    let path = data_path(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
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
pub fn bundled_master(version: i64) -> InstrumentMaster {
    InstrumentMaster::from_paths(
        &[
            data_path("refdata/sec_company_tickers_exchange_2025-01.json"),
            data_path("refdata/us_listings_identifiers.csv"),
        ],
        version,
    )
    .unwrap()
}

pub fn shared_master(version: i64) -> Arc<InstrumentMaster> {
    Arc::new(bundled_master(version))
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
        source_position: i64::try_from(frame.position).unwrap(),
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

fn decode_all(decoder: &mut dyn StreamDecoder, bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let consumed = decoder.decode(bytes, 0, true, &mut out);
    assert_eq!(consumed, bytes.len());
    records_only(out)
}

pub fn fix_records(relative: &str) -> Vec<RawRecord> {
    decode_all(&mut fix::FixDecoder::new(), &read(relative))
        .into_iter()
        .map(|f| record(relative, "fix", FeedClass::Trades, PayloadFormat::Fix, f))
        .collect()
}

pub fn csv_records(relative: &str) -> Vec<RawRecord> {
    let path = data_path(relative);
    let settings: trades_csv::TradesCsvSettings =
        serde_json::from_value(serde_json::json!({ "file": path })).unwrap();
    let mut decoder = trades_csv::TradesCsvDecoder::new(&settings, relative).unwrap();
    decode_all(&mut decoder, &read(relative))
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
        .collect()
}

pub fn iex_records(relative: &str) -> Vec<RawRecord> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(read(relative).as_slice())
        .read_to_end(&mut bytes)
        .unwrap();
    decode_all(&mut iex_tops::IexTopsDecoder::new(), &bytes)
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
        .collect()
}

/// The feed's items as the rss connector publishes them (attributes included).
pub fn feed_records(relative: &str) -> Vec<RawRecord> {
    let document = read(relative);
    let head = String::from_utf8_lossy(&document[..200.min(document.len())]).to_lowercase();
    let encoding = head
        .split("encoding=")
        .nth(1)
        .and_then(|rest| rest.get(1..))
        .and_then(|rest| rest.split(['"', '\'']).next())
        .map(str::to_owned);
    rss::parse_feed(&document)
        .unwrap()
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
        .collect()
}

pub fn jsonl_records(relative: &str, settings: serde_json::Value) -> Vec<RawRecord> {
    let mut settings = settings;
    settings["file"] = serde_json::json!(data_path(relative));
    let settings: news_jsonl::NewsJsonlSettings = serde_json::from_value(settings).unwrap();
    let mut decoder = news_jsonl::NewsJsonlDecoder::new(&settings);
    decode_all(&mut decoder, &read(relative))
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
        .collect()
}
