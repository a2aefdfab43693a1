//! Delta Sharing `jsonPredicateHints`: the client's filter as a JSON expression tree, used to
//! leave out of a query's answer the files whose log statistics (or partition values) prove
//! they hold no matching row.
//!
//! The protocol makes hints best effort: the client applies its filter again to what it reads,
//! so a file kept needlessly costs a download, never a wrong answer, while a file dropped wrongly
//! loses rows. Everything here therefore leans to "may match": an operator, type or column we
//! cannot judge keeps the file, and a hint that does not parse is ignored as a whole (as the
//! protocol asks of servers).
//!
//! Supported: `and`, `or`, `not` (of a comparison it cannot prune, so it keeps the file),
//! `equal`, `lessThan`, `lessThanOrEqual`, `greaterThan`, `greaterThanOrEqual` between a column
//! and a literal (either side), and `isNull`; literal types `int`, `long`, `float`, `double`,
//! `string`, `date`, `boolean` and `timestamp`.

use std::cmp::Ordering;

use marketlake_lake::read::DataFile;
use serde_json::Value;

/// Delta statistics keep timestamps to the millisecond, cut down: a file's true maximum may lie
/// up to this much above its recorded one.
const TIMESTAMP_STATS_SLACK_NS: i64 = 1_000_000;

/// A parsed hint.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Hint {
    And(Vec<Hint>),
    Or(Vec<Hint>),
    Compare {
        op: Comparison,
        column: String,
        value: Literal,
    },
    IsNull(String),
    /// Anything the pruner cannot judge: every file may match it.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparison {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    fn from_op(op: &str) -> Option<Comparison> {
        Some(match op {
            "equal" => Comparison::Equal,
            "lessThan" => Comparison::Less,
            "lessThanOrEqual" => Comparison::LessOrEqual,
            "greaterThan" => Comparison::Greater,
            "greaterThanOrEqual" => Comparison::GreaterOrEqual,
            _ => return None,
        })
    }

    /// `literal OP column` said as `column OP' literal`.
    fn flipped(self) -> Comparison {
        match self {
            Comparison::Equal => Comparison::Equal,
            Comparison::Less => Comparison::Greater,
            Comparison::LessOrEqual => Comparison::GreaterOrEqual,
            Comparison::Greater => Comparison::Less,
            Comparison::GreaterOrEqual => Comparison::LessOrEqual,
        }
    }
}

/// A literal, typed by its `valueType`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Integer(i64),
    Float(f64),
    /// Strings and dates (`YYYY-MM-DD` orders as text).
    Text(String),
    Bool(bool),
    /// UTC nanoseconds.
    Timestamp(i64),
}

/// Parse the request's `jsonPredicateHints`: a JSON string holding the expression (what the
/// clients send) or the expression itself. `None` when it is not a well-formed expression.
pub(super) fn parse(value: &Value) -> Option<Hint> {
    match value {
        Value::String(text) => parse_node(&serde_json::from_str(text).ok()?),
        Value::Object(_) => parse_node(value),
        _ => None,
    }
}

fn parse_node(node: &Value) -> Option<Hint> {
    let op = node.get("op")?.as_str()?;
    let children = || -> Option<Vec<&Value>> {
        match node.get("children") {
            Some(Value::Array(children)) => Some(children.iter().collect()),
            _ => None,
        }
    };
    match op {
        "and" | "or" => {
            let parsed = children()?
                .into_iter()
                .map(parse_node)
                .collect::<Option<Vec<_>>>()?;
            if parsed.len() < 2 {
                return None;
            }
            Some(if op == "and" {
                Hint::And(parsed)
            } else {
                Hint::Or(parsed)
            })
        }
        "not" => {
            let children = children()?;
            if children.len() != 1 {
                return None;
            }
            // Checked for shape, but a negation cannot prune on min/max without more care
            // than it is worth here: the file may match.
            parse_node(children[0]).map(|_| Hint::Unknown)
        }
        "isNull" => match children()?.as_slice() {
            [child] if child.get("op")?.as_str()? == "column" => {
                Some(Hint::IsNull(child.get("name")?.as_str()?.to_string()))
            }
            _ => None,
        },
        _ => {
            let Some(comparison) = Comparison::from_op(op) else {
                // An operator of a later protocol version: keep every file for it.
                return Some(Hint::Unknown);
            };
            let children = children()?;
            let [left, right] = children.as_slice() else {
                return None;
            };
            let kind = |v: &Value| v.get("op").and_then(Value::as_str).map(str::to_owned);
            let (column, literal, op) = match (kind(left)?.as_str(), kind(right)?.as_str()) {
                ("column", "literal") => (*left, *right, comparison),
                ("literal", "column") => (*right, *left, comparison.flipped()),
                _ => return Some(Hint::Unknown),
            };
            // A column compared with a literal of another type (a string column with a long)
            // would be judged by the wrong order: keep the file.
            let column_type = column.get("valueType").and_then(Value::as_str);
            let literal_type = literal.get("valueType").and_then(Value::as_str);
            if column_type.is_some_and(|c| Some(c) != literal_type) {
                return Some(Hint::Unknown);
            }
            let column = column.get("name")?.as_str()?.to_string();
            Some(match parse_literal(literal)? {
                Some(value) => Hint::Compare { op, column, value },
                None => Hint::Unknown,
            })
        }
    }
}

