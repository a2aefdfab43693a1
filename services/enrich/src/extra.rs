//! Schema evolution on the way into L2: fields a feed gained after the L2 schemas were fixed,
//! mapped by configuration (`[[enrich.extra_fields]]`) onto nullable extra columns.
//!
//! A new field always reaches L1 (the raw bytes are kept as received) and never stops the
//! pipeline. Once mapped, enrichment reads it from each record of the table's formats — a FIX
//! tag, a CSV column, a JSON key or dotted path, an RSS/Atom child element — and checks it
//! against the declared type. A value of another type (a JSON string where a number was
//! declared, text that is not a number) sends the record to `l2.quarantine` with rule
//! `field_type` and a reason naming the field, the column, the type and the value: the feed
//! changed, and a person should look, rather than the lake storing a guess. An absent field
//! is null. The L2 table gains the column through a Delta schema change when the sink opens
//! it (see `marketlake_lake::spec`).

use marketlake_schemas::extra::{ExtraColumn, ExtraType, ExtraValue, Extras};
use marketlake_schemas::l2;
use marketlake_schemas::{PayloadFormat, RawRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{shown, Bad};
use crate::rules::Table;
use crate::{EnrichError, Result};

/// Quarantine rule of a record whose mapped field has another type than declared.
pub const RULE_FIELD_TYPE: &str = "field_type";

/// One mapped field (an `[[enrich.extra_fields]]` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFieldConfig {
    /// `l2.trades` or `l2.news`.
    pub table: String,
    /// The column it becomes (lower-case letters, digits and `_`; not one of the table's own).
    pub column: String,
    /// Where the value is: a FIX tag number (`76`), a CSV column name, a JSON key or dotted
    /// path (`meta.sentiment`), or an RSS/Atom child element (`category`).
    pub field: String,
    /// `string`, `int64`, `float64` or `bool`.
    #[serde(rename = "type")]
    pub kind: ExtraType,
    /// Only records of these source ids (empty: every source feeding the table).
    #[serde(default)]
    pub sources: Vec<String>,
}

/// The validated mappings of both L2 tables.
#[derive(Debug, Clone, Default)]
pub struct ExtraFields {
    trades: Vec<ExtraFieldConfig>,
    news: Vec<ExtraFieldConfig>,
}

fn config_error(index: usize, message: String) -> EnrichError {
    EnrichError::Config {
        setting: format!("enrich.extra_fields[{index}]"),
        message,
    }
}

impl ExtraFields {
    /// Validate the mappings: known table, a new well-formed column name per table, a field.
    pub fn new(configs: &[ExtraFieldConfig]) -> Result<Self> {
        let mut fields = ExtraFields::default();
        for (index, config) in configs.iter().enumerate() {
            let (table, schema) = match config.table.as_str() {
                crate::TARGET_TRADES => (&mut fields.trades, l2::trades_schema()),
                crate::TARGET_NEWS => (&mut fields.news, l2::news_schema()),
                other => {
                    return Err(config_error(
                        index,
                        format!("table `{other}`: extra fields go to `l2.trades` or `l2.news`"),
                    ))
                }
            };
            let name = config.column.as_str();
            let well_formed = name.len() <= 64
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !well_formed {
                return Err(config_error(
                    index,
                    format!("column `{name}`: use lower-case letters, digits and `_` (at most 64, not starting with a digit)"),
                ));
            }
            if schema.field_with_name(name).is_ok() {
                return Err(config_error(
                    index,
                    format!(
                        "column `{name}` is one of {}'s own columns; choose another name",
                        config.table
                    ),
                ));
            }
            if table.iter().any(|c| c.column == config.column) {
                return Err(config_error(
                    index,
                    format!("column `{name}` of {} is mapped twice", config.table),
                ));
            }
            if config.field.trim().is_empty() {
                return Err(config_error(
                    index,
                    "field is empty: name the FIX tag, CSV column, JSON key or XML element".into(),
                ));
            }
            table.push(config.clone());
        }
        Ok(fields)
    }

