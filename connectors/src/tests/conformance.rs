//! The conformance harness every connector passes, run through the real runtime
//! ([`crate::source::run_source`]) into a [`MemorySink`]:
//! - every record carries its metadata (source id, connector, URI, position, receive time);
//! - positions are unique within a source;
//! - unframeable input reaches the dead letters with its bytes and a reason;
//! - a second run over the same input publishes nothing (resume state), i.e. replay is idempotent;
//! - the source's counters agree with what the sink received.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{ConnectorKind, SourceConfig, SourceSpec};
use crate::sink::MemorySink;
use crate::source::{run_source, SourceStats};

fn data(path: &str) -> String {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data"))
        .join(path)
        .display()
        .to_string()
}

fn spec(id: &str, kind: ConnectorKind, settings: serde_json::Value) -> SourceSpec {
    SourceConfig {
        id: id.into(),
        kind,
        settings,
    }
    .validate("sources[0]")
    .unwrap()
}

struct Outcome {
    records: usize,
    dead_letters: usize,
}

async fn conform(kind: ConnectorKind, settings: serde_json::Value) -> Outcome {
    let state = tempfile::tempdir().unwrap();
    let spec = spec("conformance", kind, settings);
    let sink = Arc::new(MemorySink::default());
    let stats = Arc::new(SourceStats::default());
    let report = run_source(
        spec.clone(),
        sink.clone(),
        state.path().to_path_buf(),
        CancellationToken::new(),
        stats.clone(),
    )
    .await
    .unwrap();
    let records = sink.records();
    let letters = sink.dead_letters();
    assert_eq!(report.records as usize, records.len());
    assert_eq!(
        stats.dead_letters.load(Ordering::Relaxed) as usize,
        letters.len()
    );
    let mut positions = BTreeSet::new();
    for record in &records {
        assert_eq!(record.source_id, "conformance");
        assert_eq!(record.connector, kind.name());
        assert_eq!(record.class, kind.class());
        assert!(!record.source_uri.is_empty());
        assert!(record.received_at_ns > 1_600_000_000_000_000_000);
        assert!(!record.payload.is_empty());
        assert!(
            positions.insert((record.source_uri.clone(), record.source_position)),
            "position {} twice",
            record.source_position
        );
    }
    for letter in &letters {
        assert!(!letter.reason.is_empty());
        assert!(!letter.payload.is_empty());
    }
    // Replay: the same source again publishes nothing new.
    let again = Arc::new(MemorySink::default());
    run_source(
        spec,
        again.clone(),
        state.path().to_path_buf(),
        CancellationToken::new(),
        Arc::new(SourceStats::default()),
    )
    .await
    .unwrap();
    assert!(again.records().is_empty(), "replay re-published records");
    assert!(
        again.dead_letters().is_empty(),
        "replay re-published dead letters"
    );
    Outcome {
        records: records.len(),
        dead_letters: letters.len(),
    }
}

#[tokio::test]
async fn fix_file_conforms_and_sends_defects_to_dead_letters() {
    let outcome = conform(
        ConnectorKind::Fix,
        serde_json::json!({ "file": data("fix/malformed/derived_defects.fix") }),
    )
    .await;
    assert_eq!((outcome.records, outcome.dead_letters), (4, 9));
}

#[tokio::test]
async fn trades_csv_conforms() {
    let outcome = conform(
        ConnectorKind::TradesCsv,
        serde_json::json!({ "file": data("marketdata/csv/20151224_goog_minute_trade.csv") }),
    )
    .await;
    assert_eq!((outcome.records, outcome.dead_letters), (227, 0));
}

#[tokio::test]
async fn iex_tops_gzipped_pcap_conforms() {
    let outcome = conform(
        ConnectorKind::IexTops,
        serde_json::json!({ "file": data("marketdata/iex/iex_deep10_20231002_premarket_5000pkts.pcap.gz") }),
    )
    .await;
    assert_eq!((outcome.records, outcome.dead_letters), (48_325, 0));
}

#[tokio::test]
async fn rss_and_atom_conform() {
    let rss = conform(
        ConnectorKind::Rss,
        serde_json::json!({ "file": data("news/sec_press_releases.rss.xml") }),
    )
    .await;
    assert_eq!((rss.records, rss.dead_letters), (25, 0));
    let atom = conform(
        ConnectorKind::Rss,
        serde_json::json!({ "file": data("news/sec_edgar_company_filings_0001844419.atom.xml") }),
    )
    .await;
    assert_eq!((atom.records, atom.dead_letters), (5, 0));
}

#[tokio::test]
async fn news_jsonl_conforms() {
    let outcome = conform(
        ConnectorKind::NewsJsonl,
        serde_json::json!({ "file": data("news/stocknet_tweets_GOOG_2015-12-14_to_2015-12-27.jsonl"), "symbol": "GOOG" }),
    )
    .await;
    assert_eq!((outcome.records, outcome.dead_letters), (43, 0));
}

#[tokio::test]
async fn fix_drop_copy_session_frames_each_message() {
    use tokio::io::AsyncWriteExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = spec(
        "dropcopy",
        ConnectorKind::Fix,
        serde_json::json!({ "listen": format!("127.0.0.1:{port}") }),
    );
    let state = tempfile::tempdir().unwrap();
    let sink = Arc::new(MemorySink::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_source(
        spec,
        sink.clone(),
        state.path().to_path_buf(),
        stop.clone(),
        Arc::new(SourceStats::default()),
    ));
    let bytes = std::fs::read(data("fix/fix42_pipe_delimited.log")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut stream = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => break stream,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("listener not up: {e}"),
        }
    };
    // Odd-sized writes: framing must not depend on how TCP splits the stream.
    for chunk in bytes.chunks(97) {
        stream.write_all(chunk).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    drop(stream);
    while sink.records().len() + sink.dead_letters().len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "session not framed in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(sink.records().len(), 19);
    assert_eq!(sink.dead_letters().len(), 1);
    assert!(sink.records()[0].source_uri.starts_with("tcp://"));
}
