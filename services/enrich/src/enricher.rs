//! The enrichment step: one raw record in, its L2 rows out ([`Enricher::enrich`]).
//!
//! Trade formats go through [`parse_trade`] (instrument master joined), news formats through
//! [`parse_news`] (tickers tagged); every resulting row then runs its table's [`Rules`]. What
//! cannot be parsed, and every row a rejecting rule stops, becomes a [`QuarantineRow`] with the
//! raw bytes, the rule (`parse` for unreadable records) and the reason. Records that are
//! well-formed but carry nothing for L2 (a FIX logon, a quote, a bar) are reported in
//! [`Enriched::skipped`] and produce no row.
//!
//! Pure and thread-safe (`&self`): the pipeline can share one enricher between partitions.

use std::sync::Arc;

use marketlake_schemas::l2::{NewsRow, QuarantineRow, TradeRow};
use marketlake_schemas::{FeedClass, KafkaPosition, PayloadFormat, RawRecord};
use serde::{Deserialize, Serialize};

use crate::extra::{ExtraFieldConfig, ExtraFields};
use crate::instruments::InstrumentMaster;
use crate::news::{parse_news, NewsParse};
use crate::record::lineage;
use crate::rules::{Rules, RulesConfig, Table, Verdict};
use crate::tagger::TickerTagger;
use crate::trade::{parse_trade, TradeParse};
use crate::{Result, RULE_PARSE};

/// Configuration of enrichment (the `enrich` section).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnricherConfig {
    /// Validation rules per table; the defaults when absent.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Fields mapped to extra L2 columns (see [`crate::extra`]).
    #[serde(default)]
    pub extra_fields: Vec<ExtraFieldConfig>,
}

/// The L2 rows of one raw record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enriched {
    pub trades: Vec<TradeRow>,
    pub news: Vec<NewsRow>,
    pub quarantine: Vec<QuarantineRow>,
    /// Why a well-formed record produced no row (not a trade), if it did not.
    pub skipped: Option<String>,
}

/// Turns raw records into L2 rows; see the module documentation.
#[derive(Debug)]
pub struct Enricher {
    rules: Rules,
    extra: ExtraFields,
    master: Option<Arc<InstrumentMaster>>,
    tagger: TickerTagger,
}

impl Enricher {
    /// Compile the rules and build the ticker tagger for `master` (none: no reference join,
    /// cashtag-only tagging).
    pub fn new(config: &EnricherConfig, master: Option<Arc<InstrumentMaster>>) -> Result<Self> {
        Ok(Enricher {
            rules: Rules::compile(&config.rules, master.clone())?,
            extra: ExtraFields::new(&config.extra_fields)?,
            tagger: TickerTagger::new(master.clone()),
            master,
        })
    }

    /// Switch to another version of the instrument master (rule counters are kept).
    pub fn set_master(&mut self, master: Option<Arc<InstrumentMaster>>) -> Result<()> {
        self.rules.set_master(master.clone())?;
        self.tagger = TickerTagger::new(master.clone());
        self.master = master;
        Ok(())
    }

    pub fn master(&self) -> Option<&InstrumentMaster> {
        self.master.as_deref()
    }

    /// The configured extra columns.
    pub fn extra(&self) -> &ExtraFields {
        &self.extra
    }