    fn of(&self, table: Table) -> &[ExtraFieldConfig] {
        match table {
            Table::Trades => &self.trades,
            Table::News => &self.news,
        }
    }

    /// The extra columns of a table, in configuration order (appended after its own columns).
    pub fn columns(&self, table: Table) -> Vec<ExtraColumn> {
        self.of(table)
            .iter()
            .map(|c| ExtraColumn {
                name: c.column.clone(),
                kind: c.kind,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.trades.is_empty() && self.news.is_empty()
    }

    /// The mapped values of one raw record for `table`; `Err` (rule `field_type`) when a value
    /// does not have its declared type.
    pub(crate) fn extract(
        &self,
        table: Table,
        raw: &RawRecord,
    ) -> std::result::Result<Extras, Bad> {
        let mut extras = Extras::new();
        let configs = self.of(table);
        if configs.is_empty() {
            return Ok(extras);
        }
        // The record is parsed once for all of its mappings.
        let fields = Fields::of(raw);
        for config in configs {
            if !config.sources.is_empty() && !config.sources.contains(&raw.source_id) {
                continue;
            }
            let value = match fields.find(config.field.trim()) {
                Found::Absent => continue,
                Found::Text(text) => typed_text(config, &text)?,
                Found::Json(value) => typed_json(config, value)?,
            };
            if let Some(value) = value {
                extras.insert(config.column.clone(), value);
            }
        }
        Ok(extras)
    }
}

enum Found<'a> {
    Absent,
    Text(String),
    Json(&'a Value),
}

/// A record's fields in its own format, parsed once for all of its mappings.
enum Fields<'a> {
    Fix(Option<crate::trade::fix::Message<'a>>),
    Csv(Option<crate::trade::csv::Row<'a>>),
    Xml(Vec<(String, String)>),
    Json(Option<Value>),
    /// Binary exchange formats have a fixed layout: nothing to map.
    Nothing,
}

impl<'a> Fields<'a> {
    fn of(raw: &'a RawRecord) -> Self {
        match raw.format {
            PayloadFormat::Fix => Fields::Fix(crate::trade::fix::Message::parse(raw).ok()),
            PayloadFormat::TradesCsv => Fields::Csv(crate::trade::csv::row_of(raw).ok()),
            PayloadFormat::RssItem | PayloadFormat::AtomEntry => {
                Fields::Xml(crate::news::feed::children(raw))
            }
            PayloadFormat::Json => Fields::Json(serde_json::from_slice(&raw.payload).ok()),
            PayloadFormat::IexTops | PayloadFormat::Unknown => Fields::Nothing,
        }
    }

    /// Field `field` (a FIX tag number, CSV column, XML child or JSON key/path); an empty text
    /// value counts as absent.
    fn find(&self, field: &str) -> Found<'_> {
        let text = match self {
            Fields::Fix(message) => field
                .parse::<u32>()
                .ok()
                .and_then(|tag| message.as_ref()?.text(tag)),
            Fields::Csv(row) => row
                .as_ref()
                .and_then(|row| row.get(&[field]))
                .map(|(_, value)| value.to_owned()),
            Fields::Xml(children) => children
                .iter()
                .find(|(name, _)| name == field)
                .map(|(_, value)| value.clone()),
            Fields::Json(json) => {
                return match json
                    .as_ref()
                    .and_then(Value::as_object)
                    .and_then(|o| crate::news::json::path(o, field))
                {
                    None | Some(Value::Null) => Found::Absent,
                    Some(value) => Found::Json(value),
                }
            }
            Fields::Nothing => None,
        };
        text.filter(|t| !t.is_empty())
            .map_or(Found::Absent, Found::Text)
    }
}

fn wrong_type(config: &ExtraFieldConfig, found: &str, value: &str) -> Bad {
    Bad {
        rule: RULE_FIELD_TYPE,
        reason: format!(
            "field `{}` (column `{}` of {}) is declared {} but holds {found} `{}`: the feed changed the field's type",
            config.field,
            config.column,
            config.table,
            config.kind.as_str(),
            shown(value)
        ),
    }
}

/// A value from a text format (FIX, CSV, XML), parsed as the declared type.
fn typed_text(
    config: &ExtraFieldConfig,
    text: &str,
) -> std::result::Result<Option<ExtraValue>, Bad> {
    let trimmed = text.trim();
    let value = match config.kind {
        ExtraType::String => Some(ExtraValue::String(text.to_owned())),
        ExtraType::Int64 => trimmed.parse::<i64>().ok().map(ExtraValue::Int64),
        ExtraType::Float64 => trimmed
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(ExtraValue::Float64),
        ExtraType::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "y" | "yes" | "1" => Some(ExtraValue::Bool(true)),
            "false" | "n" | "no" | "0" => Some(ExtraValue::Bool(false)),
            _ => None,
        },
    };
    value
        .map(Some)
        .ok_or_else(|| wrong_type(config, "text", text))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON value, which must already have the declared type (a number in a string, or a string
/// where a number was, is a type change, not something to coerce).
fn typed_json(
    config: &ExtraFieldConfig,
    value: &Value,
) -> std::result::Result<Option<ExtraValue>, Bad> {
    let typed = match (config.kind, value) {
        (ExtraType::String, Value::String(s)) => Some(ExtraValue::String(s.clone())),
        (ExtraType::Int64, Value::Number(n)) => n.as_i64().map(ExtraValue::Int64),
        (ExtraType::Float64, Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(ExtraValue::Float64),
        (ExtraType::Bool, Value::Bool(b)) => Some(ExtraValue::Bool(*b)),
        _ => None,
    };
    typed
        .map(Some)
        .ok_or_else(|| wrong_type(config, json_kind(value), &value.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use marketlake_schemas::FeedClass;

    use super::*;

    fn mapping(table: &str, column: &str, field: &str, kind: ExtraType) -> ExtraFieldConfig {
        ExtraFieldConfig {
            table: table.into(),
            column: column.into(),
            field: field.into(),
            kind,
            sources: Vec::new(),
        }
    }

    fn raw(format: PayloadFormat, payload: &str, attributes: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            source_id: "feed-1".into(),
            connector: "test".into(),
            class: match format {
                PayloadFormat::Fix | PayloadFormat::TradesCsv => FeedClass::Trades,
                _ => FeedClass::News,
            },
            format,
            source_uri: "file:///x".into(),
            source_position: 0,
            received_at_ns: 0,
            symbol: None,
            payload: payload.as_bytes().to_vec(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn mappings_are_validated_with_the_setting_named() {
        let bad = [
            mapping("l3.bars_1m", "x", "a", ExtraType::String),
            mapping("l2.news", "Sentiment", "a", ExtraType::String),
            mapping("l2.news", "headline", "a", ExtraType::String),
            mapping("l2.news", "x", " ", ExtraType::String),
        ];
        for config in bad {
            let error = ExtraFields::new(&[config]).unwrap_err().to_string();
            assert!(error.contains("enrich.extra_fields[0]"), "{error}");
        }
        let twice = [
            mapping("l2.news", "x", "a", ExtraType::String),
            mapping("l2.news", "x", "b", ExtraType::Int64),
        ];
        let error = ExtraFields::new(&twice).unwrap_err().to_string();
        assert!(error.contains("[1]") && error.contains("twice"), "{error}");
        // The same column name on each table is fine.
        let both = [
            mapping("l2.news", "x", "a", ExtraType::String),
            mapping("l2.trades", "x", "76", ExtraType::String),
        ];
        assert!(ExtraFields::new(&both).is_ok());
    }

    #[test]
    fn each_format_yields_its_mapped_field_typed() {
        let fields = ExtraFields::new(&[
            mapping("l2.trades", "exec_broker", "76", ExtraType::String),
            mapping("l2.trades", "lots", "lots", ExtraType::Int64),
            mapping("l2.news", "sentiment", "meta.sentiment", ExtraType::Float64),
            mapping("l2.news", "category", "category", ExtraType::String),
            mapping("l2.news", "breaking", "breaking", ExtraType::Bool),
        ])
        .unwrap();
        let fix = raw(
            PayloadFormat::Fix,
            "8=FIX.4.4|9=10|35=8|55=IBM|76=GSCO|10=000|",
            &[],
        );
        let extras = fields.extract(Table::Trades, &fix).unwrap();
        assert_eq!(
            extras.get("exec_broker"),
            Some(&ExtraValue::String("GSCO".into()))
        );
        assert!(!extras.contains_key("lots"));
        let csv = raw(
            PayloadFormat::TradesCsv,
            "IBM,101.5,200,7",
            &[("columns", "symbol,price,size,lots")],
        );
        let extras = fields.extract(Table::Trades, &csv).unwrap();
        assert_eq!(extras.get("lots"), Some(&ExtraValue::Int64(7)));
        let json = raw(
            PayloadFormat::Json,
            r#"{"headline":"h","meta":{"sentiment":0.75},"breaking":true}"#,
            &[],
        );
        let extras = fields.extract(Table::News, &json).unwrap();
        assert_eq!(extras.get("sentiment"), Some(&ExtraValue::Float64(0.75)));
        assert_eq!(extras.get("breaking"), Some(&ExtraValue::Bool(true)));
        let rss = raw(
            PayloadFormat::RssItem,
            "<item><title>t</title><category><![CDATA[Earnings]]></category></item>",
            &[],
        );
        let extras = fields.extract(Table::News, &rss).unwrap();
        assert_eq!(
            extras.get("category"),
            Some(&ExtraValue::String("Earnings".into()))
        );
    }

    #[test]
    fn a_field_that_changes_type_is_refused_with_a_clear_reason() {
        let fields = ExtraFields::new(&[
            mapping("l2.news", "sentiment", "sentiment", ExtraType::Float64),
            mapping("l2.trades", "lots", "lots", ExtraType::Int64),
        ])
        .unwrap();
        let json = raw(
            PayloadFormat::Json,
            r#"{"headline":"h","sentiment":"very positive"}"#,
            &[],
        );
        let bad = fields.extract(Table::News, &json).unwrap_err();
        assert_eq!(bad.rule, RULE_FIELD_TYPE);
        assert!(
            bad.reason.contains("`sentiment`")
                && bad.reason.contains("float64")
                && bad.reason.contains("a string")
                && bad.reason.contains("very positive"),
            "{}",
            bad.reason
        );
        let csv = raw(
            PayloadFormat::TradesCsv,
            "IBM,101.5,200,seven",
            &[("columns", "symbol,price,size,lots")],
        );
        let bad = fields.extract(Table::Trades, &csv).unwrap_err();
        assert!(bad.reason.contains("int64") && bad.reason.contains("seven"));
        // Null and absent are simply no value.
        let null = raw(PayloadFormat::Json, r#"{"sentiment":null}"#, &[]);
        assert!(fields.extract(Table::News, &null).unwrap().is_empty());
    }

    #[test]
    fn sources_restrict_a_mapping() {
        let mut config = mapping("l2.news", "sentiment", "sentiment", ExtraType::Float64);
        config.sources = vec!["other-feed".into()];
        let fields = ExtraFields::new(&[config]).unwrap();
        let json = raw(PayloadFormat::Json, r#"{"sentiment":"x"}"#, &[]);
        assert!(fields.extract(Table::News, &json).unwrap().is_empty());
    }
}
