//! Validation rules of the L2 tables: declared per table in configuration, compiled once,
//! applied to every row, counted.
//!
//! A rule is `{ name, check, action }`. `check` is one of (`kind = ...`):
//! `required { field }`, `price_positive`, `quantity_positive`, `price_range { min, max }`,
//! `quantity_range { min, max }` (decimal text or numbers, either bound optional),
//! `known_symbol` (needs an instrument master), `not_in_future { tolerance_secs }`,
//! `not_before { ns | rfc3339 }`. `action` is `reject` (the row goes to `l2.quarantine` with the
//! rule's name and the reason) or `flag` (the row is kept and the rule's name added to its
//! `flags`). Rules run in the declared order; the first rejecting rule a row breaks decides.
//!
//! Time checks read the event time of trades and the published time of news (a news item
//! without one passes them). Price and quantity checks do not apply to `cancel` rows: a bust
//! carries the busted trade's numbers or none at all.
//!
//! Every problem in the configuration is an error naming the table and the rule: unknown check
//! kinds or keys, unknown field names, checks that do not apply to the table, empty ranges,
//! a rejecting `known_symbol` without a master.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use marketlake_schemas::decimal::{format_scaled, parse_scaled, PRICE_SCALE, QTY_SCALE};
use marketlake_schemas::l2::{NewsRow, TradeAction, TradeRow};
use serde::{Deserialize, Deserializer, Serialize};

use crate::instruments::InstrumentMaster;
use crate::{EnrichError, Result, TARGET_NEWS, TARGET_TRADES};

/// What happens to a row that breaks a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Quarantine the row with the rule and the reason.
    #[default]
    Reject,
    /// Keep the row and add the rule's name to its `flags`.
    Flag,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Flag => "flag",
        }
    }
}

/// A decimal bound as written in configuration: text (`"0.0001"`, exact) or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Text(String),
    Integer(i64),
    Float(f64),
}

impl Bound {
    fn scaled(&self, scale: u32) -> std::result::Result<i64, String> {
        let text = match self {
            Bound::Text(text) => text.clone(),
            Bound::Integer(value) => value.to_string(),
            // Display of an f64 is its shortest exact round-trip text (0.01 → "0.01").
            Bound::Float(value) => value.to_string(),
        };
        parse_scaled(&text, scale).map_err(|e| e.to_string())
    }
}

/// What a rule checks; see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    Required {
        field: String,
    },
    PricePositive {},
    QuantityPositive {},
    PriceRange {
        #[serde(default)]
        min: Option<Bound>,
        #[serde(default)]
        max: Option<Bound>,
    },
    QuantityRange {
        #[serde(default)]
        min: Option<Bound>,
        #[serde(default)]
        max: Option<Bound>,
    },
    KnownSymbol {},
    NotInFuture {
        #[serde(default)]
        tolerance_secs: u64,
    },
    NotBefore {
        #[serde(default)]
        ns: Option<i64>,
        #[serde(default)]
        rfc3339: Option<String>,
    },
}

/// One declared rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleConfig {
    /// `[a-z0-9_]+`; becomes the quarantine `rule`, the flag and the metric label.
    pub name: String,
    pub check: Check,
    pub action: Action,
}

impl<'de> Deserialize<'de> for RuleConfig {
    /// Reads `check` after `name`, so a bad check is reported with the rule's name.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Declared {
            name: String,
            check: serde_json::Value,
            #[serde(default)]
            action: Action,
        }
        let declared = Declared::deserialize(deserializer)?;
        let check = serde_json::from_value(declared.check).map_err(|e| {
            serde::de::Error::custom(format!("rule `{}`: invalid check: {e}", declared.name))
        })?;
        Ok(RuleConfig {
            name: declared.name,
            check,
            action: declared.action,
        })
    }
}

/// The rules of both L2 tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    #[serde(default = "default_trade_rules")]
    pub trades: Vec<RuleConfig>,
    #[serde(default = "default_news_rules")]
    pub news: Vec<RuleConfig>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            trades: default_trade_rules(),
            news: default_news_rules(),
        }
    }
}

fn rule(name: &str, check: Check, action: Action) -> RuleConfig {
    RuleConfig {
        name: name.to_owned(),
        check,
        action,
    }
}