/// `Some(None)`: a literal of a type the pruner does not use; `None`: malformed.
fn parse_literal(node: &Value) -> Option<Option<Literal>> {
    let value_type = node.get("valueType")?.as_str()?;
    let text = node.get("value")?.as_str()?;
    Some(Some(match value_type {
        "int" | "long" => Literal::Integer(text.trim().parse().ok()?),
        "float" | "double" => Literal::Float(text.trim().parse().ok()?),
        "string" | "date" => Literal::Text(text.to_string()),
        "bool" | "boolean" => Literal::Bool(text.trim().parse().ok()?),
        "timestamp" => Literal::Timestamp(timestamp_ns(text)?),
        _ => return Some(None),
    }))
}

/// A timestamp literal or statistic: RFC 3339, or the Spark/Delta form without a zone (UTC).
fn timestamp_ns(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return t.timestamp_nanos_opt();
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
}

/// One file's statistics, parsed once for the whole tree.
pub(super) struct FileFacts<'a> {
    file: &'a DataFile,
    stats: Option<Value>,
}

impl<'a> FileFacts<'a> {
    pub(super) fn of(file: &'a DataFile) -> FileFacts<'a> {
        FileFacts {
            file,
            stats: file
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
        }
    }

    /// The file's row count, from its statistics.
    pub(super) fn records(&self) -> Option<i64> {
        self.stats.as_ref()?.get("numRecords")?.as_i64()
    }

    fn partition_value(&self, column: &str) -> Option<&Option<String>> {
        self.file
            .partition_values
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, value)| value)
    }

    fn stat(&self, kind: &str, column: &str) -> Option<&Value> {
        self.stats.as_ref()?.get(kind)?.get(column)
    }
}

impl Hint {
    /// Whether the file may hold a row the hint accepts (`false` only when it provably cannot).
    pub(super) fn may_match(&self, facts: &FileFacts) -> bool {
        match self {
            Hint::And(children) => children.iter().all(|c| c.may_match(facts)),
            Hint::Or(children) => children.iter().any(|c| c.may_match(facts)),
            Hint::Unknown => true,
            Hint::IsNull(column) => match facts.partition_value(column) {
                Some(value) => value.is_none(),
                None => facts
                    .stat("nullCount", column)
                    .and_then(Value::as_i64)
                    .is_none_or(|nulls| nulls > 0),
            },
            Hint::Compare { op, column, value } => {
                if let Some(partition) = facts.partition_value(column) {
                    // A null partition value compares false with anything.
                    return partition.as_deref().is_some_and(|p| {
                        let p = Value::String(p.to_string());
                        compare(&p, value, 0)
                            .is_none_or(|ordering| accepts(*op, ordering, ordering))
                    });
                }
                let slack = if matches!(value, Literal::Timestamp(_)) {
                    TIMESTAMP_STATS_SLACK_NS
                } else {
                    0
                };
                let min = facts
                    .stat("minValues", column)
                    .and_then(|v| compare(v, value, 0));
                let max = facts
                    .stat("maxValues", column)
                    .and_then(|v| compare(v, value, slack));
                match (min, max) {
                    (Some(min), Some(max)) => accepts(*op, min, max),
                    // One bound alone still settles the one-sided comparisons.
                    (Some(min), None) => {
                        !matches!(op, Comparison::Less | Comparison::LessOrEqual)
                            || accepts(*op, min, Ordering::Greater)
                    }
                    (None, Some(max)) => {
                        !matches!(op, Comparison::Greater | Comparison::GreaterOrEqual)
                            || accepts(*op, Ordering::Less, max)
                    }
                    (None, None) => true,
                }
            }
        }
    }
}

