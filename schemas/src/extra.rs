//! Extra columns: fields a feed gained after the L2 schemas were fixed, mapped by configuration
//! onto nullable columns appended to an L2 table (schema evolution).
//!
//! The fixed columns of `l2.trades` and `l2.news` are the contract every reader relies on. A new
//! field in a feed is always kept in L1 (L1 stores the bytes as received); to query it in L2, an
//! operator maps it to an [`ExtraColumn`] with a declared [`ExtraType`]. The table then gains a
//! nullable column through a Delta schema change: rows written before have no value (null), and
//! rows whose value does not have the declared type are quarantined by enrichment rather than
//! stored or guessed. Rows carry their values as [`Extras`], keyed by column name.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};

/// The types an extra column can have: the scalar types every Delta reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraType {
    String,
    Int64,
    Float64,
    Bool,
}

impl ExtraType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtraType::String => "string",
            ExtraType::Int64 => "int64",
            ExtraType::Float64 => "float64",
            ExtraType::Bool => "bool",
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            ExtraType::String => DataType::Utf8,
            ExtraType::Int64 => DataType::Int64,
            ExtraType::Float64 => DataType::Float64,
            ExtraType::Bool => DataType::Boolean,
        }
    }
}

/// One value of an extra column. Serialized untagged, so the enriched topics carry plain JSON
/// values (`"X"`, `12`, `0.5`, `true`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraValue {
    Bool(bool),
    Int64(i64),
    Float64(f64),
    String(String),
}

// Values compare by bits so rows stay `Eq` (a NaN never reaches a row: parsing refuses it).
impl PartialEq for ExtraValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ExtraValue::Bool(a), ExtraValue::Bool(b)) => a == b,
            (ExtraValue::Int64(a), ExtraValue::Int64(b)) => a == b,
            (ExtraValue::Float64(a), ExtraValue::Float64(b)) => a.to_bits() == b.to_bits(),
            (ExtraValue::String(a), ExtraValue::String(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ExtraValue {}

/// The extra values of one row, by column name (absent: null).
pub type Extras = BTreeMap<String, ExtraValue>;

/// An extra column of an L2 table: its name and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ExtraType,
}

impl ExtraColumn {
    /// Always nullable: rows written before the column existed have no value.
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.kind.data_type(), true)
    }
}

/// Append the extra columns' fields to a table's fields.
pub(crate) fn extend_fields(fields: &mut Vec<Field>, extra: &[ExtraColumn]) {
    fields.extend(extra.iter().map(ExtraColumn::field));
}

/// The arrays of the extra columns for `rows` (in `extra` order); a value of another type than
/// the column's counts as null (enrichment quarantines such rows before they get here).
pub(crate) fn extra_arrays<'a>(
    extra: &[ExtraColumn],
    rows: impl Iterator<Item = &'a Extras> + Clone,
) -> Vec<ArrayRef> {
    extra
        .iter()
        .map(|column| -> ArrayRef {
            let values = rows.clone().map(|row| row.get(&column.name));
            match column.kind {
                ExtraType::String => {
                    let mut b = StringBuilder::new();
                    for v in values {
                        b.append_option(match v {
                            Some(ExtraValue::String(s)) => Some(s.as_str()),
                            _ => None,
                        });
                    }
                    Arc::new(b.finish())
                }
                ExtraType::Int64 => {
                    let mut b = Int64Builder::new();
                    for v in values {
                        b.append_option(match v {
                            Some(ExtraValue::Int64(i)) => Some(*i),
                            _ => None,
                        });
                    }
                    Arc::new(b.finish())
                }
                ExtraType::Float64 => {
                    let mut b = Float64Builder::new();
                    for v in values {
                        b.append_option(match v {
                            Some(ExtraValue::Float64(f)) => Some(*f),
                            Some(ExtraValue::Int64(i)) => Some(*i as f64),
                            _ => None,
                        });
                    }
                    Arc::new(b.finish())
                }
                ExtraType::Bool => {
                    let mut b = BooleanBuilder::new();
                    for v in values {
                        b.append_option(match v {
                            Some(ExtraValue::Bool(x)) => Some(*x),
                            _ => None,
                        });
                    }
                    Arc::new(b.finish())
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_serialize_as_plain_json_and_round_trip() {
        let mut extras = Extras::new();
        extras.insert("broker".into(), ExtraValue::String("GS".into()));
        extras.insert("lots".into(), ExtraValue::Int64(3));
        extras.insert("score".into(), ExtraValue::Float64(0.25));
        extras.insert("odd".into(), ExtraValue::Bool(true));
        let text = serde_json::to_string(&extras).unwrap();
        assert_eq!(text, r#"{"broker":"GS","lots":3,"odd":true,"score":0.25}"#);
        let back: Extras = serde_json::from_str(&text).unwrap();
        assert_eq!(back, extras);
    }

    #[test]
    fn arrays_follow_the_declared_types_with_nulls_for_absent_values() {
        let columns = [
            ExtraColumn {
                name: "broker".into(),
                kind: ExtraType::String,
            },
            ExtraColumn {
                name: "score".into(),
                kind: ExtraType::Float64,
            },
        ];
        let mut first = Extras::new();
        first.insert("broker".into(), ExtraValue::String("GS".into()));
        let mut second = Extras::new();
        second.insert("score".into(), ExtraValue::Int64(2));
        let rows = [first, second];
        let arrays = extra_arrays(&columns, rows.iter());
        assert_eq!(arrays[0].data_type(), &DataType::Utf8);
        assert_eq!(arrays[0].null_count(), 1);
        assert_eq!(arrays[1].data_type(), &DataType::Float64);
        assert_eq!(arrays[1].null_count(), 1);
        assert!(columns.iter().all(|c| c.field().is_nullable()));
    }
}
