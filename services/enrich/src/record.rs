//! Pieces shared by the trade and news parsers: why a record could not be read ([`Bad`], with
//! its stable rule code), the lineage of a row, and exact decimal fields.

use marketlake_schemas::decimal::{parse_scaled, PRICE_SCALE, QTY_SCALE};
use marketlake_schemas::l2::Lineage;
use marketlake_schemas::{KafkaPosition, RawRecord};

/// A required field is absent.
pub const MISSING_FIELD: &str = "missing_field";
/// A field is present but its value cannot be read (number, time, code, symbol).
pub const BAD_FIELD: &str = "bad_field";
/// The record's structure is wrong: wrong length, unknown CSV layout, not an object, bad XML.
pub const BAD_LAYOUT: &str = "bad_layout";
/// The payload format does not belong to the parser it reached.
pub const UNSUPPORTED_FORMAT: &str = "unsupported_format";

/// Why a record could not be read: a stable rule code and a reason naming field and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bad {
    pub rule: &'static str,
    pub reason: String,
}

impl Bad {
    pub fn missing(what: impl std::fmt::Display) -> Self {
        Bad {
            rule: MISSING_FIELD,
            reason: format!("{what} is missing"),
        }
    }

    pub fn field(
        what: impl std::fmt::Display,
        value: &str,
        problem: impl std::fmt::Display,
    ) -> Self {
        Bad {
            rule: BAD_FIELD,
            reason: format!("{what} `{}`: {problem}", shown(value)),
        }
    }

    pub fn layout(reason: impl Into<String>) -> Self {
        Bad {
            rule: BAD_LAYOUT,
            reason: reason.into(),
        }
    }
}

/// A value as shown in a reason: at most 80 characters, control characters escaped.
pub(crate) fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(80)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

pub(crate) fn lineage(raw: &RawRecord, at: &KafkaPosition) -> Lineage {
    Lineage {
        source_id: raw.source_id.clone(),
        source_uri: raw.source_uri.clone(),
        source_position: raw.source_position,
        raw_topic: at.topic.clone(),
        raw_partition: at.partition,
        raw_offset: at.offset,
    }
}

/// Largest magnitude a `Decimal128(18, _)` column holds.
const DECIMAL_LIMIT: i64 = 999_999_999_999_999_999;

fn scaled(what: impl std::fmt::Display + Copy, text: &str, scale: u32) -> Result<i64, Bad> {
    let value = parse_scaled(text, scale).map_err(|e| Bad::field(what, text, e))?;
    if value.checked_abs().is_none_or(|v| v > DECIMAL_LIMIT) {
        return Err(Bad::field(what, text, "more than 18 digits"));
    }
    Ok(value)
}

/// A price as an integer scaled by `10^PRICE_SCALE`, exactly (never through `f64`).
pub(crate) fn price(what: impl std::fmt::Display + Copy, text: &str) -> Result<i64, Bad> {
    scaled(what, text, PRICE_SCALE)
}

/// A quantity as an integer scaled by `10^QTY_SCALE`, exactly.
pub(crate) fn quantity(what: impl std::fmt::Display + Copy, text: &str) -> Result<i64, Bad> {
    scaled(what, text, QTY_SCALE)
}

/// An integer already in `units_scale` decimal places (IEX 1e-4 prices), rescaled to `scale`.
pub(crate) fn rescaled(
    what: impl std::fmt::Display + Copy,
    value: i64,
    units_scale: u32,
    scale: u32,
) -> Result<i64, Bad> {
    let factor = scale
        .checked_sub(units_scale)
        .and_then(|d| 10_i64.checked_pow(d));
    factor
        .and_then(|f| value.checked_mul(f))
        .filter(|v| v.checked_abs().is_some_and(|a| a <= DECIMAL_LIMIT))
        .ok_or_else(|| Bad::field(what, &value.to_string(), "out of range"))
}

/// An instrument symbol: trimmed, non-empty, no control characters, at most 32 characters.
pub(crate) fn symbol(what: impl std::fmt::Display + Copy, text: &str) -> Result<String, Bad> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Bad::missing(what));
    }
    if trimmed.chars().any(char::is_control) || trimmed.chars().count() > 32 {
        return Err(Bad::field(what, text, "not a symbol"));
    }
    Ok(trimmed.to_owned())
}
