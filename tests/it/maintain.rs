//! Maintenance: compaction rewrites a partition's small files into one without changing what any
//! version reads (time travel intact), keeps the sink's offsets, and writers carry on after it.

use anyhow::Result;
use marketlake_lake::maintain::maintain_table;
use marketlake_lake::read::{load_table, read_rows};
use marketlake_lake::{CommitOutcome, ExactlyOnceSink, LakeConfig, OffsetAdvance};
use marketlake_schemas::names::{L1_TRADES_RAW, TOPIC_RAW_TRADES};
use marketlake_schemas::{l1, KafkaPosition};

use crate::exactly_once::numbered;
use crate::support::i64_column;

async fn positions(config: &LakeConfig, version: Option<i64>) -> Result<Vec<i64>> {
    let table = load_table(config, L1_TRADES_RAW, version).await?;
    let mut positions = Vec::new();
    for batch in read_rows(&table).await? {
        positions.extend(
            i64_column(&batch, "source_position")?
                .values()
                .iter()
                .copied(),
        );
    }
    positions.sort_unstable();
    Ok(positions)
}

async fn commit_range(sink: &mut ExactlyOnceSink, from: i64, to: i64) -> Result<()> {
    let records: Vec<_> = (from..to).map(numbered).collect();
    let positions: Vec<KafkaPosition> = (from..to)
        .map(|offset| KafkaPosition {
            topic: TOPIC_RAW_TRADES.into(),
            partition: 0,
            offset,
            timestamp_ms: None,
        })
        .collect();
    let batch = l1::raw_batch(records.iter().zip(positions.iter()), 0)?;
    let advance = OffsetAdvance {
        topic: TOPIC_RAW_TRADES.into(),
        partition: 0,
        from: if from == 0 { None } else { Some(from - 1) },
        to: to - 1,
    };
    let outcome = sink.commit(batch, &[advance]).await?;
    assert!(
        matches!(outcome, CommitOutcome::Committed { .. }),
        "{outcome:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_version_and_the_offsets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        root: dir.path().join("lake"),
        ..LakeConfig::default()
    };
    let spec = marketlake_ingest::l1_specs()
        .into_iter()
        .find(|s| s.name == L1_TRADES_RAW)
        .expect("l1.trades_raw spec");
    let mut sink = ExactlyOnceSink::open(&config, spec.clone(), "l1-ingest").await?;
    for round in 0..6 {
        commit_range(&mut sink, round * 100, (round + 1) * 100).await?;
    }
    let before = positions(&config, None).await?;
    assert_eq!(before, (0..600).collect::<Vec<_>>());

    let report = maintain_table(&config, &spec, 32 * 1024 * 1024).await?;
    assert_eq!(report.files_before, 6, "{report:?}");
    assert_eq!(report.files_after, 1, "{report:?}");
    assert_eq!(report.rewritten, 6);
    assert_eq!(report.compaction_version, Some(7));
    assert_eq!(report.checkpoint_version, Some(7));
    assert!(config
        .root
        .join("l1/trades_raw/_delta_log/00000000000000000007.checkpoint.parquet")
        .exists());

    // Same rows now, and every earlier version reads as it did.
    assert_eq!(positions(&config, None).await?, before);
    assert_eq!(positions(&config, Some(6)).await?, before);
    assert_eq!(
        positions(&config, Some(3)).await?,
        (0..300).collect::<Vec<_>>()
    );

    // The writer's offsets survive, and it carries on.
    sink.refresh().await?;
    assert_eq!(sink.stored_offset(TOPIC_RAW_TRADES, 0).await?, Some(599));
    commit_range(&mut sink, 600, 700).await?;
    assert_eq!(
        positions(&config, None).await?,
        (0..700).collect::<Vec<_>>()
    );
    Ok(())
}