/// No trade before 1990: a zero or garbled timestamp, not history.
const NOT_BEFORE_DEFAULT: &str = "1990-01-01T00:00:00Z";

/// Trades: price and quantity positive, event time within 5 minutes of now and after 1990
/// (rejected); symbols unknown to the master flagged.
pub fn default_trade_rules() -> Vec<RuleConfig> {
    vec![
        rule("price_positive", Check::PricePositive {}, Action::Reject),
        rule(
            "quantity_positive",
            Check::QuantityPositive {},
            Action::Reject,
        ),
        rule(
            "not_in_future",
            Check::NotInFuture {
                tolerance_secs: 300,
            },
            Action::Reject,
        ),
        rule(
            "not_before_1990",
            Check::NotBefore {
                ns: None,
                rfc3339: Some(NOT_BEFORE_DEFAULT.to_owned()),
            },
            Action::Reject,
        ),
        rule("known_symbol", Check::KnownSymbol {}, Action::Flag),
    ]
}

/// News: published more than a day ahead of now or before 1990 is flagged (the item is kept).
pub fn default_news_rules() -> Vec<RuleConfig> {
    vec![
        rule(
            "not_in_future",
            Check::NotInFuture {
                tolerance_secs: 86_400,
            },
            Action::Flag,
        ),
        rule(
            "not_before_1990",
            Check::NotBefore {
                ns: None,
                rfc3339: Some(NOT_BEFORE_DEFAULT.to_owned()),
            },
            Action::Flag,
        ),
    ]
}

/// The table a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Trades,
    News,
}

impl Table {
    /// The logical table name (`l2.trades`, `l2.news`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Trades => TARGET_TRADES,
            Table::News => TARGET_NEWS,
        }
    }
}

const TRADE_FIELDS: &[&str] = &[
    "symbol",
    "isin",
    "figi",
    "instrument_name",
    "exchange",
    "currency",
    "side",
    "venue",
    "trade_id",
    "order_id",
    "account",
    "trader",
    "supersedes",
];
const NEWS_FIELDS: &[&str] = &[
    "headline",
    "body",
    "link",
    "publisher",
    "published_at",
    "language",
    "tickers",
];

#[derive(Debug)]
enum Test {
    Required(&'static str),
    PricePositive,
    QuantityPositive,
    PriceRange(Option<i64>, Option<i64>),
    QuantityRange(Option<i64>, Option<i64>),
    KnownSymbol,
    NotInFuture { tolerance_ns: i64 },
    NotBefore { ns: i64 },
}

#[derive(Debug)]
struct Compiled {
    name: String,
    action: Action,
    test: Test,
    hits: AtomicU64,
}

/// The outcome of a row's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the row (its `flags` may have grown).
    Keep,
    /// Quarantine the row: the rule broken and why.
    Reject { rule: String, reason: String },
}

/// How often one rule fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub table: &'static str,
    pub rule: String,
    pub action: Action,
    pub count: u64,
}

/// Compiled rules of both tables, with their counters (shared safely between threads).
#[derive(Debug)]
pub struct Rules {
    trades: Vec<Compiled>,
    news: Vec<Compiled>,
    master: Option<Arc<InstrumentMaster>>,
    parse_failures: [AtomicU64; 2],
    /// Records whose mapped extra field had another type than declared (rule `field_type`).
    type_changes: [AtomicU64; 2],
}

fn rule_error(table: Table, rule: &str, message: impl Into<String>) -> EnrichError {
    EnrichError::Rule {
        table: table.name(),
        rule: rule.to_owned(),
        message: message.into(),
    }
}

fn bounds(
    table: Table,
    rule: &str,
    min: &Option<Bound>,
    max: &Option<Bound>,
    scale: u32,
) -> Result<(Option<i64>, Option<i64>)> {
    let read = |bound: &Option<Bound>, which: &str| {
        bound
            .as_ref()
            .map(|b| b.scaled(scale))
            .transpose()
            .map_err(|e| rule_error(table, rule, format!("`{which}`: {e}")))
    };
    let (min, max) = (read(min, "min")?, read(max, "max")?);
    match (min, max) {
        (None, None) => Err(rule_error(table, rule, "set `min`, `max` or both")),
        (Some(lo), Some(hi)) if lo > hi => Err(rule_error(table, rule, "`min` is above `max`")),
        bounds => Ok(bounds),
    }
}