    /// The rules, for their counters ([`Rules::prometheus_text`]).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn tagger(&self) -> &TickerTagger {
        &self.tagger
    }

    /// Enrich one raw record consumed at `at`; `now_ns` (UTC ns) is the enrichment time, used by
    /// time rules and as `quarantined_at_ns`.
    pub fn enrich(&self, raw: &RawRecord, at: &KafkaPosition, now_ns: i64) -> Enriched {
        let mut out = Enriched::default();
        match raw.format {
            PayloadFormat::Fix | PayloadFormat::TradesCsv | PayloadFormat::IexTops => {
                match parse_trade(raw, at, self.master.as_deref()) {
                    TradeParse::Trades(rows) => {
                        let extras = match self.extra.extract(Table::Trades, raw) {
                            Ok(extras) => extras,
                            Err(bad) => {
                                out.quarantine.push(self.type_changed(
                                    raw,
                                    at,
                                    Table::Trades,
                                    bad,
                                    now_ns,
                                ));
                                return out;
                            }
                        };
                        for mut row in rows {
                            row.extra = extras.clone();
                            match self.rules.apply_trade(&mut row, now_ns) {
                                Verdict::Keep => out.trades.push(row),
                                Verdict::Reject { rule, reason } => {
                                    out.quarantine.push(quarantine(
                                        raw,
                                        at,
                                        Table::Trades,
                                        rule,
                                        format!("{reason} (trade {})", row.trade_key),
                                        now_ns,
                                    ))
                                }
                            }
                        }
                    }
                    TradeParse::NotATrade { reason } => out.skipped = Some(reason),
                    TradeParse::Malformed { rule, reason } => {
                        self.rules.note_parse_failure(Table::Trades);
                        out.quarantine.push(unreadable(
                            raw,
                            at,
                            Table::Trades,
                            rule,
                            &reason,
                            now_ns,
                        ));
                    }
                }
            }
            PayloadFormat::RssItem | PayloadFormat::AtomEntry | PayloadFormat::Json => {
                match parse_news(raw, at, &self.tagger) {
                    NewsParse::Item(mut row) => match self.extra.extract(Table::News, raw) {
                        Err(bad) => out.quarantine.push(self.type_changed(
                            raw,
                            at,
                            Table::News,
                            bad,
                            now_ns,
                        )),
                        Ok(extras) => {
                            row.extra = extras;
                            match self.rules.apply_news(&mut row, now_ns) {
                                Verdict::Keep => out.news.push(row),
                                Verdict::Reject { rule, reason } => {
                                    out.quarantine.push(quarantine(
                                        raw,
                                        at,
                                        Table::News,
                                        rule,
                                        format!("{reason} (item {})", row.news_key),
                                        now_ns,
                                    ))
                                }
                            }
                        }
                    },
                    NewsParse::Malformed { rule, reason } => {
                        self.rules.note_parse_failure(Table::News);
                        out.quarantine.push(unreadable(
                            raw,
                            at,
                            Table::News,
                            rule,
                            &reason,
                            now_ns,
                        ));
                    }
                }
            }
            PayloadFormat::Unknown => {
                let table = match raw.class {
                    FeedClass::Trades => Table::Trades,
                    FeedClass::News => Table::News,
                };
                self.rules.note_parse_failure(table);
                let why = raw
                    .attributes
                    .get("decode_error")
                    .map_or("no reason recorded", String::as_str);
                let reason = format!("record without marketlake headers ({why})");
                out.quarantine.push(unreadable(
                    raw,
                    at,
                    table,
                    crate::record::UNSUPPORTED_FORMAT,
                    &reason,
                    now_ns,
                ));
            }
        }
        out
    }
}

impl Enricher {
    /// A record whose mapped extra field changed type: quarantined whole (rule `field_type`),
    /// so none of its rows is stored without the value or with a guess.
    fn type_changed(
        &self,
        raw: &RawRecord,
        at: &KafkaPosition,
        table: Table,
        bad: crate::record::Bad,
        now_ns: i64,
    ) -> QuarantineRow {
        self.rules.note_type_change(table);
        quarantine(raw, at, table, bad.rule.to_owned(), bad.reason, now_ns)
    }
}

fn quarantine(
    raw: &RawRecord,
    at: &KafkaPosition,
    table: Table,
    rule: String,
    reason: String,
    now_ns: i64,
) -> QuarantineRow {
    QuarantineRow {
        target_table: table.name().to_owned(),
        rule,
        reason,
        payload_format: raw.format.as_str().to_owned(),
        payload: raw.payload.clone(),
        received_at_ns: raw.received_at_ns,
        quarantined_at_ns: now_ns,
        lineage: lineage(raw, at),
    }
}