/// Whether values in `[min, max]` may satisfy `column OP literal`, given how the file's
/// minimum and maximum compare with the literal.
fn accepts(op: Comparison, min: Ordering, max: Ordering) -> bool {
    match op {
        Comparison::Equal => min != Ordering::Greater && max != Ordering::Less,
        Comparison::Less => min == Ordering::Less,
        Comparison::LessOrEqual => min != Ordering::Greater,
        Comparison::Greater => max == Ordering::Greater,
        Comparison::GreaterOrEqual => max != Ordering::Less,
    }
}

/// How a statistic compares with a literal; `None` when they are not comparable (the file is
/// then kept). `slack_ns` widens a timestamp statistic upwards.
fn compare(stat: &Value, literal: &Literal, slack_ns: i64) -> Option<Ordering> {
    match literal {
        Literal::Integer(v) => match stat {
            Value::Number(n) => match n.as_i64() {
                Some(s) => Some(s.cmp(v)),
                None => n.as_f64()?.partial_cmp(&(*v as f64)),
            },
            Value::String(s) => s.trim().parse::<i64>().ok().map(|s| s.cmp(v)),
            _ => None,
        },
        Literal::Float(v) => match stat {
            Value::Number(n) => n.as_f64()?.partial_cmp(v),
            Value::String(s) => s.trim().parse::<f64>().ok()?.partial_cmp(v),
            _ => None,
        },
        Literal::Text(v) => stat.as_str().map(|s| s.cmp(v.as_str())),
        Literal::Bool(v) => match stat {
            Value::Bool(s) => Some(s.cmp(v)),
            Value::String(s) => s.parse::<bool>().ok().map(|s| s.cmp(v)),
            _ => None,
        },
        Literal::Timestamp(v) => {
            let s = timestamp_ns(stat.as_str()?)?;
            Some(s.saturating_add(slack_ns).cmp(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(stats: Value, partition: &[(&str, Option<&str>)]) -> DataFile {
        DataFile {
            path: "part-0.parquet".into(),
            local_path: None,
            size: 1,
            partition_values: partition
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            stats: Some(stats.to_string()),
        }
    }

    fn trades_file() -> DataFile {
        file(
            serde_json::json!({
                "numRecords": 4,
                "minValues": {"symbol": "AAPL", "event_time_ns": 100, "price": 10.5,
                              "event_time": "2026-01-05T14:30:00.000Z"},
                "maxValues": {"symbol": "IBM", "event_time_ns": 200, "price": 12.0,
                              "event_time": "2026-01-05T14:31:00.123Z"},
                "nullCount": {"symbol": 0, "account": 2}
            }),
            &[("event_date", Some("2026-01-05"))],
        )
    }

    fn leaf(op: &str, column: &str, value_type: &str, value: &str) -> Value {
        serde_json::json!({"op": op, "children": [
            {"op": "column", "name": column, "valueType": value_type},
            {"op": "literal", "value": value, "valueType": value_type}
        ]})
    }

    fn keeps(hint: Value) -> bool {
        let file = trades_file();
        let parsed = parse(&Value::String(hint.to_string()));
        let Some(parsed) = parsed else {
            panic!("hint did not parse: {hint}");
        };
        parsed.may_match(&FileFacts::of(&file))
    }

    #[test]
    fn comparisons_prune_on_min_and_max() {
        assert!(keeps(leaf("equal", "symbol", "string", "GOOG")));
        assert!(!keeps(leaf("equal", "symbol", "string", "MSFT")));
        assert!(!keeps(leaf("equal", "symbol", "string", "AAAA")));
        assert!(keeps(leaf("lessThan", "event_time_ns", "long", "101")));
        assert!(!keeps(leaf("lessThan", "event_time_ns", "long", "100")));
        assert!(keeps(leaf(
            "lessThanOrEqual",
            "event_time_ns",
            "long",
            "100"
        )));
        assert!(keeps(leaf("greaterThan", "event_time_ns", "long", "199")));
        assert!(!keeps(leaf("greaterThan", "event_time_ns", "long", "200")));
        assert!(keeps(leaf(
            "greaterThanOrEqual",
            "event_time_ns",
            "long",
            "200"
        )));
        assert!(!keeps(leaf(
            "greaterThanOrEqual",
            "price",
            "double",
            "12.5"
        )));
        assert!(keeps(leaf("lessThan", "price", "double", "10.75")));
    }

    #[test]
    fn a_literal_on_the_left_is_flipped() {
        let hint = serde_json::json!({"op": "lessThan", "children": [
            {"op": "literal", "value": "200", "valueType": "long"},
            {"op": "column", "name": "event_time_ns", "valueType": "long"}
        ]});
        // 200 < event_time_ns: no row of a file whose maximum is 200.
        assert!(!keeps(hint));
    }

    #[test]
    fn partitions_nulls_and_boolean_structure() {
        assert!(keeps(leaf("equal", "event_date", "date", "2026-01-05")));
        assert!(!keeps(leaf("equal", "event_date", "date", "2026-01-06")));
        let is_null = |column: &str| {
            serde_json::json!({"op": "isNull", "children": [
                {"op": "column", "name": column, "valueType": "string"}
            ]})
        };
        assert!(!keeps(is_null("symbol")));
        assert!(keeps(is_null("account")));
        assert!(!keeps(is_null("event_date")));
        let and = serde_json::json!({"op": "and", "children": [
            leaf("equal", "symbol", "string", "AAPL"),
            leaf("greaterThan", "event_time_ns", "long", "500")
        ]});
        assert!(!keeps(and));
        let or = serde_json::json!({"op": "or", "children": [
            leaf("equal", "symbol", "string", "ZZZZ"),
            leaf("greaterThan", "event_time_ns", "long", "150")
        ]});
        assert!(keeps(or));
        // A negation is never used to prune.
        let not = serde_json::json!({"op": "not", "children": [
            leaf("equal", "symbol", "string", "ZZZZ")
        ]});
        assert!(keeps(not));
    }

    #[test]
    fn timestamps_allow_for_millisecond_statistics() {
        // The recorded maximum is 14:31:00.123; the true one may be up to 14:31:00.123999.
        assert!(keeps(leaf(
            "greaterThan",
            "event_time",
            "timestamp",
            "2026-01-05T14:31:00.123500Z"
        )));
        assert!(!keeps(leaf(
            "greaterThan",
            "event_time",
            "timestamp",
            "2026-01-05T14:31:00.125Z"
        )));
        assert!(!keeps(leaf(
            "lessThan",
            "event_time",
            "timestamp",
            "2026-01-05 14:30:00"
        )));
    }

    #[test]
    fn what_cannot_be_judged_keeps_the_file() {
        // Unknown column, unknown operator, unknown literal type, incomparable types.
        assert!(keeps(leaf("equal", "venue", "string", "XNAS")));
        assert!(keeps(serde_json::json!({"op": "like", "children": []})));
        assert!(keeps(leaf("equal", "symbol", "binary", "00")));
        assert!(keeps(leaf("equal", "symbol", "long", "1")));
        // A long literal against a string column: text order is not number order.
        let mixed = serde_json::json!({"op": "equal", "children": [
            {"op": "column", "name": "symbol", "valueType": "string"},
            {"op": "literal", "value": "50", "valueType": "long"}
        ]});
        assert!(keeps(mixed));
        // A file without statistics.
        let bare = DataFile {
            stats: None,
            ..trades_file()
        };
        let hint = parse(&leaf("equal", "symbol", "string", "MSFT"));
        assert!(hint.is_some_and(|h| h.may_match(&FileFacts::of(&bare))));
    }

    #[test]
    fn malformed_hints_are_ignored_whole() {
        for bad in [
            Value::String("{not json".into()),
            serde_json::json!(42),
            serde_json::json!({"children": []}),
            serde_json::json!({"op": "and", "children": [leaf("equal", "symbol", "string", "A")]}),
            serde_json::json!({"op": "equal", "children": [{"op": "column", "name": "x"}]}),
            leaf("equal", "event_time_ns", "long", "soon"),
            serde_json::json!({"op": "not", "children": []}),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }
}