fn compile(table: Table, config: &RuleConfig, has_master: bool) -> Result<Compiled> {
    let name = config.name.as_str();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(rule_error(
            table,
            name,
            "name must be lower-case letters, digits and `_`",
        ));
    }
    if name == crate::RULE_PARSE {
        return Err(rule_error(
            table,
            name,
            "`parse` is reserved for records that cannot be read",
        ));
    }
    let trades_only = |test: Test| match table {
        Table::Trades => Ok(test),
        Table::News => Err(rule_error(table, name, "this check applies to trades only")),
    };
    let test = match &config.check {
        Check::Required { field } => {
            let fields = match table {
                Table::Trades => TRADE_FIELDS,
                Table::News => NEWS_FIELDS,
            };
            let known = fields
                .iter()
                .find(|f| **f == field.as_str())
                .ok_or_else(|| {
                    rule_error(
                        table,
                        name,
                        format!(
                            "unknown field `{field}`; known fields: {}",
                            fields.join(", ")
                        ),
                    )
                })?;
            Test::Required(known)
        }
        Check::PricePositive {} => trades_only(Test::PricePositive)?,
        Check::QuantityPositive {} => trades_only(Test::QuantityPositive)?,
        Check::PriceRange { min, max } => {
            let (lo, hi) = bounds(table, name, min, max, PRICE_SCALE)?;
            trades_only(Test::PriceRange(lo, hi))?
        }
        Check::QuantityRange { min, max } => {
            let (lo, hi) = bounds(table, name, min, max, QTY_SCALE)?;
            trades_only(Test::QuantityRange(lo, hi))?
        }
        Check::KnownSymbol {} => {
            if !has_master && config.action == Action::Reject {
                return Err(rule_error(
                    table,
                    name,
                    "rejecting unknown symbols needs an instrument master; load one or make the rule `flag`",
                ));
            }
            trades_only(Test::KnownSymbol)?
        }
        Check::NotInFuture { tolerance_secs } => Test::NotInFuture {
            tolerance_ns: i64::try_from(*tolerance_secs)
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .ok_or_else(|| rule_error(table, name, "`tolerance_secs` is too large"))?,
        },
        Check::NotBefore { ns, rfc3339 } => Test::NotBefore {
            ns: match (ns, rfc3339) {
                (Some(ns), None) => *ns,
                (None, Some(text)) => crate::time::rfc3339(text).ok_or_else(|| {
                    rule_error(
                        table,
                        name,
                        format!("`rfc3339` `{text}` is not an RFC 3339 time"),
                    )
                })?,
                _ => {
                    return Err(rule_error(
                        table,
                        name,
                        "set exactly one of `ns` and `rfc3339`",
                    ))
                }
            },
        },
    };
    Ok(Compiled {
        name: name.to_owned(),
        action: config.action,
        test,
        hits: AtomicU64::new(0),
    })
}

fn compile_table(table: Table, configs: &[RuleConfig], has_master: bool) -> Result<Vec<Compiled>> {
    let mut compiled: Vec<Compiled> = Vec::with_capacity(configs.len());
    for config in configs {
        if compiled.iter().any(|c| c.name == config.name) {
            return Err(rule_error(table, &config.name, "declared twice"));
        }
        compiled.push(compile(table, config, has_master)?);
    }
    if !has_master && compiled.iter().any(|c| matches!(c.test, Test::KnownSymbol)) {
        tracing::warn!(
            table = table.name(),
            "known_symbol rule has no instrument master and passes every row until one is loaded"
        );
    }
    Ok(compiled)
}