/// A record that could not be read: rule `parse`, the parser's code leading the reason.
fn unreadable(
    raw: &RawRecord,
    at: &KafkaPosition,
    table: Table,
    code: &str,
    reason: &str,
    now_ns: i64,
) -> QuarantineRow {
    quarantine(
        raw,
        at,
        table,
        RULE_PARSE.to_owned(),
        format!("{code}: {reason}"),
        now_ns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn enricher(master: bool) -> Enricher {
        Enricher::new(
            &EnricherConfig::default(),
            master.then(|| shared_master(5).unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn every_sample_enriches_without_loss() {
        let enricher = enricher(true);
        let mut samples: Vec<(RawRecord, usize)> = Vec::new();
        let mut add = |records: Vec<RawRecord>| samples.extend(records.into_iter().map(|r| (r, 0)));
        add(fix_records("fix/fix42_pipe_delimited.log").unwrap());
        add(fix_records("fix/jse_indices_fixt11_marketdata_part1.fix").unwrap());
        add(csv_records("marketdata/csv/20131007_ibm_Trade_Tick.csv").unwrap());
        add(csv_records("marketdata/csv/20151223_goog_minute_trade.csv").unwrap());
        add(iex_records("marketdata/iex/iex_tops16_sample_part1.pcap.gz").unwrap());
        add(feed_records("news/sec_press_releases.rss.xml").unwrap());
        add(feed_records("news/sec_edgar_company_filings_0001844419.atom.xml").unwrap());
        add(jsonl_records("news/iex_news_aapl.json", serde_json::json!({})).unwrap());
        let (mut trades, mut news, mut skipped) = (0, 0, 0);
        for (raw, _) in &samples {
            let out = enricher.enrich(raw, &at(), RECEIVED_AT_NS);
            // Every record lands somewhere, and only where its class belongs.
            let produced = out.trades.len() + out.news.len() + out.quarantine.len();
            assert!(produced > 0 || out.skipped.is_some(), "{raw:?}");
            assert!(out.quarantine.is_empty(), "{:?}", out.quarantine);
            if raw.class == FeedClass::Trades {
                assert!(out.news.is_empty());
            } else {
                assert!(out.trades.is_empty());
            }
            trades += out.trades.len();
            news += out.news.len();
            skipped += usize::from(out.skipped.is_some());
        }
        // 2 FIX fills, 24293 IBM ticks, 3089 IEX trades + 2 breaks.
        assert_eq!(trades, 2 + 24_293 + 3_089 + 2);
        assert_eq!(news, 25 + 5 + 10);
        assert_eq!(skipped, samples.len() - trades - news);
        // The test symbols of the IEX spec sample are not listed: flagged, kept.
        let text = enricher.rules().prometheus_text();
        assert!(
            text.contains("rule=\"known_symbol\",action=\"flag\"}"),
            "{text}"
        );
    }

    #[test]
    fn malformed_and_rejected_records_are_quarantined_with_their_bytes() {
        let enricher = enricher(false);
        let mut raw = fix_records("fix/fix42_pipe_delimited.log")
            .unwrap()
            .remove(0);
        raw.payload =
            b"8=FIX.4.2|9=5|35=8|17=7|31=abc|32=1|55=DELL|52=20040521-13:27:25|10=000|".to_vec();
        let out = enricher.enrich(&raw, &at(), RECEIVED_AT_NS);
        let [row] = out.quarantine.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(row.rule, "parse");
        assert_eq!(row.target_table, "l2.trades");
        assert!(
            row.reason.starts_with("bad_field: fix LastPx (31) `abc`"),
            "{}",
            row.reason
        );
        assert_eq!(row.payload, raw.payload);
        assert_eq!(row.payload_format, "fix");
        assert_eq!(row.quarantined_at_ns, RECEIVED_AT_NS);
        assert_eq!(row.lineage.raw_offset, 17);

        raw.payload =
            b"8=FIX.4.2|9=5|35=8|17=7|31=0|32=1|55=DELL|52=20040521-13:27:25|10=000|".to_vec();
        let out = enricher.enrich(&raw, &at(), RECEIVED_AT_NS);
        assert_eq!(out.quarantine[0].rule, "price_positive");
        assert_eq!(
            out.quarantine[0].reason,
            "price 0 is not positive (trade fix-sample:7)"
        );
        assert!(out.trades.is_empty());

        let mut news = feed_records("news/sec_press_releases.rss.xml")
            .unwrap()
            .remove(0);
        news.payload = b"<item><title>x".to_vec();
        let out = enricher.enrich(&news, &at(), RECEIVED_AT_NS);
        assert_eq!(out.quarantine[0].target_table, "l2.news");
        assert!(
            out.quarantine[0]
                .reason
                .starts_with("bad_layout: xml ends inside"),
            "{:?}",
            out.quarantine
        );

        news.format = PayloadFormat::Unknown;
        news.attributes.insert(
            "decode_error".into(),
            "kafka header `ml.format` is missing".into(),
        );
        let out = enricher.enrich(&news, &at(), RECEIVED_AT_NS);
        assert!(out.quarantine[0].reason.contains("ml.format"));
        let counts = enricher.rules().counts();
        let parse_news = counts
            .iter()
            .find(|c| c.table == "l2.news" && c.rule == "parse")
            .unwrap();
        assert_eq!(parse_news.count, 2);
    }

    #[test]
    fn news_from_the_future_is_flagged_and_master_swaps() {
        let mut enricher = enricher(false);
        let raw = jsonl_records("news/iex_news_aapl.json", serde_json::json!({}))
            .unwrap()
            .remove(0);
        // Enriched "in 2000": every item is from the future.
        let out = enricher.enrich(&raw, &at(), 946_684_800_000_000_000);
        assert_eq!(out.news[0].flags, ["not_in_future"]);
        assert_eq!(out.news[0].reference_version, None);
        enricher
            .set_master(Some(shared_master(8).unwrap()))
            .unwrap();
        let out = enricher.enrich(&raw, &at(), RECEIVED_AT_NS);
        assert!(out.news[0].flags.is_empty());
        assert_eq!(out.news[0].reference_version, Some(8));
        assert_eq!(enricher.master().map(|m| m.version), Some(8));
    }

    #[test]
    fn one_enricher_serves_every_partition_thread() {
        fn shared<T: Send + Sync>() {}
        shared::<Enricher>();
    }

    #[test]
    fn config_reads_from_json_with_defaults() {
        let config: EnricherConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(config, EnricherConfig::default());
        let config: EnricherConfig = serde_json::from_value(serde_json::json!({
            "rules": { "news": [] }
        }))
        .unwrap();
        assert!(config.rules.news.is_empty());
        assert_eq!(config.rules.trades, crate::rules::default_trade_rules());
        assert!(
            serde_json::from_value::<EnricherConfig>(serde_json::json!({ "rulez": {} })).is_err()
        );
    }

    /// Random bytes, truncated records and bit flips of every format: never a panic, and every
    /// record ends as rows, quarantine or a skip reason.
    #[test]
    fn garbage_never_panics() {
        let enricher = enricher(true);
        let mut rng = StdRng::seed_from_u64(0x6d61_726b_6574);
        let mut seeds: Vec<RawRecord> = Vec::new();
        seeds.extend(
            fix_records("fix/fix42_pipe_delimited.log")
                .unwrap()
                .into_iter()
                .skip(10)
                .take(4),
        );
        seeds.extend(
            fix_records("fix/jse_indices_fixt11_marketdata_part1.fix")
                .unwrap()
                .into_iter()
                .skip(100)
                .take(3),
        );
        seeds.extend(
            csv_records("marketdata/csv/20131007_ibm_Trade_Tick.csv")
                .unwrap()
                .into_iter()
                .take(2),
        );
        seeds.extend(
            csv_records("marketdata/csv/20140605_aapl_minute_trade.csv")
                .unwrap()
                .into_iter()
                .take(1),
        );
        let iex = iex_records("marketdata/iex/iex_tops16_sample_part1.pcap.gz").unwrap();
        seeds.extend(
            iex.iter()
                .filter(|r| r.payload.first() == Some(&b'T'))
                .take(3)
                .cloned(),
        );
        seeds.extend(
            iex.iter()
                .filter(|r| r.payload.first() == Some(&b'B'))
                .take(1)
                .cloned(),
        );
        seeds.extend(
            feed_records("news/sec_press_releases.rss.xml")
                .unwrap()
                .into_iter()
                .take(2),
        );
        seeds.extend(
            feed_records("news/sec_usgaap_xbrl_filings.rss.xml")
                .unwrap()
                .into_iter()
                .take(1),
        );
        seeds.extend(
            feed_records("news/sec_edgar_company_filings_0001844419.atom.xml")
                .unwrap()
                .into_iter()
                .take(1),
        );
        seeds.extend(
            jsonl_records(
                "news/stocknet_tweets_GOOG_2015-12-14_to_2015-12-27.jsonl",
                serde_json::json!({}),
            )
            .unwrap()
            .into_iter()
            .take(2),
        );
        seeds.extend(
            jsonl_records("news/iex_news_aapl.json", serde_json::json!({}))
                .unwrap()
                .into_iter()
                .take(1),
        );
        let alphabet: &[u8] = b"0123456789.-|=:<>/&;$ \x01^AZTBnull\"{}[],";
        let mut checked = 0;
        for seed in &seeds {
            for round in 0..300 {
                let mut raw = seed.clone();
                let len = raw.payload.len();
                match round % 4 {
                    // Truncated.
                    0 => raw.payload.truncate(rng.gen_range(0..=len)),
                    // A few bytes flipped to random values.
                    1 => {
                        for _ in 0..rng.gen_range(1..4) {
                            if len > 0 {
                                let at = rng.gen_range(0..len);
                                raw.payload[at] = rng.gen();
                            }
                        }
                    }
                    // A few bytes replaced by format-significant characters.
                    2 => {
                        for _ in 0..rng.gen_range(1..6) {
                            if len > 0 {
                                let at = rng.gen_range(0..len);
                                raw.payload[at] = alphabet[rng.gen_range(0..alphabet.len())];
                            }
                        }
                    }
                    // Pure noise.
                    _ => {
                        let n = rng.gen_range(0..80);
                        raw.payload = (0..n).map(|_| rng.gen()).collect();
                    }
                }
                if round % 7 == 0 {
                    // Attributes garbled too.
                    for value in raw.attributes.values_mut() {
                        let mut cut = rng.gen_range(0..=value.len());
                        while !value.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        value.truncate(cut);
                    }
                }
                let out = enricher.enrich(&raw, &at(), RECEIVED_AT_NS);
                let rows = out.trades.len() + out.news.len() + out.quarantine.len();
                assert!(rows > 0 || out.skipped.is_some(), "{raw:?}");
                for row in &out.quarantine {
                    assert_eq!(row.payload, raw.payload);
                    assert!(!row.reason.is_empty());
                }
                checked += 1;
            }
        }
        assert!(checked >= 6_000, "{checked}");
        // The survivors still build Arrow batches.
        let mut trades = Vec::new();
        for seed in &seeds {
            trades.extend(enricher.enrich(seed, &at(), RECEIVED_AT_NS).trades);
        }
        assert!(marketlake_schemas::l2::trades_batch(&trades, RECEIVED_AT_NS).is_ok());
    }
}