fn utc_text(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Why a time breaks a time check, if it does.
fn time_problem(test: &Test, what: &str, ns: i64, now_ns: i64) -> Option<String> {
    match test {
        Test::NotInFuture { tolerance_ns } => {
            let ahead = ns.saturating_sub(now_ns);
            (ahead > *tolerance_ns).then(|| {
                format!(
                    "{what} {} is {} s after now {} (tolerance {} s)",
                    utc_text(ns),
                    ahead / 1_000_000_000,
                    utc_text(now_ns),
                    tolerance_ns / 1_000_000_000
                )
            })
        }
        Test::NotBefore { ns: floor } => {
            (ns < *floor).then(|| format!("{what} {} is before {}", utc_text(ns), utc_text(*floor)))
        }
        _ => None,
    }
}

fn range_problem(
    what: &str,
    value: i64,
    scale: u32,
    min: Option<i64>,
    max: Option<i64>,
) -> Option<String> {
    let shown = |v: i64| format_scaled(v, scale);
    if let Some(lo) = min.filter(|lo| value < *lo) {
        return Some(format!(
            "{what} {} is below the minimum {}",
            shown(value),
            shown(lo)
        ));
    }
    if let Some(hi) = max.filter(|hi| value > *hi) {
        return Some(format!(
            "{what} {} is above the maximum {}",
            shown(value),
            shown(hi)
        ));
    }
    None
}

impl Rules {
    /// Compile the configuration; `master` serves `known_symbol`.
    pub fn compile(config: &RulesConfig, master: Option<Arc<InstrumentMaster>>) -> Result<Self> {
        let has_master = master.is_some();
        Ok(Rules {
            trades: compile_table(Table::Trades, &config.trades, has_master)?,
            news: compile_table(Table::News, &config.news, has_master)?,
            master,
            parse_failures: [AtomicU64::new(0), AtomicU64::new(0)],
            type_changes: [AtomicU64::new(0), AtomicU64::new(0)],
        })
    }

    /// Swap the instrument master (counters are kept). Refused when a rejecting
    /// `known_symbol` rule would be left without one.
    pub fn set_master(&mut self, master: Option<Arc<InstrumentMaster>>) -> Result<()> {
        if master.is_none() {
            if let Some(rule) = self
                .trades
                .iter()
                .find(|c| matches!(c.test, Test::KnownSymbol) && c.action == Action::Reject)
            {
                return Err(rule_error(
                    Table::Trades,
                    &rule.name,
                    "cannot drop the instrument master a rejecting known_symbol rule needs",
                ));
            }
        }
        self.master = master;
        Ok(())
    }

    fn trade_problem(&self, test: &Test, row: &TradeRow, now_ns: i64) -> Option<String> {
        let numbers_apply = row.action != TradeAction::Cancel;
        match test {
            Test::Required(field) => {
                let present = match *field {
                    "symbol" => !row.symbol.is_empty(),
                    "isin" => row.isin.is_some(),
                    "figi" => row.figi.is_some(),
                    "instrument_name" => row.instrument_name.is_some(),
                    "exchange" => row.exchange.is_some(),
                    "currency" => row.currency.is_some(),
                    "side" => row.side.is_some(),
                    "venue" => row.venue.is_some(),
                    "trade_id" => row.trade_id.is_some(),
                    "order_id" => row.order_id.is_some(),
                    "account" => row.account.is_some(),
                    "trader" => row.trader.is_some(),
                    "supersedes" => row.supersedes.is_some(),
                    _ => true,
                };
                (!present).then(|| format!("required field `{field}` is missing"))
            }
            Test::PricePositive => (numbers_apply && row.price <= 0).then(|| {
                format!(
                    "price {} is not positive",
                    format_scaled(row.price, PRICE_SCALE)
                )
            }),
            Test::QuantityPositive => (numbers_apply && row.quantity <= 0).then(|| {
                format!(
                    "quantity {} is not positive",
                    format_scaled(row.quantity, QTY_SCALE)
                )
            }),
            Test::PriceRange(min, max) => numbers_apply
                .then(|| range_problem("price", row.price, PRICE_SCALE, *min, *max))
                .flatten(),
            Test::QuantityRange(min, max) => numbers_apply
                .then(|| range_problem("quantity", row.quantity, QTY_SCALE, *min, *max))
                .flatten(),
            Test::KnownSymbol => {
                let master = self.master.as_ref()?;
                master.lookup(&row.symbol).is_none().then(|| {
                    format!(
                        "symbol `{}` is not in instrument master version {}",
                        row.symbol, master.version
                    )
                })
            }
            Test::NotInFuture { .. } | Test::NotBefore { .. } => {
                time_problem(test, "event time", row.event_time_ns, now_ns)
            }
        }
    }

    fn news_problem(test: &Test, row: &NewsRow, now_ns: i64) -> Option<String> {
        match test {
            Test::Required(field) => {
                let present = match *field {
                    "headline" => !row.headline.is_empty(),
                    "body" => row.body.is_some(),
                    "link" => row.link.is_some(),
                    "publisher" => row.publisher.is_some(),
                    "published_at" => row.published_at_ns.is_some(),
                    "language" => row.language.is_some(),
                    "tickers" => !row.tickers.is_empty(),
                    _ => true,
                };
                (!present).then(|| format!("required field `{field}` is missing"))
            }
            Test::NotInFuture { .. } | Test::NotBefore { .. } => row
                .published_at_ns
                .and_then(|ns| time_problem(test, "published time", ns, now_ns)),
            // Trade-only checks are refused at compile time.
            _ => None,
        }
    }

    fn verdict(
        rule: &Compiled,
        problem: Option<String>,
        flags: &mut Vec<String>,
    ) -> Option<Verdict> {
        let reason = problem?;
        rule.hits.fetch_add(1, Ordering::Relaxed);
        match rule.action {
            Action::Reject => Some(Verdict::Reject {
                rule: rule.name.clone(),
                reason,
            }),
            Action::Flag => {
                if !flags.contains(&rule.name) {
                    flags.push(rule.name.clone());
                }
                None
            }
        }
    }

    /// Run the trade rules on `row` (flags are added in place). `now_ns` is the enrichment
    /// time in UTC ns.
    pub fn apply_trade(&self, row: &mut TradeRow, now_ns: i64) -> Verdict {
        for rule in &self.trades {
            let problem = self.trade_problem(&rule.test, row, now_ns);
            if let Some(verdict) = Self::verdict(rule, problem, &mut row.flags) {
                return verdict;
            }
        }
        Verdict::Keep
    }

    /// Run the news rules on `row` (flags are added in place).
    pub fn apply_news(&self, row: &mut NewsRow, now_ns: i64) -> Verdict {
        for rule in &self.news {
            let problem = Self::news_problem(&rule.test, row, now_ns);
            if let Some(verdict) = Self::verdict(rule, problem, &mut row.flags) {
                return verdict;
            }
        }
        Verdict::Keep
    }

    /// Count a record of `table` that could not be parsed (quarantined with rule `parse`).
    pub fn note_parse_failure(&self, table: Table) {
        let slot = match table {
            Table::Trades => &self.parse_failures[0],
            Table::News => &self.parse_failures[1],
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a record of `table` quarantined because a mapped field changed type.
    pub fn note_type_change(&self, table: Table) {
        let slot = match table {
            Table::Trades => &self.type_changes[0],
            Table::News => &self.type_changes[1],
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    /// Every rule's count so far (the `parse` and `field_type` pseudo-rules first, per table).
    pub fn counts(&self) -> Vec<RuleCount> {
        let mut counts = Vec::new();
        for (table, rules, parse, type_changes) in [
            (
                Table::Trades,
                &self.trades,
                &self.parse_failures[0],
                &self.type_changes[0],
            ),
            (
                Table::News,
                &self.news,
                &self.parse_failures[1],
                &self.type_changes[1],
            ),
        ] {
            counts.push(RuleCount {
                table: table.name(),
                rule: crate::RULE_PARSE.to_owned(),
                action: Action::Reject,
                count: parse.load(Ordering::Relaxed),
            });
            counts.push(RuleCount {
                table: table.name(),
                rule: crate::extra::RULE_FIELD_TYPE.to_owned(),
                action: Action::Reject,
                count: type_changes.load(Ordering::Relaxed),
            });
            counts.extend(rules.iter().map(|rule| RuleCount {
                table: table.name(),
                rule: rule.name.clone(),
                action: rule.action,
                count: rule.hits.load(Ordering::Relaxed),
            }));
        }
        counts
    }

    /// The counts in the Prometheus text exposition format
    /// (`marketlake_enrich_rule_total{table,rule,action}`).
    pub fn prometheus_text(&self) -> String {
        let mut out = String::from(
            "# HELP marketlake_enrich_rule_total Records that broke an enrichment rule (reject: quarantined, flag: kept and flagged).\n# TYPE marketlake_enrich_rule_total counter\n",
        );
        for count in self.counts() {
            // Rule names are [a-z0-9_]+ and table names fixed: nothing to escape.
            let _ = writeln!(
                out,
                "marketlake_enrich_rule_total{{table=\"{}\",rule=\"{}\",action=\"{}\"}} {}",
                count.table,
                count.rule,
                count.action.as_str(),
                count.count
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instruments::Instrument;
    use marketlake_schemas::l2::Lineage;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn trade(symbol: &str, price: i64, quantity: i64, event_time_ns: i64) -> TradeRow {
        let lineage = Lineage {
            source_id: "s".into(),
            source_uri: "u".into(),
            source_position: 0,
            raw_topic: "raw.trades".into(),
            raw_partition: 0,
            raw_offset: 0,
        };
        TradeRow {
            received_at_ns: NOW,
            ..TradeRow::bare(
                format!("s:{symbol}:{price}:{quantity}:{event_time_ns}"),
                symbol.into(),
                price,
                quantity,
                event_time_ns,
                lineage,
            )
        }
    }

    fn news(published_at_ns: Option<i64>) -> NewsRow {
        NewsRow {
            news_key: "s:1".into(),
            headline: "h".into(),
            body: None,
            link: None,
            publisher: None,
            published_at_ns,
            received_at_ns: NOW,
            language: None,
            tickers: vec![],
            reference_version: None,
            extra: Default::default(),
            flags: vec![],
            lineage: trade("X", 1, 1, 0).lineage,
        }
    }

    fn master() -> Arc<InstrumentMaster> {
        Arc::new(InstrumentMaster::from_instruments(
            9,
            [Instrument {
                symbol: "IBM".into(),
                ..Instrument::default()
            }],
        ))
    }

    fn config(toml_like_json: serde_json::Value) -> RulesConfig {
        serde_json::from_value(toml_like_json).unwrap()
    }

    /// Which of `rows` each verdict rejects or flags.
    fn outcome(rules: &Rules, rows: &mut [TradeRow]) -> Vec<String> {
        rows.iter_mut()
            .map(|row| match rules.apply_trade(row, NOW) {
                Verdict::Reject { rule, .. } => format!("reject:{rule}"),
                Verdict::Keep if row.flags.is_empty() => "keep".to_owned(),
                Verdict::Keep => format!("flag:{}", row.flags.join("+")),
            })
            .collect()
    }

    #[test]
    fn default_rules_reject_and_flag_exactly_the_breakers() {
        let rules = Rules::compile(&RulesConfig::default(), Some(master())).unwrap();
        let one = 100_000_000;
        let mut rows = vec![
            trade("IBM", one, 10_000, NOW),
            trade("IBM", 0, 10_000, NOW),
            trade("IBM", -one, 10_000, NOW),
            trade("IBM", one, 0, NOW),
            trade("IBM", one, 10_000, NOW + 301_000_000_000),
            trade("IBM", one, 10_000, NOW + 299_000_000_000),
            trade("IBM", one, 10_000, 0),
            trade("ZZZ", one, 10_000, NOW),
        ];
        let mut cancel = trade("IBM", 0, 0, NOW);
        cancel.action = TradeAction::Cancel;
        rows.push(cancel);
        assert_eq!(
            outcome(&rules, &mut rows),
            [
                "keep",
                "reject:price_positive",
                "reject:price_positive",
                "reject:quantity_positive",
                "reject:not_in_future",
                "keep",
                "reject:not_before_1990",
                "flag:known_symbol",
                "keep",
            ]
        );
        let counts = rules.counts();
        let count = |name: &str| {
            counts
                .iter()
                .find(|c| c.table == "l2.trades" && c.rule == name)
                .unwrap()
                .count
        };
        assert_eq!(count("price_positive"), 2);
        assert_eq!(count("quantity_positive"), 1);
        assert_eq!(count("known_symbol"), 1);
        assert_eq!(count("parse"), 0);
        rules.note_parse_failure(Table::News);
        let text = rules.prometheus_text();
        assert!(text.contains("marketlake_enrich_rule_total{table=\"l2.trades\",rule=\"price_positive\",action=\"reject\"} 2\n"), "{text}");
        assert!(text.contains("marketlake_enrich_rule_total{table=\"l2.news\",rule=\"parse\",action=\"reject\"} 1\n"), "{text}");
        assert!(text.contains("{table=\"l2.trades\",rule=\"known_symbol\",action=\"flag\"} 1\n"));
    }

    #[test]
    fn reasons_name_the_value() {
        let rules = Rules::compile(&RulesConfig::default(), Some(master())).unwrap();
        let mut row = trade("IBM", -150_000_000, 10_000, NOW);
        assert_eq!(
            rules.apply_trade(&mut row, NOW),
            Verdict::Reject {
                rule: "price_positive".into(),
                reason: "price -1.5 is not positive".into()
            }
        );
        let mut row = trade("IBM", 1, 1, NOW + 3_600_000_000_000);
        let Verdict::Reject { reason, .. } = rules.apply_trade(&mut row, NOW) else {
            panic!()
        };
        assert_eq!(
            reason,
            "event time 2023-11-14T23:13:20Z is 3600 s after now 2023-11-14T22:13:20Z (tolerance 300 s)"
        );
        let mut row = trade("NOPE", 1, 1, NOW);
        rules.apply_trade(&mut row, NOW);
        assert_eq!(row.flags, ["known_symbol"]);
    }

    #[test]
    fn configured_ranges_required_fields_and_news_rules() {
        let rules = Rules::compile(
            &config(serde_json::json!({
                "trades": [
                    { "name": "price_band", "check": { "kind": "price_range", "min": "1", "max": 500.25 }, "action": "reject" },
                    { "name": "odd_lot", "check": { "kind": "quantity_range", "min": 100 }, "action": "flag" },
                    { "name": "needs_side", "check": { "kind": "required", "field": "side" }, "action": "flag" },
                    { "name": "after_2000", "check": { "kind": "not_before", "ns": 946_684_800_000_000_000_i64 } }
                ],
                "news": [
                    { "name": "has_link", "check": { "kind": "required", "field": "link" } },
                    { "name": "future", "check": { "kind": "not_in_future" }, "action": "flag" }
                ]
            })),
            None,
        )
        .unwrap();
        let price = |p: &str| parse_scaled(p, PRICE_SCALE).unwrap();
        let qty = |q: &str| parse_scaled(q, QTY_SCALE).unwrap();
        let mut sided = trade("X", price("10"), qty("100"), NOW);
        sided.side = Some("buy".into());
        let mut rows = vec![
            sided,
            trade("X", price("0.99"), qty("100"), NOW),
            trade("X", price("500.25"), qty("100"), NOW),
            trade("X", price("500.26"), qty("100"), NOW),
            trade("X", price("10"), qty("99.9999"), NOW),
            trade("X", price("10"), qty("100"), 946_684_799_999_999_999),
        ];
        rows[2].side = Some("sell".into());
        assert_eq!(
            outcome(&rules, &mut rows),
            [
                "keep",
                "reject:price_band",
                "keep",
                "reject:price_band",
                "flag:odd_lot+needs_side",
                "reject:after_2000",
            ]
        );

        let mut linked = news(Some(NOW + 1));
        linked.link = Some("https://x".into());
        assert_eq!(rules.apply_news(&mut linked, NOW), Verdict::Keep);
        assert_eq!(linked.flags, ["future"]);
        let mut unlinked = news(None);
        assert!(
            matches!(rules.apply_news(&mut unlinked, NOW), Verdict::Reject { rule, .. } if rule == "has_link")
        );
        let mut timeless = news(None);
        timeless.link = Some("l".into());
        assert_eq!(rules.apply_news(&mut timeless, NOW), Verdict::Keep);
        assert!(timeless.flags.is_empty());
    }

    #[test]
    fn configuration_errors_name_the_rule() {
        let error = |value: serde_json::Value, master: Option<Arc<InstrumentMaster>>| -> String {
            match serde_json::from_value::<RulesConfig>(value) {
                Err(e) => e.to_string(),
                Ok(config) => Rules::compile(&config, master).unwrap_err().to_string(),
            }
        };
        for (value, needle) in [
            (
                serde_json::json!({ "trades": [{ "name": "r1", "check": { "kind": "required", "field": "isinn" } }] }),
                "rule `r1` of l2.trades: unknown field `isinn`",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r2", "check": { "kind": "price_positive", "strict": true } }] }),
                "rule `r2`: invalid check: unknown field `strict`",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r3", "check": { "kind": "price_sane" } }] }),
                "rule `r3`: invalid check: unknown variant `price_sane`",
            ),
            (
                serde_json::json!({ "news": [{ "name": "r4", "check": { "kind": "price_positive" } }] }),
                "rule `r4` of l2.news: this check applies to trades only",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r5", "check": { "kind": "price_range", "min": 5, "max": 1 } }] }),
                "rule `r5` of l2.trades: `min` is above `max`",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r6", "check": { "kind": "price_range" } }] }),
                "rule `r6` of l2.trades: set `min`, `max` or both",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r7", "check": { "kind": "price_range", "min": "0.000000001" } }] }),
                "rule `r7` of l2.trades: `min`:",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r8", "check": { "kind": "not_before", "rfc3339": "1990" } }] }),
                "rule `r8` of l2.trades: `rfc3339` `1990`",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r9", "check": { "kind": "not_before" } }] }),
                "rule `r9` of l2.trades: set exactly one",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r10", "check": { "kind": "known_symbol" }, "action": "reject" }] }),
                "rule `r10` of l2.trades: rejecting unknown symbols needs an instrument master",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "Bad Name", "check": { "kind": "price_positive" } }] }),
                "rule `Bad Name` of l2.trades: name must be",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "parse", "check": { "kind": "price_positive" } }] }),
                "`parse` is reserved",
            ),
            (
                serde_json::json!({ "trades": [
                { "name": "twice", "check": { "kind": "price_positive" } },
                { "name": "twice", "check": { "kind": "quantity_positive" } }] }),
                "rule `twice` of l2.trades: declared twice",
            ),
            (
                serde_json::json!({ "trades": [{ "name": "r11", "check": { "kind": "price_positive" }, "when": "always" }] }),
                "unknown field `when`",
            ),
        ] {
            let message = error(value, None);
            assert!(message.contains(needle), "{message}");
        }
        // The default set works without a master (known_symbol only flags, and passes).
        let rules = Rules::compile(&RulesConfig::default(), None).unwrap();
        let mut row = trade("ANY", 1, 1, NOW);
        assert_eq!(rules.apply_trade(&mut row, NOW), Verdict::Keep);
        assert!(row.flags.is_empty());
    }

    #[test]
    fn default_config_round_trips_as_it_is_shown() {
        let shown = serde_json::to_value(RulesConfig::default()).unwrap();
        assert_eq!(
            shown["trades"][0],
            serde_json::json!({ "name": "price_positive", "check": { "kind": "price_positive" }, "action": "reject" })
        );
        let back: RulesConfig = serde_json::from_value(shown).unwrap();
        assert_eq!(back, RulesConfig::default());
        let defaulted: RuleConfig = serde_json::from_value(
            serde_json::json!({ "name": "p", "check": { "kind": "price_positive" } }),
        )
        .unwrap();
        assert_eq!(defaulted.action, Action::Reject);
    }

    #[test]
    fn master_can_be_swapped_but_not_dropped_under_a_rejecting_rule() {
        let config = config(serde_json::json!({
            "trades": [{ "name": "known", "check": { "kind": "known_symbol" }, "action": "reject" }]
        }));
        let mut rules = Rules::compile(&config, Some(master())).unwrap();
        assert!(rules.set_master(None).is_err());
        let other = Arc::new(InstrumentMaster::from_instruments(
            10,
            [Instrument {
                symbol: "MSFT".into(),
                ..Instrument::default()
            }],
        ));
        rules.set_master(Some(other)).unwrap();
        let mut ibm = trade("IBM", 1, 1, NOW);
        let Verdict::Reject { reason, .. } = rules.apply_trade(&mut ibm, NOW) else {
            panic!()
        };
        assert_eq!(
            reason,
            "symbol `IBM` is not in instrument master version 10"
        );
    }
}
